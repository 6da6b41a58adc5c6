"""The paper profile end to end on the CPU: a wiring test, not a speed test.

`python -m protoef train --profile paper` on a tiny synthetic 112² EchoNet-format set with
every knob as the profile sets it (R(2+1)D-18, 64 frames at period 1, P = 40, batch 16,
14 × 14 masks with the 5 × 5 dilation, up to 10 test clips, 8 loader workers, the paper's
loss weights, learning rates and push), except three: the Kinetics-400 weights (offline
here: random initialisation, said in the output and stored in config.json), the number of
videos (2 per split: one batch holds the whole training set), the epochs (1) and
the gradient diagnostics (off).
Then `predict` and `gallery` on the result. Each 64 × 112² clip costs seconds on 2 cores
and ~2 GB of activations in training, so the set is as small as the wiring allows: the
TEST videos have 1 and 2 clips. How up to ``test_clips`` clips are
cut from a long video is the dataset's clip logic, tested on short clips in
tests/test_echonet.py (an earlier version of this test added a 640-frame video for ten
clips and took 6 min here; timings.json showed 83 s of it in the TEST evaluations alone).
"""
from __future__ import annotations

import json
import numpy as np
import pandas as pd
import pytest

from protoef.__main__ import main as cli
from protoef.config import resolve
from protoef.data import EchoNet, synthetic

@pytest.fixture(scope="module")
def paper_root(tmp_path_factory):
    """6 synthetic 112² videos, 2 per split; the TEST videos of 153 frames (2 clips of 64) and
    48 frames (1 clip, padded). Every clip costs ~3 s per forward on 2 cores, so TEST has the
    fewest clips that still show the multi-clip averaging (VAL needs 2 videos for its r²)."""
    root = synthetic.generate(tmp_path_factory.mktemp("paper-data"), videos=6, seed=3, workers=1, progress=False)
    files = pd.read_csv(root / "FileList.csv")
    assert list(files["NumberOfFrames"]) == [139, 219, 169, 48, 219, 153]  # what seed 3 draws
    files.assign(Split=["TRAIN", "TRAIN", "VAL", "TEST", "VAL", "TEST"]).to_csv(root / "FileList.csv", index=False)
    return root


@pytest.mark.slow
def test_paper_profile_trains_pushes_tests_predicts_and_draws_on_the_cpu(paper_root, tmp_path, capsys):
    root = paper_root
    out = tmp_path / "paper-run"
    # No gradient diagnostics: a companion measurement, not a paper knob (tested at the smoke
    # size by tests/test_diagnostics.py and tests/test_train.py); at this shape its 2 extra
    # batches cost 30 of the 110 s.
    overrides = ["model.weights=none", "optim.epochs=1", "optim.diagnostic_batches=0", "device=cpu",
                 f"data.cache_dir={tmp_path / 'cache'}"]
    assert cli(["train", "--profile", "paper", "--data", str(root), "--out", str(out),
                *(item for pair in (("--set", o) for o in overrides) for item in pair)]) == 0
    printed = capsys.readouterr().out
    assert "starts from random initialisation, not from the Kinetics-400 weights" in printed

    # Every paper knob as the profile sets it; only weights, epochs (and the data) differ.
    config = json.loads((out / "config.json").read_text())
    paper = resolve("paper").to_dict()
    assert config["model"]["weights"] is None and config["optim"]["epochs"] == 1
    assert config["optim"]["diagnostic_batches"] == 0
    for section, key in [("data", "clip_length"), ("data", "period"), ("data", "resize"), ("data", "batch_size"),
                         ("data", "num_workers"), ("data", "test_clips"), ("data", "background_dilation"),
                         ("model", "backbone"), ("model", "num_prototypes"), ("model", "tau"), ("loss", "mse"),
                         ("loss", "cluster"), ("loss", "psd"), ("loss", "pas"), ("loss", "occurrence"),
                         ("loss", "delta"), ("optim", "lr_backbone"), ("optim", "lr_prototypes"), ("optim", "push")]:
        assert config[section][key] == paper[section][key], (section, key)
    assert (config["data"]["clip_length"], config["data"]["resize"], config["data"]["num_workers"]) == (64, 112, 8)

    # The occurrence loss saw 14 × 14 masks with background (the 5 × 5 dilation leaves some).
    history = pd.read_csv(out / "history.csv")
    assert list(history["epoch"]) == [1] and history["train_occurrence"].gt(0).all()
    assert np.isfinite(history[[c for c in history.columns if c.startswith(("train_", "val_"))]].to_numpy(float)).all()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["post_push"]["n"] == 2 and metrics["val"]["post_push"]["n"] == 2
    # Test on up to 10 clips per video, averaged: the clip count of each TEST video, from its
    # frame count (every whole 64-frame span, at most 10), is what predict reports.
    d = config["data"]
    test = EchoNet(root, "TEST", clip_length=64, period=1, clips=10, resize=112, mean=d["mean"], std=d["std"])
    frames = pd.read_csv(root / "FileList.csv").set_index("FileName")["NumberOfFrames"]
    expected_clips = {f"{name}.avi": min(10, max(1, int(frames[name]) // 64)) for name in frames.index}
    clips = {name: len(test[i]["clip_starts"]) for i, name in enumerate(test.filenames)}
    assert clips == {name: expected_clips[name] for name in clips} and max(clips.values()) >= 2
    predictions = pd.read_csv(out / "predictions.csv")
    assert set(predictions["filename"]) == set(test.filenames)
    prototypes = pd.read_csv(out / "prototypes" / "prototypes.csv")
    assert len(prototypes) == 40 and len(list((out / "prototypes").glob("prototype_*.npz"))) == 40
    occurrence = np.load(out / "prototypes" / "prototype_00.npz")["occurrence_map"]
    assert occurrence.shape == (16, 14, 14)  # T' × H' × W' of a 64 × 112² clip after layer3

    # predict on the TEST video with the most clips: its clips, the run's top prototypes, a PNG.
    name = max(clips, key=clips.get)
    video = root / "Videos" / name
    assert cli(["predict", str(out), str(video), "--out", str(tmp_path / "predicted")]) == 0
    table = pd.read_csv(tmp_path / "predicted" / "predictions.csv")
    assert table.loc[0, "num_clips"] == expected_clips[name]
    run_prediction = predictions.set_index("filename").loc[video.name, "prediction"]
    assert table.loc[0, "prediction"] == pytest.approx(run_prediction, abs=1e-3)  # same clips, same model
    assert list((tmp_path / "predicted").glob("*.png"))
    # gallery: one strip per prototype and gallery.png (the GIFs are the same frames; drawn and
    # tested at the smoke size in tests/test_explain.py, here they would cost ~40 × 64 frames at 112²).
    assert cli(["gallery", str(out), "--no-gif"]) == 0
    drawn = {p.name for p in (out / "prototypes").iterdir()}
    assert {f"prototype_{j:02d}.png" for j in range(40)} | {"gallery.png"} <= drawn
