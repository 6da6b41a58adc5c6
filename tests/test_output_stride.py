"""The dilated layer3 (model.output_stride = 4) and frozen backbone stages (model.frozen_stages)."""
import pytest
import torch

from protoef.config import resolve
from protoef.model import ProtoEFNet, build_backbone
from protoef.training.build import build_optimizer, feature_size


@pytest.mark.parametrize("name", ["r2plus1d_10", "r2plus1d_18"])
def test_dilated_layer3_is_torchvision_layer3_on_a_finer_grid(name):
    # Independent reference: torchvision's own truncated network with the same weights. A
    # stride-2 conv is the stride-1 conv read at even cells, and a 3x3 conv on the coarse grid
    # reads the cells that a 2-dilated 3x3 conv reads on the fine grid around an even cell.
    torch.manual_seed(0)
    standard = build_backbone(name, output_stride=8).eval()
    dilated = build_backbone(name, output_stride=4).eval()
    dilated.load_state_dict(standard.state_dict())
    video = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        coarse, fine = standard(video), dilated(video)
    assert coarse.shape == (2, 256, 2, 4, 4)
    assert fine.shape == (2, 256, 2, 8, 8)
    torch.testing.assert_close(fine[..., ::2, ::2], coarse, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(fine[..., 1::2, 1::2], coarse, atol=1e-3)  # the odd cells are new


def test_feature_size_follows_the_output_stride():
    config = resolve("smoke", {"model.output_stride": 4})
    assert feature_size(config) == (config.data.resize // 4,) * 2
    assert feature_size(resolve("smoke", {"model.output_stride": 8})) == (config.data.resize // 8,) * 2
    with pytest.raises(ValueError, match="model.output_stride"):
        resolve("smoke", {"model.output_stride": 2})


def test_frozen_stages_keep_weights_and_batchnorm_statistics():
    torch.manual_seed(0)
    model = ProtoEFNet(num_prototypes=4, prototype_dim=8, backbone="r2plus1d_10", frozen_stages=2)
    frozen_before = {k: v.clone() for k, v in model.backbone.state_dict().items() if k.startswith(("stem.", "layer1."))}
    layer2_before = model.backbone.layer2[0].conv1[0][0].weight.detach().clone()
    config = resolve("smoke", {"model.frozen_stages": 2})
    optimizer = build_optimizer(model, config)
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not any(id(p) in optimised for p in model.backbone.stem.parameters())
    assert all(id(p) in optimised for p in model.backbone.layer2.parameters())
    model.train()
    assert not model.backbone.stem.training and not model.backbone.layer1.training and model.backbone.layer2.training
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.randn(2, 3, 8, 32, 32)).ef.sum().backward()
        optimizer.step()
    after = model.backbone.state_dict()
    for key, value in frozen_before.items():
        assert torch.equal(after[key], value), key  # weights and running_mean/var alike
    assert not torch.equal(model.backbone.layer2[0].conv1[0][0].weight, layer2_before)
    rebuilt = ProtoEFNet(**model.config)  # the config rebuilds the same architecture
    assert rebuilt.config["frozen_stages"] == 2 and not any(p.requires_grad for p in rebuilt.backbone.layer1.parameters())
