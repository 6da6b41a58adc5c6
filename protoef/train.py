"""Training engine: fit, evaluate, push; one run directory per call (layout: protoef.runs).

    from protoef.config import resolve
    from protoef.train import fit
    metrics = fit(resolve("demo"), "runs/demo")             # or: python -m protoef train

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
import warnings

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from . import runs
from .config import Config, from_dict
from .data import DataError, EchoNet, collate_clips, compute_mean_std, oversampling_sampler, read_file_list
from .data.synthetic import SPLIT_FRACTIONS
from .diagnostics import far_pair_angle_degrees, interpretability_summary, loss_gradient_norms
from .losses import ProtoEFLoss, mse_loss
from .metrics import diversity, regression_metrics, sparsity
from .model import BlackBoxRegressor, ProtoEFNet, build_backbone
from .warmstart import CORPUS_SEED, WARM_START, save_backbone_weights, warm_start_config, warm_start_dir

__all__ = ["fit", "build_model", "ensure_warm_start", "build_loss", "split_dataset", "load_run_model", "load_run", "data_root",
           "synthetic_root", "predict", "resolve_device", "feature_size"]


# ----------------------------------------------------------------------------- set-up
def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available; use device=cpu or auto")
    return device


def data_root(config: Config) -> pathlib.Path:
    """The EchoNet-format root of a config; generates the synthetic set on first use."""
    if config.data.root:
        root = pathlib.Path(config.data.root).expanduser()
        if not (root / "FileList.csv").is_file():
            raise FileNotFoundError(
                f"{root}: no FileList.csv. Point data.root (or --data / ECHONET_DIR) at the EchoNet-Dynamic "
                "folder holding FileList.csv, VolumeTracings.csv and Videos/ (see README, 'Data')."
            )
        return root
    root = synthetic_root(config)
    if not (root / "FileList.csv").is_file():
        from .data import synthetic

        synthetic.generate(root, videos=config.data.synthetic_videos, seed=config.data.synthetic_seed,
                           val_fraction=config.data.synthetic_val_fraction,
                           test_fraction=config.data.synthetic_test_fraction)
    return root


def synthetic_root(config: Config) -> pathlib.Path:
    """Where the config's synthetic data set lives (whether or not it was generated yet)."""
    d = config.data
    name = f"synthetic-{d.synthetic_videos}-seed{d.synthetic_seed}"
    if (d.synthetic_val_fraction, d.synthetic_test_fraction) != (SPLIT_FRACTIONS["VAL"], SPLIT_FRACTIONS["TEST"]):
        name += f"-val{d.synthetic_val_fraction:g}-test{d.synthetic_test_fraction:g}"
    return pathlib.Path(d.cache_dir) / name


def build_model(config: Config, *, weights=None, label_range=None) -> torch.nn.Module:
    """The config's model; `weights` (a resolved file) replaces ``model.weights`` and
    `label_range` the initial ``(label_min, label_max)`` when given."""
    m = config.model
    label_range = label_range or (m.label_min, m.label_max)
    weights = weights if weights is not None else m.weights
    if weights == WARM_START:
        raise ValueError("model.weights='synthetic-warmstart' must be resolved first: train.ensure_warm_start(config)")
    if m.kind == "blackbox":
        return BlackBoxRegressor(backbone=m.backbone, weights=weights)
    if m.kind != "protoefnet":
        raise ValueError(f"model.kind must be 'protoefnet' or 'blackbox', got {m.kind!r}")
    return ProtoEFNet(num_prototypes=m.num_prototypes, prototype_dim=m.prototype_dim, tau=m.tau,
                      backbone=m.backbone, weights=weights, label_range=label_range)


def ensure_warm_start(config: Config) -> pathlib.Path:
    """The warm-start backbone file of `config` (`protoef.warmstart`), pretrained on first use."""
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
    fit(pretrain, run, resume=(run / "checkpoints" / "last.pt").is_file())
    return save_backbone_weights(run, path)


def build_loss(config: Config) -> ProtoEFLoss:
    """ProtoEFLoss with the config's weights, Δl (delta), k and p."""
    renamed = {"cluster_k": "k"}  # every other LossConfig field is a ProtoEFLoss argument of the same name
    return ProtoEFLoss(**{renamed.get(key, key): value for key, value in dataclasses.asdict(config.loss).items()})


def feature_size(config: Config) -> tuple[int, int]:
    """(H', W') of the backbone output for the configured clips (for the background mask)."""
    backbone = build_backbone(config.model.backbone).eval()
    with torch.no_grad():
        shape = backbone(torch.zeros(1, 3, config.data.clip_length, config.data.resize, config.data.resize)).shape
    return tuple(shape[-2:])


def split_dataset(config: Config, split, *, clips, root=None, **options) -> EchoNet:
    """One EchoNet split with the config's clip length, period, size, normalisation and
    decoded-video cache; ``options`` go to `EchoNet` (masks, augmentation, ...)."""
    d = config.data
    return EchoNet(root or data_root(config), split, clip_length=d.clip_length, period=d.period, clips=clips,
                   resize=d.resize, mean=d.mean, std=d.std,
                   cache_dir=pathlib.Path(d.cache_dir) / "videos" if d.decoded_cache else None, **options)


def _datasets(config: Config, root: pathlib.Path) -> dict[str, EchoNet]:
    d = config.data
    masks = config.model.kind == "protoefnet"
    sets = {
        "train": split_dataset(config, "TRAIN", clips="random", root=root, augment=d.augment,
                               rotation_degrees=d.rotation_degrees, with_masks=masks,
                               feature_size=feature_size(config) if masks else (1, 1),
                               background_dilation=d.background_dilation),
        "val": split_dataset(config, "VAL", clips="deterministic", root=root),
        "test": split_dataset(config, "TEST", clips=d.test_clips, root=root),
        "push": split_dataset(config, "TRAIN", clips="deterministic", root=root),
    }
    if d.limit_videos:
        for dataset in sets.values():
            dataset.records = dataset.records[: d.limit_videos]
    for name, split in (("train", "TRAIN"), ("val", "VAL"), ("test", "TEST")):
        if len(sets[name]) == 0:  # fail now, not with a KeyError after a whole epoch
            skipped = f"; {len(sets[name].skipped)} skipped, e.g. {sets[name].skipped[0]}" if sets[name].skipped else ""
            raise DataError(f"{root / 'FileList.csv'}: no usable {split} video{skipped}. Training needs TRAIN, VAL and "
                            f"TEST videos (FileList.csv's Split column); `python -m protoef check-data {root}` lists them")
    return sets


def _loader(dataset, config: Config, *, shuffle_seed: int | None = None, sampler=None, batch_size=None) -> DataLoader:
    generator = torch.Generator().manual_seed(shuffle_seed if shuffle_seed is not None else config.seed)
    multi = dataset.clips not in ("random", "deterministic")
    return DataLoader(
        dataset, batch_size=batch_size or config.data.batch_size, sampler=sampler,
        shuffle=sampler is None and shuffle_seed is not None, generator=generator,
        num_workers=config.data.num_workers, collate_fn=collate_clips if multi else None,
        persistent_workers=False, pin_memory=torch.cuda.is_available(),
        drop_last=False,
    )


def _optimizer(model, config: Config) -> torch.optim.Optimizer:
    o = config.optim
    if isinstance(model, BlackBoxRegressor):
        return torch.optim.Adam(model.parameters(), lr=o.lr_backbone, weight_decay=o.weight_decay)
    rates = {"backbone": o.lr_backbone, "feature_module": o.lr_features, "occurrence_module": o.lr_occurrence,
             "prototypes": o.lr_prototypes, "head": o.lr_head}
    groups = model.parameter_groups()
    for group in groups:
        group["lr"] = rates[group["name"]]
        group["weight_decay"] = o.weight_decay if group["name"] not in ("prototypes", "head") else 0.0
    return torch.optim.Adam(groups)


# Interpretability diagnostics logged per epoch on VAL (cheap: they reuse the validation pass).
EPOCH_DIAGNOSTICS = ("similarity_gap", "top1_beta", "beta_entropy", "sparsity", "top1_label_median_error",
                     "top1_label_within_10", "far_pair_angle")


def _epoch_seed(config: Config, epoch: int) -> int:
    return config.seed * 100_003 + epoch  # distinct, reproducible stream per epoch


# ----------------------------------------------------------------------------- loops
class _Context:
    """Device, precision and distributed settings of one run. ``cpu_autocast``: honour
    ``config.amp`` on the CPU too (bf16 autocast exists there), so tests can run the
    mixed-precision path without a GPU; runs leave it off."""

    def __init__(self, config: Config, *, cpu_autocast: bool = False):
        self.distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        if self.distributed and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        device = resolve_device(config.device)
        if device.type == "cuda" and self.distributed:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        self.device = device
        self.cuda = device.type == "cuda"
        self.amp = (self.cuda or cpu_autocast) and config.amp
        self.channels_last = self.cuda and config.channels_last
        self.main = self.rank == 0

    def autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def video(self, video: torch.Tensor) -> torch.Tensor:
        video = video.to(self.device, non_blocking=True)
        return video.contiguous(memory_format=torch.channels_last_3d) if self.channels_last else video


RunContext = _Context  # public names, for code outside this module (tests, benchmarks)
make_loader = _loader


def train_epoch(model, loader, loss_fn, optimizer, context: _Context, *, desc: str,
                diagnostic_batches: int = 0, train_mode: bool = True) -> dict[str, float]:
    """One pass over `loader`; returns the sample-weighted mean of every logged term.

    On the first `diagnostic_batches` batches (ProtoEFNet with a `ProtoEFLoss`), each weighted
    term's gradient norm on the prototypes and on the shared backbone features is measured
    too (`diagnostics.loss_gradient_norms`; averaged over those batches as ``grad_*``).
    ``train_mode=False`` keeps the model in eval mode (BatchNorm statistics frozen), for
    head-only epochs after the push, where the prototypes must stay their clips' features.
    """
    model.train(train_mode)
    core = model.module if hasattr(model, "module") else model
    sums: dict[str, float] = {}
    gradient_sums: dict[str, float] = {}
    count = diagnosed = 0
    bar = tqdm(loader, desc=desc, leave=False, disable=not context.main, dynamic_ncols=True)
    for batch in bar:
        video = context.video(batch["video"])
        target = batch["ef"].to(context.device, torch.float32)
        diagnose = diagnosed < diagnostic_batches and isinstance(loss_fn, ProtoEFLoss) and isinstance(core, ProtoEFNet)
        shared = []
        hook = core.backbone.register_forward_hook(lambda _m, _i, out: shared.append(out)) if diagnose else None
        with context.autocast():
            output = model(video)
        if hook is not None:
            hook.remove()
        if isinstance(output, torch.Tensor):  # the black box
            total, terms = mse_loss(output.float(), target), {}
        else:
            background = batch.get("background")  # (N, H', W') → broadcast over P and T'
            background = background.to(context.device)[:, None, None] if background is not None else None
            output = output._replace(**{k: getattr(output, k).float() for k in ("ef", "similarities", "occurrence_maps", "weights")})
            if diagnose and shared:
                attached = loss_fn.terms(output, target, core, background=background, video=video)
                norms = loss_gradient_norms(attached, loss_fn.weights, prototypes=core.prototypes, shared_features=shared[0])
                for name, value in norms.items():
                    gradient_sums[name] = gradient_sums.get(name, 0.0) + value
                diagnosed += 1
                total = loss_fn.combine(attached, output.ef)
                terms = {name: value.detach() for name, value in attached.items()}
            else:
                total, terms = loss_fn(output, target, core, background=background, video=video)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        size = len(target)
        count += size
        for name, value in {"loss": total.detach(), **terms}.items():
            sums[name] = sums.get(name, 0.0) + float(value) * size
        bar.set_postfix(loss=f"{sums['loss'] / count:.3f}")
    means = {name: value / max(count, 1) for name, value in sums.items()}
    return means | {name: value / diagnosed for name, value in gradient_sums.items()}


@torch.no_grad()
def predict(model, loader, context: _Context | None = None, *, desc: str = "predict") -> dict:
    """Per-video predictions; multi-clip videos are averaged over their clips (EF and β).

    Returns filename, ef (true), prediction and, for ProtoEFNet, weights β and similarities (N, P).
    """
    context = context or _Context(Config(device="cpu"))
    core = model.module if hasattr(model, "module") else model
    core.eval()
    rows: dict[str, list] = {"filename": [], "ef": [], "prediction": [], "weights": [], "similarities": []}
    for batch in tqdm(loader, desc=desc, leave=False, disable=not context.main, dynamic_ncols=True):
        with context.autocast():
            output = core(context.video(batch["video"]))
        counts = batch.get("num_clips", torch.ones(len(batch["ef"]), dtype=torch.long)).tolist()
        if isinstance(output, torch.Tensor):
            per_clip = {"prediction": output.float()}
        else:
            per_clip = {"prediction": output.ef.float(), "weights": output.weights.float(), "similarities": output.similarities.float()}
        for key, values in per_clip.items():
            rows[key] += [chunk.mean(0).cpu().numpy() for chunk in values.split(counts)]
        rows["filename"] += list(batch["filename"])
        rows["ef"] += batch["ef"].tolist()
    result = {key: np.array(values) for key, values in rows.items() if values}
    result["filename"] = list(rows["filename"])
    return result


def evaluate(model, loader, context: _Context | None = None, *, desc: str = "evaluate",
             delta: float | None = None) -> tuple[dict, dict]:
    """(metrics, predictions) on one loader: regression metrics plus, for ProtoEFNet,
    sparsity, diversity and (given the label window `delta`) the interpretability
    diagnostics of `protoef.diagnostics` for the model's current prototypes and labels."""
    predictions = predict(model, loader, context, desc=desc)
    metrics = regression_metrics(predictions["ef"], predictions["prediction"])
    if "weights" in predictions:
        metrics["sparsity"] = float(sparsity(predictions["weights"]).mean())
        metrics["diversity"] = int(diversity(predictions["weights"])[1])
        if delta is not None:
            core = model.module if hasattr(model, "module") else model
            labels = core.prototype_labels.detach().cpu()
            metrics |= interpretability_summary(predictions, labels, delta)
            metrics["far_pair_angle"] = far_pair_angle_degrees(core.prototypes, labels, delta)
    return metrics, predictions


# ----------------------------------------------------------------------------- fit
def _checkpoint(model, optimizer, scheduler, config, epoch, best, history) -> dict:
    core = model.module if hasattr(model, "module") else model
    core = getattr(core, "_orig_mod", core)  # unwrap torch.compile
    return {"model": core.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "epoch": epoch, "best_val_r2": best, "history": history, "config": config.to_dict(), "kind": config.model.kind}


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


def _resumed_config(out: pathlib.Path, requested: Config, stored: dict) -> Config:
    """The run's own config for a resume. A requested value that differs from it is refused
    (naming the keys), except where and how it runs (`runs.is_runtime_difference`), which
    is applied and reported."""
    differences = runs.config_differences(stored, requested.to_dict(), runtime=True)
    refused = {key: pair for key, pair in differences.items() if not runs.is_runtime_difference(key, *pair)}
    if refused:
        listed = ", ".join(f"{key} (run: {old!r}, requested: {new!r})" for key, (old, new) in refused.items())
        raise ValueError(f"{out}: cannot resume with a different config: {listed}. A resumed run keeps its own "
                         "config; drop these overrides to finish it as it was, or train a new run in another directory")
    config = from_dict(stored)
    for key, (old, new) in differences.items():
        section, _, name = key.rpartition(".")
        setattr(getattr(config, section) if section else config, name, new)
        print(f"[train] resume: {key} = {new!r} (the run had {old!r}; it changes how the run executes, not what it learns)")
    return config


@_one_writer
def fit(config: Config, out_dir, *, resume: bool = False) -> dict:
    """Train, push and evaluate one model; everything lands in ``out_dir``. Returns metrics.json."""
    out = pathlib.Path(out_dir)
    context = _Context(config)
    last_path, best_path = out / "checkpoints" / "last.pt", out / "checkpoints" / "best.pt"
    if resume and (out / "metrics.json").is_file():
        _resumed_config(out, config, runs.read_config(out))  # a finished run of another config is no answer
        return pd.read_json(out / "metrics.json", typ="series").to_dict()  # finished already
    if not resume and last_path.exists():
        raise FileExistsError(f"{out}: holds a run already; pass resume=True (--resume) or choose a new directory")
    state = runs.load_checkpoint(last_path) if resume and last_path.exists() else None
    if state is not None:
        config = _resumed_config(out, config, state["config"])  # the run's own config, or a clear refusal
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
    sets = _datasets(config, root)
    # Derived from the data, not stored in the config: the same config gives the same grid again.
    label_range = ((float(sets["train"].efs.min()), float(sets["train"].efs.max())) if config.model.labels_from_train
                   else (config.model.label_min, config.model.label_max))
    if context.main:
        runs.atomic_write_text(out / "config.json", config.to_json() + "\n")
        runs.write_json(out / "environment.json", runs.environment(context.device) | {
            "data_root": str(root), "training_videos": sets["train"].video_summary()})  # what predict compares with

    # The initial weights depend on the seed alone, not on how much randomness the data
    # code (e.g. `feature_size`) happened to draw before.
    weights = ensure_warm_start(config) if config.model.weights == WARM_START else None
    torch.manual_seed(config.seed)
    if context.main and config.model.weights is None and config.model.backbone == "r2plus1d_18":
        print("[train] model.weights=None: the R(2+1)D-18 backbone starts from random initialisation, "
              "not from the Kinetics-400 weights of the paper's recipe")
    model = build_model(config, weights=weights, label_range=label_range).to(context.device)
    if context.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    optimizer = _optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=config.optim.plateau_factor, patience=config.optim.plateau_patience,
        min_lr=config.optim.min_lr, cooldown=config.optim.plateau_cooldown)
    best, history, start = -math.inf, [], 0
    protoefnet = isinstance(model, ProtoEFNet)
    delta = config.loss.delta if protoefnet else None
    # PAS's quantity before any training (the init is seeded, so a resumed run recomputes it).
    initial = {"far_pair_angle": far_pair_angle_degrees(model.prototypes, model.prototype_labels, delta),
               "label_range": list(label_range)} if protoefnet else {}
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        best, history, start = state["best_val_r2"], state["history"], state["epoch"] + 1
        print(f"[train] resuming {out} after epoch {state['epoch'] + 1}/{config.optim.epochs}")
    trained = model
    if context.distributed:
        trained = torch.nn.parallel.DistributedDataParallel(model, device_ids=[context.device.index] if context.cuda else None)
    if config.compile and context.cuda:
        trained = torch.compile(trained)
    loss_fn = build_loss(config)
    val_loader = _loader(sets["val"], config)
    tracker = None
    if config.tensorboard and context.main:
        from .tracking import TensorBoardLog

        tracker = TensorBoardLog(out)

    for epoch in range(start, config.optim.epochs):
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
        losses = train_epoch(trained, _loader(sets["train"], config, shuffle_seed=seed, sampler=sampler), loss_fn,
                             optimizer, context, desc=f"epoch {epoch + 1}/{config.optim.epochs}",
                             diagnostic_batches=config.optim.diagnostic_batches)
        if not context.main:
            dist.barrier()
            continue
        trained_at = time.perf_counter()
        val_metrics, _ = evaluate(model, val_loader, context, desc="validate", delta=delta)
        seconds = {"seconds_train": trained_at - started, "seconds_val": time.perf_counter() - trained_at}
        scheduler.step(val_metrics["r2"] if np.isfinite(val_metrics["r2"]) else -math.inf)
        row = {"epoch": epoch + 1, **{f"train_{k}": v for k, v in losses.items()},
               **{f"val_{k}": val_metrics[k] for k in ("mae", "rmse", "r2", "f1_40", *EPOCH_DIAGNOSTICS) if k in val_metrics},
               **{f"lr_{g.get('name', i)}": g["lr"] for i, g in enumerate(optimizer.param_groups)},
               **seconds}  # wall clock: the only columns a resumed run does not reproduce
        history.append(row)
        if tracker is not None:
            tracker.log(row, step=epoch + 1)
        tqdm.write(f"[train] epoch {epoch + 1}/{config.optim.epochs}  loss {losses['loss']:.4f}  "
                   f"val MAE {val_metrics['mae']:.2f}  RMSE {val_metrics['rmse']:.2f}  R² {val_metrics['r2']:.3f}")
        improved = val_metrics["r2"] > best or best == -math.inf
        best = max(best, val_metrics["r2"]) if np.isfinite(val_metrics["r2"]) else best
        checkpoint = _checkpoint(model, optimizer, scheduler, config, epoch, best, history)
        if improved:
            runs.save_checkpoint(best_path, checkpoint)
        runs.write_csv(out / "history.csv", pd.DataFrame(history))
        runs.save_checkpoint(last_path, checkpoint)  # last: it marks the epoch as complete
        if context.distributed:
            dist.barrier()
    if tracker is not None:
        tracker.close()
    if not context.main:
        return {}
    from .push import finish_run  # push, head epochs, test, artefacts

    return finish_run(model, config, sets, context, out, best_path, initial=initial)


def load_run_model(path, *, device: str = "cpu") -> tuple[torch.nn.Module, Config]:
    """A trained model and its config from a finished run directory or a checkpoint file."""
    model, config, _ = load_run(path, device=device)
    return model, config


def load_run(path, *, device: str = "cpu") -> tuple[torch.nn.Module, Config, str]:
    """`load_run_model` plus a description of the checkpoint used, for outputs to record.

    A run directory is used through ``checkpoints/final.pt`` (the pushed model) only: an
    interrupted run is refused, not silently replaced by an early epoch's ``best.pt``. A
    training checkpoint given as a file is used with a warning (its prototypes are not
    pushed onto real clips), and the description says so."""
    path = pathlib.Path(path)
    if path.is_dir():
        final = path / "checkpoints" / "final.pt"
        if not final.is_file():
            raise runs.CheckpointError(
                f"{path}: no checkpoints/final.pt, so this is not a finished run (training was interrupted before "
                f"the push, or it is no run directory). Finish it with `python -m protoef train --resume --out {path}`, "
                f"or pass {path / 'checkpoints' / 'best.pt'} explicitly to use the un-pushed best epoch")
        path = final
    state = runs.load_checkpoint(path)
    config = from_dict(state["config"])
    config.model.weights = None  # the checkpoint carries every weight
    model = build_model(config)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        first = str(error).splitlines()[0][:300]
        raise runs.CheckpointError(
            f"{path}: the weights do not fit a {config.model.kind} with backbone {config.model.backbone!r} and "
            f"P={config.model.num_prototypes} ({first}); was the checkpoint written by another version?") from None
    if "optimizer" in state:  # written during training (best.pt, last.pt), before the push
        description = f"{path} (training checkpoint of epoch {state['epoch'] + 1}, before the push: not a finished run)"
        warnings.warn(f"{description}: its prototypes are not projected onto real training clips, so predictions "
                      "and explanations differ from the finished run's", stacklevel=2)
    else:
        description = f"{path} (final, after the push)" if config.model.kind == "protoefnet" else f"{path} (final)"
    return model.to(resolve_device(device)).eval(), config, description
