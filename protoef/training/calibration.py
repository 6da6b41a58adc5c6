"""The head of a trained ProtoEFNet after training: β sharpening (chosen on VAL) and the
refit of θ after the push.

The prediction is ŷ = Σ_k β_k l_k with β = softmax(θ s / τ). The soft-label target sets
β's width on TRAIN clips; on held-out clips β comes out wider (docs/method.md §7, "Sharpening
β after training"). Multiplying θ by a factor f ≥ 1 narrows β without retraining; the order
of the logits, so the top-1 prototype, cannot change. `sharpen_on_val` picks f from
`SHARPENING_FACTORS` (those up to ``optim.beta_sharpening_max``; 1 = off, every profile's
default) by a rule fixed in advance:

    the largest β mass within ±10 EF points of the truth among the factors whose VAL MAE is
    at most that of f = 1 plus ``optim.beta_sharpening_tolerance`` (ties: the smaller f),

and scales θ in place. `lifecycle.finish` calls it on the best checkpoint, before the
metrics before the push, so both sides of the push are measured with the same head. Every
factor is scored from one VAL pass: β and ŷ are recomputed from each video's similarities
by the model's own `head`, which is exact for VAL's one clip per video.

`refit_head` fits θ alone after the push (``optim.head_epochs_after_push`` epochs): the
pushed prototypes are other vectors than the learned ones, so the head learned for those
no longer matches them (on the demo's VAL, the push cost up to 0.13 β mass within ±10 EF
and 0.3 MAE). Everything but θ is frozen and in eval mode, and the TRAIN clips are the
push set's deterministic ones, so every clip's similarities are the same in every epoch:
they are computed once (`push_set_predictions`) and θ is fitted on them, which is the epochs
over the clips without their forward passes. The same pass gives the run's TRAIN similarity
reference (`lifecycle.finish`), since θ does not enter the similarities. The loss is the
run's own θ-dependent terms (`ProtoEFLoss.head_terms`: the MSE and, in the remedies, the two
soft-label divergences that make β local).
"""
from __future__ import annotations

import numpy as np
import torch

from ..diagnostics import beta_locality
from ..losses import ProtoEFLoss
from ..metrics import regression_metrics, sparsity
from ..model import ProtoEFNet
from .loops import clip_mode, predict

__all__ = ["SHARPENING_FACTORS", "factors_up_to", "sharpening_table", "choose_factor", "sharpen_on_val", "push_set_predictions",
           "refit_head"]

SHARPENING_FACTORS = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0)


def factors_up_to(largest: float) -> tuple[float, ...]:
    """The grid's factors ≤ `largest` (always 1 first)."""
    return tuple(factor for factor in SHARPENING_FACTORS if factor <= largest)


@torch.no_grad()
def sharpening_table(model: ProtoEFNet, predictions: dict, factors) -> list[dict]:
    """One row per factor f: VAL ``mae``, ``beta_mass_within_10``, ``beta_label_spread`` and
    ``sparsity`` of the head with θ·f, from `predictions` (`loops.predict` on a loader with one
    clip per video: its per-video similarities are that clip's). θ is restored afterwards."""
    theta = model.theta.detach().clone()
    similarities = torch.as_tensor(np.asarray(predictions["similarities"]), dtype=theta.dtype, device=theta.device)
    labels, targets = model.prototype_labels.detach().cpu(), np.asarray(predictions["ef"])
    rows = []
    try:
        for factor in factors:
            model.theta.copy_(theta * factor)
            ef, weights = model.head(similarities)                                   # (N,), (N, P)
            weights = weights.float().cpu().numpy()
            locality = beta_locality(weights, labels, targets)
            rows.append({"factor": float(factor), "mae": regression_metrics(targets, ef.float().cpu().numpy())["mae"],
                         "beta_mass_within_10": locality["beta_mass_within_10"],
                         "beta_label_spread": locality["beta_label_spread"],
                         "sparsity": float(sparsity(weights).mean())})
    finally:
        model.theta.copy_(theta)
    return rows


def choose_factor(rows: list[dict], tolerance: float) -> float:
    """The module's rule on `sharpening_table` rows; the first row must be f = 1."""
    if not rows or rows[0]["factor"] != 1.0:
        raise ValueError("the sharpening table must start with the factor 1 (the head as trained)")
    allowed = [row for row in rows if row["mae"] <= rows[0]["mae"] + tolerance]
    return max(allowed, key=lambda row: (row["beta_mass_within_10"], -row["factor"]))["factor"]


def _require_one_fixed_clip(data, why: str) -> None:
    """Refuse a loader or `loops.EncodedSet` whose clips are not one fixed clip per video,
    saying `why` the caller needs them."""
    if clip_mode(data) != "deterministic":
        raise ValueError(f"{why}: expected clips='deterministic', got clips={clip_mode(data)!r}")


def sharpen_on_val(model: ProtoEFNet, val_data, context, *, largest: float, tolerance: float) -> dict:
    """Choose f on VAL (`choose_factor` over `factors_up_to(largest)`), multiply θ by it in
    place; returns ``{"factor": f, "tolerance": ..., "grid": rows}`` for metrics.json.
    `val_data`: the VAL loader or its `loops.EncodedSet`."""
    _require_one_fixed_clip(val_data, "β sharpening needs one clip per VAL video")
    rows = sharpening_table(model, predict(model, val_data, context, desc="sharpen β"), factors_up_to(largest))
    factor = choose_factor(rows, tolerance)
    with torch.no_grad():
        model.theta.mul_(factor)
    return {"factor": factor, "tolerance": float(tolerance), "grid": rows}


def push_set_predictions(model: ProtoEFNet, push_data, context) -> dict:
    """`loops.predict` on the push set after the push: per TRAIN video (one deterministic
    clip each) its similarities (N, P) to the final prototypes and its true EF, what
    `refit_head` fits θ on and what the run's TRAIN similarity reference is read from.
    `push_data`: the push loader or the `loops.EncodedSet` the push kept of it."""
    _require_one_fixed_clip(push_data, "the head refit and the TRAIN similarity reference need one fixed clip "
                                       "per video (with random clips the similarities change every epoch)")
    return predict(model, push_data, context, desc="TRAIN similarities")


def refit_head(model: ProtoEFNet, predictions: dict, loss: ProtoEFLoss, *, epochs: int, lr: float, batch_size: int,
               seed: int) -> dict:
    """Fit θ alone for `epochs` epochs on `predictions` (`push_set_predictions` of the model as
    it is: TRAIN, one deterministic clip per video), minimising `loss.head_terms` by Adam at
    `lr` in shuffled batches of `batch_size` (permutations from a generator seeded `seed`),
    from θ as it is. Returns ``{"epochs", "videos", "loss_first_epoch", "loss_last_epoch"}``
    (mean loss per video over each epoch's steps) for metrics.json."""
    theta = model.theta
    similarities = torch.as_tensor(np.asarray(predictions["similarities"]), dtype=theta.dtype, device=theta.device)  # (N, P)
    targets = torch.as_tensor(np.asarray(predictions["ef"]), dtype=theta.dtype, device=theta.device)                # (N,)
    optimizer = torch.optim.Adam([theta], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    epoch_losses = []
    for _ in range(epochs):
        total = 0.0
        for batch in torch.randperm(len(targets), generator=generator).split(batch_size):
            ef, weights = model.head(similarities[batch])
            value = loss.combine(loss.head_terms(ef, weights, targets[batch], model), ef)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            total += float(value.detach()) * len(batch)
        epoch_losses.append(total / len(targets))
    theta.grad = None
    return {"epochs": int(epochs), "videos": int(len(targets)),
            "loss_first_epoch": epoch_losses[0] if epoch_losses else float("nan"),
            "loss_last_epoch": epoch_losses[-1] if epoch_losses else float("nan")}
