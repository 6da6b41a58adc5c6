"""Bad and edge-case inputs, round 3 continued (issue #20): predict's similarity check, a
dead model trained for real, tracings without a Frame, and an adversarial audit of inputs
beyond tests/test_bad_inputs_more.py. Expected texts are the facts the inputs are built with
(file names, keys, values), never read back from the code.
"""
from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pandas as pd
import pytest

from protoef.__main__ import main as cli
from protoef.data import DataError, EchoNet
from protoef.training.build import data_root
from protoef.training.lifecycle import fit
from tests.test_bad_inputs import finished_run  # noqa: F401  (one smoke run for the module)
from tests.test_bad_inputs_more import SMALL, write_root
from tests.test_echonet import index_video, rectangle_tracing, tracing_rows, write_avi
from tests.test_train import cache, smoke  # noqa: F401

REPO = pathlib.Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- predict: far from every prototype

def test_predict_flags_videos_less_similar_than_every_train_clip(finished_run, cache, tmp_path, capsys):
    run = finished_run[0]
    metrics = json.loads((run / "metrics.json").read_text())
    reference = metrics["train_similarity"]
    root = data_root(smoke(cache))
    train = EchoNet(root, "TRAIN", **SMALL).filenames
    assert reference["clips"] == len(train) and -1.0 <= reference["minimum"] <= reference["quantile_05"] <= 1.0
    folder = tmp_path / "videos"
    folder.mkdir()
    write_avi(folder / "black.avi", np.zeros((100, 64, 64), np.uint8))
    write_avi(folder / "noise.avi", np.random.default_rng(0).integers(0, 256, (100, 64, 64)).astype(np.uint8))
    shutil.copy(root / "Videos" / train[0], folder / "train.avi")
    out = tmp_path / "out"
    assert cli(["predict", str(run), str(folder), "--out", str(out), "--no-figures"]) == 0
    printed = capsys.readouterr().err
    table = pd.read_csv(out / "predictions.csv").set_index("filename")
    assert not table.loc["train.avi", "similarity_unlike_training"]
    assert table.loc["train.avi", "max_similarity"] >= reference["minimum"]
    # Noise is far from every prototype (0.956 against a TRAIN minimum of 0.967 here).
    assert table.loc["noise.avi", "max_similarity"] < reference["minimum"]
    assert table.loc["noise.avi", "similarity_unlike_training"]
    assert f"below the lowest a TRAIN clip reaches ({reference['minimum']:.3f}" in table.loc["noise.avi", "warnings"]
    assert "noise.avi: " in printed
    # Black frames land near a prototype of this 2-epoch model (0.978): the intensity check names them.
    assert table.loc["black.avi", "intensity_unlike_training"]


# ----------------------------------------------------------------------------- a dead model, trained for real

def test_a_learning_rate_typo_finishes_with_a_warning(cache, tmp_path, capsys):
    typo = {f"optim.lr_{name}": 1e4 for name in ("backbone", "features", "occurrence", "prototypes", "head")}
    out = tmp_path / "dead"
    metrics = fit(smoke(cache, **typo), out)
    printed = capsys.readouterr().out
    assert metrics["warnings"] and json.loads((out / "metrics.json").read_text())["warnings"] == metrics["warnings"]
    assert any("TEST predictions are (nearly) constant" in note or "TEST predictions are not finite" in note
               or "every TEST similarity" in note for note in metrics["warnings"])
    assert f"[train] warning: {metrics['warnings'][0]}" in printed


# ----------------------------------------------------------------------------- tracings without a Frame

@pytest.mark.parametrize("frame_text, shown", [("", "Frame blank"), ("x", "Frame 'x'"), ("3.5", "Frame '3.5'")])
def test_tracing_rows_without_a_whole_frame_skip_the_video_with_a_reason(frame_text, shown, tmp_path):
    lines = ["FileName,X1,Y1,X2,Y2,Frame"]
    for name in ("GOOD", "BAD"):
        for frame in (3, 20):
            lines += tracing_rows(f"{name}.avi", frame, rectangle_tracing(16, 48, 12, 52))
    row = 1 + 2 * 11 + 3  # BAD's third row of frame 3 (after GOOD's 2 x 11 rows): one chord loses its Frame
    lines[row] = ",".join(lines[row].split(",")[:5] + [frame_text])
    root = write_root(tmp_path / "tracings", "FileName,EF,Split\nGOOD,50,TRAIN\nBAD,50,TRAIN\n", "\n".join(lines) + "\n",
                      videos=[("GOOD", 40), ("BAD", 40)])
    with pytest.warns(UserWarning, match=r"skipped 1 video"):
        dataset = EchoNet(root, "TRAIN", with_masks=True, **SMALL)
    assert dataset.filenames == ["GOOD.avi"]
    assert dict(dataset.skipped)["BAD.avi"].startswith(f"1 row(s) in VolumeTracings.csv without a whole-number Frame "
                                                       f"(row {row + 1}: {shown})")
