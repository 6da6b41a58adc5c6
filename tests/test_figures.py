"""protoef.companion.figures: what each figure draws, against its inputs read or computed here.

Data-set figures use one tiny synthetic root (8 videos): histogram heights against
np.histogram of FileList.csv's EF, example frames against frames decoded with OpenCV here
(ED = the traced frame with the larger rendered LV in the LVMasks side file), the volume
curve against LVMasks' volume_ml. Run figures use small hand-made DataFrames / npz files:
the plotted lines, scatter offsets, horizontal lines, images and titles are compared with
the columns, sorted arrays, biases and limits of agreement computed by hand.
"""
import math

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from protoef.companion import figures
from protoef.data import EchoNet, synthetic


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return synthetic.generate(tmp_path_factory.mktemp("figures") / "s", videos=8, seed=0, workers=1, progress=False)


def test_ef_histograms_per_split(root):
    files = pd.read_csv(root / "FileList.csv")
    ax = figures.ef_histograms(root).axes[0]
    assert ax.get_title() == "Ejection fraction per split"
    bins = np.arange(0, 101, 2.5)
    assert len(ax.patches) == 3  # one step outline per split
    for polygon, split in zip(ax.patches, ("TRAIN", "VAL", "TEST")):
        efs = files.loc[files["Split"] == split, "EF"].to_numpy()
        heights = polygon.get_xy()[1:-1:2, 1]  # a step outline visits (edge, height) twice per bin
        counts = heights * 2.5 * len(efs)  # density → counts
        assert counts.sum() == pytest.approx(len(efs))
        np.testing.assert_allclose(counts, np.histogram(efs, bins)[0], atol=1e-9)
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert [label.split(",")[0] for label in labels] == [f"{s} (n={(files['Split'] == s).sum()}" for s in ("TRAIN", "VAL", "TEST")]
    assert sorted(line.get_xdata()[0] for line in ax.lines) == [40, 50]


def decode(path, frame):
    capture = cv2.VideoCapture(str(path))
    for _ in range(frame + 1):
        ok, image = capture.read()
        assert ok
    capture.release()
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def test_example_frames(root):
    dataset = EchoNet(root, "ALL", clip_length=8, resize=112, mean=0.1, std=0.2, with_masks=True, feature_size=(4, 4))
    files = pd.read_csv(root / "FileList.csv").set_index("FileName")
    tracings = pd.read_csv(root / "VolumeTracings.csv")
    axes = figures.example_frames(dataset, [0, 3]).axes
    assert len(axes) == 4
    for column, index in enumerate([0, 3]):
        name = dataset.filenames[index]
        traced = sorted(tracings.loc[tracings["FileName"] == name, "Frame"].unique())
        rendered = np.load(root / "LVMasks" / f"{name[:-4]}.npz")["masks"]
        ed, es = sorted(traced, key=lambda f: rendered[f].sum(), reverse=True)
        for ax, kind, frame in ((axes[2 * column], "ED", ed), (axes[2 * column + 1], "ES", es)):
            assert ax.get_title() == f"{name[:10]}… {kind}\nEF {files.loc[name[:-4], 'EF']:.1f}%"
            np.testing.assert_array_equal(ax.images[0].get_array(), decode(root / "Videos" / name, frame))
            assert len(ax.collections) == 1  # the traced outline


def test_volume_curve(root, tmp_path):
    name = pd.read_csv(root / "FileList.csv")["FileName"][2]
    volume = np.load(root / "LVMasks" / f"{name}.npz")["volume_ml"]
    ax = figures.volume_curve(root, f"{name}.avi", fps=50.0).axes[0]
    time = np.arange(len(volume)) / 50.0
    np.testing.assert_allclose(ax.lines[0].get_xydata(), np.column_stack([time, volume]), rtol=1e-6)
    ed, es = int(np.argmax(volume)), int(np.argmin(volume))
    np.testing.assert_allclose(ax.collections[0].get_offsets(), [[time[ed], volume[ed]], [time[es], volume[es]]], rtol=1e-6)
    ef = 100 * (volume.max() - volume.min()) / volume.max()
    assert ax.get_title() == f"{name}.avi: volume curve (EF from the curve {ef:.1f}%)"
    assert ax.get_xlabel() == "time (s)"
    assert figures.volume_curve(root, f"{name}.avi").axes[0].get_xlabel() == "frame"
    assert figures.volume_curve(tmp_path, f"{name}.avi") is None  # no LVMasks: EchoNet-Dynamic


def test_learning_curves():
    history = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [4.0, 2.0, 1.0], "train_mse": [3.0, -6.0, 1.5],
                            "train_zero": [0.0, 0.0, 0.0], "train_broken": [1.0, np.nan, 1.0],
                            "val_mae": [9.0, 7.5, 7.0], "val_r2": [0.1, 0.3, 0.35]})
    loss_ax, mae_ax, r2_ax = figures.learning_curves(history).axes
    assert [line.get_label() for line in loss_ax.lines] == ["mse", "total"]  # all-zero and NaN terms left out
    np.testing.assert_allclose(loss_ax.lines[0].get_xydata(), [[1, 0.5], [2, -1.0], [3, 0.25]])
    np.testing.assert_allclose(loss_ax.lines[1].get_xydata(), [[1, 1.0], [2, 0.5], [3, 0.25]])
    np.testing.assert_allclose(mae_ax.lines[0].get_xydata(), [[1, 9.0], [2, 7.5], [3, 7.0]])
    np.testing.assert_allclose(r2_ax.lines[0].get_xydata(), [[1, 0.1], [2, 0.3], [3, 0.35]])
    assert (mae_ax.get_title(), r2_ax.get_title()) == ("validation MAE (EF points)", "validation R²")


PREDICTIONS = pd.DataFrame({"filename": ["a", "b", "c", "d"], "ef": [30.0, 45.0, 60.0, 70.0],
                            "prediction": [33.0, 44.0, 62.0, 75.0]})


def test_prediction_scatter():
    ax = figures.prediction_scatter(PREDICTIONS, title="run").axes[0]
    np.testing.assert_allclose(ax.collections[0].get_offsets(), PREDICTIONS[["ef", "prediction"]].to_numpy())
    errors = np.array([3.0, -1.0, 2.0, 5.0])
    mae, rmse = np.abs(errors).mean(), math.sqrt((errors ** 2).mean())
    assert ax.get_title().startswith(f"run\nMAE {mae:.2f} · RMSE {rmse:.2f} · R²")
    np.testing.assert_allclose(ax.lines[0].get_xydata(), [[0, 0], [100, 100]])


def test_bland_altman():
    ax = figures.bland_altman(PREDICTIONS, title="run").axes[0]
    difference = np.array([3.0, -1.0, 2.0, 5.0])
    bias = difference.mean()  # 2.25
    sd = math.sqrt(((difference - bias) ** 2).sum() / 3)
    np.testing.assert_allclose(ax.collections[0].get_offsets(),
                               np.column_stack([[31.5, 44.5, 61.0, 72.5], difference]))
    levels = [line.get_ydata()[0] for line in ax.lines]
    assert levels == pytest.approx([bias, bias - 1.96 * sd, bias + 1.96 * sd])
    assert [line.get_linestyle() for line in ax.lines] == ["-", "--", "--"]
    assert ax.get_title() == f"run\nbias +{bias:.2f}, limits of agreement ±{1.96 * sd:.2f}"


def write_attention(folder, weights, ef, labels):
    folder.mkdir()
    np.savez(folder / "test_attention.npz", filename=np.array([f"v{i}.avi" for i in range(len(ef))]), ef=np.array(ef),
             weights=np.array(weights), similarities=np.zeros_like(weights), prototype_labels=np.array(labels))
    return folder


def test_attention_figure(tmp_path):
    weights = np.array([[0.1, 0.2, 0.7], [0.5, 0.3, 0.2], [0.0, 0.9, 0.1], [0.3, 0.3, 0.4]])
    a = write_attention(tmp_path / "a", weights, [60.0, 20.0, 45.0, 30.0], [70.0, 25.0, 50.0])
    b = write_attention(tmp_path / "b", np.full((2, 2), 0.5), [40.0, 50.0], [30.0, 60.0])
    figure = figures.attention_figure({"recipe A": a, "recipe B": b})
    ax = figure.axes[0]
    # Rows by true EF 20, 30, 45, 60 (videos 1, 3, 2, 0); columns by label 25, 50, 70 (1, 2, 0).
    expected = np.array([[0.3, 0.2, 0.5], [0.3, 0.4, 0.3], [0.9, 0.1, 0.0], [0.2, 0.7, 0.1]])
    np.testing.assert_allclose(ax.images[0].get_array(), expected)
    assert ax.images[0].get_clim() == (0, 0.9) and figure.axes[1].images[0].get_clim() == (0, 0.9)  # one scale
    # Nearest label to EF 20, 30, 45, 60 among 25, 50, 70: columns 0, 0, 1, 1 (60 is 10 from both; first wins).
    np.testing.assert_allclose(ax.collections[0].get_offsets(), [[0, 0], [0, 1], [1, 2], [1, 3]])
    assert ax.get_title() == f"recipe A\nmean top-1 β {np.mean([0.5, 0.4, 0.9, 0.7]):.2f}"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["25", "50", "70"]


def test_gradient_figure():
    history = pd.DataFrame({"epoch": [1, 2, 3], "train_grad_mse_prototypes": [1.0, 0.5, 0.25],
                            "train_grad_pas_prototypes": [0.0, 0.0, 0.0],
                            "train_grad_occ_prototypes": [0.2, 0.0, 0.1],
                            "train_grad_mse_features": [9.0, 9.0, 9.0]})
    figure = figures.gradient_figure({"PAS": history, "none": history.drop(columns="train_grad_occ_prototypes")})
    ax = figure.axes[0]
    assert ax.get_yscale() == "log" and ax.get_title() == "PAS"
    assert [line.get_label() for line in ax.lines] == ["mse", "occ"]  # the zero pas column is not drawn
    np.testing.assert_allclose(ax.lines[0].get_xydata(), [[1, 1.0], [2, 0.5], [3, 0.25]])
    np.testing.assert_allclose(ax.lines[1].get_xydata(), [[1, 0.2], [2, np.nan], [3, 0.1]])  # a zero is a gap
    assert [line.get_label() for line in figure.axes[1].lines] == ["mse"]
    assert "features" in figures.gradient_figure({"x": history}, target="features").axes[0].get_ylabel()


def test_image_figure(tmp_path):
    rgb = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    Image.fromarray(rgb).save(tmp_path / "gallery.png")
    figure = figures.image_figure(tmp_path / "gallery.png", title="gallery", width=8.0)
    ax = figure.axes[0]
    np.testing.assert_array_equal(ax.images[0].get_array(), rgb)
    assert ax.get_title() == "gallery" and not ax.axison
    assert figure.get_size_inches() == pytest.approx([8.0, 8.0 * 6 / 8 + 0.3])
    gray = np.tile(np.arange(8, dtype=np.uint8) * 30, (4, 1))
    Image.fromarray(gray).save(tmp_path / "gray.png")
    shown = figures.image_figure(tmp_path / "gray.png").axes[0].images[0].get_array()
    np.testing.assert_array_equal(shown, np.repeat(gray[..., None], 3, axis=2))  # grey → three equal channels
