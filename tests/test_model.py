"""ProtoEFNet / BlackBoxRegressor: shapes, head, gradients, pooling memory, weight loading."""
import socket
import urllib.error

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torchvision.models.video import r2plus1d_18

import protoef.model as model_module
from protoef.losses import ProtoEFLoss
from protoef.model import (BlackBoxRegressor, ProtoEFNet, build_backbone, cosine_similarity,
                           pool_features)

SMALL = dict(backbone="r2plus1d_10", num_prototypes=6)


@pytest.fixture(scope="module")
def torchvision_checkpoint(tmp_path_factory):
    """A random torchvision r2plus1d_18 state dict saved the way torchvision ships its weights."""
    torch.manual_seed(0)
    state = r2plus1d_18(weights=None).state_dict()
    path = tmp_path_factory.mktemp("weights") / "r2plus1d_18-random.pth"
    torch.save(state, path)
    return path, state


# --------------------------------------------------------------------------- shapes

def test_paper_shapes_r2plus1d_18():
    torch.manual_seed(0)
    model = ProtoEFNet(num_prototypes=40).eval()
    seen = {}

    def record(module, inputs, output):
        seen["backbone"] = output.shape

    model.backbone.register_forward_hook(record)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 112, 112), return_features=True)
    assert seen["backbone"] == (1, 256, 16, 14, 14)
    assert out.occurrence_maps.shape == (1, 40, 16, 14, 14)
    assert out.ef.shape == (1,) and out.similarities.shape == (1, 40) and out.weights.shape == (1, 40)
    assert out.features.shape == (1, 40, 256)
    assert ((out.occurrence_maps > 0) & (out.occurrence_maps < 1)).all()


def test_other_clip_sizes_and_features_off_by_default():
    model = ProtoEFNet(**SMALL).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 16, 64, 48))
    assert out.occurrence_maps.shape == (2, 6, 4, 8, 6)
    assert out.features is None
    rebuilt = ProtoEFNet(**model.config)
    loaded = rebuilt.load_state_dict(model.state_dict())  # strict: a key that does not fit raises
    assert not loaded.missing_keys and not loaded.unexpected_keys
    video = torch.randn(1, 3, 16, 64, 48)
    with torch.no_grad():  # the same architecture with the same weights computes the same EF
        torch.testing.assert_close(rebuilt.eval()(video).ef, model(video).ef)


def test_unknown_backbone_and_weights_for_small_backbone():
    with pytest.raises(ValueError, match="unknown backbone"):
        ProtoEFNet(backbone="resnet50")
    with pytest.raises(ValueError, match="only for r2plus1d_18"):
        build_backbone("r2plus1d_10", weights="kinetics400")


# --------------------------------------------------------------------------- head

def test_head_is_softmax_weighted_label_mean_inside_label_range():
    torch.manual_seed(1)
    model = ProtoEFNet(**SMALL, tau=0.2).double()
    labels = torch.tensor([12.0, 25.0, 33.0, 47.5, 61.0, 80.0], dtype=torch.float64)
    model.set_prototypes(model.prototypes.detach(), labels)
    with torch.no_grad():
        model.theta.copy_(torch.tensor([1.0, 3.0, -2.0, 0.5, 8.0, 1.0]))
        out = model(torch.randn(3, 3, 8, 32, 32, dtype=torch.float64))
    s, theta = out.similarities.numpy(), model.theta.detach().numpy()
    logits = theta * s / 0.2
    beta = np.exp(logits - logits.max(1, keepdims=True))
    beta /= beta.sum(1, keepdims=True)
    np.testing.assert_allclose(out.weights.numpy(), beta, rtol=1e-12)
    np.testing.assert_allclose(out.ef.numpy(), beta @ labels.numpy(), rtol=1e-12)
    assert (out.ef >= labels.min()).all() and (out.ef <= labels.max()).all()
    # Extreme attention (theta = 1) still stays inside the label range.
    with torch.no_grad():
        model.theta.fill_(1.0)
    ef, _ = model.head(torch.tensor([[1.0, -1, -1, -1, -1, -1], [-1, -1, -1, -1, -1, 1]],
                                    dtype=torch.float64) * 1e4)
    assert ef.tolist() == pytest.approx([12.0, 80.0])


def test_default_labels_and_push_to_own_features_gives_similarity_one():
    torch.manual_seed(2)
    model = ProtoEFNet(**SMALL).eval()
    assert model.prototype_labels.tolist() == pytest.approx(np.linspace(10, 90, 6).tolist())
    video = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        features = model(video, return_features=True).features[0]   # (P, D)
        model.set_prototypes(features, torch.arange(6.0) + 30)
        out = model(video)
    assert out.similarities[0].tolist() == pytest.approx([1.0] * 6, abs=1e-5)
    assert model.prototype_labels.tolist() == [30.0, 31, 32, 33, 34, 35]


def test_head_stays_float32_under_autocast():
    model = ProtoEFNet(**SMALL)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(1, 3, 8, 32, 32), return_features=True)
    assert out.occurrence_maps.dtype == torch.bfloat16  # the conv stack may run in bf16 ...
    for name in ("ef", "similarities", "weights", "features"):  # ... the EF arithmetic may not
        assert getattr(out, name).dtype == torch.float32, name


def test_cosine_similarity_matches_torch_and_is_finite_at_zero():
    a, b = torch.randn(4, 7, dtype=torch.float64), torch.randn(4, 7, dtype=torch.float64)
    torch.testing.assert_close(cosine_similarity(a, b), torch.nn.functional.cosine_similarity(a, b, dim=-1))
    zero = torch.zeros(2, 7, requires_grad=True)
    value = cosine_similarity(zero, torch.randn(2, 7))
    value.sum().backward()
    assert (value == 0).all() and torch.isfinite(zero.grad).all()


# --------------------------------------------------------------------------- gradients

def test_gradients_reach_every_parameter_group():
    torch.manual_seed(3)
    model = ProtoEFNet(**SMALL)
    groups = model.parameter_groups()
    assert [g["name"] for g in groups] == ["backbone", "features", "occurrence", "prototypes", "head"]
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # each exactly once
    video = torch.randn(2, 3, 8, 32, 32)
    out = model(video)
    background = torch.rand(2, 1, 1, *out.occurrence_maps.shape[-2:])
    total, _ = ProtoEFLoss()(out, torch.tensor([35.0, 60.0]), model, background=background)
    total.backward()
    for group in groups:
        grads = [p.grad for p in group["params"]]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), group["name"]
        assert sum(g.abs().sum() for g in grads) > 0, group["name"]
    torch.optim.Adam(groups).step()  # the groups are directly usable by an optimiser


# --------------------------------------------------------------------------- pooling

class _ShapeAudit(TorchDispatchMode):
    """Records the shape of every tensor any aten op produces (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor):
                self.shapes.append(tuple(t.shape))
        return out


def _naive_pool(occurrence_maps, feature_maps):
    return (occurrence_maps.unsqueeze(2) * feature_maps.unsqueeze(1)).sum(dim=(3, 4, 5))


def test_einsum_pooling_equals_broadcast_sum():
    m = torch.rand(2, 3, 2, 4, 5, dtype=torch.float64)
    f = torch.randn(2, 7, 2, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(pool_features(m, f), _naive_pool(m, f))
    expected = np.einsum("kthw,dthw->kd", m[1].numpy(), f[1].numpy())
    np.testing.assert_allclose(pool_features(m, f)[1].numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("pooling", ["einsum", "naive"])
def test_pooling_never_materialises_n_p_d_thw(pooling, monkeypatch):
    if pooling == "naive":  # proves the audit would catch the broadcast version
        monkeypatch.setattr(model_module, "pool_features", _naive_pool)
    torch.manual_seed(4)
    # N*P*D*T'H'W' = 16.8M numbers here; the largest legitimate tensor (the stem's output,
    # 2*144*16*32*32) holds 4.7M, so the size threshold separates them cleanly.
    model = ProtoEFNet(backbone="r2plus1d_10", num_prototypes=64, prototype_dim=512)
    video = torch.randn(2, 3, 16, 64, 64)
    with _ShapeAudit() as audit:
        out = model(video)
        out.ef.sum().backward()
    t, h, w = out.occurrence_maps.shape[-3:]
    forbidden = 2 * 64 * 512 * t * h * w
    big = [s for s in audit.shapes if int(np.prod(s)) >= forbidden]
    if pooling == "einsum":
        assert big == [], big
    else:
        assert (2, 64, 512, t, h, w) in big


# --------------------------------------------------------------------------- weights

def test_local_weights_round_trip(torchvision_checkpoint):
    path, state = torchvision_checkpoint
    model = ProtoEFNet(weights=path, num_prototypes=4)
    loaded = model.backbone.state_dict()
    assert set(loaded) == {k for k in state if k.startswith(("stem.", "layer1.", "layer2.", "layer3."))}
    for key, value in loaded.items():
        assert torch.equal(value, state[key]), key
    black_box = BlackBoxRegressor(weights=str(path))
    for key, value in black_box.network.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("damage", ["missing", "unexpected", "shape"])
def test_wrong_keys_raise_a_clear_error(torchvision_checkpoint, tmp_path, damage):
    _, state = torchvision_checkpoint
    state = dict(state)
    if damage == "missing":
        del state["layer2.0.conv1.0.0.weight"]
    elif damage == "unexpected":
        state["layer9.bogus"] = torch.zeros(1)
    else:
        state["stem.0.weight"] = torch.zeros(3, 3)
    path = tmp_path / f"{damage}.pth"
    torch.save(state, path)
    pattern = {"missing": "missing keys: layer2.0.conv1.0.0.weight",
               "unexpected": "unexpected keys: layer9.bogus", "shape": "wrong shapes: stem.0.weight"}
    with pytest.raises(ValueError, match=pattern[damage]) as info:
        ProtoEFNet(weights=path)
    assert str(path) in str(info.value)


def test_not_a_state_dict_and_missing_file(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(ValueError, match="not a plain state dict"):
        ProtoEFNet(weights=path)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        ProtoEFNet(weights=tmp_path / "nope.pth")


def test_kinetics400_offline_fails_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(url, destination, *, timeout):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(model_module, "_download", offline)
    with pytest.raises(RuntimeError) as info:
        ProtoEFNet(weights="kinetics400")
    message = str(info.value)
    assert "https://download.pytorch.org/models/r2plus1d_18-91a641e6.pth" in message
    assert "weights='/path/to/r2plus1d_18-91a641e6.pth'" in message


def test_kinetics400_uses_the_hub_cache(torchvision_checkpoint, tmp_path, monkeypatch):
    path, state = torchvision_checkpoint
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "r2plus1d_18-91a641e6.pth").symlink_to(path)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(model_module, "_download", lambda *a, **k: pytest.fail("no download expected"))
    backbone = build_backbone(weights="kinetics400")
    assert torch.equal(backbone.state_dict()["layer3.1.conv2.1.weight"], state["layer3.1.conv2.1.weight"])


def test_download_sets_a_socket_timeout(tmp_path, monkeypatch):
    seen = {}

    def fake_download(url, dst, hash_prefix=None, progress=True):
        seen.update(timeout=socket.getdefaulttimeout(), hash_prefix=hash_prefix)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    before = socket.getdefaulttimeout()
    model_module._download("http://x/r2plus1d_18-91a641e6.pth", tmp_path / "r2plus1d_18-91a641e6.pth",
                           timeout=3.0)
    assert seen == {"timeout": 3.0, "hash_prefix": "91a641e6"}
    assert socket.getdefaulttimeout() == before


# --------------------------------------------------------------------------- black box

def test_black_box_regressor():
    torch.manual_seed(5)
    model = BlackBoxRegressor(backbone="r2plus1d_10")
    assert model.network.fc.weight.shape == (1, 512)
    assert model.network.fc.bias.item() == pytest.approx(55.6)
    video = torch.randn(2, 3, 8, 32, 32)
    ef = model(video).ef
    assert ef.shape == (2,)
    ef.sum().backward()
    assert model.network.stem[0].weight.grad is not None
    with torch.no_grad():
        model.network.fc.weight.zero_()
        assert model(video).ef.tolist() == pytest.approx([55.6, 55.6])


# --------------------------------------------------------------------------- top-k β (issue 17)

def test_top_k_beta_hand_computed_and_off_by_default():
    import math

    model = ProtoEFNet(backbone="r2plus1d_10", num_prototypes=4, prototype_dim=8, tau=1.0, label_range=(20.0, 80.0),
                       beta_top_k=2)  # labels 20, 40, 60, 80; θ = 1
    s = torch.tensor([[0.1, 0.9, 0.5, -0.3]], requires_grad=True)
    ef, beta = model.head(s)
    # Only the two largest logits (0.9, 0.5) enter the softmax: β_1 = 1 / (1 + e^−0.4), β_2 = 1 − β_1.
    b1 = 1 / (1 + math.exp(-0.4))
    assert beta[0].tolist() == pytest.approx([0.0, b1, 1 - b1, 0.0], rel=1e-6)
    assert beta[0, 0] == 0 and beta[0, 3] == 0  # exactly 0, not tiny
    assert ef.item() == pytest.approx(40 * b1 + 60 * (1 - b1), rel=1e-6)
    (grad,) = torch.autograd.grad(ef.sum(), s)
    assert torch.isfinite(grad).all() and grad[0, 0] == 0 and grad[0, 3] == 0 and grad[0, 1] != 0
    # 0 (the default) and k = P leave the paper's softmax over every prototype, bit for bit.
    for k in (0, 4):
        model.beta_top_k = k
        _, full = model.head(s)
        assert torch.equal(full, torch.softmax(model.theta * s / model.tau, dim=1))
    assert ProtoEFNet(**SMALL).config["beta_top_k"] == 0
