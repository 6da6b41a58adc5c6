"""The backbone names and the named weights ``model.weights`` may ask for, like torchvision's
weights enums: each entry says which backbones it loads into, the clips it was trained on and
where it comes from. Plain data (no torch), so `protoef.config` validates a name before
anything heavy runs and `protoef.model` loads by the same entry.

``model.weights`` is None (random initialisation), a name below, or the path of a state dict
in torchvision's layout (any backbone; `protoef.model.load_torchvision_weights` checks the
keys). The recorded input statistics are the pretraining's; runs normalise with their own
data set's (``data.mean``/``data.std``), as EchoNet-Dynamic does when it fine-tunes these.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BACKBONES", "NamedWeights", "KINETICS400", "SYNTHETIC_WARMSTART", "WEIGHTS", "named", "fit_problem"]

BACKBONES = ("r2plus1d_18", "r2plus1d_10")  # torchvision's R(2+1)D-18, and its one-block-per-stage CPU variant


@dataclass(frozen=True)
class NamedWeights:
    name: str                 # the value of model.weights
    backbones: tuple[str, ...]  # the backbone layouts they load into
    source: str               # where they come from
    url: str | None           # downloaded from here into torch.hub's cache; None: made by this project first
    clip_length: int | None   # frames per clip they were trained on; None: the run's own
    frame_size: int | None    # pixels (square crop) they were trained on; None: the run's own
    mean: tuple[float, ...] | None = None  # per-channel input normalisation they were trained with
    std: tuple[float, ...] | None = None


# torchvision's R2Plus1D_18_Weights.KINETICS400_V1 (tests/test_model.py checks the copy):
# 16-frame clips cropped to 112 x 112, Kinetics-400's RGB statistics.
KINETICS400 = NamedWeights(
    "kinetics400", ("r2plus1d_18",), "torchvision, trained on Kinetics-400 (the paper's start)",
    url="https://download.pytorch.org/models/r2plus1d_18-91a641e6.pth", clip_length=16, frame_size=112,
    mean=(0.43216, 0.394666, 0.37645), std=(0.22803, 0.22145, 0.216989))
# Pretrained once per backbone and clip shape, at the run's own (protoef.training.warmstart).
SYNTHETIC_WARMSTART = NamedWeights(
    "synthetic-warmstart", BACKBONES, "this project: the black box pretrained on a disjoint synthetic corpus "
    "(protoef.training.lifecycle.ensure_warm_start)", url=None, clip_length=None, frame_size=None)

WEIGHTS = {weights.name: weights for weights in (KINETICS400, SYNTHETIC_WARMSTART)}


def named(weights) -> NamedWeights | None:
    """The registry entry `weights` names; None for None and for a file path."""
    return WEIGHTS.get(weights) if isinstance(weights, str) else None


def fit_problem(weights, backbone: str) -> str | None:
    """Why named `weights` cannot load into `backbone`, or None where they can (or are no name)."""
    entry = named(weights)
    if entry is None or backbone in entry.backbones:
        return None
    return f"the {entry.name} weights exist only for {', '.join(entry.backbones)}, not {backbone!r}"
