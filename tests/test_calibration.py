"""The head after training (protoef.training.calibration): β sharpening's values worked out
by hand for a two-prototype head, its choice rule on hand-made rows, and the head refit's
first Adam step on a loss written out here (smoke runs with both switched on:
tests/test_train.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from protoef.model import ProtoEFNet
from protoef.training import calibration


@pytest.fixture
def two_prototypes():
    """Labels 30 and 60, τ = 0.2, θ = 1: logits θ s / τ = 5 s."""
    torch.manual_seed(0)
    model = ProtoEFNet(backbone="r2plus1d_10", num_prototypes=2, prototype_dim=8, tau=0.2).eval()
    model.set_prototypes(model.prototypes.detach().clone(), torch.tensor([30.0, 60.0]))
    with torch.no_grad():
        model.theta.fill_(1.0)
    return model


def test_sharpening_rows_by_hand(two_prototypes):
    # One video, s = (0.2, 0.1), true EF 35. f = 1: logits (1, 0.5), β_30 = 1 / (1 + e^-0.5);
    # f = 2: logits (2, 1), β_30 = 1 / (1 + e^-1). ŷ = 30 β_30 + 60 (1 − β_30); only label 30 is
    # within ±10 of 35; spread = sqrt(β_30 β_60) · 30; 80 % of β needs both prototypes at f = 1
    # (0.62) and at f = 2 (0.73).
    predictions = {"similarities": np.array([[0.2, 0.1]], np.float32), "ef": np.array([35.0])}
    rows = calibration.sharpening_table(two_prototypes, predictions, (1.0, 2.0))
    for row, factor in zip(rows, (1.0, 2.0)):
        beta = 1 / (1 + math.exp(-0.5 * factor))
        assert row["factor"] == factor
        assert row["mae"] == pytest.approx(abs(30 * beta + 60 * (1 - beta) - 35), abs=1e-4)
        assert row["beta_mass_within_10"] == pytest.approx(beta, abs=1e-6)
        assert row["beta_label_spread"] == pytest.approx(math.sqrt(beta * (1 - beta)) * 30, abs=1e-4)
        assert row["sparsity"] == 2
    assert rows[0]["mae"] == pytest.approx(6.3262, abs=1e-3) and rows[1]["mae"] == pytest.approx(3.0682, abs=1e-3)
    assert torch.equal(two_prototypes.theta, torch.ones(2))  # θ restored


def test_the_rule_takes_the_most_local_beta_within_the_mae_tolerance():
    rows = [{"factor": 1.0, "mae": 3.60, "beta_mass_within_10": 0.85},
            {"factor": 2.0, "mae": 3.64, "beta_mass_within_10": 0.88},
            {"factor": 3.0, "mae": 3.69, "beta_mass_within_10": 0.89},
            {"factor": 4.0, "mae": 3.75, "beta_mass_within_10": 0.90}]  # +0.15 MAE: outside 0.1
    assert calibration.choose_factor(rows, 0.1) == 3.0
    assert calibration.choose_factor(rows, 0.2) == 4.0
    assert calibration.choose_factor(rows, 0.0) == 1.0  # every sharper head costs MAE
    tied = [{"factor": 1.0, "mae": 3.0, "beta_mass_within_10": 0.9}, {"factor": 2.0, "mae": 3.0, "beta_mass_within_10": 0.9}]
    assert calibration.choose_factor(tied, 0.1) == 1.0  # a tie keeps the smaller factor
    with pytest.raises(ValueError, match="must start with the factor 1"):
        calibration.choose_factor(rows[1:], 0.1)
    assert calibration.factors_up_to(1.0) == (1.0,) and calibration.factors_up_to(2.2) == (1.0, 1.25, 1.5, 2.0)


class _Loader(list):
    """Batches as the push loader gives them: one deterministic clip per video."""
    dataset = type("Dataset", (), {"clips": "deterministic"})()


def test_refit_head_takes_adams_first_step_on_the_beta_terms_worked_out_here(two_prototypes):
    # One batch of two videos (EF 35, 55), one epoch: Adam's first step moves each θ_k by
    # lr·g_k/(|g_k| + eps), i.e. lr·sign(g_k). g is the gradient of the loss written out here:
    # MSE + 10·KL(q‖β) + 10·KL(β‖q), β = softmax(θ s / τ), q ∝ exp(−(l − y)²/(2·3²)).
    from protoef.losses import ProtoEFLoss
    from protoef.training.loops import predict

    torch.manual_seed(1)
    loader = _Loader([{"video": torch.randn(2, 3, 8, 32, 32), "ef": torch.tensor([35.0, 55.0]), "filename": ["a", "b"]}])
    similarities = torch.as_tensor(predict(two_prototypes, loader)["similarities"])       # (2, 2)
    labels, targets = torch.tensor([30.0, 60.0]), torch.tensor([35.0, 55.0])
    theta = torch.ones(2, requires_grad=True)
    beta = torch.softmax(theta * similarities / 0.2, dim=1)
    q = torch.softmax(-(labels[None] - targets[:, None]) ** 2 / 18.0, dim=1)
    by_hand = (((beta * labels).sum(1) - targets) ** 2).mean() + 10 * (q * (q.log() - beta.log())).sum(1).mean() \
        + 10 * (beta * (beta.log() - q.log())).sum(1).mean()
    by_hand.backward()
    assert (theta.grad.abs() > 1e-3).all()  # a step in each component, so the sign is defined
    loss = ProtoEFLoss(mse=1.0, soft_label=10.0, reverse_soft_label=10.0, soft_label_sigma=3.0)
    predictions = calibration.push_set_predictions(two_prototypes, loader, None)
    result = calibration.refit_head(two_prototypes, predictions, loss, epochs=1, lr=0.01, batch_size=2, seed=0)
    assert result["epochs"] == 1 and result["videos"] == 2
    assert result["loss_first_epoch"] == pytest.approx(by_hand.item(), rel=1e-5)
    np.testing.assert_allclose(two_prototypes.theta.detach().numpy(), (1 - 0.01 * theta.grad.sign()).numpy(), atol=1e-6)
    assert two_prototypes.theta.grad is None


def test_the_push_set_predictions_refuse_random_clips(two_prototypes):
    loader = _Loader([])
    loader.dataset = type("Dataset", (), {"clips": "random"})()
    with pytest.raises(ValueError, match="one fixed clip per video"):
        calibration.push_set_predictions(two_prototypes, loader, None)


def test_sharpening_refuses_a_val_set_of_several_clips_per_video(two_prototypes):
    loader = _Loader([])
    loader.dataset = type("Dataset", (), {"clips": 2})()
    with pytest.raises(ValueError, match=r"one clip per VAL video: expected clips='deterministic', got clips='2'"):
        calibration.sharpen_on_val(two_prototypes, loader, None, largest=4.0, tolerance=0.1)
    assert bool((two_prototypes.theta == 1.0).all())  # refused before θ was scaled
