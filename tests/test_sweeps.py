"""Sweeps beyond one device: independent runs in parallel (submitit's local executor, local
processes), in the same run directories and with the same reuse/resume as single runs."""
from __future__ import annotations

import json
import os
import pathlib

import pandas as pd
import pytest

from protoef.companion import executors
from protoef.companion import notebook
from protoef.companion import studies

SMOKE = {"optim.epochs": 1, "data.limit_videos": 8}


@pytest.fixture
def repo(tmp_path_factory, monkeypatch) -> pathlib.Path:
    """runs/ under a temporary repository root; one synthetic cache for every test here."""
    root = tmp_path_factory.mktemp("repo")
    monkeypatch.setattr(notebook, "REPO", root)
    monkeypatch.setenv("PROTOEF_CACHE", str(tmp_path_factory.getbasetemp() / "sweep-cache"))  # children inherit it
    return root


def interval(run: pathlib.Path) -> tuple[float, float]:
    """When a run trained: config.json is written as it starts, metrics.json as it ends."""
    return (run / "config.json").stat().st_mtime, (run / "metrics.json").stat().st_mtime


def test_auto_is_sequential_unless_several_gpus_are_visible(monkeypatch):
    monkeypatch.setattr(executors, "_visible_gpus", lambda: 0)
    assert executors.resolve_executor("auto") == {"kind": "sequential"}
    monkeypatch.setattr(executors, "_visible_gpus", lambda: 1)
    assert executors.resolve_executor(None)["kind"] == "sequential"  # one GPU: the in-process run is the same
    monkeypatch.setattr(executors, "_visible_gpus", lambda: 4)
    assert executors.resolve_executor("auto")["kind"] == "gpus"
    assert executors.resolve_executor({"kind": "slurm", "slurm_partition": "gpu"}) == {"kind": "slurm", "slurm_partition": "gpu"}
    with pytest.raises(ValueError, match="unknown sweep executor 'mpi'"):
        executors.resolve_executor("mpi")
    monkeypatch.setattr(executors, "_visible_gpus", lambda: 0)
    with pytest.raises(RuntimeError, match="no CUDA device"):
        executors.run_jobs([executors.Job("smoke", "x", SMOKE)], "gpus")


@pytest.mark.slow
def test_two_run_sweep_runs_in_parallel_through_submitit_local_executor(repo, tmp_path):
    pytest.importorskip("submitit", reason="submitit is an optional extra: pip install -e '.[cluster]'")
    jobs = [executors.Job("smoke", f"seed{seed}", {**SMOKE, "seed": seed}) for seed in (0, 1)]
    executor = {"kind": "local", "folder": str(tmp_path / "submitit"), "timeout_min": 15}
    runs = executors.run_jobs(jobs, executor)
    assert runs == [notebook.run_dir("smoke", "seed0"), notebook.run_dir("smoke", "seed1")]
    (start0, end0), (start1, end1) = interval(runs[0]), interval(runs[1])
    assert start0 < end1 and start1 < end0  # each started before the other finished: in parallel
    for run, seed in zip(runs, (0, 1)):
        assert json.loads((run / "config.json").read_text())["seed"] == seed
        assert json.loads((run / "metrics.json").read_text())["test"]["post_push"]["n"] > 0
    assert list((tmp_path / "submitit").iterdir())  # submitit's own logs, one folder per job
    # A second launch reuses the finished runs, as a single run would.
    finished = [(run / "metrics.json").stat().st_mtime_ns for run in runs]
    assert executors.run_jobs(jobs, executor) == runs
    assert [(run / "metrics.json").stat().st_mtime_ns for run in runs] == finished


@pytest.mark.slow
def test_process_executor_resumes_an_interrupted_run(repo):
    job = executors.Job("smoke", "resume", SMOKE)
    run = executors.run_jobs([job], "sequential")[0]
    history = pd.read_csv(run / "history.csv")
    (run / "metrics.json").unlink()  # as if killed after its last epoch, before the push and test
    (run / "predictions.csv").unlink()
    assert executors.run_jobs([job], {"kind": "processes", "workers": 2}) == [run]
    log = (run / "sweep.log").read_text()
    assert "[train] resuming" in log and "after epoch 1/1" in log
    assert (run / "metrics.json").is_file() and (run / "predictions.csv").is_file()
    pd.testing.assert_frame_equal(pd.read_csv(run / "history.csv"), history)  # no epoch was trained again


@pytest.mark.slow
def test_a_failing_run_is_reported_after_the_others_finish(repo):
    jobs = [executors.Job("smoke", "ok", SMOKE), executors.Job("smoke", "bad", {**SMOKE, "model.kind": "nonsense"})]
    with pytest.raises(RuntimeError, match=r"1 of 2 sweep runs failed: .*smoke-bad.*sweep\.log"):
        executors.run_jobs(jobs, {"kind": "processes", "workers": 2})
    assert (notebook.run_dir("smoke", "ok") / "metrics.json").is_file()
    assert "model.kind = 'nonsense' (expected 'protoefnet' or 'blackbox')" in (notebook.run_dir("smoke", "bad") / "sweep.log").read_text()


def test_study_sweeps_hand_their_unfinished_runs_to_the_runner(repo, monkeypatch):
    launched = []

    def fake_run_jobs(jobs, executor):
        # Stands in for the parallel runner: records the jobs and leaves finished runs behind.
        launched.append((executor, [(job.name, job.overrides) for job in jobs]))
        for job in jobs:
            out = job.run_dir()
            out.mkdir(parents=True)
            # The resolved config a real run stores (runs are matched by their whole config).
            (out / "config.json").write_text(json.dumps(notebook.config_for(job.profile, job.overrides).to_dict()))
            (out / "metrics.json").write_text("{}")
            for name in ("history.csv", "predictions.csv"):
                (out / name).write_text("a\n1\n")
        return [job.run_dir() for job in jobs]

    monkeypatch.setattr(executors, "run_jobs", fake_run_jobs)
    runs = studies.pas_weight_runs("smoke", [0.0, 0.1], [0, 1], {"optim.epochs": 3}, executor="local")
    assert launched == [("local", [("pas0-seed0", {"optim.epochs": 3, "loss.pas": 0.0, "seed": 0}),
                                   ("pas0-seed1", {"optim.epochs": 3, "loss.pas": 0.0, "seed": 1}),
                                   ("pas0.1-seed0", {"optim.epochs": 3, "loss.pas": 0.1, "seed": 0}),
                                   ("pas0.1-seed1", {"optim.epochs": 3, "loss.pas": 0.1, "seed": 1})])]
    assert runs[(0.0, 1)] == notebook.run_dir("smoke", "pas0-seed1")
    # All finished now: a second call launches nothing and checks the stored settings.
    assert studies.pas_weight_runs("smoke", [0.0, 0.1], [0, 1], {"optim.epochs": 3}, executor="local") == runs
    assert len(launched) == 1
    with pytest.raises(ValueError, match="another config: optim.epochs"):
        studies.pas_weight_runs("smoke", [0.0], [0], {"optim.epochs": 5}, executor="local")
    assert len(launched) == 1  # refused before anything was launched


def test_local_submitit_jobs_start_with_passive_openmp_waiting_unless_the_user_chose(monkeypatch):
    # submitit's local executor copies os.environ when it starts a job; several jobs on one
    # machine's cores must not spin on each other's cores (benchmarks: concurrency).
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    with executors._passive_openmp(True):
        assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert "OMP_WAIT_POLICY" not in os.environ  # the notebook's own process is left as it was
    with executors._passive_openmp(False):
        assert "OMP_WAIT_POLICY" not in os.environ  # one job, or SLURM: nothing shared
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    with executors._passive_openmp(True):
        assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
