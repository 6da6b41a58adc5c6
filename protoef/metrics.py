"""Evaluation metrics (docs/method.md §6): regression and screening scores (per EF range too),
prototype sparsity and diversity, and the paired bootstrap of two models' difference.

Everything takes array-likes (numpy arrays, lists or tensors) of per-video EF values in
percent and returns plain Python floats / numpy arrays, ready for CSV/JSON.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
from sklearn.metrics import f1_score, mean_absolute_error, mean_squared_error, r2_score, roc_auc_score

AUROC_THRESHOLDS = (35, 40, 45, 50)
F1_THRESHOLDS = (40, 50)
# Ranges of the true EF, [low, high): metrics.json reports ``mae_<range>`` here and
# `diagnostics.ef_range_summary` ``n_<range>`` and ``prototypes_<range>``.
EF_RANGES = {"lt40": (-np.inf, 40.0), "40_50": (40.0, 50.0), "ge50": (50.0, np.inf)}


def _as_numpy(values) -> np.ndarray:
    if hasattr(values, "detach"):  # torch tensor, without importing torch here
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


# --------------------------------------------------------------------------- single metrics

def mae(y_true, y_pred) -> float:
    return float(mean_absolute_error(y_true, y_pred))


def rmse(y_true, y_pred) -> float:
    return float(np.sqrt(mean_squared_error(y_true, y_pred)))


def r2(y_true, y_pred) -> float:
    if len(y_true) < 2:
        return float("nan")
    return float(r2_score(y_true, y_pred))


def f1_below(y_true, y_pred, threshold: float = 40.0) -> float:
    """Binary F1 with 'EF < threshold' (reduced EF) as the positive class; NaN when neither
    truth nor prediction has a positive."""
    return float(f1_score(np.asarray(y_true) < threshold, np.asarray(y_pred) < threshold,
                          zero_division=np.nan))


def auroc_below(y_true, y_pred, threshold: float = 40.0) -> float:
    """AUROC for detecting 'EF < threshold'; a lower predicted EF is a more positive score.
    NaN when the truth has a single class (AUROC is undefined)."""
    positive = np.asarray(y_true) < threshold
    if positive.all() or not positive.any():
        return float("nan")
    return float(roc_auc_score(positive, -np.asarray(y_pred)))


def in_ef_range(y_true, name: str) -> np.ndarray:
    """Which videos' true EF lies in range ``name`` of `EF_RANGES` (bool, like ``y_true``)."""
    low, high = EF_RANGES[name]
    y_true = np.asarray(y_true)
    return (y_true >= low) & (y_true < high)


def range_mae(y_true, y_pred, name: str) -> float:
    """MAE over the videos whose true EF lies in range ``name``; NaN when there are none."""
    inside = in_ef_range(y_true, name)
    return mae(y_true[inside], y_pred[inside]) if inside.any() else float("nan")


SINGLE_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "mae": mae, "rmse": rmse, "r2": r2,
    **{f"f1_{t}": (lambda yt, yp, t=t: f1_below(yt, yp, t)) for t in F1_THRESHOLDS},
    **{f"auroc_{t}": (lambda yt, yp, t=t: auroc_below(yt, yp, t)) for t in AUROC_THRESHOLDS},
    **{f"mae_{name}": (lambda yt, yp, name=name: range_mae(yt, yp, name)) for name in EF_RANGES},
}


def regression_metrics(y_true, y_pred) -> dict[str, float]:
    """All per-video metrics of docs/method.md §6: mae, rmse, r2, f1_40 (the paper's F1), f1_50,
    auroc_35/40/45/50, mae_lt40, mae_40_50, mae_ge50, and n."""
    y_true, y_pred = _as_numpy(y_true).ravel(), _as_numpy(y_pred).ravel()
    if y_true.shape != y_pred.shape or y_true.size == 0:
        raise ValueError(f"need two non-empty arrays of equal length, got {y_true.shape}, {y_pred.shape}")
    results = {name: metric(y_true, y_pred) for name, metric in SINGLE_METRICS.items()}
    results["n"] = int(y_true.size)
    return results


# --------------------------------------------------------------------------- prototypes

def sparsity(weights, level: float = 0.8) -> np.ndarray:
    """Per sample, how many prototypes (1-based count) cover `level` of the beta mass.

    weights (N, P) non-negative -> (N,) ints in [1, P]. Rows are renormalised first. The
    official code reports this count minus one; average it for the reported metric.
    """
    beta = _as_numpy(weights)
    beta = beta / beta.sum(axis=1, keepdims=True)
    covered = np.cumsum(-np.sort(-beta, axis=1), axis=1)  # (N, P), descending weights
    # A hair of tolerance so that 0.5 + 0.3 "reaches" 0.8 despite binary rounding.
    reached = covered >= level - 1e-9
    counts = np.where(reached.any(axis=1), reached.argmax(axis=1) + 1, beta.shape[1])
    return counts.astype(np.int64)


def diversity(weights, top: int = 5, min_fraction: float = 0.05) -> tuple[np.ndarray, int]:
    """How many prototypes are actually used.

    weights (N, P) -> (counts (P,): in how many samples each prototype is among the `top`
    largest beta, diversity: number of prototypes with count > min_fraction * N).
    Ties are broken towards the lower prototype index.
    """
    beta = _as_numpy(weights)
    num_samples, num_prototypes = beta.shape
    top_indices = np.argsort(-beta, axis=1, kind="stable")[:, :top]  # (N, top)
    counts = np.bincount(top_indices.ravel(), minlength=num_prototypes)
    return counts, int((counts > min_fraction * num_samples).sum())


# --------------------------------------------------------------------------- paired bootstrap

class BootstrapResult(NamedTuple):
    estimate: float  # the difference of the metric on the full test set
    low: float       # percentile interval bounds
    high: float
    p_value: float = float("nan")  # two-sided, H0 difference = 0


def _metric_fn(metric: str | Callable) -> Callable:
    if callable(metric):
        return metric
    if metric not in SINGLE_METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {sorted(SINGLE_METRICS)}")
    return SINGLE_METRICS[metric]


def _resample_indices(size: int, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, size, size=(n, size))  # (n, size)


def bootstrap_paired_difference(y_true, y_pred_a, y_pred_b, metric: str | Callable = "mae",
                                n: int = 1000, seed: int = 0, alpha: float = 0.05) -> BootstrapResult:
    """Interval of metric(a) - metric(b) for two models on the same test set.

    Both models are evaluated on the same resampled videos, so the interval reflects the
    models' difference, not the test set's difficulty. p_value: twice the smaller fraction
    of resampled differences on either side of 0 (capped at 1).
    """
    fn = _metric_fn(metric)
    y_true = _as_numpy(y_true).ravel()
    y_pred_a, y_pred_b = _as_numpy(y_pred_a).ravel(), _as_numpy(y_pred_b).ravel()
    diffs = np.array([fn(y_true[i], y_pred_a[i]) - fn(y_true[i], y_pred_b[i])
                      for i in _resample_indices(y_true.size, n, seed)])
    diffs = diffs[~np.isnan(diffs)]
    low, high = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    p_value = min(1.0, 2.0 * min((diffs <= 0).mean(), (diffs >= 0).mean()))
    estimate = fn(y_true, y_pred_a) - fn(y_true, y_pred_b)
    return BootstrapResult(float(estimate), float(low), float(high), float(p_value))


__all__ = [
    "AUROC_THRESHOLDS", "BootstrapResult", "EF_RANGES", "SINGLE_METRICS", "auroc_below",
    "bootstrap_paired_difference", "diversity", "f1_below", "in_ef_range", "mae", "r2", "range_mae",
    "regression_metrics", "rmse", "sparsity",
]
