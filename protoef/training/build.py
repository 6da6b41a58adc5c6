"""Everything built from a config, in one public place: the data root, the datasets and
loaders of a run, the model, the loss, the optimiser and the device context; and the
trained model back from a run directory (`load_run`).

    from protoef.config import resolve
    from protoef.training import build
    config = resolve("demo")
    model = build.build_model(config)
    test = build.split_dataset(config, "TEST", clips=config.data.test_clips)
    loader = build.make_loader(test, config)
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import warnings

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from ..config import Config, from_dict, get_key
from ..data import DataError, EchoNet, collate_clips
from ..data.synthetic import SPLIT_FRACTIONS
from ..losses import MSELoss, ProtoEFLoss, WeightedLoss
from ..model import BlackBoxRegressor, ProtoEFNet, build_backbone
from . import runs

__all__ = ["resolve_device", "data_root", "synthetic_root", "build_model", "build_loss", "build_optimizer",
           "feature_size", "split_dataset", "evaluation_dataset", "training_datasets", "make_loader", "RunContext", "load_run"]


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available; use device=cpu or auto")
    return device


# ----------------------------------------------------------------------------- data
def synthetic_root(config: Config) -> pathlib.Path:
    """Where the config's synthetic data set lives (whether or not it was generated yet):
    the one place that names it (run_all.sh and the benchmarks ask this function)."""
    d = config.data
    name = f"synthetic-{d.synthetic_videos}-seed{d.synthetic_seed}"
    if (d.synthetic_val_fraction, d.synthetic_test_fraction) != (SPLIT_FRACTIONS["VAL"], SPLIT_FRACTIONS["TEST"]):
        name += f"-val{d.synthetic_val_fraction:g}-test{d.synthetic_test_fraction:g}"
    return pathlib.Path(d.cache_dir) / name


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
        from ..data import synthetic

        synthetic.generate(root, videos=config.data.synthetic_videos, seed=config.data.synthetic_seed,
                           val_fraction=config.data.synthetic_val_fraction,
                           test_fraction=config.data.synthetic_test_fraction)
    return root


def feature_size(config: Config) -> tuple[int, int]:
    """(H', W') of the backbone output for the configured clips (for the background mask)."""
    protoefnet = config.model.kind == "protoefnet"
    backbone = build_backbone(config.model.backbone, output_stride=config.model.output_stride if protoefnet else 8,
                              feature_stage=config.model.feature_stage if protoefnet else "layer3").eval()
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


def evaluation_dataset(config: Config, split: str = "TEST", *, with_masks: bool = False) -> EchoNet:
    """A split as a run evaluates it: ``data.test_clips`` clips per TEST video, the
    deterministic clip otherwise; ``with_masks`` adds the LV tracings (the IoU tables)."""
    clips = config.data.test_clips if split.upper() == "TEST" else "deterministic"
    return split_dataset(config, split, clips=clips, with_masks=with_masks,
                         background_dilation=config.data.background_dilation)


def training_datasets(config: Config, root: pathlib.Path) -> dict[str, EchoNet]:
    """The four datasets of a run: train (random clips, augmented, with background masks
    for ProtoEFNet), val (deterministic clip), test (``data.test_clips``) and push (TRAIN
    with a deterministic clip, no augmentation: what the prototypes are projected onto)."""
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


def make_loader(dataset, config: Config, *, shuffle_seed: int | None = None, sampler=None, batch_size=None) -> DataLoader:
    """The DataLoader the training engine uses: the config's batch size and workers, a
    seeded generator, and the multi-clip collate for datasets with several clips per video."""
    generator = torch.Generator().manual_seed(shuffle_seed if shuffle_seed is not None else config.seed)
    multi = dataset.clips not in ("random", "deterministic")
    return DataLoader(
        dataset, batch_size=batch_size or config.data.batch_size, sampler=sampler,
        shuffle=sampler is None and shuffle_seed is not None, generator=generator,
        num_workers=config.data.num_workers, collate_fn=collate_clips if multi else None,
        persistent_workers=False, pin_memory=torch.cuda.is_available(),
        drop_last=False,
    )


# ----------------------------------------------------------------------------- model, loss, optimiser
def build_model(config: Config, *, weights=None, label_range=None) -> torch.nn.Module:
    """The config's model; `weights` (a resolved file) replaces ``model.weights`` and
    `label_range` the initial ``(label_min, label_max)`` when given."""
    m = config.model
    label_range = label_range or (m.label_min, m.label_max)
    weights = weights if weights is not None else m.weights  # named weights that need making are refused there
    if m.kind == "blackbox":
        return BlackBoxRegressor(backbone=m.backbone, weights=weights, frozen_stages=m.frozen_stages)
    if m.kind != "protoefnet":
        raise ValueError(f"model.kind must be 'protoefnet' or 'blackbox', got {m.kind!r}")
    return ProtoEFNet(num_prototypes=m.num_prototypes, prototype_dim=m.prototype_dim, tau=m.tau,
                      backbone=m.backbone, weights=weights, label_range=label_range, beta_top_k=m.beta_top_k,
                      output_stride=m.output_stride, frozen_stages=m.frozen_stages,
                      feature_stage=m.feature_stage)


def build_loss(config: Config) -> WeightedLoss:
    """The run's loss, one protocol for every model (`protoef.losses.WeightedLoss`): the MSE
    for the black box; for ProtoEFNet, ProtoEFLoss with the config's weights, Δl (delta), k and p."""
    if config.model.kind == "blackbox":
        return MSELoss()
    return ProtoEFLoss(**dataclasses.asdict(config.loss))  # each LossConfig field is the argument of the same name


def build_optimizer(model, config: Config) -> torch.optim.Optimizer:
    """Adam with one learning rate (and weight decay) per parameter group, all from
    ``config.optim`` (docs/method.md §4): the one source of the optimiser's defaults."""
    o = config.optim
    if isinstance(model, BlackBoxRegressor):
        trained = [p for p in model.parameters() if p.requires_grad]  # frozen stages are left out
        return torch.optim.Adam(trained, lr=o.lr_backbone, weight_decay=o.weight_decay)
    groups = model.parameter_groups()
    for group in groups:  # a group's name is its knob's: optim.lr_<name>
        group["lr"] = get_key(o, f"lr_{group['name']}")
        group["weight_decay"] = o.weight_decay if group["name"] not in ("prototypes", "head") else 0.0
    return torch.optim.Adam(groups)


# ----------------------------------------------------------------------------- device
class RunContext:
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


# ----------------------------------------------------------------------------- back from a run
def load_run(path, *, device: str = "cpu") -> tuple[torch.nn.Module, Config, str]:
    """(model in eval mode, config, description of the checkpoint used) of a run.

    A run directory is used through ``checkpoints/final.pt`` (the pushed model) only: an
    interrupted run is refused, not silently replaced by an early epoch's ``best.pt``. A
    training checkpoint given as a file is used with a warning (its prototypes are not
    pushed onto real clips), and the description says so."""
    path = pathlib.Path(path)
    if path.is_dir():
        run = runs.RunDir(path)
        if not run.checkpoint("final").is_file():
            raise runs.CheckpointError(
                f"{path}: no {run.checkpoint('final').relative_to(path)}, so this is not a finished run (training was "
                f"interrupted before the push, or it is no run directory). Finish it with `python -m protoef train "
                f"--resume --out {path}`, or pass {run.checkpoint('best')} explicitly to use the un-pushed best epoch")
        path = run.checkpoint("final")
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
