"""The dilated layer3 (model.output_stride = 4), the backbone ended at layer2 (model.feature_stage)
and frozen backbone stages (model.frozen_stages)."""
import pytest
import torch

from protoef.config import resolve
from protoef.model import BlackBoxRegressor, ProtoEFNet, build_backbone
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


@pytest.mark.parametrize("kind", ["protoefnet", "blackbox"])
def test_frozen_stages_keep_weights_and_batchnorm_statistics(kind):
    # Both models freeze through one helper, so model.frozen_stages means the same for either
    # (notebooks 03 and 07 still train every stage of the compared black box: studies.BLACKBOX).
    torch.manual_seed(0)
    if kind == "protoefnet":
        model = ProtoEFNet(num_prototypes=4, prototype_dim=8, backbone="r2plus1d_10", frozen_stages=2)
        network = model.backbone
    else:
        model = BlackBoxRegressor(backbone="r2plus1d_10", frozen_stages=2)
        network = model.network
    frozen_before = {k: v.clone() for k, v in network.state_dict().items() if k.startswith(("stem.", "layer1."))}
    assert len(frozen_before) > 10  # weights and BatchNorm buffers of both stages
    layer2_before = network.layer2[0].conv1[0][0].weight.detach().clone()
    config = resolve("smoke", {"model.frozen_stages": 2, "model.kind": kind})
    optimizer = build_optimizer(model, config)
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not any(id(p) in optimised for p in network.stem.parameters())
    assert not any(id(p) in optimised for p in network.layer1.parameters())
    assert all(id(p) in optimised for p in network.layer2.parameters())
    model.train()
    assert not network.stem.training and not network.layer1.training and network.layer2.training
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.randn(2, 3, 8, 32, 32)).ef.sum().backward()
        optimizer.step()
    assert all(p.grad is None for p in network.layer1.parameters())  # no backward pass through them
    after = network.state_dict()
    for key, value in frozen_before.items():
        assert torch.equal(after[key], value), key  # weights and running_mean/var alike
    assert not torch.equal(network.layer2[0].conv1[0][0].weight, layer2_before)
    rebuilt = type(model)(**model.config)  # the config rebuilds the same architecture
    rebuilt_network = rebuilt.backbone if kind == "protoefnet" else rebuilt.network
    assert rebuilt.config["frozen_stages"] == 2
    assert not any(p.requires_grad for p in rebuilt_network.layer1.parameters())
    assert all(p.requires_grad for p in rebuilt_network.layer2.parameters())


def test_frozen_stages_out_of_range_is_refused():
    for model in (ProtoEFNet, BlackBoxRegressor):
        with pytest.raises(ValueError, match="frozen_stages must be in 0..4"):
            model(backbone="r2plus1d_10", frozen_stages=5)


def test_layer2_backbone_is_torchvision_network_read_after_layer2(tmp_path):
    # Independent reference: torchvision's whole VideoResNet with the same weights, its layer2
    # output caught by a hook. A full torchvision state dict (layer3, layer4, fc included)
    # loads into the shorter backbone.
    from torchvision.models.video.resnet import VideoResNet

    from protoef.model import video_resnet
    torch.manual_seed(0)
    full = video_resnet("r2plus1d_10").eval()
    assert isinstance(full, VideoResNet)
    weights = tmp_path / "full.pt"
    torch.save(full.state_dict(), weights)
    short = build_backbone("r2plus1d_10", weights=weights, output_stride=4, feature_stage="layer2").eval()
    assert [name for name, _ in short.named_children()] == ["stem", "layer1", "layer2"]
    caught = {}
    full.layer2.register_forward_hook(lambda _m, _i, output: caught.__setitem__("layer2", output))
    video = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        full(video)
        features = short(video)
    assert features.shape == (2, 128, 4, 8, 8)  # T/2, H/4, W/4: layer2's strides
    torch.testing.assert_close(features, caught["layer2"], rtol=0, atol=0)


def test_layer2_feature_stage_model_and_config():
    config = resolve("smoke", {"model.feature_stage": "layer2", "model.output_stride": 4})
    assert feature_size(config) == (config.data.resize // 4,) * 2
    torch.manual_seed(0)
    model = ProtoEFNet(num_prototypes=3, prototype_dim=8, backbone="r2plus1d_10", output_stride=4,
                       feature_stage="layer2", frozen_stages=3)
    out = model(torch.randn(2, 3, 8, 32, 32))
    assert out.occurrence_maps.shape == (2, 3, 4, 8, 8)
    assert model.feature_module[0].in_channels == 128 and model.occurrence_module[0].in_channels == 128
    assert type(model)(**model.config).config["feature_stage"] == "layer2"
    from protoef.analysis.faithfulness import layers_top_down
    from protoef.analysis.localization import gradcam
    assert layers_top_down(model) == ("occurrence_module", "feature_module", "backbone.layer2", "backbone.layer1",
                                      "backbone.stem")
    assert gradcam(model, torch.randn(1, 3, 8, 32, 32)).shape == (1, 4, 8, 8)  # default layer: the last stage
    # Keys that contradict each other are refused with both named, before anything is built.
    with pytest.raises(ValueError, match="model.feature_stage = 'layer2' with model.output_stride = 8"):
        resolve("smoke", {"model.feature_stage": "layer2", "model.output_stride": 8})
    with pytest.raises(ValueError, match="model.frozen_stages = 4 with model.feature_stage = 'layer2'"):
        resolve("smoke", {"model.feature_stage": "layer2", "model.frozen_stages": 4})
    with pytest.raises(ValueError, match="layer3, which this truncated backbone"):
        ProtoEFNet(backbone="r2plus1d_10", output_stride=4, feature_stage="layer2", frozen_stages=4)
    with pytest.raises(ValueError, match="feature_stage='layer2' has output stride 4"):
        build_backbone("r2plus1d_10", output_stride=8, feature_stage="layer2")
