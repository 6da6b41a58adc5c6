"""Metrics against hand computations and sklearn/numpy on known arrays (docs/method.md §6)."""
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from protoef.metrics import bootstrap_paired_difference, diversity, regression_metrics, sparsity

Y_TRUE = np.array([20, 33, 38, 40, 45, 50, 55, 62, 70, 36], dtype=float)
Y_PRED = np.array([28, 30, 44, 37, 47, 52, 49, 60, 66, 41], dtype=float)


def mann_whitney_auc(positive, score):
    """P(score of a random positive > score of a random negative), ties count 1/2."""
    pos, neg = score[positive], score[~positive]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (len(pos) * len(neg))


def test_regression_metrics_hand_computed():
    m = regression_metrics(Y_TRUE, Y_PRED)
    errors = np.array([8, 3, 6, 3, 2, 2, 6, 2, 4, 5], dtype=float)
    assert m["mae"] == pytest.approx(4.1)
    assert m["rmse"] == pytest.approx(math.sqrt(np.mean(errors ** 2)))
    ss_res, ss_tot = np.sum(errors ** 2), np.sum((Y_TRUE - Y_TRUE.mean()) ** 2)
    assert m["r2"] == pytest.approx(1 - ss_res / ss_tot)
    # EF < 40 positives: {20, 33, 38, 36}; predicted < 40: {28, 30, 37} -> TP 2, FP 1, FN 2.
    assert m["f1_40"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 2))
    # EF < 50: 6 positives all found, one false positive (55 predicted 49).
    assert m["f1_50"] == pytest.approx(12 / 13)
    # Groups: true EF 40 belongs to 40-50, 50 to >= 50.
    assert m["mae_lt40"] == pytest.approx((8 + 3 + 6 + 5) / 4)
    assert m["mae_40_50"] == pytest.approx((3 + 2) / 2)
    assert m["mae_ge50"] == pytest.approx((2 + 6 + 2 + 4) / 4)
    assert m["n"] == 10


@pytest.mark.parametrize("threshold", [35, 40, 45, 50])
def test_auroc_lower_prediction_is_more_positive(threshold):
    m = regression_metrics(Y_TRUE, Y_PRED)
    positive = Y_TRUE < threshold
    assert m[f"auroc_{threshold}"] == pytest.approx(mann_whitney_auc(positive, -Y_PRED))
    assert m[f"auroc_{threshold}"] == pytest.approx(roc_auc_score(positive, -Y_PRED))


def test_auroc_35_hand_computed():
    # Positives (EF < 35): 20 -> 28, 33 -> 30. Both predictions are below every negative's
    # prediction except none: negatives' predictions are all >= 37 -> perfect separation.
    assert regression_metrics(Y_TRUE, Y_PRED)["auroc_35"] == 1.0


def test_single_class_and_empty_groups_give_nan():
    y_true, y_pred = np.array([55.0, 60.0, 65.0]), np.array([54.0, 61.0, 38.0])
    m = regression_metrics(y_true, y_pred)
    for key in ("auroc_35", "auroc_40", "auroc_45", "auroc_50", "mae_lt40", "mae_40_50"):
        assert math.isnan(m[key]), key
    assert m["f1_40"] == 0.0  # a false positive and no true positive: F1 is defined and 0
    m = regression_metrics(y_true, y_true)
    assert math.isnan(m["f1_40"])  # no positive anywhere: undefined
    assert m["mae_ge50"] == 0.0


def test_accepts_tensors_and_lists():
    m1 = regression_metrics(torch.tensor(Y_TRUE), torch.tensor(Y_PRED, dtype=torch.float32))
    m2 = regression_metrics(list(Y_TRUE), list(Y_PRED))
    assert m1["mae"] == pytest.approx(m2["mae"]) == pytest.approx(4.1)
    with pytest.raises(ValueError):
        regression_metrics([1.0, 2.0], [1.0])


# --------------------------------------------------------------------------- sparsity

def test_sparsity_hand_made_weights():
    beta = np.array([
        [0.5, 0.3, 0.2, 0.0],     # 0.5, 0.8 -> 2 (exactly 80% counts as covered)
        [0.9, 0.05, 0.03, 0.02],  # 0.9 -> 1
        [0.25, 0.25, 0.25, 0.25],  # 0.75 < 0.8 -> 4
        [0.1, 0.4, 0.2, 0.3],     # sorted 0.4, 0.3, 0.2 -> 0.9 -> 3
        [2.0, 1.0, 1.0, 0.0],     # unnormalised: 0.5, 0.75, 1.0 -> 3
    ])
    assert sparsity(beta).tolist() == [2, 1, 4, 3, 3]
    assert sparsity(torch.tensor(beta), level=0.5).tolist() == [1, 1, 2, 2, 1]
    assert sparsity(beta, level=1.0).tolist() == [3, 4, 4, 4, 3]


# --------------------------------------------------------------------------- diversity

def test_diversity_hand_made_weights():
    beta = np.array([
        [0.5, 0.3, 0.1, 0.05, 0.05],
        [0.1, 0.6, 0.2, 0.05, 0.05],
        [0.1, 0.2, 0.6, 0.05, 0.05],
        [0.7, 0.2, 0.04, 0.03, 0.03],
    ])
    counts, div = diversity(beta, top=2, min_fraction=0.3)
    # top-2 per row: {0,1}, {1,2}, {2,1}, {0,1} -> counts 2, 4, 2, 0, 0; threshold 0.3*4 = 1.2
    assert counts.tolist() == [2, 4, 2, 0, 0] and div == 3
    counts, div = diversity(beta, top=2, min_fraction=0.5)  # threshold 2.0 is strict: 2 is not > 2
    assert div == 1
    counts, div = diversity(beta)  # top 5 of 5 prototypes: every prototype in every row
    assert counts.tolist() == [4] * 5 and div == 5


# --------------------------------------------------------------------------- paired bootstrap

def test_paired_bootstrap_refuses_an_unknown_metric_and_skips_undefined_resamples():
    y_true = np.array([30.0] + [60.0] * 19)  # most resamples keep the single positive, some lose it
    with pytest.raises(ValueError, match="unknown metric"):
        bootstrap_paired_difference(y_true, y_true, y_true, "accuracy")
    result = bootstrap_paired_difference(y_true, y_true, y_true + 1.0, "auroc_40", n=200)
    assert (result.estimate, result.low, result.high) == (0.0, 0.0, 0.0)  # NaN resamples dropped, not propagated


def test_paired_difference():
    rng = np.random.default_rng(2)
    y_true = rng.uniform(20, 80, size=300)
    good = y_true + rng.normal(0, 3, size=300)
    bad = y_true + rng.normal(0, 6, size=300)
    same = bootstrap_paired_difference(y_true, good, good, "mae", n=200)
    assert (same.estimate, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    diff = bootstrap_paired_difference(y_true, good, bad, "mae", n=500)
    assert diff.estimate == pytest.approx(np.mean(np.abs(good - y_true)) - np.mean(np.abs(bad - y_true)))
    assert diff.high < 0 and diff.p_value < 0.01
