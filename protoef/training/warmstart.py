"""A backbone warm start that stands in for Kinetics-400 where those weights cannot be had.

The paper starts R(2+1)D-18 from Kinetics-400 weights. The demo's small R(2+1)D-10 at
8 × 32² has no published weights, and this machine cannot download any, so a randomly
initialised backbone must learn motion features and the prototype geometry at once from
300 clips. `model.weights = "synthetic-warmstart"` replaces the random start with a
backbone the project trains itself, once, and caches like the synthetic data:

- corpus: a synthetic EchoNet-format set drawn with seed `CORPUS_SEED` (1000), so none
  of its videos is a video of the demo's data set (seed 0; checked by file name);
- task: the black-box EF regressor (full VideoResNet + fc) on that corpus's TRAIN split,
  with the run's clip length, period, frame size and batch size, learning rate
  `WARM_START_LR`, for ``model.warm_start_epochs`` epochs; it is an ordinary run directory under
  ``<cache_dir>/warmstart/<name>/``, so its config, history and metrics are on disk;
  ``<name>`` spells and hashes every setting it takes from the run (`PRETRAINING_KEYS`);
- weights: the trained network's state dict in torchvision's layout (``backbone.pt``).
  ProtoEFNet loads stem–layer3 from it, the black box everything but ``fc``, so the
  comparison of the two stays fair: the same start for both.

It differs from Kinetics-400 in one way that matters: the pretext task is EF itself, in
the same (synthetic) domain. README, "Two recipes", gives what it changes.
"""
from __future__ import annotations

import hashlib
import json
import pathlib

import torch

from ..config import Config, from_dict, get_key
from ..files import atomic_path
from . import runs

__all__ = ["WARM_START", "CORPUS_SEED", "PRETRAINING_KEYS", "warm_start_config", "warm_start_dir", "save_backbone_weights"]

WARM_START = "synthetic-warmstart"  # the value of model.weights that asks for it
CORPUS_SEED = 1000
WARM_START_LR = 1e-3  # the black box's learning rate in the demo recipe, where it learns within the budget


def warm_start_config(config: Config) -> Config:
    """The black-box pretraining run for `config`'s backbone and clip shape, on the corpus."""
    pretrain = from_dict(config.to_dict())
    pretrain.profile = f"{config.profile}-warmstart"
    pretrain.seed = 0  # one warm start per backbone and shape, whichever run asks first
    pretrain.model.kind, pretrain.model.weights = "blackbox", None
    pretrain.model.frozen_stages = 0  # it trains from a random initialisation: nothing to keep
    pretrain.data.root = None  # always the synthetic corpus, also when the run uses real data
    pretrain.data.synthetic_seed = CORPUS_SEED
    pretrain.data.synthetic_videos = config.model.warm_start_videos
    pretrain.data.synthetic_val_fraction = pretrain.data.synthetic_test_fraction = 0.125
    pretrain.data.mean = pretrain.data.std = None  # the corpus's own statistics
    pretrain.data.limit_videos = None
    pretrain.optim.epochs = config.model.warm_start_epochs
    pretrain.optim.push = False
    # Its own recipe, not the run's: both recipes of a comparison must start from one backbone.
    pretrain.optim.lr_backbone, pretrain.optim.weight_decay = WARM_START_LR, 1e-3
    return pretrain


# What the pretraining run takes from the run that asks for it and that changes the weights it
# learns. The folder name spells the main ones and hashes all of them, so runs that differ in
# any of these get their own warm start; runs that differ only elsewhere (τ, Δl, loss weights,
# the ProtoEFNet learning rates, seeds) share one, as a comparison of them must.
PRETRAINING_KEYS = (
    "model.backbone", "model.warm_start_videos", "model.warm_start_epochs",
    "data.clip_length", "data.period", "data.resize", "data.batch_size", "data.augment", "data.rotation_degrees",
    "data.oversample", "data.oversample_threshold",
    "optim.plateau_factor", "optim.plateau_patience", "optim.min_lr", "optim.plateau_cooldown",
)


def warm_start_dir(config: Config) -> pathlib.Path:
    """Where the warm start of `config` lives: one folder per value of `PRETRAINING_KEYS`
    (backbone, clip shape, corpus, budget and batch readable in the name, the rest in its
    hash), so a cached warm start is never reused for a run that would pretrain another."""
    d, m = config.data, config.model
    settings = {key: get_key(config, key) for key in PRETRAINING_KEYS}
    digest = hashlib.sha1(json.dumps([CORPUS_SEED, WARM_START_LR, settings], sort_keys=True).encode()).hexdigest()[:8]
    name = (f"{m.backbone}-T{d.clip_length}p{d.period}-{d.resize}px-seed{CORPUS_SEED}"
            f"-v{m.warm_start_videos}-e{m.warm_start_epochs}-b{d.batch_size}-{digest}")
    return pathlib.Path(d.cache_dir) / "warmstart" / name


def save_backbone_weights(run_dir: pathlib.Path, path: pathlib.Path) -> pathlib.Path:
    """The black box of a finished pretraining run as a torchvision-layout state dict."""
    state = runs.RunDir(run_dir).load_checkpoint("final")
    prefix = "network."
    weights = {key[len(prefix):]: value for key, value in state["model"].items() if key.startswith(prefix)}
    with atomic_path(path) as temporary:
        torch.save(weights, temporary)
    return path
