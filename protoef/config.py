"""One configuration for a run: every knob of docs/method.md §2–§5, named profiles, dotted overrides.

    config = resolve("demo", {"model.tau": 0.5, "optim.epochs": 3})
    config = resolve("paper", ["data.root=/data/EchoNet-Dynamic"])   # CLI --set style

Profiles:
- ``paper``: EchoNet-Dynamic (``data.root`` or ``ECHONET_DIR``), R(2+1)D-18 with Kinetics
  weights, 64 frames, batch 16, 30 epochs, the paper's loss weights and learning rates.
  Meant for a GPU.
- ``demo``: the synthetic data set (generated on first use), the small R(2+1)D-10
  backbone, short low-resolution clips: ≈ 3 minutes on 2 CPU cores, and it still learns
  (see `_demo` for where and why it departs from the paper's recipe).
- ``smoke``: a handful of tiny videos, seconds per run, for CI.

Each field declares its valid range beside it (`knob`, `protoef.config_keys`), and dotted
keys are read, set and listed with `get_key`, `set_key` and `flatten`, on a `Config` or its
nested dict alike. The resolved config is saved with every run (``config.json``) and
`from_dict` reads it back.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import typing
from dataclasses import dataclass, field

from . import pretrained
from .config_keys import FLAG, Range, above, at_least, field_range, flatten, get_key, knob, one_of, optional, set_key, within

__all__ = ["Config", "DataConfig", "ModelConfig", "LossConfig", "OptimConfig", "PROFILES", "DEMO_RECIPE", "PAPER_RECIPE", "REMEDIES",
           "resolve", "apply_overrides", "from_dict", "get_key", "set_key", "flatten"]


# Ranges several fields share; `knob(default, range)` puts each field's own beside it.
LOSS_WEIGHT = at_least(0.0, "a loss weight")
LEARNING_RATE = at_least(0.0, "a learning rate")
SHARE = Range(lambda value: 0.0 <= value < 1.0, "a share in [0, 1)")
EF = within(0.0, 100.0, "an EF in percent")
FOLDER = Range(lambda value: bool(value.strip()), "a folder path, not empty")


def _profile_name(value: str) -> bool:
    # "<profile>-warmstart": the black-box pretraining a profile's synthetic warm start runs
    # (protoef.training.warmstart), validated like every run.
    return value in PROFILES or value.removesuffix("-warmstart") in PROFILES


def _weights(value) -> bool:
    return value is None or pretrained.named(value) is not None or os.path.isfile(os.path.expanduser(value))


@dataclass
class DataConfig:
    # EchoNet-format root; None: the synthetic set below (generated on first use)
    root: str | None = knob(None, optional(FOLDER, "the synthetic set"))
    synthetic_videos: int = knob(400, at_least(3, "one TRAIN, one VAL and one TEST video at least"))
    synthetic_seed: int = knob(0, at_least(0))
    # Share of the synthetic videos in VAL and in TEST (TRAIN gets the rest): larger
    # evaluation splits cost little (no backward pass) and narrow every interval.
    synthetic_val_fraction: float = knob(0.125, SHARE)
    synthetic_test_fraction: float = knob(0.125, SHARE)
    cache_dir: str = knob(".cache", FOLDER)  # synthetic data sets and decoded-video cache live here
    decoded_cache: bool = knob(True, FLAG)  # memory-mapped decoded videos, so epochs after the first skip the decode
    clip_length: int = knob(64, at_least(1, "frames per clip"))
    period: int = knob(1, at_least(1, "every period-th frame is taken"))
    resize: int = knob(112, at_least(16, "pixels; the backbone shrinks frames 8x and the occurrence-loss "
                                         "background needs at least 2x2 feature maps"))
    # test: up to this many non-overlapping clips per video, averaged
    test_clips: int = knob(10, at_least(1, "clips per test video"))
    # None: computed on a TRAIN sample
    mean: float | None = knob(None, optional(within(0.0, 1.0, "a pixel mean"), "computed"))
    std: float | None = knob(None, optional(Range(lambda value: value > 0.0, "a pixel std > 0"), "computed"))
    # LV dilation of the occurrence-loss mask at feature size (5 at 14×14)
    background_dilation: int = knob(5, Range(lambda value: value >= 1 and value % 2 == 1,
                                             "an odd int >= 1 (a max-pool size)"))
    augment: bool = knob(True, FLAG)  # random rotation of video and LV mask (train only)
    rotation_degrees: float = knob(10.0, within(0.0, 180.0, "degrees"))
    oversample: bool = knob(True, FLAG)  # balance EF < oversample_threshold in expectation
    oversample_threshold: float = knob(50.0, Range(lambda value: 0.0 < value < 100.0, "an EF in percent in (0, 100)"))
    batch_size: int = knob(16, at_least(1))
    num_workers: int = knob(2, at_least(0, "0: load in the training process"))
    # use only the first N videos of each split (smoke tests)
    limit_videos: int | None = knob(None, optional(at_least(1), "every video"))


@dataclass
class ModelConfig:
    kind: str = knob("protoefnet", one_of("protoefnet", "blackbox"))  # "blackbox": the non-interpretable baseline
    backbone: str = knob("r2plus1d_18", one_of(*pretrained.BACKBONES))  # "r2plus1d_10": the small CPU variant
    # None (random), a name of protoef.pretrained ("kinetics400"; "synthetic-warmstart", a
    # backbone the project pretrains on a disjoint synthetic corpus, the CPU demo's stand-in for
    # Kinetics-400), or the path of a torchvision-layout state dict.
    weights: str | None = knob("kinetics400", Range(_weights, "None (random), one of " + ", ".join(pretrained.WEIGHTS)
                                                    + " (protoef.pretrained) or the path of an existing state-dict file"))
    # size of the warm-start corpus and its epochs (synthetic-warmstart only)
    warm_start_videos: int = knob(400, at_least(3))
    warm_start_epochs: int = knob(24, at_least(1))
    num_prototypes: int = knob(40, at_least(1))
    prototype_dim: int = knob(256, at_least(1))
    tau: float = knob(0.2, above(0.0, "the softmax temperature of the similarities"))
    # initial prototype labels: linspace(label_min, label_max, P)
    label_min: float = knob(10.0, EF)
    label_max: float = knob(90.0, EF)
    # Remedy (off in the paper): the initial labels span the TRAIN EF range instead of
    # [label_min, label_max], so no label lies where no training clip can be pushed (the run
    # records the range in metrics.json, "initial"; README, "Two recipes").
    labels_from_train: bool = knob(False, FLAG)
    # Candidate for a local β (issue 17; 0 = off in every profile, not yet screened on VAL): the
    # softmax of the head over each clip's beta_top_k most similar prototypes only.
    beta_top_k: int = knob(0, at_least(0, "0: β over every prototype"))
    # Input pixels per occurrence-map cell: 8 as in torchvision's R(2+1)D truncated after layer3;
    # 4 keeps layer2's grid through a dilated layer3 (same weights, 4x the layer3 cost): the
    # demo's 32-pixel frames then give 8 x 8 maps instead of 4 x 4 (issue 17). ProtoEFNet only.
    output_stride: int = knob(8, Range(lambda value: value in (8, 4), "8 (torchvision's layer3) or 4 (layer3 dilated)"))
    # The backbone stage the heads read: "layer3" (the paper) or "layer2" (the backbone ends
    # there: no layer3 to run, receptive field 27 instead of 59 pixels; needs output_stride 4,
    # layer2's own). ProtoEFNet only; the black box always runs every stage.
    feature_stage: str = knob("layer3", one_of("layer3", "layer2"))
    # Leading backbone stages (stem, layer1, layer2, layer3) kept at their loaded weights and
    # BatchNorm statistics; 0 = fine-tune everything (the paper). ProtoEFNet only.
    frozen_stages: int = knob(0, within(0, 4, "an int", "stem, layer1, layer2, layer3"))


@dataclass
class LossConfig:
    mse: float = knob(0.1, LOSS_WEIGHT)
    cluster: float = knob(10.0, LOSS_WEIGHT)
    psd: float = knob(30.0, LOSS_WEIGHT)
    pas: float = knob(0.1, LOSS_WEIGHT)
    occurrence: float = knob(1e-4, LOSS_WEIGHT)
    orthogonality: float = knob(0.0, LOSS_WEIGHT)
    transformation: float = knob(0.0, LOSS_WEIGHT)
    theta_l1: float = knob(0.0, LOSS_WEIGHT)
    # Δl: label window of the cluster and PAS terms and of the push
    delta: float = knob(5.0, at_least(0.0, "a label window in EF points"))
    cluster_k: int = knob(3, at_least(1))
    occurrence_p: int = knob(2, at_least(1))
    # Remedies against the similarity collapse (all 0/off in the paper's recipe):
    separation: float = knob(0.0, LOSS_WEIGHT)  # mean similarity to prototypes whose label is > Δl from the EF
    soft_label: float = knob(0.0, LOSS_WEIGHT)  # KL(q || β), q a Gaussian over prototype labels centred on the EF
    soft_label_sigma: float = knob(5.0, above(0.0, "EF points"))  # width of q
    psd_label_aware: bool = knob(False, FLAG)  # PSD over batch clips within Δl of each prototype's label only
    # Candidates for a local β (issue 17; 0 in every profile, not yet screened on VAL):
    expected_label_error: float = knob(0.0, LOSS_WEIGHT)  # Σ_k β_k (l_k − y)² = (ŷ − y)² + Var_β(l)
    reverse_soft_label: float = knob(0.0, LOSS_WEIGHT)  # KL(β || q), q the soft-label target (σ = soft_label_sigma)
    # Remedy (off in the paper): the occurrence term as each map's share of mass outside the
    # dilated LV (protoef.losses.occurrence_share_loss), which a map cannot meet by shrinking.
    occurrence_share: bool = knob(False, FLAG)
    # Remedy (off in the paper): each map's mass per time slot outside its top
    # concentration_fraction of cells (protoef.losses.concentration_loss); 0.125 = 8 of the
    # demo's 8 x 8 cells, about the LV's share of the frame that the deletion test hides.
    concentration: float = knob(0.0, LOSS_WEIGHT)
    concentration_fraction: float = knob(0.125, Range(lambda value: 0.0 < value <= 1.0, "a share in (0, 1]"))


@dataclass
class OptimConfig:
    epochs: int = knob(30, at_least(1))
    # One per optimiser parameter group, named alike (history.csv: lr_backbone, lr_features, ...).
    lr_backbone: float = knob(1e-4, LEARNING_RATE)
    lr_features: float = knob(1e-4, LEARNING_RATE)
    lr_occurrence: float = knob(1e-4, LEARNING_RATE)
    lr_prototypes: float = knob(3e-3, LEARNING_RATE)
    lr_head: float = knob(1e-4, LEARNING_RATE)
    weight_decay: float = knob(1e-3, at_least(0.0))  # backbone, feature and occurrence modules only
    # ReduceLROnPlateau on validation R²
    plateau_factor: float = knob(0.5, Range(lambda value: 0.0 < value < 1.0, "a factor in (0, 1)"))
    plateau_patience: int = knob(5, at_least(0))
    min_lr: float = knob(1e-6, LEARNING_RATE)
    # epochs without plateau checks after a decay (the official config's 2)
    plateau_cooldown: int = knob(2, at_least(0))
    push: bool = knob(True, FLAG)
    # A prototype takes the best clip within Δl that no other prototype holds yet (greedy, most
    # similar first); it shares a clip only when its window offers no other. False: every
    # prototype takes its own best clip independently, as the official code does.
    push_unique: bool = knob(True, FLAG)
    # θ alone, refitted after the push with the loss's θ terms (protoef.training.calibration.refit_head);
    # 0 in the paper profile, HEAD_REFIT_EPOCHS in REMEDIES.
    head_epochs_after_push: int = knob(0, at_least(0))
    # Candidate for a local β (issue 17; 1 = off in every profile, screened post hoc only,
    # docs/method.md §7): θ multiplied by the factor up to this one that VAL chooses, on the
    # best checkpoint before the push (protoef.training.calibration), within the tolerance
    # of VAL MAE below.
    beta_sharpening_max: float = knob(1.0, at_least(1.0, "1: off"))
    beta_sharpening_tolerance: float = knob(0.1, at_least(0.0, "EF points of VAL MAE"))
    # per epoch, batches on which each loss term's gradient norm is measured
    diagnostic_batches: int = knob(2, at_least(0, "0: no gradient diagnostics"))
    # An exponential moving average of the weights (0: off, every profile; screened on VAL,
    # docs/method.md §7): after every optimiser step ema ← d·ema + (1 − d)·weights, BatchNorm
    # statistics included (torch.optim.swa_utils.AveragedModel). The average, not the last
    # weights, is validated after each epoch and kept as the best checkpoint.
    ema_decay: float = knob(0.0, Range(lambda value: 0.0 <= value < 1.0, "a decay in [0, 1); 0: off"))


@dataclass
class Config:
    profile: str = knob("paper", Range(_profile_name, "one of demo, paper, smoke (PROFILES) or "
                                                      "'<profile>-warmstart', a profile's warm start"))
    seed: int = knob(0, at_least(0))
    # "auto" (CUDA if present), "cpu", "cuda", "cuda:1", ...
    device: str = knob("auto", Range(lambda value: re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value) is not None,
                                     "auto, cpu, mps, cuda or cuda:N"))
    amp: bool = knob(True, FLAG)  # bf16 autocast on CUDA; ignored on CPU
    channels_last: bool = knob(True, FLAG)  # channels_last_3d memory format on CUDA; ignored on CPU
    compile: bool = knob(False, FLAG)  # torch.compile the model (CUDA)
    tensorboard: bool = knob(False, FLAG)  # RUN_DIR/tensorboard/ event log of every history column (extra "monitor")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def validate(self) -> "Config":
        """Check every value against the range its field declares (and the checks that
        relate two keys) before anything heavy runs; one ValueError names each bad key, its
        value and the range. Returns the config itself."""
        problems = [f"{key} = {value!r} (expected {valid.expected})" for key, value in flatten(self).items()
                    if not (valid := field_range(self, key)).accepts(value)]
        d, m = self.data, self.model
        if d.synthetic_val_fraction + d.synthetic_test_fraction >= 1.0:
            problems.append(f"data.synthetic_val_fraction + data.synthetic_test_fraction = "
                            f"{d.synthetic_val_fraction + d.synthetic_test_fraction:g} (expected < 1: TRAIN needs a share)")
        if m.label_min >= m.label_max:
            problems.append(f"model.label_min = {m.label_min!r} and model.label_max = {m.label_max!r} "
                            "(expected label_min < label_max)")
        if m.feature_stage == "layer2" and m.output_stride != 4:
            problems.append(f"model.feature_stage = 'layer2' with model.output_stride = {m.output_stride!r} "
                            "(layer2's cells are 4 input pixels: set model.output_stride=4)")
        if m.feature_stage == "layer2" and m.frozen_stages > 3:
            problems.append(f"model.frozen_stages = {m.frozen_stages!r} with model.feature_stage = 'layer2' "
                            "(the backbone ends at layer2: at most 3)")
        unfit = pretrained.fit_problem(m.weights, m.backbone) if m.backbone in pretrained.BACKBONES else None
        if unfit:
            problems.append(f"model.weights = {m.weights!r} (expected weights that fit model.backbone = "
                            f"{m.backbone!r}: {unfit})")
        for key, value in (("loss.cluster_k", self.loss.cluster_k), ("model.beta_top_k", m.beta_top_k)):
            if m.kind == "protoefnet" and 1 <= m.num_prototypes < value:
                problems.append(f"{key} = {value!r} (expected at most model.num_prototypes = {m.num_prototypes})")
        if problems:
            raise ValueError("invalid config: " + "; ".join(problems) + ". Set a valid value, e.g. --set KEY=VALUE "
                             "on the command line or resolve(profile, {KEY: VALUE}).")
        return self


def _paper() -> Config:
    config = Config(profile="paper")
    config.data.root = os.environ.get("ECHONET_DIR")
    config.data.num_workers = 8
    return config


OCCURRENCE_SHARE_WEIGHT = 1.0  # loss.occurrence with loss.occurrence_share (VAL screening, docs/method.md §7)
BETA_SHARPENING_MAX = 4.0  # the largest factor the head-sharpening rule may choose (VAL screening, §7)
HEAD_REFIT_EPOCHS = 20  # epochs of θ alone after the push (VAL screening, §7)
CONCENTRATION_WEIGHT = 0.3  # loss.concentration (VAL screening, docs/method.md §7)

# This project's training recipe for the CPU demo (README, "Two recipes"). Each entry departs
# from the paper for a reason measured on the demo:
# - learning rates 1e-3 instead of 1e-4 and MSE weight 1 instead of 0.1: the paper's values
#   assume Kinetics-400 weights and 30 epochs on 7,465 videos; at 300 videos and minutes of CPU
#   they leave the model at the training mean;
# - the remedies against the collapse of every similarity towards 1 (protoef.losses):
#   prototype labels over the TRAIN EF range, a separation cost on out-of-window
#   similarities and a soft-label target on β (chosen on VAL among the variants the README
#   lists; the label-aware PSD, a 10x faster head, τ = 0.1 and a narrower target were
#   tried and not kept).
# The demo profile applies it; PAPER_RECIPE puts every one of these knobs back to the
# paper's value, on the same data, backbone and budget. REMEDIES alone is what a paper-
# profile user adds to try the remedies on EchoNet-Dynamic.
REMEDIES = {
    "model.labels_from_train": True, "loss.separation": 10.0, "loss.soft_label": 10.0, "loss.soft_label_sigma": 3.0,
    # A local β (issue 17, chosen on VAL among the expected label error, a top-k β and weights
    # 10 / 30; docs/method.md §7): the mode-seeking KL(β || q) beside the mass-covering KL(q || β).
    "loss.reverse_soft_label": 10.0,
    # Occurrence maps that find the LV (issue 17, chosen on VAL; §7): the paper's term is met by
    # maps that shrink everywhere (the cosine ignores scale), its share form is not.
    "loss.occurrence_share": True, "loss.occurrence": OCCURRENCE_SHARE_WEIGHT,
    # Peaked maps (issue 17, chosen on VAL among weights 0.3 and 1 over 5 seeds; §7, "Peaked
    # maps"): IoU ÷ chance +0.3 at ED and ES at no MAE or β cost; weight 1 cost β locality.
    "loss.concentration": CONCENTRATION_WEIGHT,
    # A sharper head, chosen on VAL after training (issue 17; docs/method.md §4, §7): on three
    # VAL seeds it narrowed β (label spread −0.9 to −1.2 EF points) for +0.01 to +0.09 VAL MAE;
    # no training loss narrowed β without costing more.
    "optim.beta_sharpening_max": BETA_SHARPENING_MAX,
    # The head refitted to the pushed prototypes with the β terms, then sharpened again (issue 17;
    # §4, §7): on the demo's five VAL seeds the push had cost up to 0.13 β mass and 0.3 MAE.
    "optim.head_epochs_after_push": HEAD_REFIT_EPOCHS,
}
DEMO_RECIPE = {
    "optim.lr_backbone": 1e-3, "optim.lr_features": 1e-3, "optim.lr_occurrence": 1e-3, "optim.lr_head": 1e-3,
    "loss.mse": 1.0, **REMEDIES,
}


def _demo() -> Config:
    """2 CPU cores, synthetic data, a few minutes per run. Differs from the paper where a CPU
    budget demands it: 8 frames every 8th (one 64-frame span, >= one heart cycle at 50 fps)
    at 32×32 pixels so a few thousand optimiser steps fit in minutes; the small R(2+1)D-10
    backbone, warm-started on a disjoint synthetic corpus in place of Kinetics-400
    (`protoef.training.warmstart`); and the training recipe `DEMO_RECIPE`.
    """
    config = Config(profile="demo")
    # 300 TRAIN videos as before, but 120 VAL and 180 TEST: evaluation is cheap and 50 TEST
    # videos gave intervals too wide to compare recipes.
    config.data.synthetic_videos = 600
    config.data.synthetic_val_fraction, config.data.synthetic_test_fraction = 0.2, 0.3
    config.data.clip_length, config.data.period, config.data.resize = 8, 8, 32
    # Loading in the training process: faster epochs on 2 cores than 2 workers (1.04x since every
    # loop starts one loader iterator, 1.16-1.25x before; benchmarks item `epoch`), and no
    # forked workers inside a notebook kernel.
    config.data.batch_size, config.data.num_workers = 8, 0
    config.data.test_clips = 3
    # 8×8 occurrence maps (layer3 dilated, same weights): at 4×4 the LV is one or two cells and
    # no loss can place a map on it (issue 17). The dilation is the paper's 5 at 14×14, scaled.
    config.model.output_stride, config.data.background_dilation = 4, 3
    config.model.backbone, config.model.weights = "r2plus1d_10", "synthetic-warmstart"
    # The warm-started stem and layer1 stay as pretrained: no backward pass through them, the
    # budget that pays for 5 seeds per arm (cost and VAL MAE: docs/method.md §7).
    config.model.frozen_stages = 2
    config.optim.epochs = 12  # warm-started, validation MAE levels off by epoch 10-12
    config.optim.plateau_patience = 2
    return apply_overrides(config, DEMO_RECIPE)


def _smoke() -> Config:
    config = _demo()
    config.profile = "smoke"
    config.data.synthetic_videos = 24
    config.data.synthetic_val_fraction = config.data.synthetic_test_fraction = 0.125
    config.data.batch_size, config.data.num_workers, config.data.test_clips = 4, 0, 2
    config.model.num_prototypes = 10
    config.model.weights = None  # no pretraining in CI; tests/test_warmstart.py covers the warm start
    config.optim.epochs = 2
    return config


PROFILES: dict[str, typing.Callable[[], Config]] = {"paper": _paper, "demo": _demo, "smoke": _smoke}

# On top of the demo (or smoke) profile: the paper's own recipe on the same data and budget.
PAPER_RECIPE = {key: get_key(Config(), key) for key in DEMO_RECIPE}


def apply_overrides(config: Config, overrides) -> Config:
    """Set dotted keys (``{"model.tau": 0.5}`` or ``["model.tau=0.5"]``) in place.

    Unknown keys and values of the wrong type raise, with the closest valid key named.
    """
    if isinstance(overrides, (list, tuple)):
        pairs = {}
        for text in overrides:
            if "=" not in text:
                raise ValueError(f"override {text!r}: expected KEY=VALUE, e.g. model.tau=0.5")
            key, value = text.split("=", 1)
            if not key.strip():
                raise ValueError(f"override {text!r}: no KEY before '='; expected KEY=VALUE, e.g. model.tau=0.5")
            pairs[key.strip()] = value.strip()
        overrides = pairs
    for key, value in (overrides or {}).items():
        set_key(config, key, value)
    return config


def resolve(profile: str = "demo", overrides=None) -> Config:
    """A named profile with overrides applied: the one config a run uses and saves."""
    if profile not in PROFILES:
        raise KeyError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    return apply_overrides(PROFILES[profile](), overrides).validate()


def from_dict(values: dict) -> Config:
    """Rebuild a config saved with a run (``config.json``), checking every key and type."""
    return apply_overrides(Config(), flatten(values))
