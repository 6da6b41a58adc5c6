"""Explanations: maps on frames, IoU with the LV, Grad-CAM, gallery, local explanations, embeddings.

Expected values are computed independently (rectangles rasterised by hand, IoUs worked out
on paper, rank correlations of constructed geometries), never by the code under test.
"""
from __future__ import annotations

import math
import pathlib

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from protoef.analysis import embeddings, explain, localization, plots
from protoef.data import EchoNet
from protoef.model import BlackBoxRegressor, ProtoEFNet

SIZE, LENGTH, FRAMES = 32, 8, 24


def rect(top, bottom, left, right, size=SIZE) -> np.ndarray:
    """Bool mask with rows top..bottom-1 and columns left..right-1 set."""
    mask = np.zeros((size, size), bool)
    mask[top:bottom, left:right] = True
    return mask


# --------------------------------------------------------------------------- a tiny data set

def write_avi(path: pathlib.Path, frames: np.ndarray) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 50.0, (SIZE, SIZE))
    assert writer.isOpened()
    for frame in frames:
        writer.write(np.repeat(frame[:, :, None], 3, axis=2))
    writer.release()


def tracing_lines(name, frame, left, right, top, bottom, chords=8):
    centre = (left + right) / 2
    rows = [(centre, top, centre, bottom)] + [(left, y, right, y) for y in np.linspace(top, bottom, chords)]
    return [f"{name}.avi,{x1},{y1},{x2},{y2},{frame}" for x1, y1, x2, y2 in rows]


# name, EF, split, (ED frame, ES frame): the last one's ED and ES are further apart than a clip.
VIDEOS = [("0XA", 62.0, "TRAIN", (3, 9)), ("0XB", 35.0, "TRAIN", (12, 17)), ("0XC", 48.0, "TEST", (2, 20))]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("echo")
    (root / "Videos").mkdir()
    rng = np.random.default_rng(0)
    files, tracings = ["FileName,EF,ESV,EDV,FrameHeight,FrameWidth,FPS,NumberOfFrames,Split"], ["FileName,X1,Y1,X2,Y2,Frame"]
    for name, ef, split, (ed, es) in VIDEOS:
        frames = rng.integers(0, 40, (FRAMES, SIZE, SIZE)).astype(np.uint8)
        frames[:, 8:24, 10:22] = 200
        write_avi(root / "Videos" / f"{name}.avi", frames)
        files.append(f"{name},{ef},10,20,{SIZE},{SIZE},50,{FRAMES},{split}")
        tracings += tracing_lines(name, ed, 8, 24, 6, 26) + tracing_lines(name, es, 11, 21, 9, 23)
    (root / "FileList.csv").write_text("\n".join(files) + "\n")
    (root / "VolumeTracings.csv").write_text("\n".join(tracings) + "\n")
    return root


def dataset(root, split="ALL", **options) -> EchoNet:
    options = {"clip_length": LENGTH, "resize": SIZE, "mean": 0.1, "std": 0.2, "clips": "deterministic",
               "with_masks": True, "feature_size": (4, 4), **options}
    return EchoNet(root, split, **options)


@pytest.fixture(scope="module")
def model() -> ProtoEFNet:
    torch.manual_seed(0)
    net = ProtoEFNet(num_prototypes=4, backbone="r2plus1d_10")
    net.set_prototypes(torch.randn(4, 256), torch.tensor([20.0, 40.0, 55.0, 70.0]))
    return net.eval()


# --------------------------------------------------------------------------- maps and IoU

def test_upsample_keeps_constant_maps_and_shapes():
    maps = np.full((2, 3, 2, 4, 4), 0.3, np.float32)
    up = explain.upsample_maps(maps, (LENGTH, SIZE, SIZE))
    assert isinstance(up, np.ndarray) and up.shape == (2, 3, LENGTH, SIZE, SIZE)
    np.testing.assert_allclose(up, 0.3, atol=1e-6)
    random = torch.rand(4, 2, 4, 4)
    up = explain.upsample_maps(random, (LENGTH, SIZE, SIZE))
    assert isinstance(up, torch.Tensor) and up.shape == (4, LENGTH, SIZE, SIZE)
    assert up.min() >= random.min() - 1e-6 and up.max() <= random.max() + 1e-6


def test_iou_of_rectangles_against_hand_computed_values():
    lv = rect(8, 24, 8, 24)  # 16×16 = 256 pixels
    kw = dict(clip_start=0, clip_length=LENGTH, period=1)
    same = np.stack([rect(8, 24, 8, 24)] * 2)[None].astype(np.float32)  # (P=1, T'=2, H, W)
    disjoint = np.stack([rect(0, 16, 24, 32) | rect(24, 32, 0, 8)] * 2)[None].astype(np.float32)  # 128 + 64 px
    half = np.stack([rect(8, 24, 16, 32)] * 2)[None].astype(np.float32)  # overlap 16×8 = 128, union 384
    maps = np.concatenate([same, disjoint, half])
    iou = localization.occurrence_iou(maps, lv, 3, **kw)
    np.testing.assert_allclose(iou, [1.0, 0.0, 128 / 384], atol=1e-12)
    # The same with Otsu and with a fixed threshold (the maps are binary).
    for threshold in ("otsu", 0.5):
        np.testing.assert_allclose(localization.occurrence_iou(maps, lv, 3, threshold=threshold, **kw), [1.0, 0.0, 1 / 3])
    # A coarse (8×8) map of the LV, upsampled ×4 bilinearly: the top-q rule recovers it exactly.
    coarse = np.zeros((1, 2, 8, 8), np.float32)
    coarse[:, :, 2:6, 2:6] = 1.0
    assert localization.occurrence_iou(coarse, lv, 0, **kw)[0] == pytest.approx(1.0)
    assert math.isnan(localization.mask_iou(np.zeros((4, 4), bool), np.zeros((4, 4), bool)))


def test_top_q_keeps_q_of_the_pixels_and_otsu_splits_two_levels():
    heat = np.random.default_rng(1).random((SIZE, SIZE))
    kept = localization.threshold_map(heat, threshold="top", fraction=0.1)
    assert kept.sum() == round(0.1 * SIZE * SIZE)
    assert heat[kept].min() > heat[~kept].max()
    assert localization.threshold_map(np.zeros((4, 4)), fraction=0.25).sum() == 4  # ties: still exactly q
    bimodal = np.where(rect(4, 12, 4, 20), 0.8, 0.1) + 0.01 * heat
    assert np.array_equal(localization.threshold_map(bimodal, threshold="otsu"), rect(4, 12, 4, 20))
    assert not localization.threshold_map(np.full((4, 4), 0.5), threshold="otsu").any()
    with pytest.raises(ValueError):
        localization.threshold_map(heat, threshold="mean")


def test_traced_frame_selects_the_nearest_time_slot_and_outside_is_nan():
    a, b = rect(0, 16, 0, 16), rect(16, 32, 16, 32)
    maps = np.stack([a, b])[None].astype(np.float32)  # slot 0 shows a, slot 1 shows b
    masks, frames = np.stack([a, b, a, a, b]), [11, 16, 9, 18, 17]
    iou = localization.occurrence_iou(maps, masks, frames, clip_start=10, clip_length=8, period=1)[0]
    # clip = frames 10..17; frames 10-13 → slot 0, 14-17 → slot 1; 9 and 18 lie outside.
    np.testing.assert_allclose(iou[[0, 1, 4]], 1.0)
    assert np.isnan(iou[2]) and np.isnan(iou[3])
    # period 2: clip = 10, 12, …, 24; frame 19 is nearest to 20 = clip position 5 → slot 1.
    assert localization.occurrence_iou(maps, b, 19, clip_start=10, clip_length=8, period=2)[0] == pytest.approx(1.0)
    assert localization.occurrence_iou(maps, a, 15, clip_start=10, clip_length=8, period=2)[0] == pytest.approx(1.0)


def test_covering_clip_start_contains_and_centres_the_traced_frames():
    assert localization.covering_clip_start(100, [40, 51], clip_length=32) == 30  # midpoints 45.5 = 30 + 15.5
    assert localization.covering_clip_start(100, [2, 8], clip_length=32) == 0  # clamped at the start
    assert localization.covering_clip_start(100, [95, 99], clip_length=32) == 68  # … and at the end
    assert localization.covering_clip_start(20, [3, 15], clip_length=32) == 0  # short video: padded clip
    with pytest.raises(ValueError):
        localization.covering_clip_start(100, [10, 60], clip_length=32)
    for low, high in [(40, 50), (41, 60), (0, 62), (37, 38)]:
        start = localization.covering_clip_start(200, [low, high], clip_length=32, period=2)
        assert start <= low and high <= start + 31 * 2 and (low - start) % 2 == 0


# --------------------------------------------------------------------------- Grad-CAM

class QuadrantNet(nn.Module):
    """conv (1×1×1) → ReLU → global mean → linear: A is large where the input is."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 4, kernel_size=1)
        self.fc = nn.Linear(4, 1)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.conv.bias.zero_()
            self.fc.weight.fill_(1.0)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3, 4))).squeeze(1)


def test_gradcam_highlights_where_the_signal_is():
    video = 0.01 * torch.rand(2, 3, 4, 16, 16)
    video[:, :, :, :8, 8:] += 1.0  # the top-right quadrant carries the signal
    cam = localization.gradcam(QuadrantNet(), video, layer="conv")
    assert cam.shape == (2, 4, 16, 16) and cam.min() >= 0 and cam.amax() == pytest.approx(1.0)
    inside, outside = cam[:, :, :8, 8:].mean(), torch.cat([cam[:, :, 8:].flatten(), cam[:, :, :8, :8].flatten()]).mean()
    assert inside > 20 * outside


def test_gradcam_of_the_black_box_has_the_layer_shape_and_leaves_grads_alone():
    torch.manual_seed(0)
    net = BlackBoxRegressor(backbone="r2plus1d_10").train()
    video = torch.randn(2, 3, LENGTH, SIZE, SIZE)
    cam4 = localization.gradcam(net, video)  # layer4: T/8, H/16, W/16
    cam3 = localization.gradcam(net, video[0], layer="layer3")  # unbatched; T/4, H/8, W/8
    assert cam4.shape == (2, 1, 2, 2) and cam3.shape == (2, 4, 4)
    assert cam4.min() >= 0 and cam3.min() >= 0 and not cam4.requires_grad
    assert net.training and all(p.grad is None for p in net.parameters())


# --------------------------------------------------------------------------- gallery and local explanations

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> pathlib.Path:
    """A run directory as push.py leaves it: prototypes.csv + one npz per prototype."""
    run = tmp_path_factory.mktemp("run")
    folder = run / "prototypes"
    folder.mkdir()
    rng = np.random.default_rng(2)
    rows = [(0, 20.0, 35.0, "0XB.avi", 4, 0.91, False), (1, 40.0, 35.0, "0XB.avi", 0, 0.85, False),
            (2, 55.0, 62.0, "0XA.avi", 16, 0.77, True), (3, 70.0, 62.0, "0XA.avi", 2, 0.95, False)]
    table = pd.DataFrame(rows, columns=["prototype", "label_before", "ef_label", "source_filename", "clip_start",
                                        "similarity", "fallback"])
    table.to_csv(folder / "prototypes.csv", index=False)
    for j, _, ef, name, start, *_ in rows:
        np.savez_compressed(folder / f"prototype_{j:02d}.npz", occurrence_map=rng.random((2, 4, 4)).astype(np.float32),
                            feature=rng.standard_normal(256).astype(np.float32), ef_label=ef, source_filename=name,
                            clip_start=start)
    return run


def test_gallery_writes_a_strip_and_gif_per_prototype_and_one_grid(root, run_dir):
    written = explain.save_prototype_gallery(run_dir, dataset(root, "TRAIN"), frames_per_strip=4)
    folder = run_dir / "prototypes"
    expected = {f"prototype_{j:02d}.{ext}" for j in range(4) for ext in ("png", "gif")} | {"gallery.png"}
    assert {p.name for p in written} == expected
    assert expected <= {p.name for p in folder.iterdir()} and not list(folder.glob(".*tmp"))
    for name in expected:
        with Image.open(folder / name) as image:
            if name.endswith(".gif"):  # every clip frame, at the frame size
                assert image.size == (SIZE, SIZE) and image.n_frames == LENGTH
            else:
                assert image.size[0] > 4 * SIZE


def test_clip_frames_follow_the_dataset_semantics(root):
    data = dataset(root, "TRAIN", clip_length=4, period=3)
    whole = data.frames(0)
    np.testing.assert_array_equal(explain.clip_frames(data, "0XA.avi", 5), whole[[5, 8, 11, 14]])
    padded = explain.clip_frames(data, "0XA.avi", 20)  # frames 20, 23, then 26, 29 past the end
    np.testing.assert_array_equal(padded[:2], whole[[20, 23]])
    assert (padded[2:] == 0).all()
    assert explain.clip_frames(data, "0XC.avi", 0).shape == (4, SIZE, SIZE)  # a TEST file, same root
    rgb = explain.overlay(whole[:4], np.zeros((4, SIZE, SIZE)))
    assert rgb.shape == (4, SIZE, SIZE, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[..., 1], whole[:4])  # zero heat leaves the frame as it was


def test_explain_video_is_consistent_with_the_model(root, model, run_dir):
    data = dataset(root)
    explanation = explain.explain_video(model, data, 0, top=3)
    betas = [entry["beta"] for entry in explanation["top"]]
    # the top entries are the three largest of all P weights, in order, and β sums to 1 over P
    np.testing.assert_allclose(betas, np.sort(explanation["weights"])[::-1][:3], rtol=1e-6)
    assert explanation["weights"].sum() == pytest.approx(1.0, abs=1e-6)
    assert explanation["prediction"] == pytest.approx(float(explanation["weights"] @ explanation["labels"]), abs=1e-4)
    with torch.no_grad():
        output = model(data[0]["video"][None])  # the data set's deterministic clip
    assert explanation["prediction"] == pytest.approx(float(output.ef[0]), abs=1e-4)
    top = explanation["top"][0]["prototype"]
    np.testing.assert_allclose(explanation["maps"][0], output.occurrence_maps[0, top].numpy(), atol=1e-6)
    assert explanation["ef_true"] == 62.0 and explanation["frames"].shape == (LENGTH, SIZE, SIZE)
    batched = explain.explain_clip(model, data[0]["video"][None], top=2)  # what the CLI calls
    assert batched["prediction"] == pytest.approx(explanation["prediction"], abs=1e-4) and len(batched["top"]) == 2
    for source in (data, root, None):
        figure = explain.plot_local_explanation(explanation, run_dir, source=source, frames=3)
        rows = figure.subfigs  # one row per top prototype, each an input strip and a source strip
        assert len(rows) == 2 * 3
        titles = [subfigure.get_suptitle() for subfigure in rows]
        for rank, entry in enumerate(explanation["top"]):
            assert titles[2 * rank].startswith(f"input · prototype {entry['prototype']} · β {entry['beta']:.2f}")
            assert titles[2 * rank + 1].startswith(f"prototype {entry['prototype']} · EF label {entry['label']:.1f}%")
        assert f"predicted EF {explanation['prediction']:.1f}%" in figure.get_suptitle()
    figure.savefig(run_dir / "local.png")
    assert (run_dir / "local.png").stat().st_size > 0


# --------------------------------------------------------------------------- dataset-level IoU tables

def test_iou_tables_cover_every_traced_frame(root, model):
    data = dataset(root)
    table = localization.occurrence_iou_table(model, data, batch_size=2, progress=False)
    assert len(table) == len(VIDEOS) * 2 * 4
    assert set(table["frame"]) == {"ED", "ES"} and table["iou"].between(0, 1).all()
    # Every traced frame lies in its clip (0XC needs one clip per frame).
    for row in table.itertuples():
        assert row.clip_start <= row.frame_index < row.clip_start + LENGTH
    assert table[table.filename == "0XC.avi"]["clip_start"].nunique() == 2
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="with_masks"):
        localization.occurrence_iou_table(model, dataset(root, with_masks=False), progress=False)
    cams = localization.gradcam_iou_table(BlackBoxRegressor(backbone="r2plus1d_10"), data, layer="layer3", progress=False)
    assert len(cams) == len(VIDEOS) * 2 and (cams["prototype"] == 0).all() and (cams["method"] == "gradcam layer3").all()
    assert cams["iou"].between(0, 1).all()


# --------------------------------------------------------------------------- embeddings

def test_rank_correlation_of_constructed_geometries():
    labels = np.sort(np.random.default_rng(3).uniform(10, 90, 9))  # distinct label gaps, no ties
    angles = np.deg2rad((labels - 10) / 80 * 150)  # on an arc in label order (all gaps < 180°)
    arc = np.stack([np.cos(angles), np.sin(angles), np.zeros(9)], axis=1)
    assert embeddings.label_angle_rank_correlation(arc, labels) == pytest.approx(1.0)
    assert embeddings.label_angle_rank_correlation(arc * np.arange(1, 10)[:, None], labels) == pytest.approx(1.0)
    # Labels 0, 1, 3 at angles 0, 60°, 18°: label gaps 1, 2, 3 ↔ angles 60°, 42°, 18° → −1.
    phi = np.deg2rad([0.0, 60.0, 18.0])
    points = np.stack([np.cos(phi), np.sin(phi)], axis=1)
    assert embeddings.label_angle_rank_correlation(points, [0.0, 1.0, 3.0]) == pytest.approx(-1.0)


def test_pooled_features_and_embedding(root, model):
    loader = torch.utils.data.DataLoader(dataset(root), batch_size=2)
    pooled = embeddings.pooled_features(model, loader)
    assert pooled.features.shape == (3, 4, 256) and pooled.weights.shape == (3, 4)
    np.testing.assert_allclose(pooled.efs, [62.0, 35.0, 48.0])
    table = embeddings.embed_with_prototypes(pooled, model.prototypes, model.prototype_labels, method="tsne")
    assert len(table) == 3 + 4 and list(table["kind"]).count("prototype") == 4
    assert np.isfinite(table[["x", "y"]].to_numpy()).all()
    figure = plots.embedding_scatter(table)
    drawn = np.concatenate([collection.get_offsets() for collection in figure.axes[0].collections])
    expected = table[["x", "y"]].to_numpy(np.float64)
    order = lambda points: points[np.lexsort(points.T[::-1])]  # noqa: E731 - sort rows by x, then y
    np.testing.assert_allclose(order(np.asarray(drawn, np.float64)), order(expected), rtol=1e-5)
    assert embeddings.embed(np.eye(2), method="tsne").shape == (2, 2)


@pytest.mark.slow
def test_umap_keeps_two_separated_clusters_apart():
    # Two tight clusters on opposite directions (the embedding uses cosine geometry).
    rng = np.random.default_rng(0)
    centre = rng.standard_normal(16)
    points = np.concatenate([centre + 0.05 * rng.standard_normal((10, 16)), -centre + 0.05 * rng.standard_normal((10, 16))])
    xy = embeddings.embed(points, method="umap")
    assert xy.shape == (20, 2) and np.isfinite(xy).all()
    distance = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    within = max(distance[:10, :10].max(), distance[10:, 10:].max())
    assert distance[:10, 10:].min() > within


def test_mass_share_and_pointing_game_against_hand_computed_values():
    # Frame-size binary maps need no upsampling (bilinear at scale 1 is the identity), so the
    # shares are pixel counts: LV = 16×16 = 256 px of 32×32.
    lv = rect(8, 24, 8, 24)
    kw = dict(clip_start=0, clip_length=LENGTH, period=1)
    inside = np.stack([rect(10, 14, 10, 14)] * 2)[None].astype(np.float32)        # all 16 px inside
    half = np.stack([rect(8, 24, 16, 32)] * 2)[None].astype(np.float32)           # 128 of 256 px inside
    uniform = np.ones((1, 2, 32, 32), np.float32)                                  # the chance level: 256 / 1024
    peak_out = np.stack([rect(8, 24, 8, 24) * 0.5 + rect(0, 2, 0, 2)] * 2)[None].astype(np.float32)  # max at (0, 0)
    maps = np.concatenate([inside, half, uniform, peak_out])
    scores = localization.localization_scores(maps, lv, 3, **kw)
    np.testing.assert_allclose(scores["mass_share"], [1.0, 0.5, 0.25, 128 / (128 + 4)], atol=1e-6)
    np.testing.assert_array_equal(scores["pointing"], [1.0, 1.0, 0.0, 0.0])  # uniform: first pixel (0, 0) is outside
    np.testing.assert_array_equal(scores["iou"], localization.occurrence_iou(maps, lv, 3, **kw))
