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
import math
import os
import pathlib
import time

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from . import runs
from .config import Config, from_dict
from .data import EchoNet, collate_clips, compute_mean_std, oversampling_sampler
from .losses import ProtoEFLoss, mse_loss
from .metrics import diversity, regression_metrics, sparsity
from .model import BlackBoxRegressor, ProtoEFNet, build_backbone

__all__ = ["fit", "build_model", "build_loss", "split_dataset", "load_run_model", "data_root", "synthetic_root", "predict", "resolve_device", "feature_size"]


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

        synthetic.generate(root, videos=config.data.synthetic_videos, seed=config.data.synthetic_seed)
    return root


def synthetic_root(config: Config) -> pathlib.Path:
    """Where the config's synthetic data set lives (whether or not it was generated yet)."""
    d = config.data
    return pathlib.Path(d.cache_dir) / f"synthetic-{d.synthetic_videos}-seed{d.synthetic_seed}"


def build_model(config: Config) -> torch.nn.Module:
    m = config.model
    if m.kind == "blackbox":
        return BlackBoxRegressor(backbone=m.backbone, weights=m.weights)
    if m.kind != "protoefnet":
        raise ValueError(f"model.kind must be 'protoefnet' or 'blackbox', got {m.kind!r}")
    return ProtoEFNet(num_prototypes=m.num_prototypes, prototype_dim=m.prototype_dim, tau=m.tau,
                      backbone=m.backbone, weights=m.weights, label_range=(m.label_min, m.label_max))


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


def train_epoch(model, loader, loss_fn, optimizer, context: _Context, *, desc: str) -> dict[str, float]:
    model.train()
    sums: dict[str, float] = {}
    count = 0
    bar = tqdm(loader, desc=desc, leave=False, disable=not context.main, dynamic_ncols=True)
    for batch in bar:
        video = context.video(batch["video"])
        target = batch["ef"].to(context.device, torch.float32)
        with context.autocast():
            output = model(video)
        if isinstance(output, torch.Tensor):  # the black box
            total, terms = mse_loss(output.float(), target), {}
        else:
            background = batch.get("background")  # (N, H', W') → broadcast over P and T'
            background = background.to(context.device)[:, None, None] if background is not None else None
            core = model.module if hasattr(model, "module") else model
            output = output._replace(**{k: getattr(output, k).float() for k in ("ef", "similarities", "occurrence_maps", "weights")})
            total, terms = loss_fn(output, target, core, background=background, video=video)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        size = len(target)
        count += size
        for name, value in {"loss": total.detach(), **terms}.items():
            sums[name] = sums.get(name, 0.0) + float(value) * size
        bar.set_postfix(loss=f"{sums['loss'] / count:.3f}")
    return {name: value / max(count, 1) for name, value in sums.items()}


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


def evaluate(model, loader, context: _Context | None = None, *, desc: str = "evaluate") -> tuple[dict, dict]:
    """(metrics, predictions) on one loader: regression metrics plus sparsity and diversity."""
    predictions = predict(model, loader, context, desc=desc)
    metrics = regression_metrics(predictions["ef"], predictions["prediction"])
    if "weights" in predictions:
        metrics["sparsity"] = float(sparsity(predictions["weights"]).mean())
        metrics["diversity"] = int(diversity(predictions["weights"])[1])
    return metrics, predictions


# ----------------------------------------------------------------------------- fit
def _checkpoint(model, optimizer, scheduler, config, epoch, best, history) -> dict:
    core = model.module if hasattr(model, "module") else model
    core = getattr(core, "_orig_mod", core)  # unwrap torch.compile
    return {"model": core.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "epoch": epoch, "best_val_r2": best, "history": history, "config": config.to_dict(), "kind": config.model.kind}


def fit(config: Config, out_dir, *, resume: bool = False) -> dict:
    """Train, push and evaluate one model; everything lands in ``out_dir``. Returns metrics.json."""
    out = pathlib.Path(out_dir)
    context = _Context(config)
    last_path, best_path = out / "checkpoints" / "last.pt", out / "checkpoints" / "best.pt"
    if resume and (out / "metrics.json").is_file():
        return pd.read_json(out / "metrics.json", typ="series").to_dict()  # finished already
    if not resume and last_path.exists():
        raise FileExistsError(f"{out}: holds a run already; pass resume=True (--resume) or choose a new directory")
    state = runs.load_checkpoint(last_path) if resume and last_path.exists() else None
    if state is not None:
        config = from_dict(state["config"])  # the run's own config wins over the caller's

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
    if context.main:
        runs.atomic_write_text(out / "config.json", config.to_json() + "\n")
        runs.write_json(out / "environment.json", runs.environment(context.device) | {"data_root": str(root)})

    # The initial weights depend on the seed alone, not on how much randomness the data
    # code (e.g. `feature_size`) happened to draw before.
    torch.manual_seed(config.seed)
    if context.main and config.model.weights is None and config.model.backbone == "r2plus1d_18":
        print("[train] model.weights=None: the R(2+1)D-18 backbone starts from random initialisation, "
              "not from the Kinetics-400 weights of the paper's recipe")
    model = build_model(config).to(context.device)
    if context.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    optimizer = _optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=config.optim.plateau_factor, patience=config.optim.plateau_patience,
        min_lr=config.optim.min_lr)
    best, history, start = -math.inf, [], 0
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
                             optimizer, context, desc=f"epoch {epoch + 1}/{config.optim.epochs}")
        if not context.main:
            dist.barrier()
            continue
        trained_at = time.perf_counter()
        val_metrics, _ = evaluate(model, val_loader, context, desc="validate")
        seconds = {"seconds_train": trained_at - started, "seconds_val": time.perf_counter() - trained_at}
        scheduler.step(val_metrics["r2"] if np.isfinite(val_metrics["r2"]) else -math.inf)
        row = {"epoch": epoch + 1, **{f"train_{k}": v for k, v in losses.items()},
               **{f"val_{k}": val_metrics[k] for k in ("mae", "rmse", "r2", "f1_40")},
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

    return finish_run(model, config, sets, context, out, best_path)


def load_run_model(path, *, device: str = "cpu") -> tuple[torch.nn.Module, Config]:
    """A trained model and its config from a run directory or a checkpoint file."""
    path = pathlib.Path(path)
    if path.is_dir():
        path = next((path / "checkpoints" / name for name in ("final.pt", "best.pt", "last.pt")
                     if (path / "checkpoints" / name).is_file()), path / "checkpoints" / "final.pt")
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
    return model.to(resolve_device(device)).eval(), config
