"""Is a trained ProtoEFNet interpretable? The numbers that say so, per epoch and per run.

A ProtoEFNet can regress EF well while its explanation is empty: when every similarity
rises towards 1, β is nearly flat and the prediction comes from tilting a mixture of all
prototypes, so "the prototypes it leaned on" mean nothing. These diagnostics make that
visible (README, "Is the model interpretable?"):

- `similarity_gap`: mean s inside the label window (|l_j − y| ≤ Δl) minus outside it;
  about 0 for a collapsed model.
- `attention_summary`: mean top-1 β, mean β entropy (nats; ln P for a flat β) and the
  sparsity of docs/method.md §6 (prototypes covering 80 % of the β mass).
- `top1_label_error`: how far the label of the top-β prototype is from the true EF
  (median, and the share within ±10 EF points): does the explanation point at the answer?
- `beta_locality`: is β local around the true EF? The β mass on prototypes whose label
  is within ±10 EF points of it, the label spread under β, sqrt(Σ_k β_k (l_k − ŷ)²) in EF
  points, whether that spread is calibrated (share of videos with |y − ŷ| ≤ 2 · spread) and
  the top-3 β mass (issue 17: MSE alone is met by a β of any width with the right mean).
- `far_pair_angle_degrees`: mean angle between prototypes whose labels are > Δl apart,
  the quantity PAS raises; compare with its value at initialisation.
- `ef_range_summary`: per EF range (< 40, 40–50, ≥ 50) how many videos and how many
  distinct prototypes serve that range as top-1 (its MAE is `metrics.range_mae`'s).
- `loss_gradient_norms`: each weighted loss term's gradient norm on the prototypes and on
  the shared backbone features: which term actually drives training.

Inputs are per-video arrays (numpy or torch); outputs are plain floats and ints.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .metrics import EF_RANGES, in_ef_range, sparsity

__all__ = [
    "similarity_gap", "attention_summary", "top1_label_error", "pairwise_angles", "far_near_angles",
    "far_pair_angle_degrees", "top_prototypes",
    "ef_range_summary", "interpretability_summary", "loss_gradient_norms", "beta_locality", "TOP1_WINDOW", "SHOWN_PROTOTYPES",
    "LOCAL_WINDOW",
]

SHOWN_PROTOTYPES = 3  # per video, the top-β prototypes an explanation shows (predictions.csv, notebook 08)
TOP1_WINDOW = 10.0  # EF points: the top-1 label "points at the answer" when this close
LOCAL_WINDOW = 10.0  # EF points: β mass on labels this close to the true EF counts as local


def _numpy(values) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64)


def similarity_gap(similarities, targets, labels, delta: float) -> float:
    """mean s_ij over pairs with |l_j − y_i| ≤ delta minus the mean over the other pairs
    (pairs pooled over all samples); NaN when either group is empty. (N, P), (N,), (P,)."""
    s, y, l = _numpy(similarities), _numpy(targets), _numpy(labels)
    inside = np.abs(l[None, :] - y[:, None]) <= delta  # (N, P)
    if not inside.any() or inside.all():
        return math.nan
    return float(s[inside].mean() - s[~inside].mean())


def attention_summary(weights) -> dict[str, float]:
    """top1_beta, beta_entropy (nats) and sparsity (80 % mass), each the mean over samples."""
    beta = _numpy(weights)
    beta = beta / beta.sum(axis=1, keepdims=True)
    entropy = -(beta * np.log(np.clip(beta, 1e-300, None))).sum(axis=1)
    return {"top1_beta": float(beta.max(axis=1).mean()), "beta_entropy": float(entropy.mean()),
            "sparsity": float(sparsity(beta).mean())}


def top1_label_error(weights, labels, targets, window: float = TOP1_WINDOW) -> dict[str, float]:
    """|label of the top-β prototype − true EF|: its median and the share ≤ `window`."""
    beta, l, y = _numpy(weights), _numpy(labels), _numpy(targets)
    error = np.abs(l[beta.argmax(axis=1)] - y)
    return {"top1_label_median_error": float(np.median(error)),
            "top1_label_within_10": float((error <= window).mean())}


def beta_locality(weights, labels, targets, window: float = LOCAL_WINDOW, top: int = 3) -> dict[str, float]:
    """How local β is around the true EF, each the mean (or share) over videos:

    - ``beta_mass_within_10``: Σ_k β_k [|l_k − y| ≤ window];
    - ``beta_label_spread``: sqrt(Σ_k β_k (l_k − ŷ)²) in EF points, ŷ = Σ_k β_k l_k (the
      model's prediction: β is renormalised to sum 1 first);
    - ``beta_spread_calibration``: share of videos with |y − ŷ| ≤ 2 · spread (a Gaussian
      with that sd would give ≈ 0.95);
    - ``top3_beta``: the mass of the `top` largest β.

    weights (N, P), labels (P,), targets (N,) EF in percent."""
    beta, l, y = _numpy(weights), _numpy(labels), _numpy(targets)
    beta = beta / beta.sum(axis=1, keepdims=True)                   # (N, P)
    ef_hat = beta @ l                                               # (N,)
    near = np.abs(l[None, :] - y[:, None]) <= window                # (N, P)
    spread = np.sqrt((beta * (l[None, :] - ef_hat[:, None]) ** 2).sum(axis=1))  # (N,) EF points
    largest = -np.sort(-beta, axis=1)[:, :top]                      # (N, top)
    return {"beta_mass_within_10": float((beta * near).sum(axis=1).mean()),
            "beta_label_spread": float(spread.mean()),
            "beta_spread_calibration": float((np.abs(y - ef_hat) <= 2.0 * spread).mean()),
            "top3_beta": float(largest.sum(axis=1).mean())}


def pairwise_angles(prototypes) -> np.ndarray:
    """(P, P) angles in degrees between prototype vectors: 2·atan2(|u − v|, |u + v|) of the
    unit vectors, exact near 0° and 180° where arccos(u·v) loses digits. The one angle
    function of the package (PAS diagnostics, angle matrices, the embedding's label order)."""
    p = _numpy(prototypes)
    unit = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
    difference = np.linalg.norm(unit[:, None] - unit[None], axis=-1)
    total = np.linalg.norm(unit[:, None] + unit[None], axis=-1)
    return np.degrees(2 * np.arctan2(difference, total))


def far_near_angles(prototypes, labels, delta: float) -> tuple[float, float]:
    """Mean angle (degrees) over pairs j < k with |l_j − l_k| > Δl ("far", what PAS pushes
    apart) and with |l_j − l_k| ≤ Δl ("near"); NaN for an empty group."""
    angles, l = pairwise_angles(prototypes), _numpy(labels)
    j, k = np.triu_indices(len(l), k=1)
    far = np.abs(l[j] - l[k]) > delta
    values = angles[j, k]
    return (float(values[far].mean()) if far.any() else math.nan,
            float(values[~far].mean()) if (~far).any() else math.nan)


def far_pair_angle_degrees(prototypes, labels, delta: float) -> float:
    """Mean angle (degrees) over prototype pairs j < k with |l_j − l_k| > delta; NaN if none."""
    return far_near_angles(prototypes, labels, delta)[0]


def top_prototypes(weights, labels, top: int = SHOWN_PROTOTYPES) -> dict[str, np.ndarray]:
    """Per video (rows of β (N, P)), the `top` prototypes by β: columns ``top{r}_prototype``,
    ``top{r}_label`` and ``top{r}_beta`` for r = 1..top (ties: the lower index first)."""
    beta, l = _numpy(weights), _numpy(labels)
    order = np.argsort(-beta, axis=1, kind="stable")[:, :top]  # (N, top)
    columns = {}
    for rank in range(order.shape[1]):
        index = order[:, rank]
        columns[f"top{rank + 1}_prototype"] = index
        columns[f"top{rank + 1}_label"] = l[index]
        columns[f"top{rank + 1}_beta"] = beta[np.arange(len(beta)), index]
    return columns


def ef_range_summary(targets, weights) -> dict[str, int]:
    """Per range of the true EF (`metrics.EF_RANGES`): ``n_<range>``, its number of videos,
    and ``prototypes_<range>``, the number of distinct top-1 prototypes among them. The
    range's MAE, ``mae_<range>``, is `metrics.regression_metrics`' (one owner per key)."""
    y, top1 = _numpy(targets), _numpy(weights).argmax(axis=1)
    summary: dict[str, int] = {}
    for name in EF_RANGES:
        inside = in_ef_range(y, name)
        summary[f"n_{name}"] = int(inside.sum())
        summary[f"prototypes_{name}"] = int(len(np.unique(top1[inside])))
    return summary


def interpretability_summary(predictions: dict, labels, delta: float) -> dict[str, float]:
    """All prediction-level diagnostics of one evaluation (`protoef.training.loops.predict`'s output with
    ``weights`` and ``similarities``) for prototype labels `labels` (P,)."""
    y = predictions["ef"]
    return {"similarity_gap": similarity_gap(predictions["similarities"], y, labels, delta),
            **attention_summary(predictions["weights"]),
            **top1_label_error(predictions["weights"], labels, y),
            **beta_locality(predictions["weights"], labels, y),
            **ef_range_summary(y, predictions["weights"])}


def loss_gradient_norms(terms: dict[str, Tensor], loss_weights: dict[str, float], *,
                        prototypes: Tensor, shared_features: Tensor) -> dict[str, float]:
    """L2 norm of each weighted term's gradient on the prototypes (P, D) and on the shared
    backbone features (N, C, T', H', W'), keys ``grad_<term>_prototypes`` and
    ``grad_<term>_features``. Terms of weight 0 are skipped; the graph is kept for the
    training step that follows."""
    norms: dict[str, float] = {}
    for name, value in terms.items():
        weight = loss_weights.get(name, 0.0)
        if weight == 0 or not value.requires_grad:
            continue
        grads = torch.autograd.grad(weight * value, [prototypes, shared_features], retain_graph=True,
                                    allow_unused=True)
        for target, grad in zip(("prototypes", "features"), grads):
            norms[f"grad_{name}_{target}"] = 0.0 if grad is None else float(grad.float().norm())
    return norms


# A model whose TEST predictions spread less than this share of the true EF's spread
# predicts (nearly) one value for every video: dead, whatever its MAE says.
CONSTANT_SHARE = 0.01


def result_warnings(predictions: dict) -> list[str]:
    """Sanity checks on a finished run's TEST outputs (``evaluate``'s per-video dict):
    one line per problem, [] when none. A dead model (e.g. a learning-rate typo) is named
    here instead of passing with exit 0: predictions that are not finite or nearly
    constant, similarities collapsed to one value."""
    notes = []
    predicted, targets = _numpy(predictions["prediction"]).astype(np.float64), _numpy(predictions["ef"]).astype(np.float64)
    if len(predicted) and not np.isfinite(predicted).all():
        notes.append(f"{int((~np.isfinite(predicted)).sum())} of {len(predicted)} TEST predictions are not finite numbers "
                     "(the training diverged: check the learning rates)")
    elif len(predicted) >= 2 and np.std(predicted) <= CONSTANT_SHARE * max(np.std(targets), 1e-6):
        notes.append(f"the TEST predictions are (nearly) constant: {np.mean(predicted):.2f} ± {np.std(predicted):.3g} EF "
                     f"points for {len(predicted)} videos whose EF spreads ± {np.std(targets):.2f}; the model does not "
                     "tell videos apart (check the learning rates and the data)")
    if "similarities" in predictions:
        similarities = _numpy(predictions["similarities"]).astype(np.float64)
        if similarities.size > 1 and np.isfinite(similarities).all() and np.ptp(similarities) <= 1e-6:
            notes.append(f"every TEST similarity to every prototype is {similarities.flat[0]:.4g}: the similarities "
                         "collapsed to one value, so β and the explanations say nothing")
    return notes
