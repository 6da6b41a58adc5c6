"""One ProtoEFNet training step at the paper shape on CPU: wall time and peak memory,
with the einsum pooling and with the naive broadcast pooling (N*P*D*T'*H'*W' product).

    python benchmarks/paper_shape_step.py                  # batch 2, 3x64x112x112, P=40, r2plus1d_18
    python benchmarks/paper_shape_step.py --batch 1 --out benchmarks/results/step.json

Every measurement runs in a fresh child process, so each peak (ru_maxrss) belongs to one
variant alone. "delta" = peak RSS during the step minus the RSS just before it (model and
input already allocated); "peak" = the process's whole peak RSS. Three measurements per
pooling: "step", the training step (forward, ProtoEFLoss with the paper weights, backward);
"infer", a forward pass under torch.no_grad (evaluation, push); "pool", the pooling op
alone (forward + backward on random tensors of the paper's (N, P|D, T', H', W') shapes).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

VARIANTS = [(what, pooling) for what in ("step", "infer", "pool") for pooling in ("einsum", "naive")]


def naive_pool(occurrence_maps, feature_maps):
    # (N, P, 1, T, H, W) * (N, 1, D, T, H, W) -> (N, P, D, T, H, W) -> (N, P, D): what the official code does
    return (occurrence_maps.unsqueeze(2) * feature_maps.unsqueeze(1)).sum(dim=(3, 4, 5))


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(args) -> dict:
    import torch

    import protoef.model as model_module
    from protoef.losses import ProtoEFLoss

    torch.manual_seed(0)
    n, p, t = args.batch, args.prototypes, args.frames
    if args.pooling == "naive":
        model_module.pool_features = naive_pool
    pool = model_module.pool_features
    if args.what in ("step", "infer"):
        model = model_module.ProtoEFNet(num_prototypes=p, backbone=args.backbone)
        video = torch.randn(n, 3, t, args.size, args.size)
        targets = torch.rand(n) * 80 + 10
        background = torch.rand(n, 1, 1, args.size // 8, args.size // 8)
        loss_fn = ProtoEFLoss()
    else:
        shape = (t // 4, args.size // 8, args.size // 8)
        maps = torch.rand(n, p, *shape, requires_grad=True)       # (N, P, T', H', W')
        features = torch.randn(n, 256, *shape, requires_grad=True)  # (N, D, T', H', W')
    before = rss_mib()
    times, cpu_times = [], []
    for _ in range(args.steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        if args.what == "step":
            model.zero_grad(set_to_none=True)
            out = model(video)
            total, _ = loss_fn(out, targets, model, background=background)
            total.backward()
        elif args.what == "infer":
            with torch.no_grad():
                model(video)
        else:
            maps.grad = features.grad = None
            pool(maps, features).sum().backward()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)  # summed over threads; robust to other load
    peak = peak_rss_mib()
    return {"what": args.what, "pooling": args.pooling, "batch": n, "frames": t, "size": args.size,
            "prototypes": p, "backbone": args.backbone, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "seconds": times, "cpu_seconds": cpu_times, "rss_before_mib": round(before, 1),
            "peak_rss_mib": round(peak, 1), "delta_mib": round(peak - before, 1)}


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
    parser.add_argument("--child", nargs=2, metavar=("WHAT", "POOLING"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.what, args.pooling = args.child
        print(json.dumps(child(args)))
        return
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    passthrough = [f"--{k}={getattr(args, k)}" for k in ("batch", "frames", "size", "prototypes", "backbone", "steps")]
    results = []
    for what, pooling in VARIANTS:
        if args.only and what != args.only:
            continue
        line = subprocess.run([sys.executable, os.path.abspath(__file__), *passthrough, "--child", what, pooling],
                              check=True, capture_output=True, text=True, env=env).stdout.strip().splitlines()[-1]
        result = json.loads(line)
        results.append(result)
        print(f"{what:>5} {pooling:>6}: {min(result['seconds']):7.2f} s wall  {min(result['cpu_seconds']):7.2f} s cpu"
              f"   delta {result['delta_mib']:8.1f} MiB"
              f"   peak {result['peak_rss_mib']:8.1f} MiB", flush=True)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
