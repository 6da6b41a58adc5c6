"""ProtoEFNet and its black-box counterpart (docs/method.md §2).

ProtoEFNet turns an echo clip into an ejection fraction through learned prototypes:

    video (N, 3, T, H, W)
      -> backbone: torchvision R(2+1)D truncated after layer3   (N, 256, T', H', W')
         (H', W') = (H, W) / output_stride: 8 as in torchvision, 4 with a dilated layer3;
         or truncated after layer2 (feature_stage="layer2")     (N, 128, T/2, H/4, W/4)
      -> feature module F                                        (N, D, T', H', W')
      -> occurrence module M (sigmoid, one map per prototype)    (N, P, T', H', W')
      -> pooled features f_k = sum_thw M_k * F                   (N, P, D)
      -> cosine similarity to the prototypes p_k                 (N, P)
      -> beta = softmax(theta * s / tau), ef = sum_k beta_k l_k  (N,)

The backbones are torchvision's own building blocks; nothing here re-implements them.
"""
from __future__ import annotations

import contextlib
import os
import socket
from collections import OrderedDict
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn
from torch import Tensor
from torchvision.models.video import r2plus1d_18
from torchvision.models.video.resnet import BasicBlock, Conv2Plus1D, R2Plus1dStem, VideoResNet

from . import pretrained
from .pretrained import BACKBONES

BACKBONE_CHANNELS = 256  # channels after layer3, for both backbones
TRUNCATED_STAGES = ("stem", "layer1", "layer2", "layer3")
OUTPUT_STRIDES = (8, 4)  # input pixels per feature cell: torchvision's, or layer3 without its spatial stride
# The stage ProtoEFNet's heads read: (channels, input pixels per cell). layer3 is the paper's;
# layer2 gives the same 8 x 8 cells at 32-pixel frames as a dilated layer3, with a receptive
# field of 27 instead of 59 pixels and no layer3 to run (issues 17, 18; docs/method.md §7).
FEATURE_STAGES = {"layer3": (BACKBONE_CHANNELS, None), "layer2": (128, 4)}
KINETICS400_URL = pretrained.KINETICS400.url  # torchvision's .../r2plus1d_18-91a641e6.pth
EF_BIAS = 55.6  # EchoNet-Dynamic's initial bias of the black-box regressor (mean training EF)


# --------------------------------------------------------------------------- backbones

def video_resnet(name: str = "r2plus1d_18") -> VideoResNet:
    """A full, randomly initialised torchvision VideoResNet (with layer4 and fc)."""
    if name == "r2plus1d_18":
        return r2plus1d_18(weights=None)
    if name == "r2plus1d_10":
        # One BasicBlock per stage: same strides and widths as the 18-layer net, ~1/2 the cost.
        return VideoResNet(block=BasicBlock, conv_makers=[Conv2Plus1D] * 4,
                           layers=[1, 1, 1, 1], stem=R2Plus1dStem)
    raise ValueError(f"unknown backbone {name!r}; choose one of {BACKBONES}")


def _kinetics400_state_dict(timeout: float = 10.0) -> dict[str, Tensor]:
    """torchvision's published Kinetics-400 r2plus1d_18 weights, from the hub cache or the web."""
    file_name = os.path.basename(KINETICS400_URL)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    if not cached.is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        try:
            _download(KINETICS400_URL, cached, timeout=timeout)
        except Exception as error:  # offline, proxy, DNS, timeout, bad hash...
            raise RuntimeError(
                f"could not download the Kinetics-400 weights of r2plus1d_18 from "
                f"{KINETICS400_URL} ({type(error).__name__}: {error}). Offline? Fetch that "
                f"file ({file_name}) on a machine with internet access, then either copy it "
                f"to {cached} or pass weights='/path/to/{file_name}'."
            ) from error
    return _load_state_dict_file(cached)


def _download(url: str, destination: Path, *, timeout: float) -> None:
    """torch.hub's download (hash checked via the file-name prefix) with a socket timeout,
    so that an offline machine fails in seconds instead of hanging."""
    hash_prefix = destination.stem.rsplit("-", 1)[-1]
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        torch.hub.download_url_to_file(url, str(destination), hash_prefix=hash_prefix, progress=False)
    finally:
        socket.setdefaulttimeout(previous)


def _load_state_dict_file(path: str | os.PathLike) -> dict[str, Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle code
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a plain state dict (a dict of tensor names to tensors)")
    return state


def load_torchvision_weights(module: nn.Module, weights: str | os.PathLike, *,
                             ignore_prefixes: tuple[str, ...] = ()) -> None:
    """Load torchvision r2plus1d_18 weights into `module` (full or truncated network).

    `weights` is a downloadable name of `protoef.pretrained` ("kinetics400") or the path of
    a torchvision state dict. Keys starting with one of `ignore_prefixes` (e.g. layer4/fc for
    a truncated backbone) are dropped; any other missing, unexpected or wrongly shaped key is
    an error naming the file.
    """
    named = pretrained.named(weights)
    if named is not None and named.url is None:
        raise ValueError(f"model.weights={named.name!r} must be resolved first: the weights come from {named.source}; "
                         "pass the file it returns")
    if named is pretrained.KINETICS400:
        source, state = KINETICS400_URL, _kinetics400_state_dict()
    else:
        source, state = str(weights), _load_state_dict_file(weights)
    state = {k: v for k, v in state.items() if not k.startswith(ignore_prefixes)}
    expected = {k: v for k, v in module.state_dict().items() if not k.startswith(ignore_prefixes)}
    # BatchNorm's step counters are absent from some older checkpoints and unused in eval/training.
    missing = sorted(k for k in set(expected) - set(state) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong_shape:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f", ... ({len(keys)} in all)" if len(keys) > 5 else "")
        problems = [f"{label}: {show(keys)}" for label, keys in
                    (("missing keys", missing), ("unexpected keys", unexpected),
                     ("wrong shapes", wrong_shape)) if keys]
        raise ValueError(f"weights file {source} does not fit torchvision's r2plus1d_18 layout "
                         f"(ignoring {', '.join(ignore_prefixes) or 'nothing'}); " + "; ".join(problems))
    module.load_state_dict(state, strict=False)  # only the ignored prefixes are left out


def build_backbone(name: str = "r2plus1d_18", *, weights: str | os.PathLike | None = None,
                   output_stride: int = 8, feature_stage: str = "layer3") -> nn.Sequential:
    """torchvision R(2+1)D truncated after layer3: (N, 3, T, H, W) -> (N, 256, T/4, H/s, W/s),
    s = `output_stride`; or after layer2 (``feature_stage="layer2"``, which needs
    ``output_stride=4``, layer2's own stride): (N, 128, T/2, H/4, W/4).

    Module names (stem, layer1..3) match torchvision's, so its state dicts load unchanged.
    ``output_stride=4`` removes layer3's spatial stride and dilates its later spatial
    convolutions by 2 (DeepLab's "atrous" trick): the same weights then compute torchvision's
    layer3 on a grid twice as fine in H and W (its even cells are exactly torchvision's
    output, eval mode), so occurrence maps of 32-pixel frames are 8 x 8 instead of 4 x 4.
    """
    if (unfit := pretrained.fit_problem(weights, name)) is not None:  # a local file may hold any backbone
        raise ValueError(unfit)
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}")
    if feature_stage not in FEATURE_STAGES:
        raise ValueError(f"feature_stage must be one of {tuple(FEATURE_STAGES)}, got {feature_stage!r}")
    stage_stride = FEATURE_STAGES[feature_stage][1]
    if stage_stride is not None and output_stride != stage_stride:
        raise ValueError(f"feature_stage={feature_stage!r} has output stride {stage_stride}, got output_stride={output_stride!r}")
    full = video_resnet(name)
    stages = TRUNCATED_STAGES[:TRUNCATED_STAGES.index(feature_stage) + 1]
    backbone = nn.Sequential(OrderedDict((stage, getattr(full, stage)) for stage in stages))
    if feature_stage == "layer3" and output_stride == 4:
        _dilate_spatially(backbone.layer3)
    if weights is not None:
        dropped = tuple(f"{stage}." for stage in TRUNCATED_STAGES[len(stages):]) + ("layer4.", "fc.")
        load_torchvision_weights(backbone, weights, ignore_prefixes=dropped)
    return backbone


def _dilate_spatially(layer: nn.Sequential) -> None:
    """Spatial stride 2 -> 1 in a torchvision R(2+1)D stage; every spatial (1, 3, 3) conv after
    the formerly strided one reads its neighbours 2 cells apart. The temporal stride stays."""
    for index, block in enumerate(layer):
        for name in ("conv1", "conv2"):
            # block.conv1 = (Conv2Plus1D, BN, ReLU); Conv2Plus1D = (spatial conv, BN, ReLU, temporal conv)
            spatial = getattr(block, name)[0][0]
            if index == 0 and name == "conv1":
                spatial.stride = (1, 1, 1)  # its input is still at the finer grid: no dilation
            else:
                spatial.dilation, spatial.padding = (1, 2, 2), (0, 2, 2)
        if block.downsample is not None:
            shortcut = block.downsample[0]
            shortcut.stride = (shortcut.stride[0], 1, 1)


# --------------------------------------------------------------------------- ProtoEFNet

class ProtoEFOutput(NamedTuple):
    ef: Tensor                      # (N,) predicted EF in percent
    similarities: Tensor            # (N, P) cosine similarity s_k in [-1, 1]
    occurrence_maps: Tensor         # (N, P, T', H', W') in (0, 1)
    weights: Tensor                 # (N, P) beta, rows sum to 1
    features: Tensor | None = None  # (N, P, D) pooled f_k, only when asked for

    def float(self) -> "ProtoEFOutput":
        """The values the losses and metrics read, in fp32 (an autocast forward gives bf16/fp16)."""
        return self._replace(ef=self.ef.float(), similarities=self.similarities.float(),
                             occurrence_maps=self.occurrence_maps.float(), weights=self.weights.float())

    def per_clip(self) -> dict[str, Tensor]:
        """What a video's prediction averages over its clips: EF, β and s (`training.loops.predict`)."""
        return {"prediction": self.ef, "weights": self.weights, "similarities": self.similarities}


def cosine_similarity(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """cos(a, b) over the last dim, broadcasting; each vector's norm is clamped at eps.

    Same definition as torch.nn.functional.cosine_similarity (x / max(|x|, eps) per vector),
    written out so that its behaviour at a zero vector does not depend on the torch version:
    value 0 and a finite gradient (no sqrt(0) on the backward path).
    """
    a = a * torch.rsqrt((a * a).sum(-1, keepdim=True).clamp_min(eps * eps))
    b = b * torch.rsqrt((b * b).sum(-1, keepdim=True).clamp_min(eps * eps))
    return (a * b).sum(-1)


def pool_features(occurrence_maps: Tensor, feature_maps: Tensor) -> Tensor:
    """f_k = sum_{t,h,w} M_k(t,h,w) F(t,h,w) as one contraction (a batched matmul).

    (N, P, T, H, W), (N, D, T, H, W) -> (N, P, D). The broadcast product
    M[:, :, None] * F[:, None] would hold N*P*D*T*H*W numbers (~128 MB per clip at the
    paper shape) for nothing.
    """
    return torch.einsum("nkthw,ndthw->nkd", occurrence_maps, feature_maps)


def _freeze_stages(network: nn.Module, frozen_stages: int) -> tuple[nn.Module, ...]:
    """Stop training the first `frozen_stages` of stem, layer1, layer2, layer3 of a VideoResNet
    (truncated or not): no gradient for their parameters. Returns the stages, which the
    model's ``train`` keeps in eval mode (in train mode their BatchNorm would normalise with
    batch statistics and move its running averages). Both models use it, so "frozen" means
    the same in a comparison of the two."""
    if not (isinstance(frozen_stages, int) and 0 <= frozen_stages <= len(TRUNCATED_STAGES)):
        raise ValueError(f"frozen_stages must be in 0..{len(TRUNCATED_STAGES)}, got {frozen_stages!r}")
    if (absent := [stage for stage in TRUNCATED_STAGES[:frozen_stages] if not hasattr(network, stage)]):
        raise ValueError(f"frozen_stages={frozen_stages} names {', '.join(absent)}, which this truncated backbone "
                         "does not have; freeze fewer stages")
    stages = tuple(getattr(network, stage) for stage in TRUNCATED_STAGES[:frozen_stages])
    for parameter in (p for stage in stages for p in stage.parameters()):
        parameter.requires_grad_(False)
    return stages


class _FrozenStagesInEval(nn.Module):
    """The one ``train`` of both models: nn.Module.train, except that the stages in
    ``self.frozen`` (`_freeze_stages`) stay in eval mode, so their BatchNorm neither normalises
    with batch statistics nor moves its running averages."""
    frozen: tuple[nn.Module, ...] = ()

    def train(self, mode: bool = True):
        super().train(mode)
        for stage in self.frozen:
            stage.eval()
        return self


def _init_conv_head(module: nn.Sequential) -> None:
    for layer in module:
        if isinstance(layer, nn.Conv3d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class ProtoEFNet(_FrozenStagesInEval):
    """Prototype-based EF regressor (docs/method.md §2). See the module docstring for the data flow."""

    def __init__(self, *, num_prototypes: int = 40, prototype_dim: int = 256, tau: float = 0.2,
                 backbone: str = "r2plus1d_18", weights: str | os.PathLike | None = None,
                 label_range: tuple[float, float] = (10.0, 90.0), beta_top_k: int = 0,
                 output_stride: int = 8, frozen_stages: int = 0, feature_stage: str = "layer3") -> None:
        super().__init__()
        # Everything needed to rebuild the architecture: ProtoEFNet(**model.config).
        self.config = dict(num_prototypes=num_prototypes, prototype_dim=prototype_dim, tau=tau,
                           backbone=backbone, label_range=tuple(label_range), beta_top_k=beta_top_k,
                           output_stride=output_stride, frozen_stages=frozen_stages, feature_stage=feature_stage)
        self.tau = tau
        self.beta_top_k = beta_top_k  # 0: β over every prototype (the paper); k: over the k most similar
        self.backbone = build_backbone(backbone, weights=weights, output_stride=output_stride,
                                       feature_stage=feature_stage)
        # The first `frozen_stages` backbone stages (stem, layer1, ...) keep their loaded weights
        # and BatchNorm statistics: no gradient, always in eval mode (`_FrozenStagesInEval.train`).
        self.frozen = _freeze_stages(self.backbone, frozen_stages)
        c = FEATURE_STAGES[feature_stage][0]
        self.feature_module = nn.Sequential(
            nn.Conv3d(c, 256, kernel_size=1), nn.ReLU(),
            nn.Conv3d(256, prototype_dim, kernel_size=1),  # no activation: features may be negative
        )
        self.occurrence_module = nn.Sequential(
            nn.Conv3d(c, 256, kernel_size=1), nn.ReLU(),
            nn.Conv3d(256, 128, kernel_size=1), nn.ReLU(),
            nn.Conv3d(128, num_prototypes, kernel_size=1, bias=False),
            nn.Sigmoid(),  # independent maps in (0, 1), no normalisation over space-time
        )
        _init_conv_head(self.feature_module)
        _init_conv_head(self.occurrence_module)
        self.prototypes = nn.Parameter(torch.rand(num_prototypes, prototype_dim))  # (P, D)
        self.theta = nn.Parameter(torch.ones(num_prototypes))                      # (P,)
        # The EF each prototype stands for; the push overwrites it, so it is state, not a parameter.
        self.register_buffer("prototype_labels", torch.linspace(*label_range, num_prototypes))

    @property
    def num_prototypes(self) -> int:
        return self.prototypes.shape[0]

    def encode(self, video: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """video (N, 3, T, H, W) -> pooled features (N, P, D), occurrence maps (N, P, T', H', W'),
        feature maps (N, D, T', H', W')."""
        x = self.backbone(video)                       # (N, C, T', H', W'), C = 256 (layer3) or 128
        feature_maps = self.feature_module(x)          # (N, D, T', H', W')
        occurrence_maps = self.occurrence_module(x)    # (N, P, T', H', W')
        features = pool_features(occurrence_maps, feature_maps)  # (N, P, D)
        return features, occurrence_maps, feature_maps

    def occurrence(self, video: Tensor) -> Tensor:
        """Occurrence maps alone (N, P, T', H', W'), e.g. for the transformation loss."""
        return self.occurrence_module(self.backbone(video))

    def head(self, similarities: Tensor) -> tuple[Tensor, Tensor]:
        """Soft attention over prototype labels: (N, P) -> ef (N,), beta (N, P).

        ef is a convex combination of the labels, hence inside [min l, max l]. With
        ``beta_top_k`` = k (0 < k < P) the softmax runs over each row's k largest logits
        θ_k s_k / τ only (ties: torch.topk's choice); the other β are exactly 0 and pass no gradient.
        """
        logits = self.theta * similarities / self.tau                          # (N, P)
        if 0 < self.beta_top_k < logits.shape[1]:
            kept = logits.topk(self.beta_top_k, dim=1).indices                 # (N, k)
            inside = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, kept, True)  # (N, P)
            logits = logits.masked_fill(~inside, float("-inf"))
        weights = torch.softmax(logits, dim=1)                                 # (N, P)
        # A product and a sum, not a matmul: autocast would run a matmul in bf16 (EF +-0.25).
        ef = (weights * self.prototype_labels).sum(dim=1)                     # (N,)
        return ef, weights

    def compare(self, features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Pooled features (N, P, D) -> similarities (N, P), ef (N,), β (N, P): the part of
        `forward` after `encode`, the only part the push (prototypes, labels) and the head's
        θ enter. `training.loops.EncodedSet` replays it on features kept from one pass."""
        # Under autocast the einsum yields bf16/fp16; compare with the prototypes at their precision.
        features = features.to(self.prototypes.dtype)                             # (N, P, D)
        similarities = cosine_similarity(features, self.prototypes.unsqueeze(0))  # (N, P)
        ef, weights = self.head(similarities)
        return similarities, ef, weights

    def forward(self, video: Tensor, *, return_features: bool = False) -> ProtoEFOutput:
        features, occurrence_maps, _ = self.encode(video)
        features = features.to(self.prototypes.dtype)  # once here; `compare`'s own cast is then a no-op
        similarities, ef, weights = self.compare(features)
        return ProtoEFOutput(ef, similarities, occurrence_maps, weights, features if return_features else None)

    @torch.no_grad()
    def set_prototypes(self, prototypes: Tensor, labels: Tensor | None = None) -> None:
        """Overwrite prototype vectors (P, D) and, optionally, their EF labels (P,) — the push."""
        self.prototypes.copy_(prototypes)
        if labels is not None:
            self.prototype_labels.copy_(torch.as_tensor(labels))

    def parameter_groups(self) -> list[dict]:
        """Optimiser parameter groups named backbone, features, occurrence, prototypes, head:
        each takes its learning rate from the config knob of the same name, ``optim.lr_<name>``
        (`protoef.training.build.build_optimizer`, docs/method.md §4), and history.csv logs it
        as ``lr_<name>``. Frozen stages are left out."""
        params = {
            "backbone": [p for p in self.backbone.parameters() if p.requires_grad],
            "features": list(self.feature_module.parameters()),
            "occurrence": list(self.occurrence_module.parameters()),
            "prototypes": [self.prototypes],
            "head": [self.theta],
        }
        return [{"name": name, "params": group} for name, group in params.items()]


# --------------------------------------------------------------------------- black box

class BlackBoxOutput(NamedTuple):
    """The black box's output, under the protocol of `ProtoEFOutput` (``ef``, `float`,
    `per_clip`), so the loops, losses and inference never ask which model they hold."""
    ef: Tensor  # (N,) predicted EF in percent

    def float(self) -> "BlackBoxOutput":
        return self._replace(ef=self.ef.float())

    def per_clip(self) -> dict[str, Tensor]:
        return {"prediction": self.ef}


class BlackBoxRegressor(_FrozenStagesInEval):
    """EchoNet-Dynamic's baseline: the full R(2+1)D with a single-output fc (docs/method.md §2).
    `frozen_stages` freezes its first stages exactly as in `ProtoEFNet`, so a comparison of the
    two can hold the trained part of the backbone equal."""

    def __init__(self, *, backbone: str = "r2plus1d_18", weights: str | os.PathLike | None = None,
                 ef_bias: float = EF_BIAS, frozen_stages: int = 0) -> None:
        super().__init__()
        if (unfit := pretrained.fit_problem(weights, backbone)) is not None:
            raise ValueError(unfit)
        # BlackBoxRegressor(**config); checkpoints written before frozen_stages existed lack it (0).
        self.config = dict(backbone=backbone, ef_bias=ef_bias, frozen_stages=frozen_stages)
        self.network = video_resnet(backbone)
        if weights is not None:
            load_torchvision_weights(self.network, weights, ignore_prefixes=("fc.",))
        self.network.fc = nn.Linear(self.network.fc.in_features, 1)  # 512 -> 1
        with torch.no_grad():
            self.network.fc.bias.fill_(ef_bias)  # start at the mean EF, not at 0
        self.frozen = _freeze_stages(self.network, frozen_stages)

    def forward(self, video: Tensor) -> "BlackBoxOutput":
        return BlackBoxOutput(self.network(video).squeeze(1))  # ef: (N,)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel and/or torch.compile wrapper."""
    model = model.module if hasattr(model, "module") else model
    return getattr(model, "_orig_mod", model)


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Run a block in eval mode (BatchNorm statistics frozen, no dropout) and give the
    model back in the mode it had: explanations must not change a model that trains."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


__all__ = [
    "BACKBONES", "OUTPUT_STRIDES", "TRUNCATED_STAGES", "BlackBoxOutput", "BlackBoxRegressor", "KINETICS400_URL", "ProtoEFNet",
    "ProtoEFOutput", "build_backbone", "cosine_similarity", "load_torchvision_weights",
    "pool_features", "unwrap", "eval_mode", "video_resnet",
]
