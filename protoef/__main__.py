"""Command line: ``python -m protoef <command>`` (also installed as ``protoef``).

    synth OUT_DIR [--videos N] [--seed S]   write a synthetic EchoNet-format data set
    check-data ROOT [--masks]                load every split, report what would be skipped
"""
from __future__ import annotations

import argparse
import sys
import warnings


def _check_data(args) -> int:
    from protoef.data import DataError, EchoNet

    total_skipped = 0
    try:
        for split in ("TRAIN", "VAL", "TEST"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the report below says it all
                dataset = EchoNet(args.root, split, with_masks=args.masks, mean=0.0, std=1.0)
            efs = dataset.efs
            summary = f"EF {efs.mean():.1f} ± {efs.std():.1f}, {100 * (efs < 50).mean():.0f}% < 50" if len(efs) else "empty"
            print(f"{split:5s}: {len(dataset):5d} videos ({summary}), {len(dataset.skipped)} skipped")
            for filename, reason in dataset.skipped:
                print(f"    skipped {filename}: {reason}")
            total_skipped += len(dataset.skipped)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 1 if args.fail_on_skip and total_skipped else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="protoef", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    synth = commands.add_parser("synth", help="write a synthetic EchoNet-format data set")
    synth.add_argument("out_dir")
    synth.add_argument("--videos", type=int, default=400)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--workers", type=int, default=None)

    check = commands.add_parser("check-data", help="load every split of a data set and report skipped videos")
    check.add_argument("root")
    check.add_argument("--masks", action="store_true", help="also require usable LV tracings")
    check.add_argument("--fail-on-skip", action="store_true", help="exit 1 if any video would be skipped")

    args = parser.parse_args(argv)
    if args.command == "synth":
        from protoef.data import synthetic

        synthetic.generate(args.out_dir, videos=args.videos, seed=args.seed, workers=args.workers)
        return 0
    return _check_data(args)


if __name__ == "__main__":
    sys.exit(main())
