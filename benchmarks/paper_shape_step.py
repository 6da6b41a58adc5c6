"""One ProtoEFNet step at the paper shape on CPU, einsum vs naive broadcast pooling: wall
time and peak memory, each variant in a fresh process (see benchmarks/child.py).

    python benchmarks/paper_shape_step.py                 # batch 2, 3x64x112x112, P=40, r2plus1d_18
    python benchmarks/paper_shape_step.py --batch 1 --only pool --out /tmp/step.json

Kept as a stand-alone script; the suite's `pooling` item (python -m benchmarks --only
pooling) runs the same measurements with the suite's shapes and writes results/pooling.json.
"delta" = peak RSS during the timed calls minus the RSS just before them.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import run_child  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--prototypes", type=int, default=40)
    parser.add_argument("--backbone", default="r2plus1d_18")
    parser.add_argument("--steps", type=int, default=1, help="timed steps per variant (the first includes warm-up)")
    parser.add_argument("--only", choices=["step", "infer", "pool"], help="run one kind of measurement")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()
    results = []
    for what in ("step", "infer", "pool"):
        if args.only and what != args.only:
            continue
        for pooling in ("einsum", "naive"):
            spec = {"what": what, "model": "protoef", "pooling": pooling, "batch": args.batch, "frames": args.frames,
                    "size": args.size, "prototypes": args.prototypes, "backbone": args.backbone, "reps": args.steps}
            result = run_child(spec, timeout=3600)
            results.append(result)
            print(f"{what:>5} {pooling:>6}: {min(result['seconds']):7.2f} s   delta {result['delta_bytes'] / 2**20:8.1f} MiB"
                  f"   peak {result['peak_rss_bytes'] / 2**20:8.1f} MiB", flush=True)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
