"""One pass over a loader: a training epoch, per-video predictions, an evaluation.

These take a built model, loader and `build.RunContext`; building them from a config is
`protoef.training.build`'s job, sequencing them into a run `protoef.training.lifecycle`'s.
"""
from __future__ import annotations

import time

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

__all__ = ["train_epoch", "predict", "evaluate", "EPOCH_DIAGNOSTICS"]

# Interpretability diagnostics logged per epoch on VAL (cheap: they reuse the validation pass).
EPOCH_DIAGNOSTICS = ("similarity_gap", "top1_beta", "beta_entropy", "sparsity", "top1_label_median_error",
                     "top1_label_within_10", "far_pair_angle", "beta_mass_within_10", "beta_label_spread",
                     "beta_spread_calibration", "top3_beta")


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
    bar = tqdm(loader, desc=desc, leave=False, disable=not context.main, dynamic_ncols=True)
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


@torch.no_grad()
def predict(model, loader, context: RunContext | None = None, *, desc: str = "predict") -> dict:
    """Per-video predictions; multi-clip videos are averaged over their clips (EF and β).

    Returns filename, ef (true), prediction and, for ProtoEFNet, weights β and similarities (N, P).
    """
    context = context or RunContext(Config(device="cpu"))
    core = unwrap(model)
    core.eval()
    rows: dict[str, list] = {"filename": [], "ef": [], "prediction": [], "weights": [], "similarities": []}
    for batch in tqdm(loader, desc=desc, leave=False, disable=not context.main, dynamic_ncols=True):
        with context.autocast():
            output = core(context.video(batch["video"]))
        counts = batch.get("num_clips", torch.ones(len(batch["ef"]), dtype=torch.long)).tolist()
        for key, values in output.per_clip().items():
            rows[key] += list(average_clips(values.float(), counts).cpu().numpy())
        rows["filename"] += list(batch["filename"])
        rows["ef"] += batch["ef"].tolist()
    result = {key: np.array(values) for key, values in rows.items() if values}
    result["filename"] = list(rows["filename"])
    return result


def evaluate(model, loader, context: RunContext | None = None, *, desc: str = "evaluate",
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
            core = unwrap(model)
            labels = core.prototype_labels.detach().cpu()
            metrics |= interpretability_summary(predictions, labels, delta)
            metrics["far_pair_angle"] = far_pair_angle_degrees(core.prototypes, labels, delta)
    return metrics, predictions
