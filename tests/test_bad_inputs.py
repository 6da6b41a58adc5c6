"""Bad and edge-case inputs (issue #11): each gets a clear error naming the key or file
and the valid range, or a flagged result; nothing is silent, obscure or corrupting.

Expected texts are the ranges and facts the inputs are built with (a truncated AVI's
decodable frame count comes from a direct OpenCV decode), never read back from the code.
One smoke run is trained for the whole module; the run-directory cases work on copies.
"""
from __future__ import annotations

import ast
import importlib.metadata
import json
import pathlib
import shutil
import subprocess
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

import numpy as np
import pandas as pd
import pytest

from protoef.companion import notebook
from protoef.training import runs
from protoef.__main__ import main as cli
from protoef.config import resolve
from protoef.data import DataError, EchoNet
from protoef.training.build import data_root
from protoef.training.lifecycle import fit
from tests.test_echonet import frame_levels, index_video, rectangle_tracing, tracing_rows, write_avi
from tests.test_train import smoke

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def finished_run(recorded_smoke_run):
    """(run, paths `os.replace` moved into place while it was written): the session's smoke
    run (tests/conftest.py), shared read-only; tests that change a run copy it first."""
    return recorded_smoke_run


@pytest.fixture
def interrupted_run(finished_run, tmp_path) -> pathlib.Path:
    """A copy of the run as a kill after the last epoch leaves it: no push, no final.pt."""
    run = tmp_path / "interrupted"
    shutil.copytree(finished_run[0], run)
    for name in ("metrics.json", "predictions.csv", "checkpoints/final.pt"):
        (run / name).unlink()
    shutil.rmtree(run / "prototypes")
    return run


# ----------------------------------------------------------------------------- corruption and stale runs

HOLD_LOCK = """
import sys, time
from protoef.training.runs import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_second_writer_of_a_run_is_refused_naming_the_holder(cache, tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(runs.RunLockedError, match=rf"another process is writing this run \(pid {holder.pid} on "):
            fit(smoke(cache), out)
        assert cli(["train", "--profile", "smoke", "--set", f"data.cache_dir={cache}", "--out", str(out)]) == 2
        assert f"another process is writing this run (pid {holder.pid}" in capsys.readouterr().err
        assert not (out / "config.json").exists() and not (out / "checkpoints").exists()  # nothing mixed in
    finally:
        holder.kill()
        holder.wait()
    # A killed holder releases the OS lock: the directory is usable again.
    with runs.run_lock(out):
        pass


def test_ensure_run_matches_the_resolved_config(finished_run, tmp_path, monkeypatch):
    monkeypatch.setattr(notebook, "REPO", tmp_path)
    run = notebook.run_dir("smoke", "protoefnet")
    shutil.copytree(finished_run[0], run)
    assert notebook.ensure_run("smoke", "protoefnet") == run  # same config: reused, nothing trained
    with pytest.raises(ValueError, match=r"holds a run of another config: model\.tau \(run: 0\.2, requested: 0\.5\)\. "):
        notebook.ensure_run("smoke", "protoefnet", {"model.tau": 0.5})
    # An interrupted run of another config is not resumed either.
    (run / "metrics.json").unlink()
    with pytest.raises(ValueError, match=r"another config: loss\.delta \(run: 5\.0, requested: 2\.5\)"):
        notebook.ensure_run("smoke", "protoefnet", {"loss.delta": 2.5})


def test_resume_refuses_other_overrides_and_applies_runtime_ones(cache, finished_run, interrupted_run, capsys):
    with pytest.raises(ValueError, match=r"cannot resume with a different config: model\.tau \(run: 0\.2, requested: 0\.5\)"):
        fit(smoke(cache, **{"model.tau": 0.5}), interrupted_run, resume=True)
    assert cli(["train", "--resume", "--out", str(interrupted_run), "--set", "optim.lr_head=0.01"]) == 2
    assert "optim.lr_head (run: 0.001, requested: 0.01)" in capsys.readouterr().err
    # A finished run is no answer for another config either.
    with pytest.raises(ValueError, match=r"cannot resume with a different config: model\.tau"):
        fit(smoke(cache, **{"model.tau": 0.5}), finished_run[0], resume=True)
    # Without --profile the run's own config is resumed (not the demo default); a runtime key
    # is applied and said so. The result equals the uninterrupted run.
    assert cli(["train", "--resume", "--out", str(interrupted_run), "--set", "data.num_workers=0",
                "--set", "device=cpu"]) == 0
    assert "[train] resume: device = 'cpu' (the run had 'auto'" in capsys.readouterr().out
    finished = json.loads((finished_run[0] / "metrics.json").read_text())
    assert json.loads((interrupted_run / "metrics.json").read_text()) == finished


def test_predict_and_evaluate_refuse_an_interrupted_run(interrupted_run, cache, tmp_path, capsys):
    video = sorted((data_root(smoke(cache)) / "Videos").glob("*.avi"))[0]
    out = tmp_path / "predictions"
    assert cli(["predict", str(interrupted_run), str(video), "--out", str(out), "--no-figures"]) == 2
    assert f"{interrupted_run}: no checkpoints/final.pt, so this is not a finished run" in capsys.readouterr().err
    assert not out.exists()
    assert cli(["evaluate", str(interrupted_run)]) == 2
    assert "not a finished run" in capsys.readouterr().err
    # Asked for explicitly, the un-pushed best.pt is used loudly and recorded in the output.
    best = interrupted_run / "checkpoints" / "best.pt"
    epoch = runs.load_checkpoint(best)["epoch"] + 1
    with pytest.warns(UserWarning, match="before the push"):
        assert cli(["predict", str(best), str(video), "--out", str(out), "--no-figures"]) == 0
    capsys.readouterr()
    table = pd.read_csv(out / "predictions.csv")
    assert table.loc[0, "checkpoint"] == f"{best} (training checkpoint of epoch {epoch}, before the push: not a finished run)"
    with pytest.warns(UserWarning, match="before the push"):
        assert cli(["evaluate", str(best), "--split", "VAL"]) == 0
    assert json.loads(capsys.readouterr().out)["checkpoint"].startswith(f"{best} (training checkpoint of epoch {epoch}")


# ----------------------------------------------------------------------------- videos: truncated, short, stretched

def truncated_copy(source: pathlib.Path, target: pathlib.Path) -> int:
    """A copy cut at 60 % of its bytes (the header still promises every frame); returns the
    number of frames OpenCV decodes from it."""
    target.write_bytes(source.read_bytes()[: int(source.stat().st_size * 0.6)])
    return len(frame_levels(target))


@pytest.fixture(scope="module")
def video_root(tmp_path_factory) -> dict:
    """An EchoNet-format root with a good, a truncated and a mis-traced video."""
    root = tmp_path_factory.mktemp("videos")
    (root / "Videos").mkdir()
    write_avi(root / "Videos" / "GOOD.avi", index_video(100))
    decodable = truncated_copy(root / "Videos" / "GOOD.avi", root / "Videos" / "TRUNCATED.avi")
    assert 0 < decodable < 80
    shutil.copy(root / "Videos" / "GOOD.avi", root / "Videos" / "LATETRACE.avi")
    write_avi(root / "Videos" / "PERCENT.avi", index_video(100))
    (root / "FileList.csv").write_text("FileName,EF,Split\nGOOD,60,TRAIN\nTRUNCATED,55,TRAIN\nLATETRACE,50,TRAIN\n"
                                       "PERCENT,150,TRAIN\n")
    box = (16, 48, 12, 52)
    lines = ["FileName,X1,Y1,X2,Y2,Frame"]
    for name, frames in (("GOOD", (3, 40)), ("TRUNCATED", (3, 80)), ("LATETRACE", (3, 150)), ("PERCENT", (3, 40))):
        for frame in frames:
            lines += tracing_rows(f"{name}.avi", frame, rectangle_tracing(*box))
    (root / "VolumeTracings.csv").write_text("\n".join(lines) + "\n")
    return {"root": root, "decodable": decodable}


def test_truncated_video_is_skipped_with_its_reason(video_root, tmp_path):
    root, decodable = video_root["root"], video_root["decodable"]
    options = {"clip_length": 8, "resize": 64, "mean": 0.0, "std": 1.0, "feature_size": (8, 8)}
    with pytest.warns(UserWarning, match="skipped 3 video"):
        dataset = EchoNet(root, "TRAIN", with_masks=True, **options)
    reasons = dict(dataset.skipped)
    assert dataset.filenames == ["GOOD.avi"]
    assert reasons["TRUNCATED.avi"] == (f"truncated video: the container promises 100 frames, only {decodable} decode; "
                                        "traced frame(s) [80] lie beyond the decoded end (a damaged or incompletely copied file)")
    assert reasons["LATETRACE.avi"] == "traced frame(s) [150] in VolumeTracings.csv lie beyond the video's 100 frames"
    assert reasons["PERCENT.avi"] == "EF 150 in FileList.csv is outside 0-100 (EF is a percentage)"
    with pytest.warns(UserWarning, match="skipped 2 video"):  # without masks the tracings do not matter
        assert set(EchoNet(root, "TRAIN", **options).filenames) == {"GOOD.avi", "LATETRACE.avi"}
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "Videos").symlink_to(root / "Videos")
    (alone / "FileList.csv").write_text("FileName,EF,Split\nTRUNCATED,55,TRAIN\n")
    with pytest.raises(DataError, match=rf"TRUNCATED.avi: truncated video: the container promises 100 frames, only {decodable} decode"):
        EchoNet(alone, "TRAIN", strict=True, **options)


@pytest.fixture(scope="module")
def odd_videos(tmp_path_factory, video_root) -> dict:
    folder = tmp_path_factory.mktemp("odd")
    write_avi(folder / "good.avi", index_video(100))
    shutil.copy(video_root["root"] / "Videos" / "TRUNCATED.avi", folder / "truncated.avi")
    write_avi(folder / "one.avi", index_video(1))
    write_avi(folder / "five.avi", index_video(5))
    write_avi(folder / "short.avi", index_video(30))
    write_avi(folder / "wide.avi", index_video(100, 48, 80))
    write_avi(folder / "slow.avi", index_video(100), fps=10.0)
    return {"folder": folder, "decodable": video_root["decodable"]}


def test_predict_flags_truncated_short_stretched_and_slow_videos(finished_run, odd_videos, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli(["predict", str(finished_run[0]), str(odd_videos["folder"]), "--out", str(out), "--no-figures"]) == 0
    table = pd.read_csv(out / "predictions.csv").set_index("filename")
    table[["warnings", "error"]] = table[["warnings", "error"]].fillna("")
    # Index videos are unlike the synthetic training echoes in intensity (issue #20's flag,
    # tests/test_bad_inputs_more.py); that note, always the last, aside:
    assert table.loc["good.avi", "intensity_unlike_training"]
    table["warnings"] = table["warnings"].str.replace(r"(; )?unlike the training data: .*may mean nothing$", "", regex=True)
    flags = ["truncated", "short", "stretched", "fps_unlike_training"]
    environment = json.loads((finished_run[0] / "environment.json").read_text())
    fps = environment["training_videos"]["fps"]
    assert environment["training_videos"]["aspect"] == [1.0, 1.0] and fps[0] > 10 * 1.02  # synthetic: square, >= 30 fps
    good = table.loc["good.avi"]
    assert good["warnings"] == "" and not good[flags].any() and np.isfinite(good["prediction"])
    decodable = odd_videos["decodable"]
    assert table.loc["truncated.avi", "truncated"] and table.loc["truncated.avi", "frames"] == decodable
    assert (f"truncated: the container promises 100 frames, only {decodable} decode; predicted from those"
            in table.loc["truncated.avi", "warnings"])
    # The smoke clip: 8 frames every 8th (span 64); at least 4 real frames, i.e. >= 25 frames.
    for name, frames in (("one.avi", 1), ("five.avi", 5)):
        assert np.isnan(table.loc[name, "prediction"]) and table.loc[name, "error"].endswith(
            f"too short to predict: {frames} frame(s); the run's clips take 8 frames every 8, and at least half of "
            "them must be real video, i.e. >= 25 frames")
    assert table.loc["short.avi", "short"] and np.isfinite(table.loc["short.avi", "prediction"])
    assert table.loc["short.avi", "warnings"] == ("short: 30 frames, less than one clip span of 64 (8 frames every 8); "
                                                  "the clip is padded with black")
    assert table.loc["wide.avi", "stretched"] and table.loc["wide.avi", "warnings"] == (
        "stretched: 80x48 frames (aspect 1.67) are resized to 32x32; the training frames had aspect 1.00")
    assert table.loc["slow.avi", "fps_unlike_training"] and table.loc["slow.avi", "warnings"].startswith(
        f"frame rate 10 fps is outside the training videos' {fps[0]:g}{'' if fps[0] == fps[1] else f'-{fps[1]:g}'} fps")
    assert (table["checkpoint"] == f"{finished_run[0] / 'checkpoints' / 'final.pt'} (final, after the push)").all()
    assert "[predict] warning: 7 video(s) flagged" in capsys.readouterr().err  # 6 + good.avi's intensity


def test_rejected_predict_creates_no_output_folder(finished_run, tmp_path, capsys):
    empty = tmp_path / "no-videos"
    empty.mkdir()
    for target in (tmp_path / "missing.avi", empty):
        out = tmp_path / f"out-{target.name}"
        assert cli(["predict", str(finished_run[0]), str(target), "--out", str(out)]) == 2
        assert str(target) in capsys.readouterr().err
        assert not out.exists()


# ----------------------------------------------------------------------------- config values

@pytest.mark.parametrize("override, expected", [
    ("model.tau=0", "model.tau = 0.0 (expected > 0 (the softmax temperature of the similarities))"),
    ("model.tau=nan", "model.tau = nan (expected > 0"),
    ("model.num_prototypes=0", "model.num_prototypes = 0 (expected an int >= 1)"),
    ("data.clip_length=0", "data.clip_length = 0 (expected an int >= 1 (frames per clip))"),
    ("data.period=0", "data.period = 0 (expected an int >= 1 (every period-th frame is taken))"),
    ("optim.epochs=0", "optim.epochs = 0 (expected an int >= 1)"),
    ("optim.lr_head=-1", "optim.lr_head = -1.0 (expected >= 0 (a learning rate))"),
    ("data.batch_size=0", "data.batch_size = 0 (expected an int >= 1)"),
    ("data.test_clips=0", "data.test_clips = 0 (expected an int >= 1 (clips per test video))"),
    ("data.std=0", "data.std = 0.0 (expected None (computed) or a pixel std > 0)"),
    ("data.limit_videos=0", "data.limit_videos = 0 (expected None (every video) or an int >= 1)"),
    ("data.background_dilation=2", "data.background_dilation = 2 (expected an odd int >= 1 (a max-pool size))"),
    ("data.resize=4", "data.resize = 4 (expected an int >= 16"),
    ("loss.delta=-1", "loss.delta = -1.0 (expected >= 0 (a label window in EF points))"),
    ("loss.cluster_k=11", "loss.cluster_k = 11 (expected at most model.num_prototypes = 10)"),
    ("model.label_min=90", "model.label_min = 90.0 and model.label_max = 90.0 (expected label_min < label_max)"),
    ("model.kind=resnet", "model.kind = 'resnet' (expected 'protoefnet' or 'blackbox')"),
    ("optim.plateau_factor=1.5", "optim.plateau_factor = 1.5 (expected a factor in (0, 1))"),
    ("device=tpu", "device = 'tpu' (expected auto, cpu, mps, cuda or cuda:N)"),
    ("data.synthetic_videos=2", "data.synthetic_videos = 2 (expected an int >= 3"),
    ("loss.expected_label_error=-1", "loss.expected_label_error = -1.0 (expected >= 0 (a loss weight))"),
    ("loss.reverse_soft_label=-0.5", "loss.reverse_soft_label = -0.5 (expected >= 0 (a loss weight))"),
    ("loss.reverse_soft_label=inf", "loss.reverse_soft_label = inf (expected >= 0 (a loss weight))"),
    ("model.beta_top_k=-1", "model.beta_top_k = -1 (expected an int >= 0 (0: β over every prototype))"),
    ("model.beta_top_k=11", "model.beta_top_k = 11 (expected at most model.num_prototypes = 10)"),
])
def test_out_of_range_values_are_refused_before_anything_runs(override, expected, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(["train", "--profile", "smoke", "--set", override, "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert f"error: invalid config: {expected}" in error and "Traceback" not in error
    assert not out.exists()
    with pytest.raises(ValueError, match="invalid config"):
        resolve("smoke", [override])


def test_fit_validates_a_config_changed_after_resolve(cache, tmp_path):
    config = smoke(cache)
    config.model.tau = 0.0
    with pytest.raises(ValueError, match=r"invalid config: model\.tau = 0\.0"):
        fit(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- data sets and splits

@pytest.fixture
def train_only_root(cache, tmp_path) -> pathlib.Path:
    """The smoke data set with every video listed as TRAIN: no VAL, no TEST."""
    source = data_root(smoke(cache))
    root = tmp_path / "train-only"
    root.mkdir()
    (root / "Videos").symlink_to(source / "Videos")
    shutil.copy(source / "VolumeTracings.csv", root)
    table = pd.read_csv(source / "FileList.csv")
    table.assign(Split="TRAIN").to_csv(root / "FileList.csv", index=False)
    return root


def test_a_file_list_without_val_and_test_is_refused(cache, train_only_root, tmp_path, capsys):
    assert cli(["check-data", str(train_only_root)]) == 2
    assert f"error: {train_only_root}: no usable video in split(s) VAL, TEST" in capsys.readouterr().err
    out = tmp_path / "run"
    with pytest.raises(DataError, match=rf"{train_only_root / 'FileList.csv'}: no usable VAL video\. Training needs TRAIN, VAL"):
        fit(smoke(cache, **{"data.root": str(train_only_root)}), out)
    assert not (out / "config.json").exists() and not (out / "history.csv").exists()


def test_evaluate_on_an_empty_split_is_a_clear_error(finished_run, train_only_root, capsys):
    assert cli(["evaluate", str(finished_run[0]), "--data", str(train_only_root), "--split", "TEST"]) == 2
    assert f"{train_only_root}: split TEST has no usable video" in capsys.readouterr().err
    assert cli(["evaluate", str(finished_run[0]), "--split", "TESTING"]) == 2
    assert "unknown split(s) ['TESTING']" in capsys.readouterr().err


def test_synth_needs_a_video_per_split_and_reports_errors_in_one_line(tmp_path, capsys):
    for videos in ("0", "2"):
        assert cli(["synth", str(tmp_path / videos), "--videos", videos, "--workers", "1"]) == 2
        error = capsys.readouterr().err
        assert f"videos must be >= 3 (at least one TRAIN, one VAL and one TEST video), got {videos}" in error
        assert "Traceback" not in error
    assert cli(["synth", str(tmp_path / "three"), "--videos", "3", "--workers", "1"]) == 0
    assert sorted(pd.read_csv(tmp_path / "three" / "FileList.csv")["Split"]) == ["TEST", "TRAIN", "VAL"]


def test_train_out_that_is_a_file_is_a_clear_error(cache, tmp_path, capsys):
    out = tmp_path / "a-file"
    out.write_text("not a run")
    assert cli(["train", "--profile", "smoke", "--set", f"data.cache_dir={cache}", "--out", str(out)]) == 2
    assert f"{out}: is a file, not a run directory" in capsys.readouterr().err


def test_paper_profile_without_echonet_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("ECHONET_DIR", raising=False)
    out = tmp_path / "run"
    assert cli(["train", "--profile", "paper", "--out", str(out)]) == 2
    assert "the paper profile trains on EchoNet-Dynamic: pass --data DIR" in capsys.readouterr().err
    assert not out.exists()


def test_resume_of_nothing_says_it_starts_afresh(cache, tmp_path, monkeypatch, capsys):
    import protoef.training.lifecycle as train

    class Built(Exception):
        pass

    def stop(config, **options):
        raise Built

    monkeypatch.setattr(train, "build_model", stop)
    with pytest.raises(Built):
        fit(smoke(cache), tmp_path / "new", resume=True)
    assert "no complete epoch to resume from; starting the run from the beginning" in capsys.readouterr().out


# ----------------------------------------------------------------------------- files and dependencies

def test_every_file_of_a_run_is_written_atomically(finished_run):
    out, replaced = finished_run
    written = {path for path in out.rglob("*") if path.is_file() and path.name != runs.LOCK_NAME}
    assert {path for path in written if path.suffix == ".npz"}  # the prototypes are there
    assert written <= set(replaced), sorted(str(path.relative_to(out)) for path in written - set(replaced))


def test_every_imported_package_is_declared():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    # Optional extras count: their imports (submitit, tensorboard) are lazy, inside the feature
    # that needs them, and name the extra to install when missing.
    declared = project["dependencies"] + [r for extra in project.get("optional-dependencies", {}).values() for r in extra]
    names = {requirement.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip().lower() for requirement in declared}
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for path in (REPO / "protoef").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for module in (name.split(".")[0] for name in modules):
                if module in sys.stdlib_module_names or module == "protoef":
                    continue
                provided = {name.lower() for name in distributions.get(module, [module])}
                if not provided & names:
                    missing[module] = str(path.relative_to(REPO))
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
