"""The training engine end to end on the smoke profile: files, push, determinism, resume,
predict, and clear errors for broken checkpoints."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from protoef.__main__ import main as cli
from protoef.config import resolve
from protoef.data import EchoNet, read_file_list
from protoef.training.build import data_root, evaluation_dataset, load_run, make_loader
from protoef.training.lifecycle import fit
from protoef.training.loops import evaluate
from protoef.training.runs import CheckpointError, RunDir, load_checkpoint

REPO = pathlib.Path(__file__).resolve().parents[1]


def smoke(cache, **overrides):
    """The smoke profile with its data in `cache` (the session's `cache` fixture: tests/conftest.py)."""
    return resolve("smoke", {"data.cache_dir": str(cache), **overrides})


@pytest.fixture(scope="module")
def finished_run(recorded_smoke_run) -> pathlib.Path:
    return recorded_smoke_run[0]  # the session's smoke run (tests/conftest.py), read-only


def test_run_directory_is_complete_and_well_formed(finished_run, cache):
    out = finished_run
    for name in ("config.json", "environment.json", "history.csv", "metrics.json", "predictions.csv",
                 "checkpoints/best.pt", "checkpoints/last.pt", "checkpoints/final.pt", "prototypes/prototypes.csv"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["profile"] == "smoke" and config["data"]["mean"] is not None
    history = pd.read_csv(out / "history.csv")
    assert list(history["epoch"]) == [1, 2]
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]  # it learns something
    assert history["train_occurrence"].gt(0).all()  # the occurrence mask has background
    assert history["seconds_train"].gt(0).all() and history["seconds_val"].gt(0).all()
    # Nothing plots inside a run: the prototype pictures are drawn afterwards, on request.
    assert not list((out / "prototypes").glob("*.png")) and not list((out / "prototypes").glob("*.gif"))
    assert not (out / "tensorboard").exists()  # TensorBoard only when asked for (config.tensorboard)
    # The run-directory object finds the same files, and reads them as the files say.
    run = RunDir(out)
    assert run.finished and run.resumable and run.has_prototypes
    assert run.checkpoint("final") == out / "checkpoints" / "final.pt" and run.prototype_file(3) == out / "prototypes" / "prototype_03.npz"
    assert run.read_config() == config and run.read_history().equals(history)
    table, artefacts = run.read_prototypes()
    assert sorted(artefacts) == sorted(table["prototype"]) and {"feature", "occurrence_map"} <= set(artefacts[0])
    with pytest.raises(ValueError, match="no checkpoint 'middle'"):
        run.checkpoint("middle")
    metrics = json.loads((out / "metrics.json").read_text())
    for split in ("val", "test"):
        for stage in ("pre_push", "post_push"):
            assert {"mae", "rmse", "r2", "f1_40", "sparsity", "diversity"} <= set(metrics[split][stage])
    root = data_root(smoke(cache))
    files = read_file_list(root)
    test_files = set(files.loc[files["Split"] == "TEST", "filename"])
    predictions = pd.read_csv(out / "predictions.csv")
    assert set(predictions["filename"]) == test_files
    expected_mae = (predictions["prediction"] - predictions["ef"]).abs().mean()
    assert metrics["test"]["post_push"]["mae"] == pytest.approx(expected_mae, rel=1e-5)
    assert (predictions["top1_beta"] >= predictions["top2_beta"]).all()


@pytest.fixture(scope="module")
def no_refit_run(cache, tmp_path_factory) -> pathlib.Path:
    """A smoke run without the head refit after the push (the paper's path; smoke refits θ)."""
    out = tmp_path_factory.mktemp("run") / "smoke-no-refit"
    fit(smoke(cache, **{"optim.head_epochs_after_push": 0}), out)
    return out


@pytest.mark.parametrize("run_fixture", ["finished_run", "no_refit_run"])
def test_push_projects_prototypes_onto_real_training_clips(run_fixture, request, cache):
    # With the head refit, a model left in train mode would update BatchNorm statistics and
    # the prototypes would stop being their source clips' features: the check below catches it.
    run = request.getfixturevalue(run_fixture)
    model, config, _ = load_run(run)
    table = pd.read_csv(run / "prototypes" / "prototypes.csv")
    files = read_file_list(data_root(config)).set_index("filename")
    assert (files.loc[table["source_filename"], "Split"] == "TRAIN").all()
    # Labels are the true EF of the source clip...
    np.testing.assert_allclose(model.prototype_labels.numpy(), files.loc[table["source_filename"], "EF"].to_numpy(), rtol=1e-5)
    # ...and each vector is that clip's pooled feature, recomputed here from scratch.
    d = config.data
    dataset = EchoNet(data_root(config), "TRAIN", clip_length=d.clip_length, period=d.period, resize=d.resize,
                      clips="deterministic", mean=d.mean, std=d.std)
    for row in table.itertuples():
        item = dataset[dataset.filenames.index(row.source_filename)]
        with torch.no_grad():
            features = model(item["video"][None], return_features=True).features[0]  # (P, D)
        torch.testing.assert_close(model.prototypes[row.prototype], features[row.prototype], rtol=1e-4, atol=1e-5)
        if not row.fallback:
            assert abs(row.ef_label - row.label_before) <= config.loss.delta + 1e-6


@pytest.mark.parametrize("run_fixture", ["finished_run", "no_refit_run"])
def test_only_the_head_and_the_prototypes_change_after_training(run_fixture, request):
    # best.pt is the trained model; after it come the sharpening, the push and (smoke) the
    # head refit, which may change θ, the prototypes and their labels, and nothing else.
    run = request.getfixturevalue(run_fixture)
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)["model"]
    final = torch.load(run / "checkpoints" / "final.pt", weights_only=True)["model"]
    assert best.keys() == final.keys()
    changed = {key for key in best if not torch.equal(best[key], final[key])}
    assert "prototypes" in changed and changed <= {"theta", "prototypes", "prototype_labels"}
    metrics = _metrics(run)
    if run_fixture == "finished_run":  # smoke refits θ for 20 epochs on every TRAIN video, then sharpens again
        files = read_file_list(data_root(load_run(run)[1]))
        assert metrics["head_refit"]["epochs"] == 20 and metrics["head_refit"]["videos"] == (files["Split"] == "TRAIN").sum()
        sharpening = metrics["beta_sharpening_post_push"]
        chosen = next(row for row in sharpening["grid"] if row["factor"] == sharpening["factor"])
        assert metrics["val"]["post_push"]["mae"] == pytest.approx(chosen["mae"], abs=1e-4)  # the reported head is the chosen one
    else:
        assert "head_refit" not in metrics and "beta_sharpening_post_push" not in metrics


def test_run_records_interpretability_diagnostics(finished_run):
    metrics = _metrics(finished_run)
    post = metrics["test"]["post_push"]
    predictions = pd.read_csv(finished_run / "predictions.csv")
    # Recomputed from predictions.csv (written separately): |top-1 label − EF| per video.
    error = (predictions["top1_label"] - predictions["ef"]).abs()
    assert post["top1_label_within_10"] == pytest.approx((error <= 10).mean())
    assert post["top1_label_median_error"] == pytest.approx(error.median())
    assert post["top1_beta"] == pytest.approx(predictions["top1_beta"].mean(), rel=1e-5)
    table = pd.read_csv(finished_run / "prototypes" / "prototypes.csv")
    assert metrics["push"]["distinct_sources"] == table["source_filename"].nunique()
    assert metrics["push"]["shared"] == int(table["shared"].sum())
    assert 0 < metrics["initial"]["far_pair_angle"] < 90  # uniform [0, 1) init: every angle is acute
    files = read_file_list(data_root(load_run(finished_run)[1]))
    train_mean = files.loc[files["Split"] == "TRAIN", "EF"].mean()
    assert metrics["trivial"]["train_mean_ef"] == pytest.approx(train_mean, rel=1e-5)
    assert metrics["trivial"]["test_mae"] == pytest.approx((predictions["ef"] - train_mean).abs().mean(), rel=1e-5)
    with np.load(finished_run / "test_attention.npz") as attention:
        assert attention["weights"].shape == (len(predictions), 10)
        np.testing.assert_allclose(attention["weights"].max(axis=1), predictions["top1_beta"], rtol=1e-5)
        beta, labels, ef = attention["weights"], attention["prototype_labels"], attention["ef"]
    # β locality (issue 17), recomputed from the saved β: mass on labels within ±10 EF of the truth.
    beta = beta / beta.sum(axis=1, keepdims=True)
    assert post["beta_mass_within_10"] == pytest.approx((beta * (np.abs(labels[None] - ef[:, None]) <= 10)).sum(1).mean(), rel=1e-5)
    spread = np.sqrt((beta * (labels[None] - predictions["prediction"].to_numpy()[:, None]) ** 2).sum(1))
    assert post["beta_label_spread"] == pytest.approx(spread.mean(), rel=1e-4)
    history = pd.read_csv(finished_run / "history.csv")
    for column in ("val_similarity_gap", "val_top1_label_within_10", "val_far_pair_angle",
                   "train_grad_mse_prototypes", "train_grad_pas_prototypes", "train_grad_cluster_features",
                   "val_beta_mass_within_10", "val_beta_label_spread", "val_beta_spread_calibration", "val_top3_beta"):
        assert history[column].notna().all(), column
    assert (history["train_grad_pas_features"] == 0).all()  # PAS acts on the prototypes alone


def _metrics(out) -> dict:
    return json.loads((pathlib.Path(out) / "metrics.json").read_text())


def _fit_killed_after_first_epoch(config_overrides: dict, out: pathlib.Path) -> None:
    """`fit` of the smoke profile (with `config_overrides`) in a subprocess, killed once its
    first epoch is checkpointed (during epoch 2)."""
    script = (f"from protoef.config import resolve; from protoef.training.lifecycle import fit; "
              f"fit(resolve('smoke', {config_overrides!r}), {str(out)!r})")
    process = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (out / "checkpoints" / "last.pt").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.kill()
    process.wait()
    assert load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] == 0 and not (out / "metrics.json").exists()


@pytest.mark.slow
def test_same_seed_same_result_and_resume_after_kill_equals_uninterrupted(finished_run, cache, tmp_path):
    again = tmp_path / "again"
    fit(smoke(cache), again)
    assert _metrics(again) == _metrics(finished_run)
    # Kill a training subprocess once its first epoch is checkpointed, then resume.
    killed = tmp_path / "killed"
    _fit_killed_after_first_epoch({"data.cache_dir": str(cache)}, killed)
    with pytest.raises(FileExistsError, match="resume"):
        fit(smoke(cache), killed)
    fit(smoke(cache), killed, resume=True)
    assert _metrics(killed) == _metrics(finished_run)
    timing = ["seconds_train", "seconds_val", "seconds_diagnostics"]  # wall clock, the one thing allowed to differ
    resumed, uninterrupted = (pd.read_csv(run / "history.csv") for run in (killed, finished_run))
    assert resumed.drop(columns=timing).equals(uninterrupted.drop(columns=timing))


@pytest.mark.slow
def test_the_weight_average_is_what_is_validated_kept_and_resumed(cache, tmp_path):
    overrides = {"data.cache_dir": str(cache), "optim.ema_decay": 0.5}
    config = resolve("smoke", overrides)
    out = tmp_path / "average"
    fit(config, out)
    last, best = (load_checkpoint(out / "checkpoints" / f"{name}.pt") for name in ("last", "best"))
    # One update per optimiser step: Adam's own step count says how many there were.
    steps = max(int(state["step"]) for state in last["optimizer"]["state"].values())
    assert steps > 1 and int(last["average"]["n_averaged"]) == steps
    averaged = {key.removeprefix("module."): value for key, value in last["average"].items() if key.startswith("module.")}
    assert averaged.keys() == last["model"].keys()
    # The frozen stem is never stepped, so its average is itself; trained weights differ from theirs.
    stem = [key for key in averaged if key.startswith("backbone.stem.") and key.endswith("weight")]
    assert stem and all(torch.equal(averaged[key], last["model"][key]) for key in stem)
    assert not torch.equal(averaged["prototypes"], last["model"]["prototypes"])
    # The best checkpoint holds the average of its epoch, and that is what VAL measured.
    model, _, _ = load_run(out)
    model.load_state_dict(best["model"])
    val_mae = evaluate(model, make_loader(evaluation_dataset(config, "VAL"), config))[0]["mae"]
    history = pd.read_csv(out / "history.csv")
    assert val_mae == pytest.approx(history.loc[best["epoch"], "val_mae"], rel=1e-6)
    if best["epoch"] == last["epoch"]:
        assert all(torch.equal(best["model"][key], averaged[key]) for key in averaged)
    # Killed after epoch 1 and resumed: the average is restored with the weights.
    killed = tmp_path / "killed"
    _fit_killed_after_first_epoch(overrides, killed)
    fit(config, killed, resume=True)
    assert _metrics(killed) == _metrics(out)


def test_predict_cli_on_a_synthetic_avi(finished_run, cache, tmp_path):
    root = data_root(smoke(cache))
    video = sorted((root / "Videos").glob("*.avi"))[0]
    assert cli(["predict", str(finished_run), str(video), "--out", str(tmp_path), "--no-figures"]) == 0
    table = pd.read_csv(tmp_path / "predictions.csv")
    model, _, _ = load_run(finished_run)
    labels = model.prototype_labels.numpy()
    assert table.loc[0, "filename"] == video.name
    assert labels.min() - 1e-4 <= table.loc[0, "prediction"] <= labels.max() + 1e-4
    assert table.loc[0, "top1_source"].endswith(".avi")
    bad = tmp_path / "bad.avi"
    bad.write_bytes(b"not a video")
    assert cli(["predict", str(finished_run), str(bad), "--out", str(tmp_path / "bad"), "--no-figures"]) == 1


def test_predict_cli_draws_one_explanation_per_video(finished_run, cache, tmp_path, monkeypatch):
    from PIL import Image

    from protoef.analysis import inference

    decoded = []  # predict decodes each video once: the explanation reuses its first clip
    original = inference.read_video
    monkeypatch.setattr(inference, "read_video", lambda path, *a, **k: decoded.append(path) or original(path, *a, **k))
    root = data_root(smoke(cache))
    videos = sorted((root / "Videos").glob("*.avi"))[:2]
    folder = tmp_path / "videos"
    folder.mkdir()
    for video in videos:
        shutil.copy(video, folder / video.name)
    assert cli(["predict", str(finished_run), str(folder), "--out", str(tmp_path / "out")]) == 0
    table = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert sorted(table["filename"]) == [video.name for video in videos]
    assert sorted(pathlib.Path(path).name for path in decoded) == [video.name for video in videos]
    for video in videos:
        with Image.open(tmp_path / "out" / f"{video.stem}.png") as image:  # a real PNG, not an empty file
            assert image.format == "PNG" and image.size[0] > 200 and image.size[1] > 100


def test_evaluate_cli_reproduces_the_runs_own_test_metrics(finished_run, capsys):
    # An independent path to the same numbers: the CLI builds its own TEST set and loader
    # from the stored config (batches of `videos_per_batch`, as `fit`'s).
    capsys.readouterr()
    assert cli(["evaluate", str(finished_run), "--split", "TEST"]) == 0
    printed = json.loads(capsys.readouterr().out)
    stored = json.loads((finished_run / "metrics.json").read_text())["test"]["post_push"]
    assert printed["checkpoint"].endswith("final.pt (final, after the push)")
    for key in ("mae", "rmse", "r2", "sparsity", "similarity_gap", "top1_label_within_10"):
        assert printed[key] == pytest.approx(stored[key], abs=1e-3), key


def test_check_data_cli_counts_every_split_and_names_skipped_videos(cache, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(data_root(smoke(cache)), root)
    files = read_file_list(root)
    broken = files.loc[files["Split"] == "VAL", "filename"].iloc[0]
    (root / "Videos" / broken).write_bytes(b"not a video")
    capsys.readouterr()
    assert cli(["check-data", str(root)]) == 0
    report = capsys.readouterr().out
    for split in ("TRAIN", "VAL", "TEST"):
        expected = int((files["Split"] == split).sum()) - (split == "VAL")
        assert f"{split:5s}: {expected:5d} videos" in report, report
    assert f"skipped {broken}:" in report
    assert cli(["check-data", str(root), "--fail-on-skip"]) == 1


@pytest.mark.slow
def test_initial_weights_depend_on_the_seed_alone(cache, tmp_path, monkeypatch):
    # A data-side change that draws more random numbers (here: feature_size) must not
    # change the model a run starts from.
    import protoef.training.build as build
    import protoef.training.lifecycle as train

    class Built(Exception):
        pass

    initial, build_model, size = [], train.build_model, build.feature_size

    def capture(config, **options):
        initial.append(torch.cat([p.detach().flatten() for p in build_model(config, **options).parameters()]))
        raise Built

    monkeypatch.setattr(train, "build_model", capture)
    with pytest.raises(Built):
        fit(smoke(cache), tmp_path / "plain")
    monkeypatch.setattr(build, "feature_size", lambda config: (torch.rand(1000), size(config))[1])
    with pytest.raises(Built):
        fit(smoke(cache), tmp_path / "more-randomness")
    assert torch.equal(initial[0], initial[1])


def test_gallery_cli_draws_a_finished_run(finished_run, tmp_path, capsys):
    run = tmp_path / "copy"
    shutil.copytree(finished_run, run)
    assert cli(["gallery", str(run), "--no-gif"]) == 0
    prototypes = len(pd.read_csv(run / "prototypes" / "prototypes.csv"))
    assert {p.name for p in (run / "prototypes").glob("*.png")} == {f"prototype_{j:02d}.png" for j in range(prototypes)} | {"gallery.png"}
    assert not list((run / "prototypes").glob("*.gif"))
    assert cli(["gallery", str(tmp_path)]) == 2  # not a run: one clear line
    assert "no prototypes/prototypes.csv" in capsys.readouterr().err


def test_broken_checkpoints_give_clear_errors(finished_run, tmp_path, capsys):
    final = finished_run / "checkpoints" / "final.pt"
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(final.read_bytes()[: final.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.pt: not a readable checkpoint"):
        load_run(truncated)
    assert cli(["predict", str(truncated), str(tmp_path)]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err
    # Right file, wrong architecture: the config says P=10, the weights have another P.
    state = load_checkpoint(final)
    state["config"]["model"]["num_prototypes"] = 7
    other = tmp_path / "other.pt"
    torch.save(state, other)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_run(other)


@pytest.mark.slow
def test_black_box_baseline_runs_through_the_same_pipeline(cache, tmp_path):
    out = tmp_path / "blackbox"
    metrics = fit(smoke(cache, **{"model.kind": "blackbox", "optim.epochs": 1}), out)
    assert set(metrics["test"]) == {"final"} and "push" not in metrics
    predictions = pd.read_csv(out / "predictions.csv")
    assert list(predictions.columns) == ["filename", "ef", "prediction"]
    expected_rmse = np.sqrt(((predictions["prediction"] - predictions["ef"]) ** 2).mean())
    assert metrics["test"]["final"]["rmse"] == pytest.approx(expected_rmse, rel=1e-5)
    model, config, _ = load_run(out)
    assert config.model.kind == "blackbox" and not (out / "prototypes").exists()


def test_missing_data_set_is_a_clear_cli_error(tmp_path, capsys):
    code = cli(["train", "--profile", "smoke", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")])
    assert code == 2
    error = capsys.readouterr().err
    assert "nowhere" in error and "FileList.csv" in error
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu_write_one_run(cache, tmp_path):
    # DistributedDataParallel over gloo: the multi-GPU code path, exercised on the CPU.
    root = data_root(smoke(cache))  # generated once, before the ranks start
    out = tmp_path / "ddp"
    torchrun = pathlib.Path(sys.executable).with_name("torchrun")
    result = subprocess.run(
        [str(torchrun), "--nproc_per_node", "2", "-m", "protoef", "train", "--profile", "smoke",
         "--set", f"data.cache_dir={cache}", "--out", str(out)],
        # Two ranks on the CPU's cores: passive OpenMP waiting (numbers unchanged) stops the idle
        # threads of one rank spinning on the other's cores (13 s instead of 24 s here).
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("[train] run directory") == 1
    history = pd.read_csv(out / "history.csv")
    assert list(history["epoch"]) == [1, 2]
    assert json.loads((out / "metrics.json").read_text())["test"]["post_push"]["n"] == 3
    assert json.loads((out / "environment.json").read_text())["data_root"] == str(root)


@pytest.mark.slow
def test_local_beta_candidates_train_end_to_end(cache, tmp_path):
    out = tmp_path / "local"
    fit(smoke(cache, **{"optim.epochs": 1, "loss.expected_label_error": 0.01, "loss.reverse_soft_label": 1.0,
                        "model.beta_top_k": 3, "optim.beta_sharpening_max": 4.0}), out)
    history = pd.read_csv(out / "history.csv")
    for column in ("train_expected_label_error", "train_reverse_soft_label", "train_grad_expected_label_error_prototypes",
                   "train_grad_reverse_soft_label_features"):
        assert np.isfinite(history[column]).all() and (history[column] > 0).all(), column
    # VAL is one clip per video, so a top-3 β holds all its mass on three prototypes.
    assert history["val_top3_beta"].iloc[0] == pytest.approx(1.0, abs=1e-6)
    metrics = _metrics(out)
    assert metrics["val"]["post_push"]["top3_beta"] == pytest.approx(1.0, abs=1e-6)
    # β sharpening (protoef.training.calibration): the whole grid scored on VAL, the rule's
    # choice (most β mass within ±10 EF among the factors within 0.1 VAL MAE of f = 1), and
    # the evaluation before the push runs the chosen head: its VAL MAE is the chosen row's.
    sharpening = metrics["beta_sharpening"]
    grid = {row["factor"]: row for row in sharpening["grid"]}
    assert list(grid) == [1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0]
    allowed = [row for row in grid.values() if row["mae"] <= grid[1.0]["mae"] + 0.1]
    assert grid[sharpening["factor"]]["beta_mass_within_10"] == max(row["beta_mass_within_10"] for row in allowed)
    assert metrics["val"]["pre_push"]["mae"] == pytest.approx(grid[sharpening["factor"]]["mae"], abs=1e-4)
