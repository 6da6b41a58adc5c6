"""Command line: ``python -m protoef <command>`` (also installed as ``protoef``).

    synth OUT_DIR [--videos N] [--seed S] [--overwrite]
                                             write a synthetic EchoNet-format data set
    check-data ROOT [--masks]                load every split, report what would be skipped
    train --profile P [--set K=V ...] --out RUN_DIR [--resume]
                                             train, push and test; writes a run directory
    evaluate RUN [--split TEST] [--data DIR] metrics of a trained run on one split
    predict RUN VIDEO_OR_FOLDER [--out DIR]  EF + top prototypes per video, explanation PNGs
    gallery RUN [--data DIR] [--no-gif]      prototype strips, GIFs and gallery.png of a run
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings


def _check_data(args) -> int:
    from protoef.data import DataError, EchoNet

    total_skipped, empty = 0, []
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
            if not len(dataset):
                empty.append(split)
        for filename, reason in dataset.unassigned:  # rows of no split: named once, counted as skipped
            print(f"    not used: {filename}: {reason}")
        if dataset.unassigned:
            print(f"{len(dataset.unassigned)} row(s) of FileList.csv are in no split (or name no video) and are not used")
        total_skipped += len(dataset.unassigned)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if empty:
        print(f"error: {args.root}: no usable video in split(s) {', '.join(empty)}; training needs TRAIN, VAL and "
              "TEST videos (FileList.csv's Split column)", file=sys.stderr)
        return 2
    return 1 if args.fail_on_skip and total_skipped else 0


def _synth(args) -> int:
    from protoef.data import synthetic

    root = synthetic.generate(args.out_dir, videos=args.videos, seed=args.seed, workers=args.workers,
                              overwrite=args.overwrite)
    print(f"[synth] {args.videos} videos → {root}")
    return 0


def _checked_data(value: str | None) -> str | None:
    """``--data`` as given; an empty one is refused (it would quietly mean "no folder")."""
    if value is not None and not value.strip():
        raise ValueError("--data: an empty path; give the EchoNet-format folder (the one with FileList.csv), "
                         "or leave --data out for the run's own data set")
    return value


def _train(args) -> int:
    from protoef.config import apply_overrides, from_dict, resolve
    from protoef.training.lifecycle import fit
    from protoef.training.runs import RunDir

    overrides = list(args.set)
    given = [text.split("=", 1)[1].strip() for text in overrides if text.split("=", 1)[0].strip() == "profile"]
    if args.profile and any(value != args.profile for value in given):
        raise ValueError(f"--profile {args.profile} and --set profile={given[-1]} disagree; give the profile once "
                         "(--profile), not also as an override")
    if _checked_data(args.data) is not None:
        overrides.append(f"data.root={args.data}")
    config = resolve(args.profile or "demo", overrides)
    if config.profile == "paper" and not config.data.root:
        # Without a data root the synthetic set would be generated and trained on silently.
        raise FileNotFoundError("the paper profile trains on EchoNet-Dynamic: pass --data DIR (the folder with "
                                "FileList.csv) or set ECHONET_DIR; --profile demo or smoke use the synthetic set")
    out = args.out or f"runs/{config.profile}-{config.model.kind}-seed{config.seed}"
    if args.resume and RunDir(out).config_file.is_file():
        # Resuming continues the stored config: only what is given here (--set, --data, an
        # explicit --profile) is compared with it, and fit refuses what differs
        # (`RunDir.require_config`).
        stored = from_dict(RunDir(out).read_config())
        if args.profile:
            overrides.insert(0, f"profile={args.profile}")
        config = apply_overrides(stored, overrides).validate()
    fit(config, out, resume=args.resume)
    if os.environ.get("RANK", "0") == "0":  # torchrun: one report, from rank 0
        print(f"[train] run directory: {out}")
    return 0


def _evaluate(args) -> int:
    import json

    from protoef.training.build import evaluation_dataset, load_run, make_loader
    from protoef.training.loops import evaluate

    model, config, checkpoint = load_run(args.run)
    if _checked_data(args.data) is not None:
        config.data.root = args.data
    dataset = evaluation_dataset(config, args.split)
    if not len(dataset):
        raise ValueError(f"{dataset.root}: split {args.split.upper()} has no usable video ({len(dataset.skipped)} "
                         "skipped); nothing to evaluate. Choose --split TRAIN, VAL or TEST with videos (check-data lists them)")
    delta = config.loss.delta if config.model.kind == "protoefnet" else None
    metrics, _ = evaluate(model, make_loader(dataset, config, batch_size=1 if dataset.clips != "deterministic" else None),
                          delta=delta)
    metrics = {"checkpoint": checkpoint, "split": args.split.upper(), **metrics}
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()}, indent=2))
    return 0


def _predict(args) -> int:
    import pathlib

    from protoef.analysis.inference import other_files, predict_videos, training_reference, video_paths
    from protoef.training.build import load_run
    from protoef.training.runs import RunDir, data_set_files, enclosing_run

    model, config, checkpoint = load_run(args.run)
    paths = video_paths(args.videos)  # both checked before anything is created: a rejected call leaves no folder
    # the run, given as its folder or as one of its checkpoints (RUN/checkpoints/NAME.pt)
    run_dir = RunDir(args.run if pathlib.Path(args.run).is_dir() else pathlib.Path(args.run).parents[1])
    out = pathlib.Path(args.out)
    table_file = RunDir(out).predictions_file  # named like a run's own TEST table, which it must never replace
    # A run directory's own predictions.csv (the TEST predictions with the true EF) must
    # never be replaced by a predict table: refuse the run itself and any other run directory.
    looks_like_run = (RunDir(out).config_file, RunDir(out).metrics_file, RunDir(out).checkpoints_dir)
    if out.resolve() == run_dir.path.resolve() or any(path.exists() for path in looks_like_run):
        raise FileExistsError(f"--out {out}: is a run directory; predict would overwrite the run's own predictions.csv. "
                              "Choose another folder, e.g. --out predictions")
    inside = enclosing_run(out)
    if inside is not None:
        raise FileExistsError(f"--out {out}: lies inside the run directory {inside}; predict writes predictions.csv and "
                              "figures that would mix with the run's files. Choose a folder outside it, e.g. --out predictions")
    if data_set_files(out):
        raise FileExistsError(f"--out {out}: holds a data set ({', '.join(data_set_files(out))}); choose another folder, "
                              "e.g. --out predictions")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(f"--out {out}: cannot create the output folder ({error.strerror or error}); "
                      "choose a writable folder") from None
    skipped = other_files(args.videos)
    if skipped:
        print(f"[predict] note: {len(skipped)} file(s) in {args.videos} are not .avi and are not predicted: "
              + ", ".join(skipped[:10]) + (f" (+{len(skipped) - 10} more)" if len(skipped) > 10 else ""), file=sys.stderr)
    reference = training_reference(run_dir)
    if reference and "similarity" in reference and not checkpoint.endswith("(final, after the push)"):
        # The TRAIN clips' similarities were measured with the final prototypes, not this checkpoint's.
        reference = {key: value for key, value in reference.items() if key != "similarity"}
        print(f"[predict] note: {checkpoint} is not the run's final model: the similarity to the prototypes is not "
              "compared with the TRAIN clips'", file=sys.stderr)
    if reference is None:
        print(f"[predict] warning: {run_dir} records no training-video summary (a run from an older version): "
              "aspect ratios and frame rates are not compared with training", file=sys.stderr)
    table = predict_videos(model, config, paths, explain_dir=None if args.no_figures else out,
                           prototype_dir=run_dir.prototypes_dir, reference=reference)
    table["checkpoint"] = checkpoint
    table.to_csv(table_file, index=False)
    print(table.to_string(index=False, max_cols=8))
    print(f"[predict] {len(table)} video(s) → {table_file}")
    flagged = table["warnings"].fillna("").ne("") if "warnings" in table else None
    if flagged is not None and flagged.any():
        print(f"[predict] warning: {int(flagged.sum())} video(s) flagged, see the warnings column: "
              + "; ".join(f"{name}: {text}" for name, text in zip(table.loc[flagged, "filename"], table.loc[flagged, "warnings"])),
              file=sys.stderr)
    return 1 if "error" in table and table["error"].notna().all() else 0


def _gallery(args) -> int:
    from protoef.analysis.explain import push_dataset, save_prototype_gallery
    from protoef.training.runs import RunDir

    run = RunDir(args.run)
    if not run.has_prototypes:
        raise FileNotFoundError(f"{run}: no {run.prototypes_table_file.relative_to(run.path)}; is it a finished "
                                "ProtoEFNet run (with the push)?")
    if not (run.finished and run.checkpoint("final").is_file()):
        print(f"[gallery] warning: {run} is not a finished run (no {run.metrics_file.name} or "
              f"{run.checkpoint('final').relative_to(run.path)}): these are the prototypes of an interrupted end; "
              f"`train --resume --out {run}` finishes it", file=sys.stderr)
    written = save_prototype_gallery(run, push_dataset(run, data=_checked_data(args.data)), gif=not args.no_gif)
    print(f"[gallery] {len(written)} file(s) → {run.prototypes_dir}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="protoef", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    synth = commands.add_parser("synth", help="write a synthetic EchoNet-format data set")
    synth.add_argument("out_dir")
    synth.add_argument("--videos", type=int, default=400)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--workers", type=int, default=None)
    synth.add_argument("--overwrite", action="store_true", help="replace the files of a data set already in OUT_DIR")

    check = commands.add_parser("check-data", help="load every split of a data set and report skipped videos")
    check.add_argument("root")
    check.add_argument("--masks", action="store_true", help="also require usable LV tracings")
    check.add_argument("--fail-on-skip", action="store_true", help="exit 1 if any video would be skipped")

    train = commands.add_parser("train", help="train, push and test a model; writes a run directory")
    train.add_argument("--profile", choices=("demo", "smoke", "paper"),
                       help="default demo; with --resume the run's own profile")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, e.g. model.tau=0.5")
    train.add_argument("--data", help="EchoNet-format root (sets data.root)")
    train.add_argument("--out", help="run directory (default runs/<profile>-<model>-seed<seed>)")
    train.add_argument("--resume", action="store_true", help="continue an interrupted run from its last complete epoch")

    evaluate = commands.add_parser("evaluate", help="metrics of a trained run (or checkpoint) on one split")
    evaluate.add_argument("run", help="run directory or checkpoint file")
    evaluate.add_argument("--split", default="TEST")
    evaluate.add_argument("--data", help="EchoNet-format root, if not the run's own")

    predict = commands.add_parser("predict", help="EF and top prototypes for one AVI or a folder of AVIs")
    predict.add_argument("run", help="run directory or checkpoint file")
    predict.add_argument("videos", help="an .avi file or a folder of them")
    predict.add_argument("--out", default="predictions", help="folder for predictions.csv and explanation PNGs")
    predict.add_argument("--no-figures", action="store_true", help="skip the explanation PNGs")

    gallery = commands.add_parser("gallery", help="draw a run's prototypes: strips, GIFs and gallery.png")
    gallery.add_argument("run", help="run directory")
    gallery.add_argument("--data", help="EchoNet-format root holding the source videos, if not the run's own")
    gallery.add_argument("--no-gif", action="store_true", help="PNG strips only")

    args = parser.parse_args(argv)
    handlers = {"train": _train, "evaluate": _evaluate, "predict": _predict, "check-data": _check_data,
                "gallery": _gallery, "synth": _synth}
    if args.command in handlers:
        try:
            return handlers[args.command](args)
        except (OSError, KeyError, TypeError, ValueError, RuntimeError) as error:
            # Expected failures (missing data or weights, bad checkpoint, bad override) get one
            # clear line; PROTOEF_DEBUG=1 shows the traceback when it is a bug after all.
            if os.environ.get("PROTOEF_DEBUG"):
                raise
            message = error.args[0] if isinstance(error, KeyError) and error.args else error
            print(f"error: {message}  (PROTOEF_DEBUG=1 for the traceback)", file=sys.stderr)
            return 2
    parser.error(f"unknown command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
