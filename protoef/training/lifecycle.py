"""The one place that owns a run: train → best checkpoint → push → head epochs → test → files.

    from protoef.config import resolve
    from protoef.training.lifecycle import fit
    metrics = fit(resolve("demo"), "runs/demo")             # or: python -m protoef train

Read `fit` top to bottom: `_start` (config, data, model, optimiser; a resume picks up the
stored state), `_train` (the epochs, a checkpoint after each), `finish` (the best epoch,
one pass over VAL and TEST kept as pooled features (`loops.EncodedSet`), the β sharpening
(when on), its metrics before the push, the push, the head refit and its
own sharpening (when on), the metrics after, every result file; ``metrics.json`` last). The
run directory's layout is `protoef.training.runs`'.

Determinism: every epoch's randomness (sampler, clip starts, rotations, worker seeds) is
derived from (config.seed, epoch), so a run resumed after a kill at any point replays the
remaining epochs exactly as an uninterrupted run would (on the CPU; CUDA kernels may not
be bit-reproducible). Multi-GPU: launch with ``torchrun --nproc_per_node N -m protoef
train ...``; rank 0 evaluates, logs and writes files.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import pathlib
import time

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from ..config import Config, from_dict, set_key
from ..data import compute_mean_std, oversampling_sampler, read_file_list, videos_per_batch
from ..diagnostics import far_pair_angle_degrees, result_warnings, top_prototypes
from ..model import ProtoEFNet, unwrap
from . import runs
from .build import (RunContext, build_loss, build_model, build_optimizer, data_root, make_loader,
                    training_datasets)
from .calibration import push_set_predictions, refit_head, sharpen_on_val
from .loops import EPOCH_DIAGNOSTICS, encode_set, evaluate, train_epoch
from .push import PushResult, push_prototypes, similarity_reference
from .warmstart import CORPUS_SEED, WARM_START, save_backbone_weights, warm_start_config, warm_start_dir

__all__ = ["fit", "finish", "ensure_warm_start"]


@dataclasses.dataclass
class _Run:
    """What the three steps of `fit` hand each other."""
    config: Config
    out: runs.RunDir
    context: RunContext
    sets: dict
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau
    initial: dict  # measured on the untrained model, kept beside the trained values
    seconds: dict = dataclasses.field(default_factory=dict)  # wall clock per stage (timings.json)
    best: float = -math.inf
    history: list = dataclasses.field(default_factory=list)
    start_epoch: int = 0
    # `optim.ema_decay` > 0: the weight average (validated and checkpointed as "best"), else None
    average: torch.optim.swa_utils.AveragedModel | None = None

    @property
    def delta(self) -> float | None:  # the label window of the diagnostics; None for the black box
        return self.config.loss.delta if isinstance(self.model, ProtoEFNet) else None


def _one_writer(fit_run):
    """`fit` after `Config.validate` and under the run directory's lock (`runs.run_lock`):
    two processes writing one run would mix their files. torchrun ranks other than 0
    write nothing and take no lock."""
    @functools.wraps(fit_run)
    def locked(config: Config, out_dir, *, resume: bool = False) -> dict:
        config.validate()
        if int(os.environ.get("RANK", "0")) != 0:
            return fit_run(config, out_dir, resume=resume)
        with runs.run_lock(out_dir):
            return fit_run(config, out_dir, resume=resume)
    return locked


@_one_writer
def fit(config: Config, out_dir, *, resume: bool = False) -> dict:
    """Train, push and evaluate one model; everything lands in ``out_dir``. Returns metrics.json."""
    out = runs.RunDir(out_dir)
    if resume and out.finished:
        _resumed_config(out, config)  # a finished run of another config is no answer
        try:  # finished only if its final checkpoint reads back
            out.load_checkpoint("final")
            return out.read_metrics()  # finished already
        except runs.CheckpointError as error:
            print(f"[train] {error}; re-running the end of the run (best checkpoint → push → test) to rewrite it")
            out.metrics_file.unlink()  # no longer a finished run until the end is re-run
    if not resume and out.resumable:
        raise FileExistsError(f"{out}: holds a run already; pass resume=True (--resume) or choose a new directory")
    started = time.perf_counter()
    run = _start(config, out, resume=resume)
    run.seconds["start"] = time.perf_counter() - started - run.seconds.get("warm_start", 0.0)
    _train(run)
    if not run.context.main:
        return {}
    epochs = pd.DataFrame(run.history)
    for stage in ("train", "val", "diagnostics"):  # every epoch's, a resumed run's earlier ones included
        column = f"seconds_{stage}"
        run.seconds[f"epochs_{stage}"] = float(epochs[column].sum()) if column in epochs else 0.0
    return finish(run.model, run.config, run.sets, run.context, run.out, initial=run.initial, seconds=run.seconds)


# ----------------------------------------------------------------------------- start
def _start(config: Config, out: runs.RunDir, *, resume: bool) -> _Run:
    """Config (the stored one for a resume), data, model, optimiser and scheduler."""
    context = RunContext(config)
    state = out.load_checkpoint("last") if resume and out.resumable else None
    if state is not None:
        config = _resumed_config(out, config, checkpoint="last")  # the run's own config, or a clear refusal
    elif resume:
        print(f"[train] {out}: no complete epoch to resume from; starting the run from the beginning")
    torch.manual_seed(config.seed)
    np.random.seed(config.seed % 2**32)
    torch.use_deterministic_algorithms(not context.cuda, warn_only=True)
    if context.distributed and not context.main:
        dist.barrier()  # rank 0 generates the synthetic set (if needed) alone
    root = data_root(config)
    if context.distributed and context.main:
        dist.barrier()
    if config.data.mean is None or config.data.std is None:
        config.data.mean, config.data.std = compute_mean_std(root, resize=config.data.resize)
    sets = training_datasets(config, root)
    # Derived from the data, not stored in the config: the same config gives the same grid again.
    label_range = ((float(sets["train"].efs.min()), float(sets["train"].efs.max())) if config.model.labels_from_train
                   else (config.model.label_min, config.model.label_max))
    if context.main:
        out.write_config(config.to_json() + "\n")
        environment = runs.environment(context.device)
        out.write_environment(environment | {
            "data_root": str(root), "training_videos": sets["train"].video_summary()
            | sets["train"].intensity_summary()})  # what predict compares with
        for problem in environment["numerics"]["problems"]:
            print(f"[train] warning: the pinned numerical environment did not take effect ({problem}): this run's "
                  "numbers are this machine's, not the README's (protoef.numerics)")

    # The initial weights depend on the seed alone, not on how much randomness the data
    # code (e.g. `feature_size`) happened to draw before.
    warm_started = time.perf_counter()
    weights = ensure_warm_start(config) if config.model.weights == WARM_START else None
    seconds = {"warm_start": time.perf_counter() - warm_started}  # pretraining, or finding it cached
    torch.manual_seed(config.seed)
    if context.main and config.model.weights is None and config.model.backbone == "r2plus1d_18":
        print("[train] model.weights=None: the R(2+1)D-18 backbone starts from random initialisation, "
              "not from the Kinetics-400 weights of the paper's recipe")
    model = build_model(config, weights=weights, label_range=label_range).to(context.device)
    if context.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    optimizer = build_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=config.optim.plateau_factor, patience=config.optim.plateau_patience,
        min_lr=config.optim.min_lr, cooldown=config.optim.plateau_cooldown)
    # PAS's quantity before any training (the init is seeded, so a resumed run recomputes it).
    initial = {"far_pair_angle": far_pair_angle_degrees(model.prototypes, model.prototype_labels, config.loss.delta),
               "label_range": list(label_range)} if isinstance(model, ProtoEFNet) else {}
    run = _Run(config, out, context, sets, model, optimizer, scheduler, initial, seconds,
               average=_weight_average(model, config.optim.ema_decay))
    if state is not None:
        model.load_state_dict(state["model"])
        if run.average is not None:
            run.average.load_state_dict(state["average"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        run.best, run.history, run.start_epoch = state["best_val_r2"], state["history"], state["epoch"] + 1
        print(f"[train] resuming {out} after epoch {state['epoch'] + 1}/{config.optim.epochs}")
    return run


def _weight_average(model: torch.nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel | None:
    """The exponential moving average of `model`'s weights and BatchNorm statistics
    (`optim.ema_decay`; None when 0). Its first update copies the weights."""
    if not decay:
        return None
    return torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay), use_buffers=True)


def _resumed_config(out: runs.RunDir, requested: Config, *, checkpoint: str | None = None) -> Config:
    """The run's own config for a resume (the one in `checkpoint`, else config.json). A
    requested value that differs from it is refused (`runs.RunDir.require_config`, naming
    the keys), except where and how it runs (`runs.is_runtime_difference`), which is
    applied and reported."""
    stored, differences = out.require_config(
        requested.to_dict(), checkpoint=checkpoint, refusal="cannot resume with a different config",
        remedy="A resumed run keeps its own config; drop these overrides to finish it as it was, or train a new "
               "run in another directory")
    config = from_dict(stored)
    for key, (old, new) in differences.items():
        set_key(config, key, new)
        print(f"[train] resume: {key} = {new!r} (the run had {old!r}; it changes how the run executes, not what it learns)")
    return config


def ensure_warm_start(config: Config) -> pathlib.Path:
    """The warm-start backbone file of `config` (`protoef.training.warmstart`), pretrained
    once by an ordinary `fit` of the black box on a disjoint synthetic corpus."""
    folder = warm_start_dir(config)
    path = folder / "backbone.pt"
    if path.is_file():
        return path
    pretrain = warm_start_config(config)
    shared = set(read_file_list(data_root(pretrain))["filename"]) & set(read_file_list(data_root(config))["filename"])
    if shared:
        raise ValueError(f"the warm-start corpus shares {len(shared)} videos with the data set (e.g. {sorted(shared)[0]}); "
                         f"it must be disjoint: change data.synthetic_seed away from {CORPUS_SEED}")
    print(f"[train] warm start: pretraining the {config.model.backbone} backbone once on a disjoint synthetic corpus "
          f"→ {folder} (reused afterwards)")
    run = folder / "run"
    fit(pretrain, run, resume=runs.RunDir(run).resumable)
    return save_backbone_weights(run, path)


# ----------------------------------------------------------------------------- train
def _epoch_seed(config: Config, epoch: int) -> int:
    return config.seed * 100_003 + epoch  # distinct, reproducible stream per epoch


def _train(run: _Run) -> None:
    """The epochs: train, validate, step the scheduler on VAL R², checkpoint (best, last)."""
    config, context, sets = run.config, run.context, run.sets
    trained = run.model
    if context.distributed:
        trained = torch.nn.parallel.DistributedDataParallel(run.model, device_ids=[context.device.index] if context.cuda else None)
    if config.compile and context.cuda:
        trained = torch.compile(trained)
    loss_fn = build_loss(config)
    val_loader = make_loader(sets["val"], config)
    tracker = None
    if config.tensorboard and context.main:
        from .tracking import TensorBoardLog

        tracker = TensorBoardLog(run.out.path)
    for epoch in range(run.start_epoch, config.optim.epochs):
        seed = _epoch_seed(config, epoch)
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        if config.data.oversample:
            sampler = oversampling_sampler(sets["train"].efs, threshold=config.data.oversample_threshold, generator=generator)
        else:
            sampler = torch.utils.data.RandomSampler(sets["train"], generator=generator)
        if context.distributed:  # each rank takes every world-th draw of the same sequence
            sampler = list(sampler)[context.rank :: context.world]
        started = time.perf_counter()
        losses = train_epoch(trained, make_loader(sets["train"], config, shuffle_seed=seed, sampler=sampler), loss_fn,
                             run.optimizer, context, desc=f"epoch {epoch + 1}/{config.optim.epochs}",
                             diagnostic_batches=config.optim.diagnostic_batches,
                             after_step=None if run.average is None else lambda: run.average.update_parameters(run.model))
        if not context.main:
            dist.barrier()
            continue
        trained_at = time.perf_counter()
        validated = run.model if run.average is None else run.average.module  # what "best" keeps
        val_metrics, _ = evaluate(validated, val_loader, context, desc="validate", delta=run.delta)
        seconds = {"seconds_train": trained_at - started, "seconds_val": time.perf_counter() - trained_at,
                   "seconds_diagnostics": losses.pop("seconds_diagnostics", 0.0)}  # part of seconds_train
        run.scheduler.step(val_metrics["r2"] if np.isfinite(val_metrics["r2"]) else -math.inf)
        row = {"epoch": epoch + 1, **{f"train_{k}": v for k, v in losses.items()},
               **{f"val_{k}": val_metrics[k] for k in ("mae", "rmse", "r2", "f1_40", *EPOCH_DIAGNOSTICS) if k in val_metrics},
               **{f"lr_{g.get('name', i)}": g["lr"] for i, g in enumerate(run.optimizer.param_groups)},
               **seconds}  # wall clock: the only columns a resumed run does not reproduce
        run.history.append(row)
        if tracker is not None:
            tracker.log(row, step=epoch + 1)
        tqdm.write(f"[train] epoch {epoch + 1}/{config.optim.epochs}  loss {losses['loss']:.4f}  "
                   f"val MAE {val_metrics['mae']:.2f}  RMSE {val_metrics['rmse']:.2f}  R² {val_metrics['r2']:.3f}")
        improved = val_metrics["r2"] > run.best or run.best == -math.inf
        run.best = max(run.best, val_metrics["r2"]) if np.isfinite(val_metrics["r2"]) else run.best
        checkpoint = {"model": unwrap(run.model).state_dict(), "optimizer": run.optimizer.state_dict(),
                      "scheduler": run.scheduler.state_dict(), "epoch": epoch, "best_val_r2": run.best,
                      "history": run.history, "config": config.to_dict(), "kind": config.model.kind}
        if run.average is not None:  # last.pt resumes both; best.pt holds the validated average
            checkpoint["average"] = run.average.state_dict()
        if improved:
            run.out.save_checkpoint("best", checkpoint if run.average is None
                                    else checkpoint | {"model": run.average.module.state_dict()})
        run.out.write_history(pd.DataFrame(run.history))
        run.out.save_checkpoint("last", checkpoint)  # last: it marks the epoch as complete
        if context.distributed:
            dist.barrier()
    if tracker is not None:
        tracker.close()


# ----------------------------------------------------------------------------- finish
def finish(model, config: Config, sets: dict, context: RunContext, out, *, initial: dict | None = None,
           seconds: dict | None = None) -> dict:
    """Best checkpoint (``out/checkpoints/best.pt``) → (β sharpening) → metrics before the
    push → push → (head refit from the trained θ → β sharpening again) → metrics after →
    files, ``metrics.json`` last. `sets` are `build.training_datasets`; `initial` holds
    values of the untrained model (the far-pair angle), kept beside the trained ones so a
    reader sees whether PAS moved anything.
    ``timings.json`` gets the wall clock of every stage (`seconds`: those before this one),
    apart from metrics.json so that the numbers stay comparable bit for bit."""
    out = runs.RunDir(out)
    seconds = dict(seconds or {})
    clock = [time.perf_counter()]

    def lap(stage: str) -> None:
        now = time.perf_counter()
        seconds[stage] = now - clock[0]
        clock[0] = now
    delta = config.loss.delta if isinstance(model, ProtoEFNet) else None
    state = out.load_checkpoint("best", map_location=context.device)
    model.load_state_dict(state["model"])
    best_epoch = state["epoch"] + 1
    eval_batch = videos_per_batch(config.data.batch_size, config.data.test_clips)
    val_loader = make_loader(sets["val"], config)
    test_loader = make_loader(sets["test"], config, batch_size=eval_batch)
    metrics: dict = {"best_epoch": best_epoch, "val": {}, "test": {}}
    if initial:
        metrics["initial"] = initial
    stage = "pre_push" if isinstance(model, ProtoEFNet) and config.optim.push else "final"
    sharpening = isinstance(model, ProtoEFNet) and config.optim.beta_sharpening_max > 1
    trained_theta = model.theta.detach().clone() if isinstance(model, ProtoEFNet) else None
    lap("load_best")
    val_data, test_data = val_loader, test_loader
    if isinstance(model, ProtoEFNet):
        # From here on only the prototypes and θ change, and neither enters the pooled
        # features: one pass per split, every evaluation below replays the head on it
        # (bit-identical to new passes; `loops.EncodedSet`).
        val_data = encode_set(model, val_loader, context, desc="VAL features")
        lap("val_features")
        test_data = encode_set(model, test_loader, context, desc="TEST features")
        lap("test_features")
    if sharpening:
        # Before the metrics before the push, so that they are the sharpened head's.
        metrics["beta_sharpening"] = sharpen_on_val(model, val_data, context, largest=config.optim.beta_sharpening_max,
                                                    tolerance=config.optim.beta_sharpening_tolerance)
        lap("beta_sharpening")
    metrics["val"][stage], _ = evaluate(model, val_data, context, desc="validate", delta=delta)
    lap(f"val_{stage}")
    metrics["test"][stage], predictions = evaluate(model, test_data, context, desc="test", delta=delta)
    lap(f"test_{stage}")
    if stage == "pre_push":
        result = push_prototypes(model, make_loader(sets["push"], config), delta=config.loss.delta,
                                 device=context.device, autocast=context.autocast, unique=config.optim.push_unique,
                                 keep_features=True)
        lap("push")
        model.set_prototypes(result.prototypes.to(context.device), result.labels.to(context.device))
        metrics["push"] = {"fallbacks": int(result.table["fallback"].sum()),
                           "shared": int(result.table["shared"].sum()),
                           "distinct_sources": int(result.table["source_filename"].nunique()),
                           "mean_similarity": float(result.table["similarity"].mean())}
        # The push set's similarities to the final prototypes, from the push's own pass: the
        # head refit and the TRAIN similarity reference (what predict flags a video below)
        # read the same similarities, which θ does not enter.
        train = push_set_predictions(model, result.encoded, context)
        metrics["train_similarity"] = similarity_reference(np.asarray(train["similarities"]).max(axis=1))
        lap("train_similarity")
        if config.optim.head_epochs_after_push:
            # θ refitted to the pushed prototypes, from the trained head (not the sharpened
            # one), then sharpened again on VAL: the head after the push is another head.
            with torch.no_grad():
                model.theta.copy_(trained_theta)
            metrics["head_refit"] = refit_head(
                model, train, build_loss(config), epochs=config.optim.head_epochs_after_push, lr=config.optim.lr_head,
                batch_size=config.data.batch_size, seed=config.seed + 10_000)
            lap("head_epochs")
            if sharpening:
                metrics["beta_sharpening_post_push"] = sharpen_on_val(
                    model, val_data, context, largest=config.optim.beta_sharpening_max,
                    tolerance=config.optim.beta_sharpening_tolerance)
                lap("beta_sharpening_post_push")
        metrics["val"]["post_push"], _ = evaluate(model, val_data, context, desc="validate", delta=delta)
        lap("val_post_push")
        metrics["test"]["post_push"], predictions = evaluate(model, test_data, context, desc="test", delta=delta)
        lap("test_post_push")
        _save_prototypes(out, result)
    # The yardstick every MAE is read against: always predicting the training-mean EF.
    train_mean = float(np.mean(sets["train"].efs))
    metrics["trivial"] = {"train_mean_ef": train_mean, "test_mae": float(np.abs(np.asarray(predictions["ef"]) - train_mean).mean())}
    metrics["warnings"] = result_warnings(predictions)  # a dead model is said, not passed
    for note in metrics["warnings"]:
        print(f"[train] warning: {note}")
    _save_predictions(out, model, predictions)
    out.save_checkpoint("final", {"model": model.state_dict(), "config": config.to_dict(), "kind": config.model.kind,
                                  "epoch": best_epoch - 1})
    headline = metrics["test"].get("post_push", metrics["test"].get("final"))
    print(f"[train] test ({'after push' if stage == 'pre_push' else 'final'}): MAE {headline['mae']:.2f}  "
          f"RMSE {headline['rmse']:.2f}  R² {headline['r2']:.3f}  F1(<40) {headline['f1_40']:.3f}")
    lap("files")
    out.write_timings({"seconds": seconds, "total_seconds": sum(  # diagnostics: within epochs_train
        value for stage, value in seconds.items() if stage != "epochs_diagnostics")})
    out.write_metrics(metrics)  # written last: its presence marks a finished run
    return metrics


def _save_prototypes(out: runs.RunDir, result: PushResult) -> None:
    """The prototype artefacts as data; the pictures are drawn from them later (`protoef.analysis.explain`)."""
    out.write_prototypes(result.table, {
        row.prototype: {"occurrence_map": occurrence_map, "feature": result.prototypes[row.prototype].numpy(),
                        "ef_label": row.ef_label, "source_filename": row.source_filename, "clip_start": row.clip_start}
        for row, occurrence_map in zip(result.table.itertuples(), result.occurrence_maps)})


def _save_predictions(out: runs.RunDir, model, predictions: dict) -> None:
    """predictions.csv (per test video: EF, prediction, top-3 prototypes) and, for
    ProtoEFNet, test_attention.npz (β and s over every prototype, for the diagnostics figures)."""
    table = pd.DataFrame({"filename": predictions["filename"], "ef": predictions["ef"], "prediction": predictions["prediction"]})
    if "weights" in predictions:
        labels = model.prototype_labels.cpu().numpy()
        table = table.assign(**top_prototypes(predictions["weights"], labels))
        out.write_attention(filename=np.array(predictions["filename"]), ef=predictions["ef"],
                            weights=predictions["weights"], similarities=predictions["similarities"], prototype_labels=labels)
    out.write_predictions(table)
