"""Loss terms against hand computations and independent float64 numpy formulas (docs/method.md §3)."""
import math

import numpy as np
import pytest
import torch
from torchvision.transforms.functional import InterpolationMode, affine

from protoef.losses import (ProtoEFLoss, cluster_loss, mse_loss, occurrence_loss, orthogonality_loss,
                            pas_loss, psd_loss, theta_l1_loss, transformation_loss)
from protoef.model import ProtoEFOutput

f64 = torch.float64


# --------------------------------------------------------------------------- numpy references

def np_cluster(s, y, labels, delta, k):
    rows = []
    for i in range(s.shape[0]):
        row = [s[i, j] if abs(labels[j] - y[i]) <= delta else 0.0 for j in range(s.shape[1])]
        rows.append(sorted(row, reverse=True)[:k])
    return -float(np.mean(rows))


def np_psd(s):
    d = 1.0 - s
    return -float(np.mean(np.log(1.0 - d.min(axis=0) / 2.0)))


def np_pas(p, labels, delta, eps=1e-6):
    num = p.shape[0]
    unit = p / np.linalg.norm(p, axis=1, keepdims=True)
    cos = np.clip(unit @ unit.T, -1 + eps, 1 - eps)
    total = 0.0
    for j in range(num):
        for k in range(num):
            if j != k and abs(labels[j] - labels[k]) > delta:
                total += np.log(np.arccos(cos[j, k]) / np.pi + eps)
    return -total / num / num


def np_occurrence(maps, background, p):
    masked = np.abs(np.broadcast_to(background, maps.shape) * maps)
    norms = (masked ** p).sum(axis=(2, 3, 4)) ** (1.0 / p)  # (N, P)
    return float(norms.mean(axis=0).sum())


# --------------------------------------------------------------------------- MSE

def test_mse_matches_numpy():
    pred, target = np.array([50.0, 61.5, 30.0]), np.array([55.0, 60.0, 42.0])
    got = mse_loss(torch.tensor(pred), torch.tensor(target))
    assert got.item() == pytest.approx(np.mean((pred - target) ** 2), rel=1e-12)


# --------------------------------------------------------------------------- cluster

def test_cluster_hand_computed_with_inclusive_window_and_masked_zeros():
    labels = torch.tensor([10.0, 15.0, 20.0, 30.0], dtype=f64)
    targets = torch.tensor([15.0, 25.0], dtype=f64)
    s = torch.tensor([[0.2, 0.5, 0.1, 0.9],    # window |l-15|<=5: 10, 15, 20 (both edges inclusive)
                      [0.9, 0.8, -0.3, 0.4]],  # window |l-25|<=5: 20, 30 -> masked row 0, 0, -0.3, 0.4
                     dtype=f64)
    # sample 0 top-3: 0.5, 0.2, 0.1 ; sample 1 top-3: 0.4, 0, 0 (masked zeros beat -0.3)
    expected = -(0.5 + 0.2 + 0.1 + 0.4 + 0.0 + 0.0) / 6
    assert cluster_loss(s, targets, labels, delta=5.0, k=3).item() == pytest.approx(expected, abs=1e-15)


def test_cluster_boundary_is_inclusive():
    labels = torch.tensor([10.0, 20.0, 30.0], dtype=f64)
    s = torch.tensor([[0.7, 0.6, 0.5]], dtype=f64)
    # y = 25: |20-25| = 5 and |30-25| = 5 are both inside; 10 is outside.
    got = cluster_loss(s, torch.tensor([25.0], dtype=f64), labels, delta=5.0, k=1)
    assert got.item() == pytest.approx(-0.6)
    # Just beyond the edge the prototype drops out.
    got = cluster_loss(s, torch.tensor([25.5], dtype=f64), labels, delta=5.0, k=2)
    assert got.item() == pytest.approx(-(0.5 + 0.0) / 2)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_cluster_matches_numpy_on_random_input(k):
    rng = np.random.default_rng(k)
    s = rng.uniform(-1, 1, size=(6, 5))
    labels = np.array([10.0, 30.0, 50.0, 70.0, 90.0])
    targets = np.array([25.0, 35.0, 50.0, 45.0, 88.0, 60.0])  # 25 and 35 sit exactly at an edge
    got = cluster_loss(torch.tensor(s), torch.tensor(targets), torch.tensor(labels), delta=5.0, k=k)
    assert got.item() == pytest.approx(np_cluster(s, targets, labels, 5.0, k), abs=1e-14)


def test_cluster_gradcheck():
    torch.manual_seed(0)
    s = (torch.rand(4, 5, dtype=f64) * 2 - 1).requires_grad_()
    labels = torch.tensor([10.0, 20.0, 30.0, 40.0, 50.0], dtype=f64)
    targets = torch.tensor([20.0, 33.0, 47.0, 12.0], dtype=f64)
    assert torch.autograd.gradcheck(lambda x: cluster_loss(x, targets, labels), (s,))


# --------------------------------------------------------------------------- PSD

def test_psd_hand_computed():
    s = torch.tensor([[0.5, -0.2], [0.0, 0.6], [-0.9, 0.1]], dtype=f64)
    # Per prototype, the nearest sample: s = 0.5 and 0.6 -> 1 - d/2 = 0.75, 0.8.
    expected = -(math.log(0.75) + math.log(0.8)) / 2
    assert psd_loss(s).item() == pytest.approx(expected, abs=1e-15)


def test_psd_matches_numpy_and_gradcheck():
    rng = np.random.default_rng(1)
    s = rng.uniform(-1, 1, size=(5, 4))
    assert psd_loss(torch.tensor(s)).item() == pytest.approx(np_psd(s), abs=1e-14)
    x = torch.tensor(s, requires_grad=True)
    assert torch.autograd.gradcheck(psd_loss, (x,))


def test_psd_finite_when_a_prototype_is_opposite_to_every_sample():
    s = torch.tensor([[-1.0, 0.3], [-1.0, 0.2]], dtype=f64, requires_grad=True)
    loss = psd_loss(s)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()


# --------------------------------------------------------------------------- PAS

def test_pas_hand_computed_strict_window_and_division_by_p():
    prototypes = torch.eye(3, dtype=f64)            # pairwise angle pi/2
    labels = torch.tensor([10.0, 15.0, 30.0], dtype=f64)
    # |10-15| = 5 is NOT far (strict >); far ordered pairs: (0,2), (2,0), (1,2), (2,1).
    # Each contributes ln(1/2 + 1e-6); divided by P twice (9), not by the 4 valid pairs.
    expected = -4 * math.log(0.5 + 1e-6) / 9
    assert pas_loss(prototypes, labels, delta=5.0).item() == pytest.approx(expected, abs=1e-14)


def test_pas_boundary_pair_is_not_far():
    prototypes = torch.eye(2, dtype=f64)
    assert pas_loss(prototypes, torch.tensor([10.0, 15.0], dtype=f64)).item() == 0.0
    labels = torch.tensor([10.0, 15.0 + 1e-9], dtype=f64)
    assert pas_loss(prototypes, labels).item() == pytest.approx(-2 * math.log(0.5 + 1e-6) / 4)


def test_pas_matches_numpy_on_random_input():
    rng = np.random.default_rng(2)
    p = rng.normal(size=(5, 7))
    labels = np.array([10.0, 15.0, 20.0, 40.0, 45.5])
    got = pas_loss(torch.tensor(p), torch.tensor(labels), delta=5.0)
    assert got.item() == pytest.approx(np_pas(p, labels, 5.0), abs=1e-12)


def test_pas_gradcheck():
    torch.manual_seed(3)
    p = torch.randn(4, 6, dtype=f64, requires_grad=True)
    labels = torch.tensor([10.0, 20.0, 30.0, 34.0], dtype=f64)
    assert torch.autograd.gradcheck(lambda x: pas_loss(x, labels), (p,))


@pytest.mark.parametrize("case", ["identical", "antipodal", "zero"])
def test_pas_gradient_finite_at_degenerate_prototypes(case):
    base = torch.tensor([[1.0, 2.0, 3.0]], dtype=f64)
    p = {"identical": base.repeat(4, 1), "antipodal": torch.cat([base, -base, base, -base]),
         "zero": torch.zeros(4, 3, dtype=f64)}[case].requires_grad_()
    loss = pas_loss(p, torch.tensor([10.0, 30.0, 50.0, 70.0], dtype=f64))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(p.grad).all()


# --------------------------------------------------------------------------- occurrence

@pytest.mark.parametrize("p", [1, 2])
def test_occurrence_matches_numpy(p):
    rng = np.random.default_rng(4)
    maps = rng.uniform(size=(2, 3, 2, 4, 4))
    background = rng.uniform(size=(2, 1, 1, 4, 4))
    got = occurrence_loss(torch.tensor(maps), torch.tensor(background), p=p)
    assert got.item() == pytest.approx(np_occurrence(maps, background, p), rel=1e-13)


def test_occurrence_hand_computed():
    maps = torch.full((2, 2, 1, 2, 2), 0.5, dtype=f64)
    background = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=f64)  # one background pixel
    # each (n, k): L2 norm of a single 0.5 -> 0.5; mean over samples 0.5; sum over 2 prototypes 1.0
    assert occurrence_loss(maps, background, p=2).item() == pytest.approx(1.0)


def test_occurrence_gradcheck_and_zero_background_gradient():
    torch.manual_seed(5)
    maps = torch.rand(2, 3, 2, 3, 3, dtype=f64, requires_grad=True)
    background = torch.rand(2, 1, 1, 3, 3, dtype=f64)
    assert torch.autograd.gradcheck(lambda m: occurrence_loss(m, background), (maps,))
    loss = occurrence_loss(maps, torch.zeros_like(background))  # norm at 0: gradient must not be NaN
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(maps.grad).all()


# --------------------------------------------------------------------------- optional terms

def test_orthogonality_and_theta_l1():
    rng = np.random.default_rng(6)
    p = rng.normal(size=(4, 5))
    unit = p / np.linalg.norm(p, axis=1, keepdims=True)
    cos = unit @ unit.T
    expected = sum(cos[j, k] for j in range(4) for k in range(j + 1, 4))
    assert orthogonality_loss(torch.tensor(p)).item() == pytest.approx(expected, abs=1e-13)
    assert theta_l1_loss(torch.tensor([1.0, -2.0, 0.5])).item() == pytest.approx(3.5)


def test_transformation_zero_for_an_equivariant_map_and_positive_otherwise():
    torch.manual_seed(7)
    video = torch.rand(2, 3, 4, 16, 16)
    params = {"angle": 13.0, "translate": [0, 0], "scale": 1.2, "shear": [0.0, 0.0]}

    def pointwise(v):  # linear and pointwise: commutes with any spatial resampling
        return 2.0 * v[:, :2]

    loss = transformation_loss(video, pointwise(video), pointwise, params=params)
    assert loss.item() == pytest.approx(0.0, abs=1e-5)

    fixed = torch.rand(2, 2, 4, 16, 16)  # ignores its input: not equivariant
    loss = transformation_loss(video, fixed, lambda v: fixed, params=params)
    frames = fixed.permute(0, 2, 1, 3, 4).reshape(8, 2, 16, 16)
    moved = affine(frames, **params, interpolation=InterpolationMode.BILINEAR, fill=0.0)
    moved = moved.reshape(2, 4, 2, 16, 16).permute(0, 2, 1, 3, 4)
    expected = (fixed - moved).abs().sum() / (2 * 2)  # L1 sum over everything / (N * P)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


# --------------------------------------------------------------------------- ProtoEFLoss

class _Stub(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.prototypes = torch.nn.Parameter(torch.randn(5, 8, dtype=f64))
        self.theta = torch.nn.Parameter(torch.ones(5, dtype=f64))
        self.register_buffer("prototype_labels", torch.linspace(10, 90, 5, dtype=f64))


def _fake_output(n=3, p=5):
    torch.manual_seed(8)
    return ProtoEFOutput(ef=torch.rand(n, dtype=f64) * 80 + 10,
                         similarities=torch.rand(n, p, dtype=f64) * 2 - 1,
                         occurrence_maps=torch.rand(n, p, 2, 4, 4, dtype=f64),
                         weights=torch.softmax(torch.rand(n, p, dtype=f64), 1))


def test_protoef_loss_is_the_weighted_sum_with_paper_defaults():
    model, out = _Stub(), _fake_output()
    targets = torch.tensor([20.0, 55.0, 70.0], dtype=f64)
    background = torch.rand(3, 1, 1, 4, 4, dtype=f64)
    total, terms = ProtoEFLoss()(out, targets, model, background=background)
    labels = model.prototype_labels
    expected = (0.1 * mse_loss(out.ef, targets) + 10 * cluster_loss(out.similarities, targets, labels)
                + 30 * psd_loss(out.similarities) + 0.1 * pas_loss(model.prototypes, labels)
                + 1e-4 * occurrence_loss(out.occurrence_maps, background))
    assert total.item() == pytest.approx(expected.item(), rel=1e-12)
    assert set(terms) == {"mse", "cluster", "psd", "pas", "occurrence"}
    assert not any(t.requires_grad for t in terms.values())
    total.backward()
    assert model.prototypes.grad is not None


def test_protoef_loss_weights_and_missing_inputs():
    model, out = _Stub(), _fake_output()
    targets = torch.tensor([20.0, 55.0, 70.0], dtype=f64)
    with pytest.raises(ValueError, match="background"):
        ProtoEFLoss()(out, targets, model)
    total, terms = ProtoEFLoss(occurrence=0.0, pas=0.0, theta_l1=2.0)(out, targets, model)
    assert "pas" in terms and "occurrence" not in terms  # PAS still logged in a no-PAS ablation
    expected = (0.1 * terms["mse"] + 10 * terms["cluster"] + 30 * terms["psd"] + 2.0 * terms["theta_l1"])
    assert terms["theta_l1"].item() == pytest.approx(5.0)
    assert total.item() == pytest.approx(expected.item(), rel=1e-12)


# --------------------------------------------------------------------------- remedies (off in the paper)

def test_label_aware_psd_hand_computed():
    # Prototype labels 30 and 60, Δl = 5; samples at EF 31 and 58.
    labels = torch.tensor([30.0, 60.0], dtype=f64)
    y = torch.tensor([31.0, 58.0], dtype=f64)
    s = torch.tensor([[0.2, 0.9],     # sample 1 (EF 31) is very similar to prototype 2 (label 60)
                      [0.8, 0.4]], dtype=f64)
    # Paper PSD: each prototype's nearest sample whatever its EF: d = 0.2 and 0.1.
    paper = -(math.log(1 - 0.2 / 2) + math.log(1 - 0.1 / 2)) / 2
    assert psd_loss(s).item() == pytest.approx(paper, rel=1e-12)
    # Label-aware: prototype 1 may only use sample 1 (d = 0.8), prototype 2 only sample 2 (d = 0.6).
    aware = -(math.log(1 - 0.8 / 2) + math.log(1 - 0.6 / 2)) / 2
    assert psd_loss(s, y, labels, 5.0).item() == pytest.approx(aware, rel=1e-12)


def test_label_aware_psd_skips_prototypes_without_a_sample_in_their_window():
    labels = torch.tensor([30.0, 80.0], dtype=f64)
    y = torch.tensor([31.0], dtype=f64)
    s = torch.tensor([[0.5, 0.99]], dtype=f64)
    # Only prototype 1 has a sample within 5: the mean runs over it alone.
    assert psd_loss(s, y, labels, 5.0).item() == pytest.approx(-math.log(1 - 0.5 / 2), rel=1e-12)
    s = s.requires_grad_()
    psd_loss(s, y, labels, 5.0).backward()
    assert s.grad[0, 1].item() == 0.0  # the out-of-window prototype gets no pull at all
    assert psd_loss(torch.tensor([[0.5]], dtype=f64), torch.tensor([50.0], dtype=f64),
                    torch.tensor([10.0], dtype=f64), 5.0).item() == 0.0


def test_separation_hand_computed():
    labels = torch.tensor([30.0, 35.0, 60.0, 80.0], dtype=f64)
    y = torch.tensor([32.0, 78.0], dtype=f64)
    s = torch.tensor([[0.9, 0.8, 0.5, -0.1],
                      [0.3, 0.2, 0.6, 0.95]], dtype=f64)
    # Sample 1: far prototypes (|l − y| > 5) are 60 and 80 → mean(0.5, −0.1) = 0.2.
    # Sample 2: far are 30, 35, 60 → mean(0.3, 0.2, 0.6) = 0.3667.
    expected = (0.2 + (0.3 + 0.2 + 0.6) / 3) / 2
    from protoef.losses import separation_loss
    assert separation_loss(s, y, labels, 5.0).item() == pytest.approx(expected, rel=1e-12)
    # The window edge is inclusive (|l − y| = 5 is not far), as in the cluster term.
    edge = separation_loss(torch.tensor([[0.4, 0.7]], dtype=f64), torch.tensor([35.0], dtype=f64),
                           torch.tensor([30.0, 50.0], dtype=f64), 5.0)
    assert edge.item() == pytest.approx(0.7, rel=1e-12)


def test_soft_label_target_and_kl_hand_computed():
    from protoef.losses import soft_label_loss, soft_label_target

    labels = torch.tensor([40.0, 50.0, 60.0], dtype=f64)
    y = torch.tensor([50.0], dtype=f64)
    q = soft_label_target(y, labels, sigma=10.0)
    # exp(−100/200) = e^−0.5 for the outer two, 1 for the centre.
    z = 1 + 2 * math.exp(-0.5)
    assert q[0].tolist() == pytest.approx([math.exp(-0.5) / z, 1 / z, math.exp(-0.5) / z], rel=1e-12)
    beta = torch.tensor([[0.2, 0.5, 0.3]], dtype=f64)
    expected = sum(qk * math.log(qk / bk) for qk, bk in zip(q[0].tolist(), [0.2, 0.5, 0.3]))
    assert soft_label_loss(beta, y, labels, sigma=10.0).item() == pytest.approx(expected, rel=1e-12)
    assert soft_label_loss(q, y, labels, sigma=10.0).item() == pytest.approx(0.0, abs=1e-12)


def test_remedy_terms_enter_the_total_only_with_their_weights():
    from protoef.losses import separation_loss, soft_label_loss

    torch.manual_seed(0)
    model = torch.nn.Module()
    model.prototypes = torch.nn.Parameter(torch.rand(4, 6, dtype=f64))
    model.register_buffer("prototype_labels", torch.tensor([20.0, 40.0, 60.0, 80.0], dtype=f64))
    s = torch.rand(3, 4, dtype=f64) * 2 - 1
    beta = torch.softmax(s / 0.2, dim=1)
    ef = (beta * model.prototype_labels).sum(1)
    output = ProtoEFOutput(ef, s, torch.rand(3, 4, 1, 2, 2, dtype=f64), beta)
    y = torch.tensor([25.0, 55.0, 79.0], dtype=f64)
    plain, plain_terms = ProtoEFLoss(occurrence=0.0)(output, y, model)
    assert "separation" not in plain_terms and "soft_label" not in plain_terms
    total, terms = ProtoEFLoss(occurrence=0.0, separation=2.0, soft_label=3.0, soft_label_sigma=4.0)(output, y, model)
    expected = plain + 2.0 * separation_loss(s, y, model.prototype_labels, 5.0) \
        + 3.0 * soft_label_loss(beta, y, model.prototype_labels, 4.0)
    assert total.item() == pytest.approx(expected.item(), rel=1e-12)
    assert set(terms) >= {"separation", "soft_label"}
