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
from tests.test_bad_inputs import finished_run  # noqa: F401  (the session's smoke run)
from tests.test_bad_inputs_more import SMALL, write_root
from tests.test_echonet import index_video, rectangle_tracing, tracing_rows, write_avi
from tests.test_train import smoke

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


# ----------------------------------------------------------------------------- audit: FileList.csv

ABC = "FileName,EF,Split\nA,{a},TRAIN\nB,40,VAL\nC,60,TEST\n"


@pytest.mark.parametrize("ef, reason", [
    ("65%", "EF '65%' in FileList.csv is missing or not a finite number (EF is a percentage written as a plain number"),
    ("6,5", "EF '6,5' in FileList.csv is missing or not a finite number"),
    ("inf", "EF 'inf' in FileList.csv is missing or not a finite number"),
    ("", "EF blank in FileList.csv is missing or not a finite number"),
    ("0.6", "EF 0.6 in FileList.csv looks like a fraction while other rows are percentages (EF 60 meant?)"),
    ("150", "EF 150 in FileList.csv is outside 0-100"),
])
def test_unusable_ef_values_are_skipped_naming_the_value(ef, reason, tmp_path):
    text = ABC.format(a=f'"{ef}"' if "," in ef else ef)
    root = write_root(tmp_path / "root", text, videos=[(name, 40) for name in "ABC"])
    with pytest.warns(UserWarning, match="skipped 1 video"):
        dataset = EchoNet(root, "TRAIN", **SMALL)
    assert dataset.filenames == [] and dict(dataset.skipped)["A.avi"].startswith(reason)


@pytest.mark.parametrize("header, expected", [
    ("FileName,EF,Split,EF", r"column\(s\) \['EF'\] appear more than once in the header"),
    ("FileName;EF;Split", r"found \['FileName;EF;Split'\]; the header looks separated by ';'"),
    ("FileName\tEF\tSplit", r"the header looks separated by tabs"),
])
def test_ambiguous_or_misseparated_headers_are_refused(header, expected, tmp_path):
    separator = ";" if ";" in header else "\t" if "\t" in header else ","
    rows = [separator.join(row) for row in (("A", "50", "TRAIN", "0.5"), ("B", "40", "VAL", "0.4"), ("C", "60", "TEST", "0.6"))]
    rows = [row if header.count(separator) == 3 else separator.join(row.split(separator)[:3]) for row in rows]
    root = write_root(tmp_path / "root", header + "\n" + "\n".join(rows) + "\n", videos=[(name, 40) for name in "ABC"])
    with pytest.raises(DataError, match=expected):
        EchoNet(root, "TRAIN", **SMALL)


def test_a_folder_named_like_a_data_file_or_a_video_is_named(tmp_path):
    root = write_root(tmp_path / "root", ABC.format(a=50), videos=[("B", 40), ("C", 40)])
    (root / "Videos" / "A.avi").mkdir()
    with pytest.warns(UserWarning, match="skipped 1 video"):
        dataset = EchoNet(root, "TRAIN", **SMALL)
    assert dict(dataset.skipped)["A.avi"].endswith(f"{root / 'Videos' / 'A.avi'}: is a folder, not a video file")
    (root / "FileList.csv").unlink()
    (root / "FileList.csv").mkdir()
    with pytest.raises(DataError, match=r"FileList.csv: is a folder, not a CSV file"):
        EchoNet(root, "TRAIN", **SMALL)


def test_a_root_without_videos_folder_is_one_error(tmp_path, capsys):
    root = write_root(tmp_path / "root", ABC.format(a=50))
    (root / "Videos").rmdir()
    with pytest.raises(DataError, match=r"root/Videos: no such folder"):
        EchoNet(root, "TRAIN", **SMALL)
    assert cli(["check-data", str(root)]) == 2
    err = capsys.readouterr().err
    assert f"{root / 'Videos'}: no such folder" in err and err.count("\n") == 1


# ----------------------------------------------------------------------------- audit: VolumeTracings.csv

def boxes(name: str, box, frames=(3, 20)) -> list[str]:
    return [line for frame in frames for line in tracing_rows(f"{name}.avi", frame, rectangle_tracing(*box))]


@pytest.mark.parametrize("rows, reason", [
    (boxes("A", (160, 480, 120, 520)), "traced frame 3 in VolumeTracings.csv has coordinates outside the video's 64x64 frame"),
    (boxes("A", (-30, -4, 12, 52)), "traced frame 3 in VolumeTracings.csv has coordinates outside the video's 64x64 frame"),
    ([f"A.avi,0,0,0,0,{frame}" for frame in (3, 3, 3, 20, 20, 20)], "traced frame 3 in VolumeTracings.csv has a zero-length long axis"),
    (["A.avi,32,10,32,50,3"] + ["A.avi,20,20,20,20,3"] * 3 + boxes("A", (16, 48, 12, 52), (20,)),
     "traced frame 3 in VolumeTracings.csv has a zero-length set of chords"),
])
def test_tracings_that_enclose_nothing_or_lie_outside_the_frame_are_skipped(rows, reason, tmp_path):
    root = write_root(tmp_path / "root", ABC.format(a=50), "FileName,X1,Y1,X2,Y2,Frame\n" + "\n".join(rows) + "\n",
                      videos=[(name, 40) for name in "ABC"])
    with pytest.warns(UserWarning, match="skipped 1 video"):
        dataset = EchoNet(root, "TRAIN", with_masks=True, **SMALL)
    assert dataset.filenames == [] and dict(dataset.skipped)["A.avi"].startswith(reason)


# ----------------------------------------------------------------------------- audit: options and output folders

def test_an_override_without_a_key_is_named(tmp_path, capsys):
    assert cli(["train", "--profile", "smoke", "--set", "=5", "--out", str(tmp_path / "run")]) == 2
    assert "override '=5': no KEY before '='" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_synth_into_a_file_names_it(tmp_path, capsys):
    target = tmp_path / "a-file"
    target.write_text("keep")
    assert cli(["synth", str(target), "--videos", "3", "--workers", "1"]) == 2
    assert f"{target}: is a file, not a folder; synth OUT_DIR" in capsys.readouterr().err
    assert target.read_text() == "keep"


def test_train_never_writes_into_a_data_set(cache, tmp_path, capsys):
    root = write_root(tmp_path / "echo", ABC.format(a=50), videos=[(name, 40) for name in "ABC"])
    before = sorted(path.name for path in root.iterdir())
    assert cli(["train", "--profile", "smoke", "--set", f"data.cache_dir={cache}", "--out", str(root)]) == 2
    assert f"{root}: holds a data set (FileList.csv); a run written there would mix" in capsys.readouterr().err
    assert sorted(path.name for path in root.iterdir()) == before


def test_predict_never_writes_inside_a_run_or_a_data_set(finished_run, cache, tmp_path, capsys):
    run = finished_run[0]
    video = sorted((data_root(smoke(cache)) / "Videos").glob("*.avi"))[0]
    before = sorted(path.relative_to(run) for path in run.rglob("*"))
    for out in (run / "prototypes", run / "new-folder"):
        assert cli(["predict", str(run), str(video), "--out", str(out), "--no-figures"]) == 2
        assert f"--out {out}: lies inside the run directory {run.resolve()}" in capsys.readouterr().err
    assert sorted(path.relative_to(run) for path in run.rglob("*")) == before
    root = data_root(smoke(cache))
    assert cli(["predict", str(run), str(video), "--out", str(root), "--no-figures"]) == 2
    assert f"--out {root}: holds a data set (FileList.csv, VolumeTracings.csv)" in capsys.readouterr().err
    assert not (root / "predictions.csv").exists()


def test_predict_with_a_training_checkpoint_does_not_compare_similarities(finished_run, cache, tmp_path, capsys):
    best = finished_run[0] / "checkpoints" / "best.pt"
    video = sorted((data_root(smoke(cache)) / "Videos").glob("*.avi"))[0]
    with pytest.warns(UserWarning, match="before the push"):
        assert cli(["predict", str(best), str(video), "--out", str(tmp_path / "out"), "--no-figures"]) == 0
    assert "is not the run's final model: the similarity to the prototypes is not compared" in capsys.readouterr().err
    assert not pd.read_csv(tmp_path / "out" / "predictions.csv").loc[0, "similarity_unlike_training"]


def test_a_notebook_profile_from_the_environment_is_checked(monkeypatch, tmp_path):
    from protoef.companion import notebook

    monkeypatch.setattr(notebook, "REPO", tmp_path)
    monkeypatch.setenv("PROTOEF_PROFILE", "nope")
    with pytest.raises(ValueError, match=r"PROTOEF_PROFILE = 'nope': expected one of demo, paper, smoke"):
        notebook.setup()
    assert not (tmp_path / "figures").exists()


def test_gallery_of_an_unfinished_run_says_so(finished_run, tmp_path, capsys):
    run = tmp_path / "unfinished"
    shutil.copytree(finished_run[0], run)
    (run / "metrics.json").unlink()
    assert cli(["gallery", str(run), "--no-gif"]) == 0
    assert f"[gallery] warning: {run} is not a finished run" in capsys.readouterr().err


# ----------------------------------------------------------------------------- audit: inputs that were already clear or
# handled (regression guards: they pass on the code before this round too)

@pytest.mark.parametrize("override, expected", [
    ("model.tau=abc", "model.tau: 'abc' is not a valid float"),
    ("optim.epochs=2.5", "optim.epochs: '2.5' is not a valid int"),
    ("data.batch_size=0", "data.batch_size = 0 (expected an int >= 1)"),
    ("optim.push=maybe", "optim.push: expected a bool, got 'maybe'"),
    ("model.nonsense.deep=1", "unknown config key 'model.nonsense.deep'"),
    ("model.tau", "override 'model.tau': expected KEY=VALUE"),
    ("model.tau=nan", "model.tau = nan (expected > 0"),
    ("seed=1e3", "seed: '1e3' is not a valid int"),
    ("device=gpu", "device = 'gpu' (expected auto, cpu, mps, cuda or cuda:N)"),
    ("model.kind=BlackBox", "model.kind = 'BlackBox' (expected 'protoefnet' or 'blackbox')"),
])
def test_overrides_of_the_wrong_type_or_range_are_named(override, expected, tmp_path, capsys):
    assert cli(["train", "--profile", "smoke", "--set", override, "--out", str(tmp_path / "run")]) == 2
    assert expected in capsys.readouterr().err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("name, ef, kept_as", [
    ("my video", " 65 ", 65.0), ("vidéo✓", "1e2", 100.0), ("A", "-0", 0.0)])
def test_file_list_quirks_that_are_read_as_meant(name, ef, kept_as, tmp_path):
    text = f"FileName,EF,Split,FrameHeight,NumberOfFrames\n{name},{ef},train,-3,999\nB,40,VAL,0,0\nC,60,TEST,0,0\n"
    root = write_root(tmp_path / "root", text, videos=[(name, 40), ("B", 40), ("C", 40)])
    dataset = EchoNet(root, "TRAIN", **SMALL)
    assert dataset.filenames == [f"{name}.avi"] and list(dataset.efs) == [kept_as] and not dataset.skipped
    assert dataset.records[0].num_frames == 40  # the AVI's own count, not FileList's NumberOfFrames
