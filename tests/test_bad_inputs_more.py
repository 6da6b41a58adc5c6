"""Bad and edge-case inputs, round 3 (issue #20): ways to corrupt a run or a data set,
silent results and obscure errors. Expected texts are the facts the inputs are built with
(file names, splits, frame counts), never read back from the code; "nothing overwritten"
compares file bytes before and after.
"""
from __future__ import annotations

import json
import pathlib
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from protoef.__main__ import main as cli
from protoef.companion import notebook, tables
from protoef.data import DataError, EchoNet
from protoef.training import runs
from protoef.training.build import data_root
from tests.test_bad_inputs import finished_run, interrupted_run  # noqa: F401  (the session's smoke run)
from tests.test_echonet import index_video, rectangle_tracing, tracing_rows, write_avi
from tests.test_train import smoke

REPO = pathlib.Path(__file__).resolve().parents[1]
SMALL = {"clip_length": 8, "period": 8, "resize": 32, "mean": 0.0, "std": 1.0, "feature_size": (4, 4)}


def write_root(root: pathlib.Path, file_list: str, tracings: str | None = None, videos=()) -> pathlib.Path:
    (root / "Videos").mkdir(parents=True, exist_ok=True)
    for name, frames in videos:
        write_avi(root / "Videos" / f"{name}.avi", index_video(frames))
    (root / "FileList.csv").write_text(file_list)
    if tracings is not None:
        (root / "VolumeTracings.csv").write_text(tracings)
    return root


# ----------------------------------------------------------------------------- corrupt

def test_predict_never_writes_into_a_run_directory(finished_run, cache, tmp_path, capsys):
    run = finished_run[0]
    video = sorted((data_root(smoke(cache)) / "Videos").glob("*.avi"))[0]
    before = {path: path.read_bytes() for path in run.rglob("*") if path.is_file() and path.name != runs.LOCK_NAME}
    other = tmp_path / "other-run"
    (other / "checkpoints").mkdir(parents=True)
    for out in (run, pathlib.Path(str(run) + "/."), other):
        assert cli(["predict", str(run), str(video), "--out", str(out), "--no-figures"]) == 2
        assert f"--out {out}: is a run directory; predict would overwrite the run's own predictions.csv" in capsys.readouterr().err
    after = {path: path.read_bytes() for path in run.rglob("*") if path.is_file() and path.name != runs.LOCK_NAME}
    assert after == before
    assert not (other / "predictions.csv").exists()


def test_resume_on_another_data_set_is_refused(interrupted_run, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "FileList.csv").write_text("FileName,EF,Split\nA,50,TRAIN\n")
    history = (interrupted_run / "history.csv").read_bytes()
    assert cli(["train", "--resume", "--out", str(interrupted_run), "--data", str(other)]) == 2
    error = capsys.readouterr().err
    assert f"cannot resume with a different config: data.root (run: None, requested: '{other}')" in error
    assert (interrupted_run / "history.csv").read_bytes() == history and not (interrupted_run / "metrics.json").exists()


def test_resume_of_a_folder_run_on_another_folder_is_refused(interrupted_run, cache, tmp_path, capsys):
    import torch

    trained_on, other = tmp_path / "echo-a", tmp_path / "echo-b"
    for root in (trained_on, other):
        shutil.copytree(data_root(smoke(cache)), root, symlinks=True)
    # The run as if trained on folder A (its checkpoint and config.json say so).
    last = interrupted_run / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    state["config"]["data"]["root"] = str(trained_on)
    torch.save(state, last)
    config = json.loads((interrupted_run / "config.json").read_text())
    config["data"]["root"] = str(trained_on)
    (interrupted_run / "config.json").write_text(json.dumps(config))
    history = (interrupted_run / "history.csv").read_bytes()
    assert cli(["train", "--resume", "--out", str(interrupted_run), "--data", str(other)]) == 2
    assert (f"cannot resume with a different config: data.root (run: '{trained_on}', requested: '{other}')"
            in capsys.readouterr().err)
    assert (interrupted_run / "history.csv").read_bytes() == history and not (interrupted_run / "metrics.json").exists()


def test_data_root_counts_as_what_a_run_learns(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    assert runs.is_runtime_difference("data.root", str(first), f"{first}/./")  # one folder, spelled twice
    assert not runs.is_runtime_difference("data.root", str(first), str(second))
    assert not runs.is_runtime_difference("data.root", None, str(first))
    # The synthetic default (None) still matches itself: no difference at all.
    assert runs.config_differences(smoke_dict(), smoke_dict()) == {}


def test_a_knob_added_after_a_run_was_made_counts_only_away_from_its_default():
    old_run = smoke_dict()
    del old_run["loss"]["concentration"]  # a run made before the knob existed ran without it
    requested = smoke_dict()
    requested["loss"]["concentration"] = 0.0  # the field's declared default: off
    assert runs.config_differences(old_run, requested) == {}
    requested["loss"]["concentration"] = 1.0
    assert runs.config_differences(old_run, requested) == {"loss.concentration": (None, 1.0)}
    # a key the run has but the request lacks is still a difference
    requested["loss"]["concentration"] = 0.0
    assert runs.config_differences(requested, old_run) == {"loss.concentration": (0.0, None)}


def smoke_dict() -> dict:
    from protoef.config import resolve

    return resolve("smoke").to_dict()


def test_synth_into_an_existing_data_set_is_refused_without_overwrite(tmp_path, capsys):
    root = write_root(tmp_path / "echo", "FileName,EF,Split\nA,50,TRAIN\nB,40,VAL\nC,60,TEST\n",
                      "FileName,X1,Y1,X2,Y2,Frame\nA.avi,1,1,2,2,0\n")
    before = {name: (root / name).read_bytes() for name in ("FileList.csv", "VolumeTracings.csv")}
    assert cli(["synth", str(root), "--videos", "3", "--workers", "1"]) == 2
    error = capsys.readouterr().err
    assert f"{root}: holds a data set already (FileList.csv, VolumeTracings.csv)" in error and "--overwrite" in error
    assert {name: (root / name).read_bytes() for name in before} == before
    assert not list((root / "Videos").iterdir())
    assert cli(["synth", str(root), "--videos", "3", "--workers", "1", "--overwrite"]) == 0
    assert len(pd.read_csv(root / "FileList.csv")) == 3


# ----------------------------------------------------------------------------- silent: data

def test_a_video_in_two_splits_is_refused_naming_it(tmp_path, capsys):
    root = write_root(tmp_path / "leak", "FileName,EF,Split\nA,50,TRAIN\nB,40,VAL\nA,50,TEST\nC,60,TEST\n",
                      videos=[("A", 40), ("B", 40), ("C", 40)])
    for split in ("TRAIN", "TEST"):
        with pytest.raises(DataError, match=r"FileList.csv: 1 video\(s\) listed in more than one split: A.avi in TEST/TRAIN"):
            EchoNet(root, split, **SMALL)
    assert cli(["check-data", str(root)]) == 2
    assert "A.avi in TEST/TRAIN" in capsys.readouterr().err


def test_rows_without_a_split_are_named_not_dropped(tmp_path, capsys):
    text = "FileName,EF,Split\nA,50,TRAIN\nB,40,VAL\nC,60,TEST\nD,55,DEV\nE,45,\nF,5"  # F: a half-written last row
    root = write_root(tmp_path / "splits", text, videos=[(name, 40) for name in "ABCDEF"])
    with pytest.warns(UserWarning, match=r"3 row\(s\) in no split"):
        dataset = EchoNet(root, "TRAIN", **SMALL)
    assert dataset.filenames == ["A.avi"]
    assert [name for name, _ in dataset.unassigned] == ["D.avi", "E.avi", "F.avi"]
    assert "Split 'DEV'" in dict(dataset.unassigned)["D.avi"] and "blank Split" in dict(dataset.unassigned)["E.avi"]
    assert cli(["check-data", str(root), "--fail-on-skip"]) == 1
    out = capsys.readouterr().out
    assert "not used: D.avi: Split 'DEV'" in out and "not used: F.avi: blank Split" in out and "3 row(s) of FileList.csv" in out


@pytest.mark.parametrize("file_list, expected", [
    ("FileName,EF,Split\nA,0.6,TRAIN\nB,0.4,VAL\nC,0.55,TEST\n", r"every EF is <= 1 \(max 0.6\): EF looks like fractions"),
    ("FileName,EF,Split\n../outside,50,TRAIN\nB,40,VAL\nC,60,TEST\n", r"FileName\(s\) \['../outside'\] point outside Videos/"),
    ("FileName,EF,Split\n/etc/x,50,TRAIN\nB,40,VAL\nC,60,TEST\n", r"FileName\(s\) \['/etc/x'\] point outside Videos/"),
    ("FileName,EF,Split\n..\\up,50,TRAIN\nB,40,VAL\nC,60,TEST\n", r"point outside Videos/"),  # Windows separators
    ("FileName,EF,Split\nC:\\x,50,TRAIN\nB,40,VAL\nC,60,TEST\n", r"point outside Videos/"),
    ("", r"FileList.csv: the file is empty; it needs a header line"),
    ("FileName,EF,Split\nA,50,TRAIN\nB,\"40,VAL\n", r"FileList.csv: not a readable CSV file"),  # an unclosed quote
])
def test_file_lists_that_are_refused(file_list, expected, tmp_path, capsys):
    root = write_root(tmp_path / "root", file_list, videos=[("B", 40), ("C", 40)])
    with pytest.raises(DataError, match=expected):
        EchoNet(root, "VAL", **SMALL)
    assert cli(["check-data", str(root)]) == 2
    assert str(root / "FileList.csv") in capsys.readouterr().err


def test_nan_and_negative_tracings_and_too_short_videos_are_skipped_with_reasons(tmp_path):
    lines = ["FileName,X1,Y1,X2,Y2,Frame"]
    for name in ("GOOD", "NAN", "NEGATIVE", "ONE"):
        for frame in (3, 20):
            lines += tracing_rows(f"{name}.avi", -2 if name == "NEGATIVE" and frame == 3 else frame,
                                  rectangle_tracing(16, 48, 12, 52))
    lines[1 + 2 * 11 + 1] = "NAN.avi,,12,48,12,3"  # after GOOD's 2 x 11 rows, NAN's first chord loses X1
    root = write_root(tmp_path / "tracings", "FileName,EF,Split\nGOOD,50,TRAIN\nNAN,50,TRAIN\nNEGATIVE,50,TRAIN\nONE,50,TRAIN\n",
                      "\n".join(lines) + "\n", videos=[("GOOD", 40), ("NAN", 40), ("NEGATIVE", 40), ("ONE", 1)])
    with pytest.warns(UserWarning, match=r"skipped 3 video"):
        dataset = EchoNet(root, "TRAIN", with_masks=True, **SMALL)
    reasons = dict(dataset.skipped)
    assert dataset.filenames == ["GOOD.avi"]
    assert reasons["NAN.avi"].startswith("traced frame 3 has 1 row(s) with missing or non-numeric X1/Y1/X2/Y2")
    assert reasons["NEGATIVE.avi"] == "traced frame -2 in VolumeTracings.csv is negative (frames count from 0)"
    # The rule predict applies (tests/test_bad_inputs.py: ">= 25 frames" for 8 frames every 8).
    assert reasons["ONE.avi"].startswith("too short: 1 frame(s); the clips take 8 frames every 8") and \
        reasons["ONE.avi"].endswith(">= 25 frames")
    with pytest.warns(UserWarning, match=r"skipped 1 video"):  # without masks only the length matters
        assert EchoNet(root, "TRAIN", **SMALL).filenames == ["GOOD.avi", "NAN.avi", "NEGATIVE.avi"]


# ----------------------------------------------------------------------------- silent: options and runs

@pytest.mark.parametrize("arguments, expected", [
    (["--profile", "smoke", "--data", ""], "--data: an empty path"),
    (["--set", "profile=nope"], "profile = 'nope' (expected one of demo, paper, smoke"),
    (["--profile", "smoke", "--set", "data.root="], "data.root = '' (expected None (the synthetic set) or a folder path"),
    (["--profile", "smoke", "--set", "profile=paper"], "--profile smoke and --set profile=paper disagree"),
])
def test_options_that_would_be_ignored_are_refused(arguments, expected, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(["train", *arguments, "--out", str(out)]) == 2
    assert expected in capsys.readouterr().err
    assert not out.exists()


def test_evaluate_with_an_empty_data_is_refused(finished_run, capsys):
    assert cli(["evaluate", str(finished_run[0]), "--data", ""]) == 2
    assert "--data: an empty path" in capsys.readouterr().err


def test_ensure_run_checks_the_checkpoint_not_only_config_json(finished_run, tmp_path, monkeypatch):
    monkeypatch.setattr(notebook, "REPO", tmp_path)
    run = notebook.run_dir("smoke", "protoefnet")
    shutil.copytree(finished_run[0], run)
    config = json.loads((run / "config.json").read_text())
    config["model"]["tau"] = 0.5  # edited by hand: the weights are still the τ = 0.2 run's
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"another config \(by its checkpoints/final.pt, whatever config.json says\): "
                                         r"model\.tau \(run: 0\.2, requested: 0\.5\)"):
        notebook.ensure_run("smoke", "protoefnet", {"model.tau": 0.5})


def test_resume_of_a_run_with_a_truncated_final_checkpoint_rewrites_the_end(finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run[0], run)
    final = run / "checkpoints" / "final.pt"
    final.write_bytes(final.read_bytes()[: final.stat().st_size // 2])
    assert cli(["train", "--resume", "--out", str(run)]) == 0
    assert "final.pt: not a readable checkpoint" in capsys.readouterr().out
    assert runs.load_checkpoint(final)["config"]["model"]["tau"] == 0.2
    # The end re-run from best.pt gives the run's own numbers again.
    assert json.loads((run / "metrics.json").read_text()) == json.loads((finished_run[0] / "metrics.json").read_text())


def test_dead_models_are_named():
    from protoef.diagnostics import result_warnings  # here: the module imports on older code too (checked by stash)

    efs = np.array([30.0, 45.0, 60.0, 70.0])
    assert result_warnings({"prediction": efs + 1.0, "ef": efs, "similarities": np.eye(4)}) == []
    constant = result_warnings({"prediction": np.full(4, 51.5), "ef": efs})
    assert len(constant) == 1 and constant[0].startswith("the TEST predictions are (nearly) constant: 51.50 ± 0 EF points")
    collapsed = result_warnings({"prediction": efs, "ef": efs, "similarities": np.full((4, 10), 0.25)})
    assert collapsed == ["every TEST similarity to every prototype is 0.25: the similarities collapsed to one value, "
                         "so β and the explanations say nothing"]
    assert result_warnings({"prediction": np.array([np.nan, 40.0]), "ef": efs[:2]})[0].startswith("1 of 2 TEST predictions")


def test_finished_run_records_its_warnings(finished_run):
    metrics = json.loads((finished_run[0] / "metrics.json").read_text())
    predictions = pd.read_csv(finished_run[0] / "predictions.csv")
    dead = predictions["prediction"].std(ddof=0) <= 0.01 * predictions["ef"].std(ddof=0)
    assert isinstance(metrics["warnings"], list) and bool(metrics["warnings"]) == dead


# ----------------------------------------------------------------------------- silent: predict

def test_predict_flags_inputs_unlike_training_and_notes_skipped_files(finished_run, cache, tmp_path, capsys):
    folder = tmp_path / "videos"
    folder.mkdir()
    write_avi(folder / "black.avi", np.zeros((100, 64, 64), np.uint8))
    write_avi(folder / "noise.avi", np.random.default_rng(0).integers(0, 256, (100, 64, 64)).astype(np.uint8))
    root = data_root(smoke(cache))
    files = pd.read_csv(root / "FileList.csv")
    train = EchoNet(root, "TRAIN", **SMALL).filenames[0]  # the first TRAIN video is always in the recorded sample
    shutil.copy(root / "Videos" / train, folder / "train.avi")
    (folder / "clip.mp4").write_bytes(b"not read")
    assert len(files) == 24
    out = tmp_path / "out"
    assert cli(["predict", str(finished_run[0]), str(folder), "--out", str(out), "--no-figures"]) == 0
    error = capsys.readouterr().err
    assert f"[predict] note: 1 file(s) in {folder} are not .avi and are not predicted: clip.mp4" in error
    table = pd.read_csv(out / "predictions.csv").set_index("filename")
    assert table.loc["black.avi", "intensity_unlike_training"] and table.loc["noise.avi", "intensity_unlike_training"]
    assert "pixel mean 0.000" in table.loc["black.avi", "warnings"] and "pixel std 0.000" in table.loc["black.avi", "warnings"]
    assert not table.loc["train.avi", "intensity_unlike_training"]


# ----------------------------------------------------------------------------- obscure

def test_obscure_inputs_get_one_line_errors(tmp_path, capsys):
    assert cli(["synth", str(tmp_path / "s"), "--seed", "-1", "--videos", "3", "--workers", "1"]) == 2
    assert "seed must be an int >= 0 (synth --seed), got -1" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"examples / levels must be a dict"):
        tables.pick_by_quantile([40.0, 50.0], -1)
    with pytest.raises(ValueError, match=r"quantile\(s\) \{'low': -1\} are not numbers in \[0, 1\]"):
        tables.pick_by_quantile([40.0, 50.0], {"low": -1})


def test_predict_out_that_cannot_be_created_names_the_option(finished_run, cache, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    video = sorted((data_root(smoke(cache)) / "Videos").glob("*.avi"))[0]
    out = blocker / "sub"
    assert cli(["predict", str(finished_run[0]), str(video), "--out", str(out), "--no-figures"]) == 2
    assert f"--out {out}: cannot create the output folder" in capsys.readouterr().err


@pytest.mark.parametrize("arguments, expected", [
    (["--only", "99"], "run_all.sh: --only 99: no notebook numbered '99' in notebooks/ (available: 01,"),
    (["--profile", "smoke", "--data", "/tmp"], "run_all.sh: --data is used by --profile paper only"),
])
def test_run_all_refuses_arguments_that_would_do_nothing(arguments, expected):
    result = subprocess.run([str(REPO / "run_all.sh"), *arguments], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and expected in result.stderr
