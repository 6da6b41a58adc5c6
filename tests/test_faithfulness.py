"""Faithfulness and sanity tests (protoef.analysis.faithfulness) on hand-built models with known
answers, and the hand-written Grad-CAM against captum's LayerGradCam."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from protoef.analysis import faithfulness
from protoef.analysis.localization import gradcam
from protoef.model import BlackBoxRegressor, ProtoEFNet, ProtoEFOutput

T, H, W = 4, 16, 16  # clip; cells of 2 frames × 4 × 4 pixels → maps of 2 × 4 × 4


class RegionNet(nn.Module):
    """Two prototypes; s_0 is the mean input intensity in cell (0, 0), s_1 in cell (3, 3)
    (over both time slots). Maps: fixed (map 0 peaks on cell (0, 0), map 1 on (3, 3)), or, with
    ``maps_from_input``, the cell means themselves for both prototypes."""

    def __init__(self, maps_from_input: bool = False):
        super().__init__()
        self.maps_from_input = maps_from_input
        fixed = torch.full((2, 2, 4, 4), 0.1)
        fixed[0, :, 0, 0] = fixed[1, :, 3, 3] = 0.9
        self.register_buffer("fixed", fixed)
        self.register_buffer("labels", torch.tensor([30.0, 60.0]))

    def forward(self, video):
        cells = F.avg_pool3d(video.mean(1, keepdim=True), kernel_size=(2, 4, 4))[:, 0]  # (N, 2, 4, 4)
        s = torch.stack([cells[:, :, 0, 0].mean(1), cells[:, :, 3, 3].mean(1)], dim=1)  # (N, 2)
        maps = cells[:, None].repeat(1, 2, 1, 1, 1) if self.maps_from_input else self.fixed.expand(len(video), -1, -1, -1, -1)
        beta = torch.softmax(s / 0.1, dim=1)
        return ProtoEFOutput((beta * self.labels).sum(1), s, maps, beta)


def region_clip(value00=1.0, value33=0.0):
    video = torch.zeros(3, T, H, W)
    video[:, :, :4, :4] = value00
    video[:, :, 12:, 12:] = value33
    return video


# --------------------------------------------------------------------------- deletion

def test_occlusion_mask_upsamples_cells_to_their_frames_and_pixels():
    cells = torch.zeros(2, 4, 4, dtype=torch.bool)
    cells[1, 0, 3] = True  # slot 1 = frames 2, 3; cell (0, 3) = rows 0-3, columns 12-15
    mask = faithfulness.occlusion_mask(cells, (T, H, W))
    assert mask.shape == (T, H, W) and mask.sum() == 2 * 4 * 4
    assert mask[2:, :4, 12:].all() and not mask[:2].any()


def test_deletion_finds_the_region_the_similarity_depends_on():
    model = RegionNet()
    result = faithfulness.deletion_test(model, region_clip(), 0, fraction=1 / 16, repeats=400,
                                        generator=torch.Generator().manual_seed(1))
    # s_0 = 1 (cell (0, 0) is all ones); occluding the map's top cell (0, 0) in both slots → s_0 = 0.
    assert result["similarity"] == pytest.approx(1.0) and result["drop_top"] == pytest.approx(1.0)
    assert result["cells"] == 1
    # One random cell per slot hits (0, 0) with probability 1/16 and then removes half of s_0
    # (one of two slots): expected drop 2 · 1/16 · 1/2 = 1/16; sd of the mean of 400 ≈ 0.009.
    assert result["drop_random"] == pytest.approx(1 / 16, abs=0.03)
    # Prototype 1 reads cell (3, 3), which holds 0: nothing to drop either way.
    other = faithfulness.deletion_test(model, region_clip(), 1, fraction=1 / 16, repeats=5)
    assert other["drop_top"] == pytest.approx(0.0) and other["drop_random"] == pytest.approx(0.0)
    # One spatial set for every frame: the map's time mean still peaks on (0, 0); a random cell
    # hits it in both slots at once, with probability 1/16.
    pooled = faithfulness.deletion_test(model, region_clip(), 0, fraction=1 / 16, repeats=400, per_slot=False,
                                        generator=torch.Generator().manual_seed(2))
    assert pooled["drop_top"] == pytest.approx(1.0) and pooled["drop_random"] == pytest.approx(1 / 16, abs=0.03)
    table = faithfulness.deletion_table(model, torch.stack([region_clip(), region_clip()]), fraction=1 / 16, repeats=50)
    assert list(table["prototype"]) == [0, 0] and (table["ratio"] > 3).all()  # top-β prototype: 0


def test_inpaint_continues_what_surrounds_the_hole():
    # Harmonic interpolation (each hidden pixel the mean of its in-frame neighbours) has closed
    # forms: along a 1-pixel strip it is the straight line between the visible ends, a single
    # hidden pixel gets the mean of its 4 neighbours, and any plane a + b·row + c·column is
    # harmonic, so an interior hole in a plane is filled with the plane itself.
    strip = torch.tensor([0.0, 9.0, 9.0, 9.0, 4.0]).reshape(1, 1, 1, 5)
    hidden = torch.tensor([False, True, True, True, False]).reshape(1, 1, 5)
    torch.testing.assert_close(faithfulness.inpaint(strip, hidden)[0, 0, 0], torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0]))
    frame = torch.tensor([[0.0, 5.0, 0.0], [2.0, 99.0, 6.0], [0.0, 1.0, 0.0]]).reshape(1, 1, 3, 3)
    centre = torch.zeros(1, 3, 3, dtype=torch.bool)
    centre[0, 1, 1] = True
    assert float(faithfulness.inpaint(frame, centre)[0, 0, 1, 1]) == pytest.approx((5 + 2 + 6 + 1) / 4)
    rows, columns = torch.meshgrid(torch.arange(12.0), torch.arange(12.0), indexing="ij")
    plane = torch.stack([3.0 - 0.5 * rows + 2.0 * columns, 1.0 + columns])[:, None].repeat(1, 2, 1, 1)  # (2, T=2, 12, 12)
    hole = torch.zeros(2, 12, 12, dtype=torch.bool)
    hole[0, 3:9, 2:7] = True
    hole[1, 5:7, 4:10] = True  # another hole in the second frame; channels are filled alike
    damaged = plane.clone()
    damaged[:, hole] = -50.0
    torch.testing.assert_close(faithfulness.inpaint(damaged, hole), plane, rtol=0, atol=1e-5)
    assert torch.equal(damaged[:, hole], torch.full_like(damaged[:, hole], -50.0))  # the input is untouched


def test_deletion_with_inpainting():
    # Cell (0, 0) holds 1 on a zero background: the hole's surroundings are 0, so inpainting
    # it removes s_0 exactly as the gray fill does; an unknown fill is refused by name.
    result = faithfulness.deletion_test(RegionNet(), region_clip(), 0, fraction=1 / 16, repeats=20, fill="inpaint")
    assert result["drop_top"] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="fill must be a number or 'inpaint'"):
        faithfulness.deletion_test(RegionNet(), region_clip(), 0, fill="blur")


# --------------------------------------------------------------------------- randomisation

def test_map_similarity_known_values():
    rng = np.random.default_rng(0)
    a = rng.random((2, 5, 5))
    assert faithfulness.map_similarity(a, a) == pytest.approx((1.0, 1.0))
    assert faithfulness.map_similarity(a, 3 * a + 1) == pytest.approx((1.0, 1.0))  # rank and scale free
    rho, ssim = faithfulness.map_similarity(a, 1 - a)
    assert rho == pytest.approx(-1.0) and ssim < 0
    rho, ssim = faithfulness.map_similarity(a[:, :2, :2], a[:, :2, :2])
    assert rho == pytest.approx(1.0) and math.isnan(ssim)  # no SSIM window fits a 2 × 2 map
    assert math.isnan(faithfulness.map_similarity(np.ones((4, 4)), a[0, :4, :4])[0])


@pytest.fixture(scope="module")
def tiny_protoefnet():
    torch.manual_seed(0)
    return ProtoEFNet(backbone="r2plus1d_10", num_prototypes=3, prototype_dim=8).eval()


def test_randomization_changes_the_maps_only_through_the_layers_they_depend_on(tiny_protoefnet):
    model = tiny_protoefnet
    torch.manual_seed(1)
    video = torch.randn(3, 8, 32, 32)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    table = faithfulness.model_randomization_test(model, video, layers=["feature_module", "occurrence_module",
                                                                        "backbone.layer3"], mode="cascade")
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())  # untouched
    assert list(table["randomized"].unique()) == ["feature_module", "feature_module,occurrence_module",
                                                  "feature_module,occurrence_module,backbone.layer3"]
    by_step = table.groupby("step")
    # The occurrence maps do not read the feature module: re-initialising it leaves them as they were.
    assert np.allclose(by_step.get_group(0)["spearman"], 1.0) and np.allclose(by_step.get_group(0)["ssim"], 1.0)
    # Re-initialising the occurrence module changes every map.
    assert (by_step.get_group(1)["spearman"] < 0.99).all()
    independent = faithfulness.model_randomization_test(model, video, layers=["feature_module", "backbone.layer3"],
                                                        mode="independent")
    assert list(independent["randomized"].unique()) == ["feature_module", "backbone.layer3"]
    copy = faithfulness.randomized_copy(model, ["occurrence_module"], seed=3)
    assert torch.equal(copy.feature_module[0].weight, model.feature_module[0].weight)
    assert not torch.equal(copy.occurrence_module[0].weight, model.occurrence_module[0].weight)


def test_randomization_flags_a_map_that_ignores_the_parameters():
    # Maps that are the input's own cell means (an "edge detector" in Adebayo et al.'s sense) do
    # not change when the model's parameters are re-initialised: correlation 1 = the check fails.
    class InputMaps(RegionNet):
        def __init__(self):
            super().__init__(maps_from_input=True)
            self.head = nn.Linear(2, 2)

    torch.manual_seed(2)
    video = torch.rand(3, T, H, W)
    table = faithfulness.model_randomization_test(InputMaps(), video, layers=["head"], mode="all")
    assert np.allclose(table["spearman"], 1.0) and np.allclose(table["ssim"], 1.0)


def test_randomization_test_takes_gradcam_as_the_map():
    class WithUnused(nn.Module):  # Grad-CAM at conv2; `unused` is on no path to the output
        def __init__(self):
            super().__init__()
            self.net, self.unused = TwoConvNet(), nn.Linear(3, 3)

        def forward(self, x):
            return self.net(x)

    torch.manual_seed(5)
    model, video = WithUnused().eval(), torch.randn(3, 4, 12, 12)
    table = faithfulness.model_randomization_test(
        model, video, layers=["unused", "net.conv2"], mode="independent",
        map_fn=lambda m, v: gradcam(m, v, layer="net.conv2")[None].numpy())
    unused, conv2 = table[table["layer"] == "unused"].iloc[0], table[table["layer"] == "net.conv2"].iloc[0]
    assert unused["spearman"] == pytest.approx(1.0) and unused["ssim"] == pytest.approx(1.0)
    assert conv2["spearman"] < 0.9


# --------------------------------------------------------------------------- input noise

def test_noise_stability_known_answers():
    # Fixed maps never move; s_0 = 1 vs s_1 = 0 is far above noise of sd 0.05 averaged over 96 pixels.
    stable = faithfulness.noise_stability(RegionNet(), region_clip(), noise_std=0.05, repeats=20, top=2)
    assert stable == pytest.approx({"top_set_overlap": 1.0, "top1_unchanged": 1.0, "argmax_unchanged": 1.0,
                                    "argmax_shift_cells": 0.0})
    # A tie (s_0 = s_1) is broken by the noise either way: the top-1 prototype flips in some draws.
    tie = faithfulness.noise_stability(RegionNet(), region_clip(1.0, 1.0), noise_std=0.05, repeats=40, top=1)
    assert 0.0 < tie["top1_unchanged"] < 1.0
    # Maps read from a flat input: their argmax is wherever the noise peaks.
    flat = faithfulness.noise_stability(RegionNet(maps_from_input=True), region_clip(0.0, 0.0), noise_std=0.05,
                                        repeats=40, top=1)
    assert flat["argmax_unchanged"] < 0.5 and flat["argmax_shift_cells"] > 0
    # ... and stays on a bright cell far above the noise (bright in slot 0 only, so no tie in time).
    bright = torch.zeros(3, T, H, W)
    bright[:, :2, :4, :4] = 1.0
    peak = faithfulness.noise_stability(RegionNet(maps_from_input=True), bright, noise_std=0.05, repeats=20, top=1)
    assert peak["argmax_unchanged"] == 1.0


# --------------------------------------------------------------------------- Grad-CAM against captum

class TwoConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv3d(3, 6, kernel_size=3, padding=1)
        self.conv2 = nn.Conv3d(6, 5, kernel_size=3, padding=1, stride=(1, 2, 2))
        self.fc = nn.Linear(5, 1)

    def forward(self, x):
        return self.fc(torch.relu(self.conv2(torch.relu(self.conv1(x)))).mean(dim=(2, 3, 4))).squeeze(1)


@pytest.mark.parametrize("case", ["two_conv", "blackbox_layer4", "blackbox_layer3"])
def test_gradcam_matches_captum_layer_gradcam(case):
    from captum.attr import LayerGradCam

    torch.manual_seed(4)
    if case == "two_conv":
        model, layer, video = TwoConvNet().eval(), "conv2", torch.randn(2, 3, 4, 12, 12)
        module = model.conv2
    else:
        model, video = BlackBoxRegressor(backbone="r2plus1d_10").eval(), torch.randn(2, 3, 8, 32, 32)
        layer = case.removeprefix("blackbox_")
        module = getattr(model.network, layer)
    predicted_ef = (lambda clips: model(clips).ef) if case != "two_conv" else model  # captum wants a tensor
    reference = LayerGradCam(predicted_ef, module).attribute(video, relu_attributions=True).detach()[:, 0]  # (N, T', H', W')
    ours = gradcam(model, video, layer=layer, normalize=False)
    assert ours.shape == reference.shape and reference.abs().max() > 0
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-6 * float(reference.abs().max()))
    scaled = gradcam(model, video, layer=layer)  # normalised to max 1 per clip
    torch.testing.assert_close(scaled, reference / reference.flatten(1).amax(1).view(-1, 1, 1, 1), rtol=1e-4, atol=1e-6)


def test_deletion_and_stability_run_on_protoefnet_shapes(tiny_protoefnet):
    torch.manual_seed(6)
    clips = torch.randn(2, 3, 8, 32, 32)  # maps of 2 × 4 × 4 cells
    table = faithfulness.deletion_table(tiny_protoefnet, clips, prototypes=[0, 2], fraction=0.25, repeats=3)
    assert list(table["prototype"]) == [0, 2, 0, 2] and (table["cells"] == 4).all()
    assert np.isfinite(table[["similarity", "drop_top", "drop_random"]].to_numpy()).all()
    with torch.no_grad():
        weights = tiny_protoefnet.eval()(clips).weights  # (2, P): each row's β on its clean clip
    np.testing.assert_allclose(table["beta"], weights[table["clip"], table["prototype"]].numpy(), rtol=1e-5)
    # The shown maps: each clip's top-3 prototypes by β, of the prototypes in the table (here 2).
    assert len(faithfulness.shown_prototype_rows(table)) == 4
    every = range(tiny_protoefnet.num_prototypes)
    ranked = faithfulness.shown_prototype_rows(faithfulness.deletion_table(tiny_protoefnet, clips[:1], every, repeats=1))
    assert sorted(ranked["prototype"]) == sorted(np.argsort(-weights[0].numpy(), kind="stable")[:3])
    # Without a list, each clip's top_beta prototypes by β are tested, and their rows are the
    # ones a table of every prototype gives for them (the claim's cheaper table, same numbers).
    shown = faithfulness.deletion_table(tiny_protoefnet, clips, top_beta=3, repeats=1)
    for clip in (0, 1):
        rows = shown[shown["clip"] == clip]
        assert list(rows["prototype"]) == list(np.argsort(-weights[clip].numpy(), kind="stable")[:3])
    full = faithfulness.deletion_table(tiny_protoefnet, clips[:1], every, repeats=1).set_index("prototype")
    first = shown[shown["clip"] == 0].set_index("prototype")
    np.testing.assert_allclose(first["drop_top"], full.loc[first.index, "drop_top"], atol=1e-6)
    np.testing.assert_allclose(first["drop_random"], full.loc[first.index, "drop_random"], atol=1e-6)
    stability = faithfulness.noise_stability(tiny_protoefnet, clips[0], noise_std=0.05, repeats=3, top=3)
    assert all(0.0 <= stability[key] <= 1.0 for key in ("top_set_overlap", "top1_unchanged", "argmax_unchanged"))
    assert stability["argmax_shift_cells"] >= 0.0


def test_deletion_table_of_many_prototypes_equals_one_test_per_prototype(tiny_protoefnet):
    # The table shares one set of random occlusions between a clip's prototypes (they do not
    # depend on the prototype) and batches the occluded clips; each row must still be what
    # `deletion_test` gives for that prototype alone, with the same default draws.
    torch.manual_seed(7)
    clips = torch.randn(2, 3, 8, 32, 32)
    table = faithfulness.deletion_table(tiny_protoefnet, clips, prototypes=[0, 1, 2], repeats=4, batch_size=3)
    for row in table.itertuples():
        alone = faithfulness.deletion_test(tiny_protoefnet, clips[row.clip], row.prototype, repeats=4)
        for key in ("similarity", "drop_top", "drop_random", "drop_random_sd"):
            assert getattr(row, key) == pytest.approx(alone[key], abs=1e-6), (row.clip, row.prototype, key)
    assert table["drop_random"].nunique() > 1  # the random drops are read per prototype, not copied
