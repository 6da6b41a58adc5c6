"""One pass over a loader: a training epoch, per-video predictions, an evaluation.

These take a built model, loader and `build.RunContext`; building them from a config is
`protoef.training.build`'s job, sequencing them into a run `protoef.training.lifecycle`'s.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import Config
from ..data import average_clips
from ..diagnostics import far_pair_angle_degrees, interpretability_summary, loss_gradient_norms
from ..losses import WeightedLoss
from ..metrics import diversity, regression_metrics, sparsity
from ..model import unwrap
from .build import RunContext

__all__ = ["train_epoch", "predict", "evaluate", "EncodedSet", "encode_set", "clip_counts", "clip_mode", "progress", "EPOCH_DIAGNOSTICS"]

# Interpretability diagnostics logged per epoch on VAL (cheap: they reuse the validation pass).
EPOCH_DIAGNOSTICS = ("similarity_gap", "top1_beta", "beta_entropy", "sparsity", "top1_label_median_error",
                     "top1_label_within_10", "far_pair_angle", "beta_mass_within_10", "beta_label_spread",
                     "beta_spread_calibration", "top3_beta")


def progress(loader, *, desc: str, enabled: bool = True):
    """A progress bar over `loader`'s batches that starts one iterator of it, not two.

    tqdm.auto's bar calls ``iter()`` on what it wraps when it is built, and its loop calls it
    again: for a DataLoader with worker processes that is a second worker pool, which
    prefetches 2 batches per worker that nobody reads (a 4-item set with 2 workers had every
    item loaded twice; tests/test_loops.py). Handing the bar an iterator avoids it."""
    total = len(loader) if hasattr(loader, "__len__") else None
    return tqdm(iter(loader), total=total, desc=desc, leave=False, disable=not enabled, dynamic_ncols=True)


def train_epoch(model, loader, loss_fn: WeightedLoss, optimizer, context: RunContext, *, desc: str,
                diagnostic_batches: int = 0, after_step=None) -> dict[str, float]:
    """One pass over `loader`; returns the sample-weighted mean of every logged term.

    `loss_fn` follows the `protoef.losses.WeightedLoss` protocol (`build.build_loss` picks
    it), so this loop is the same for every model. On the first `diagnostic_batches` batches
    of a ``diagnosable`` loss, each weighted term's gradient norm on the prototypes and on
    the shared backbone features is measured too (`diagnostics.loss_gradient_norms`;
    averaged over those batches as ``grad_*``). `after_step`, if given, is called after every
    optimiser step (the run's weight average).
    """
    model.train()
    core = unwrap(model)
    sums: dict[str, float] = {}
    gradient_sums: dict[str, float] = {}
    count = diagnosed = 0
    seconds_diagnosed = 0.0  # wall clock of the diagnosed batches (their whole step), for timings.json
    bar = progress(loader, desc=desc, enabled=context.main)
    for batch in bar:
        batch_started = time.perf_counter()
        video = context.video(batch["video"])  # (N, 3, T, H, W)
        target = batch["ef"].to(context.device, torch.float32)  # (N,)
        background = batch.get("background")  # (N, H', W') → broadcast over P and T'
        background = background.to(context.device)[:, None, None] if background is not None else None
        diagnose = loss_fn.diagnosable and diagnosed < diagnostic_batches
        shared = []  # the backbone's output, the features every term's gradient flows through
        hook = core.backbone.register_forward_hook(lambda _m, _i, out: shared.append(out)) if diagnose else None
        with context.autocast():
            output = model(video)
        if hook is not None:
            hook.remove()
        output = output.float()
        attached = loss_fn.terms(output, target, core, background=background, video=video)
        if diagnose:
            norms = loss_gradient_norms(attached, loss_fn.weights, prototypes=core.prototypes, shared_features=shared[0])
            for name, value in norms.items():
                gradient_sums[name] = gradient_sums.get(name, 0.0) + value
            diagnosed += 1
        total = loss_fn.combine(attached, output.ef)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        if after_step is not None:
            after_step()
        if diagnose:
            seconds_diagnosed += time.perf_counter() - batch_started
        size = len(target)
        count += size
        logged = {name: value.detach() for name, value in attached.items()} if loss_fn.logged else {}
        for name, value in {"loss": total.detach(), **logged}.items():
            sums[name] = sums.get(name, 0.0) + float(value) * size
        bar.set_postfix(loss=f"{sums['loss'] / count:.3f}")
    means = {name: value / max(count, 1) for name, value in sums.items()}
    return means | {name: value / diagnosed for name, value in gradient_sums.items()} | (
        {"seconds_diagnostics": seconds_diagnosed} if diagnosed else {})


@dataclass
class EncodedSet:
    """A ProtoEFNet's pooled features (N, P, D) of every batch of one pass over a loader (on
    the CPU), with what `predict` reads of each batch (true EF, file name, clips per video).

    After training only the prototypes (the push) and θ (the head refit, β sharpening)
    change, and neither enters the pooled features, so every later prediction on a split is
    `ProtoEFNet.compare` replayed on the same features batch by batch: bit-identical to a
    new forward pass, at the cost of one pass per split (`lifecycle.finish`). Memory: N × P
    × D floats (the demo's TEST set 22 MB; EchoNet-Dynamic's TEST at 10 clips ≈ 0.5 GB).
    The features keep the precision they came in: `encode_set`'s are ``encode``'s (bf16 under
    CUDA autocast, half the memory), the push's are the float32 that ``forward`` casts them to;
    ``compare`` casts to the prototypes' dtype first, so both replay the forward exactly."""
    clips: str  # the dataset's clip mode ("deterministic", a count, ...), checked by its readers
    batches: list[dict] = field(default_factory=list)

    def add(self, batch: dict, features: torch.Tensor) -> None:
        """Keep one loader batch's pooled features (B, P, D) beside its EF, names and clip counts."""
        self.batches.append({"features": features.detach().cpu(), "ef": batch["ef"],
                             "filename": list(batch["filename"]), "num_clips": clip_counts(batch)})


def clip_mode(data) -> str:
    """The clip mode of a loader's dataset or of an `EncodedSet` ("deterministic", ...)."""
    return data.clips if isinstance(data, EncodedSet) else str(data.dataset.clips)


def clip_counts(batch: dict) -> list[int]:
    """Clips per video of a loader batch (one each for single-clip datasets)."""
    return batch.get("num_clips", torch.ones(len(batch["ef"]), dtype=torch.long)).tolist()


def _inference_setup(model, context: RunContext | None):
    """(context, the bare model in eval mode) for a pass without gradients: a CPU context
    when none is given, the model unwrapped from DDP or ``torch.compile``."""
    context = context or RunContext(Config(device="cpu"))
    core = unwrap(model)
    core.eval()
    return context, core


@torch.no_grad()
def encode_set(model, loader, context: RunContext | None = None, *, desc: str = "encode") -> EncodedSet:
    """One pass over `loader` keeping each batch's pooled features: an `EncodedSet` that
    `predict` and `evaluate` take in place of the loader while the encoder stays as it is."""
    context, core = _inference_setup(model, context)
    encoded = EncodedSet(clips=clip_mode(loader))
    for batch in progress(loader, desc=desc, enabled=context.main):
        with context.autocast():
            features, _, _ = core.encode(context.video(batch["video"]))  # (ΣK, P, D)
        encoded.add(batch, features)
    return encoded


def _per_clip_outputs(core, data, context: RunContext, desc: str):
    """(batch, clips per video, {"prediction", "weights", "similarities"} per clip) for each
    batch of a loader (a forward pass) or of an `EncodedSet` (the comparison and head replayed)."""
    if isinstance(data, EncodedSet):
        for batch in data.batches:
            with context.autocast():
                similarities, ef, weights = core.compare(batch["features"].to(context.device))
            yield batch, batch["num_clips"], {"prediction": ef, "weights": weights, "similarities": similarities}
        return
    for batch in progress(data, desc=desc, enabled=context.main):
        with context.autocast():
            output = core(context.video(batch["video"]))
        yield batch, clip_counts(batch), output.per_clip()


@torch.no_grad()
def predict(model, data, context: RunContext | None = None, *, desc: str = "predict") -> dict:
    """Per-video predictions on `data` (a loader, or a ProtoEFNet's `EncodedSet`);
    multi-clip videos are averaged over their clips (EF and β).

    Returns filename, ef (true), prediction and, for ProtoEFNet, weights β and similarities (N, P).
    """
    context, core = _inference_setup(model, context)
    rows: dict[str, list] = {"filename": [], "ef": [], "prediction": [], "weights": [], "similarities": []}
    for batch, counts, per_clip in _per_clip_outputs(core, data, context, desc):
        for key, values in per_clip.items():
            rows[key] += list(average_clips(values.float(), counts).cpu().numpy())
        rows["filename"] += list(batch["filename"])
        rows["ef"] += batch["ef"].tolist()
    result = {key: np.array(values) for key, values in rows.items() if values}
    result["filename"] = list(rows["filename"])
    return result


def evaluate(model, data, context: RunContext | None = None, *, desc: str = "evaluate",
             delta: float | None = None) -> tuple[dict, dict]:
    """(metrics, predictions) on one loader (or `EncodedSet`): regression metrics plus, for ProtoEFNet,
    sparsity, diversity and (given the label window `delta`) the interpretability
    diagnostics of `protoef.diagnostics` for the model's current prototypes and labels."""
    predictions = predict(model, data, context, desc=desc)
    metrics = regression_metrics(predictions["ef"], predictions["prediction"])
    if "weights" in predictions:
        metrics["sparsity"] = float(sparsity(predictions["weights"]).mean())
        metrics["diversity"] = int(diversity(predictions["weights"])[1])
        if delta is not None:
            core = unwrap(model)
            labels = core.prototype_labels.detach().cpu()
            metrics |= interpretability_summary(predictions, labels, delta)
            metrics["far_pair_angle"] = far_pair_angle_degrees(core.prototypes, labels, delta)
    return metrics, predictions
