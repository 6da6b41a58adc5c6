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


# --------------------------------------------------------------------------- local-β candidates (issue 17)

def test_expected_label_error_hand_computed_and_its_identity():
    from protoef.losses import expected_label_error_loss

    labels = torch.tensor([40.0, 50.0, 60.0], dtype=f64)
    beta = torch.tensor([[0.2, 0.5, 0.3], [1.0, 0.0, 0.0]], dtype=f64)
    y = torch.tensor([52.0, 40.0], dtype=f64)
    # Sample 1: 0.2·12² + 0.5·2² + 0.3·8² = 28.8 + 2 + 19.2 = 50; it is (ŷ − y)² + Var_β(l) with
    #   ŷ = 8 + 25 + 18 = 51: 1 + (0.2·11² + 0.5·1² + 0.3·9²) = 1 + 24.2 + 0.5 + 24.3 = 50.
    # Sample 2: all mass on the true label: 0. Mean 25.
    assert expected_label_error_loss(beta, y, labels).item() == pytest.approx(25.0, rel=1e-12)
    # The identity on random β, checked against numpy: E_β[(l − y)²] = (ŷ − y)² + Var_β(l).
    rng = np.random.default_rng(3)
    b = rng.dirichlet(np.ones(6), size=5)
    l, t = rng.uniform(10, 90, 6), rng.uniform(10, 90, 5)
    ef_hat = b @ l
    variance = (b * (l[None] - ef_hat[:, None]) ** 2).sum(1)
    got = expected_label_error_loss(torch.tensor(b), torch.tensor(t), torch.tensor(l)).item()
    assert got == pytest.approx(float(np.mean((ef_hat - t) ** 2 + variance)), rel=1e-12)


def test_reverse_soft_label_hand_computed():
    from protoef.losses import reverse_soft_label_loss, soft_label_target

    labels = torch.tensor([40.0, 50.0, 60.0], dtype=f64)
    y = torch.tensor([50.0], dtype=f64)
    beta = torch.tensor([[0.2, 0.5, 0.3]], dtype=f64)
    # σ = 10: ln q_k = −(l_k − 50)²/200 − ln z with z = 1 + 2e^−0.5, so
    # KL(β‖q) = Σ β ln β − Σ β ln q = Σ β ln β + (0.2·0.5 + 0.5·0 + 0.3·0.5) + ln z.
    expected = 0.2 * math.log(0.2) + 0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 0.25 + math.log(1 + 2 * math.exp(-0.5))
    assert reverse_soft_label_loss(beta, y, labels, sigma=10.0).item() == pytest.approx(expected, rel=1e-12)
    q = soft_label_target(y, labels, sigma=10.0)
    assert reverse_soft_label_loss(q, y, labels, sigma=10.0).item() == pytest.approx(0.0, abs=1e-12)
    # Far mass costs its full squared distance: labels 0 and 100, EF 0, σ = 1: ln q = (0, −5000) to
    # double precision, so β = (½, ½) costs ln ½ + ½·5000 (a clamped q would cap it near ½·27.6).
    far = torch.tensor([0.0, 100.0], dtype=f64)
    half = torch.tensor([[0.5, 0.5]], dtype=f64)
    zero = torch.tensor([0.0], dtype=f64)
    assert reverse_soft_label_loss(half, zero, far, sigma=1.0).item() == pytest.approx(math.log(0.5) + 2500.0, rel=1e-12)
    # 0 · ln 0 counts as 0: all mass on the nearest label costs −ln q_0 = ln(1 + e^−5000) = 0.
    one_hot = torch.tensor([[1.0, 0.0]], dtype=f64)
    assert reverse_soft_label_loss(one_hot, zero, far, sigma=1.0).item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("name", ["expected_label_error", "reverse_soft_label"])
def test_local_beta_losses_have_finite_gradients_at_saturated_beta(name):
    from protoef.losses import expected_label_error_loss, reverse_soft_label_loss

    labels = torch.tensor([10.0, 30.0, 50.0, 70.0, 90.0], dtype=f64)
    # Logits of ±1e3: β underflows to exact 0 and 1 on some rows; the labels sit 80 EF apart.
    logits = torch.tensor([[1e3, -1e3, 0.0, 0.0, 0.0], [0.0] * 5, [-1e3, -1e3, -1e3, -1e3, 1e3]],
                          dtype=f64, requires_grad=True)
    y = torch.tensor([90.0, 50.0, 10.0], dtype=f64)
    beta = torch.softmax(logits, dim=1)
    value = (expected_label_error_loss(beta, y, labels) if name == "expected_label_error"
             else reverse_soft_label_loss(beta, y, labels, sigma=3.0))
    (grad,) = torch.autograd.grad(value, logits)
    assert torch.isfinite(value) and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_local_beta_terms_enter_the_total_and_the_gradient_diagnostics():
    from protoef.diagnostics import loss_gradient_norms
    from protoef.losses import expected_label_error_loss, reverse_soft_label_loss
    from protoef.model import cosine_similarity

    torch.manual_seed(1)
    model = torch.nn.Module()
    model.prototypes = torch.nn.Parameter(torch.rand(4, 6, dtype=f64))
    model.register_buffer("prototype_labels", torch.tensor([20.0, 40.0, 60.0, 80.0], dtype=f64))
    shared = torch.rand(3, 6, dtype=f64, requires_grad=True)  # stands in for the backbone output
    s = cosine_similarity(shared[:, None], model.prototypes[None])  # (3, 4)
    beta = torch.softmax(s / 0.2, dim=1)
    output = ProtoEFOutput((beta * model.prototype_labels).sum(1), s, torch.rand(3, 4, 1, 2, 2, dtype=f64), beta)
    y = torch.tensor([25.0, 55.0, 79.0], dtype=f64)
    plain, plain_terms = ProtoEFLoss(occurrence=0.0)(output, y, model)
    assert not {"expected_label_error", "reverse_soft_label"} & set(plain_terms)  # weight 0: not even computed
    loss = ProtoEFLoss(occurrence=0.0, expected_label_error=0.5, reverse_soft_label=2.0, soft_label_sigma=4.0)
    total, terms = loss(output, y, model)
    expected = plain + 0.5 * expected_label_error_loss(beta, y, model.prototype_labels) \
        + 2.0 * reverse_soft_label_loss(beta, y, model.prototype_labels, 4.0)
    assert total.item() == pytest.approx(expected.item(), rel=1e-12)
    norms = loss_gradient_norms(loss.terms(output, y, model), loss.weights, prototypes=model.prototypes,
                                shared_features=shared)
    for name in ("expected_label_error", "reverse_soft_label"):
        for target in ("prototypes", "features"):
            assert math.isfinite(norms[f"grad_{name}_{target}"]) and norms[f"grad_{name}_{target}"] > 0


def test_occurrence_share_hand_computed_and_blind_to_scale():
    from protoef.losses import occurrence_share_loss
    # One sample, two prototypes, T = 1, 1 × 4 cells; background 1 on the last two cells.
    background = torch.tensor([0.0, 0.0, 1.0, 1.0]).view(1, 1, 1, 1, 4)
    maps = torch.tensor([[0.5, 0.5, 0.0, 0.0],       # all mass inside: share 0
                         [0.1, 0.1, 0.2, 0.6]]).view(1, 2, 1, 1, 4)  # 0.8 of 1.0 outside
    assert occurrence_share_loss(maps, background).item() == pytest.approx(0.8)
    # Shrinking every map by 100x lowers the paper's term 100x but leaves the share alone.
    assert occurrence_share_loss(maps / 100, background).item() == pytest.approx(0.8)
    assert occurrence_loss(maps / 100, background).item() == pytest.approx(occurrence_loss(maps, background).item() / 100)
    loss = ProtoEFLoss(occurrence=1.0, occurrence_share=True)
    assert loss.occurrence_share and "occurrence_share" not in loss.weights


def test_concentration_hand_computed_per_slot_and_only_with_its_weight():
    from protoef.losses import concentration_loss
    # One sample, two prototypes, two time slots of 2 × 2 cells; fraction 0.5 → the top 2 cells.
    maps = torch.tensor([[[4.0, 3.0, 2.0, 1.0],    # slot 0: 1 − 7/10 = 0.3
                          [1.0, 1.0, 1.0, 1.0]],   # slot 1: 1 − 2/4 = 0.5
                         [[0.0, 0.0, 0.0, 5.0],    # all mass in one cell: 0
                          [2.0, 0.0, 2.0, 0.0]]]).view(1, 2, 2, 2, 2)  # top 2 hold all: 0
    # mean over slots per prototype (0.4 and 0), summed over prototypes
    assert concentration_loss(maps, fraction=0.5).item() == pytest.approx(0.4)
    # fraction 0.25 → one cell: slots 1 − 4/10, 1 − 1/4, 0, 1 − 2/4 → (0.6 + 0.75) / 2 + 0.25
    assert concentration_loss(maps, fraction=0.25).item() == pytest.approx(0.925)
    # a second sample: the mean over samples
    both = torch.cat([maps, torch.ones_like(maps)])  # uniform maps: 1 − 2/4 per slot, 0.5 per prototype
    assert concentration_loss(both, fraction=0.5).item() == pytest.approx((0.4 + 1.0) / 2)
    # blind to scale, like the share form of the occurrence term
    assert concentration_loss(maps * 0.01, fraction=0.5).item() == pytest.approx(0.4)

    model = torch.nn.Module()
    model.prototypes = torch.nn.Parameter(torch.rand(2, 3, dtype=f64))
    model.register_buffer("prototype_labels", torch.tensor([30.0, 60.0], dtype=f64))
    s = torch.rand(1, 2, dtype=f64)
    output = ProtoEFOutput(torch.tensor([50.0], dtype=f64), s, maps.to(f64), torch.softmax(s, dim=1))
    y = torch.tensor([45.0], dtype=f64)
    plain, plain_terms = ProtoEFLoss(occurrence=0.0)(output, y, model)
    assert "concentration" not in plain_terms  # weight 0: not computed, no history column
    total, terms = ProtoEFLoss(occurrence=0.0, concentration=2.0, concentration_fraction=0.5)(output, y, model)
    assert terms["concentration"].item() == pytest.approx(0.4)
    assert total.item() == pytest.approx(plain.item() + 2.0 * 0.4)
