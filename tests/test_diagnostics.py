"""Interpretability diagnostics against values computed by hand on small tensors."""
import math

import numpy as np
import pytest
import torch

from protoef.diagnostics import (attention_summary, ef_range_summary, far_pair_angle_degrees, loss_gradient_norms,
                                 similarity_gap, top1_label_error)


def test_similarity_gap_hand_computed():
    labels = [30.0, 50.0, 70.0]
    targets = [31.0, 69.0]
    s = [[0.9, 0.5, 0.1],
         [0.2, 0.4, 0.8]]
    # Inside |l − y| ≤ 5: (0, 0) = 0.9 and (1, 2) = 0.8; outside: 0.5, 0.1, 0.2, 0.4.
    assert similarity_gap(s, targets, labels, 5.0) == pytest.approx(0.85 - 0.3, rel=1e-12)
    # A flat (collapsed) model has no gap.
    assert similarity_gap(np.full((2, 3), 0.98), targets, labels, 5.0) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(similarity_gap(s, [0.0, 0.0], labels, 5.0))  # nothing inside the window


def test_attention_summary_hand_computed():
    beta = [[0.7, 0.2, 0.1, 0.0],
            [0.25, 0.25, 0.25, 0.25]]
    summary = attention_summary(beta)
    assert summary["top1_beta"] == pytest.approx((0.7 + 0.25) / 2)
    entropy_first = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1))
    assert summary["beta_entropy"] == pytest.approx((entropy_first + math.log(4)) / 2, rel=1e-9)
    # 80 % of the mass: 2 prototypes for the first row (0.7 + 0.2), 4 for the flat one (0.25·3 < 0.8).
    assert summary["sparsity"] == pytest.approx(3.0)


def test_top1_label_error_hand_computed():
    labels = [20.0, 40.0, 60.0]
    beta = [[0.1, 0.8, 0.1],   # top-1 label 40 for EF 45: error 5
            [0.6, 0.3, 0.1],   # top-1 label 20 for EF 58: error 38
            [0.0, 0.2, 0.8]]   # top-1 label 60 for EF 70: error 10 (inclusive)
    result = top1_label_error(beta, labels, [45.0, 58.0, 70.0])
    assert result["top1_label_median_error"] == pytest.approx(10.0)
    assert result["top1_label_within_10"] == pytest.approx(2 / 3)


def test_far_pair_angle_hand_computed():
    # Labels 10, 12, 40 with Δl = 5: far pairs are (10, 40) and (12, 40).
    prototypes = [[1.0, 0.0], [1.0, 1.0], [0.0, 3.0]]
    # Angles: (1,0)-(0,3) = 90°, (1,1)-(0,3) = 45°; the near pair (0°-45°) is left out.
    assert far_pair_angle_degrees(prototypes, [10.0, 12.0, 40.0], 5.0) == pytest.approx(67.5, rel=1e-12)
    # Exactly opposite and exactly equal vectors: 180° and 0°, with no arccos rounding.
    assert far_pair_angle_degrees([[1.0, 0.0], [-2.0, 0.0]], [10.0, 90.0], 5.0) == pytest.approx(180.0, abs=1e-12)
    assert far_pair_angle_degrees([[1.0, 1e-9], [1.0, 0.0]], [10.0, 90.0], 5.0) == pytest.approx(0.0, abs=1e-6)
    assert math.isnan(far_pair_angle_degrees(prototypes, [10.0, 11.0, 12.0], 5.0))


def test_ef_range_summary_hand_computed():
    targets = [30.0, 35.0, 45.0, 60.0, 70.0]
    beta = np.eye(3)[[0, 0, 1, 1, 2]]  # top-1 prototypes 0, 0 | 1 | 1, 2
    summary = ef_range_summary(targets, beta)
    assert summary == {"n_lt40": 2, "prototypes_lt40": 1, "n_40_50": 1, "prototypes_40_50": 1,
                       "n_ge50": 2, "prototypes_ge50": 2}  # the ranges' MAE is regression_metrics' alone


def test_an_evaluation_gets_each_range_mae_from_one_place():
    # metrics.json merges regression_metrics with interpretability_summary: no key may come from both.
    from protoef.diagnostics import interpretability_summary
    from protoef.metrics import regression_metrics

    targets, predictions = np.array([30.0, 35.0, 45.0, 60.0, 70.0]), np.array([34.0, 33.0, 50.0, 61.0, 67.0])
    beta = np.eye(3)[[0, 0, 1, 1, 2]]
    regression = regression_metrics(targets, predictions)
    diagnostics = interpretability_summary({"ef": targets, "prediction": predictions, "weights": beta,
                                            "similarities": beta}, np.array([30.0, 50.0, 70.0]), 5.0)
    assert not set(regression) & set(diagnostics)
    assert (regression["mae_lt40"], regression["mae_40_50"], regression["mae_ge50"]) == (3.0, 5.0, 2.0)


def test_loss_gradient_norms_match_hand_gradients():
    prototypes = torch.tensor([[1.0, 2.0], [3.0, -1.0]], requires_grad=True)
    shared = torch.tensor([[0.5, -0.5, 2.0]], requires_grad=True)
    terms = {"a": (prototypes ** 2).sum(),                   # d/dp = 2p; no path to the features
             "b": shared.sum() * 3.0 + prototypes[0, 0],     # d/dF = 3 each, d/dp = e_00
             "off": shared.sum()}                             # weight 0: skipped
    norms = loss_gradient_norms(terms, {"a": 0.5, "b": 2.0, "off": 0.0}, prototypes=prototypes, shared_features=shared)
    assert norms["grad_a_prototypes"] == pytest.approx(0.5 * 2 * math.sqrt(1 + 4 + 9 + 1))
    assert norms["grad_a_features"] == 0.0
    assert norms["grad_b_features"] == pytest.approx(2.0 * 3.0 * math.sqrt(3))
    assert norms["grad_b_prototypes"] == pytest.approx(2.0)
    assert not any(key.startswith("grad_off") for key in norms)


def test_beta_locality_hand_computed():
    from protoef.diagnostics import beta_locality, interpretability_summary

    labels = [30.0, 50.0, 70.0, 90.0]
    beta = [[0.1, 0.6, 0.2, 0.1],   # EF 48
            [0.0, 0.5, 0.5, 0.0]]   # EF 85
    targets = [48.0, 85.0]
    # Video 1: ŷ = 3 + 30 + 14 + 9 = 56. Labels within ±10 of 48: only 50 → mass 0.6.
    #   spread² = 0.1·26² + 0.6·6² + 0.2·14² + 0.1·34² = 67.6 + 21.6 + 39.2 + 115.6 = 244;
    #   |48 − 56| = 8 ≤ 2·√244 ≈ 31.2: calibrated. Top-3 mass 0.6 + 0.2 + 0.1 = 0.9.
    # Video 2: ŷ = 25 + 35 = 60. Within ±10 of 85: only 90, which has β 0 → mass 0.
    #   spread² = 0.5·10² + 0.5·10² = 100 → 10; |85 − 60| = 25 > 20: not calibrated. Top-3 mass 1.
    result = beta_locality(beta, labels, targets)
    assert result["beta_mass_within_10"] == pytest.approx((0.6 + 0.0) / 2, rel=1e-12)
    assert result["beta_label_spread"] == pytest.approx((math.sqrt(244.0) + 10.0) / 2, rel=1e-12)
    assert result["beta_spread_calibration"] == pytest.approx(0.5)
    assert result["top3_beta"] == pytest.approx((0.9 + 1.0) / 2, rel=1e-12)
    # The window is inclusive: labels 50 and 70 are exactly 10 from EF 60 (video 2 moved to 60, error 0).
    moved = beta_locality(beta, labels, [48.0, 60.0])
    assert moved["beta_mass_within_10"] == pytest.approx((0.6 + 1.0) / 2, rel=1e-12)
    assert moved["beta_spread_calibration"] == pytest.approx(1.0)
    # A one-hot β on the right label: all mass local, zero spread, error 0 ≤ 0 counts as calibrated.
    assert beta_locality([[0.0, 1.0, 0.0, 0.0]], labels, [50.0]) == pytest.approx(
        {"beta_mass_within_10": 1.0, "beta_label_spread": 0.0, "beta_spread_calibration": 1.0, "top3_beta": 1.0})
    # They reach every run through interpretability_summary.
    predictions = {"ef": np.array(targets), "prediction": np.array([56.0, 60.0]), "weights": np.array(beta),
                   "similarities": np.zeros((2, 4))}
    summary = interpretability_summary(predictions, np.array(labels), 5.0)
    assert summary["beta_mass_within_10"] == pytest.approx(0.3, rel=1e-12)
    assert summary["top3_beta"] == pytest.approx(0.95, rel=1e-12)
