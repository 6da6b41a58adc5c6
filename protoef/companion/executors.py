"""Run a sweep's independent training runs: in this process one after the other, one
process per visible GPU, or as jobs of a submitit executor (SLURM on a cluster, its local
executor on one machine).

    jobs = [Job("paper", "pas-seed0", {"seed": 0}), Job("paper", "nopas-seed0", {"seed": 0, "loss.pas": 0.0})]
    run_jobs(jobs)                          # "auto": one process per GPU when > 1 is visible, else sequential
    run_jobs(jobs, executor="gpus")         # one process per visible GPU (CUDA_VISIBLE_DEVICES=i)
    run_jobs(jobs, executor={"kind": "processes", "workers": 2})   # N processes, no GPU needed
    run_jobs(jobs, executor="local")        # submitit's local executor (one subprocess per job)
    run_jobs(jobs, executor={"kind": "slurm", "slurm_partition": "gpu", "timeout_min": 720})

Every job goes through `notebook.ensure_run` in the process that runs it, so a sweep's runs
land in the same run directories as single runs (``runs/<profile>-<name>/``), a finished run
is reused and an interrupted one resumed from its last complete epoch. On SLURM a job that
hits its time limit or is pre-empted is requeued by submitit (`EnsureRun.checkpoint`) and
resumes the same way. An executor is a plain value (a string or a dict), so a notebook's
``parameters`` cell can set it.

Executor dict keys: ``kind`` (as the strings above); for "gpus"/"processes" ``devices``
(GPU indices, one process each) or ``workers``; for "local"/"slurm" ``folder`` (submitit's
logs, default ``runs/_submitit``) and any other key is passed to submitit's
``update_parameters`` (e.g. ``timeout_min``, ``gpus_per_node``, ``cpus_per_task``,
``slurm_partition``, ``slurm_array_parallelism``). submitit is an optional extra:
``pip install -e .[cluster]``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import time

from . import notebook

__all__ = ["Job", "run_jobs", "run_job", "EnsureRun", "resolve_executor"]

KINDS = ("auto", "sequential", "gpus", "processes", "local", "slurm")
# SLURM defaults for one paper-profile run: one GPU, its 8 loader workers + the trainer.
SLURM_DEFAULTS = {"gpus_per_node": 1, "tasks_per_node": 1, "cpus_per_task": 10, "timeout_min": 24 * 60}


@dataclasses.dataclass(frozen=True)
class Job:
    """One training run of a sweep: what `notebook.ensure_run` takes."""

    profile: str
    name: str
    overrides: dict = dataclasses.field(default_factory=dict)
    data: str | None = None  # EchoNet-format root (the paper profile), else the profile's synthetic set
    path: str | None = None  # run directory; None: notebook.run_dir(profile, name)

    def run_dir(self) -> pathlib.Path:
        return pathlib.Path(self.path) if self.path else notebook.run_dir(self.profile, self.name)


def run_job(job: Job) -> pathlib.Path:
    """Train (or reuse, or resume) one job's run in this process; returns its run directory."""
    return notebook.ensure_run(job.profile, job.name, job.overrides, data=job.data, path=job.path)


class EnsureRun:
    """The callable a submitit job runs. On a SLURM time-out or pre-emption submitit calls
    `checkpoint`, which requeues the same job; `ensure_run` then resumes from last.pt."""

    def __call__(self, job: Job) -> str:
        return str(run_job(job))

    def checkpoint(self, job: Job):
        import submitit

        return submitit.helpers.DelayedSubmission(self, job)


def resolve_executor(executor) -> dict:
    """A string or dict executor as a dict with ``kind`` ("auto" resolved)."""
    spec = {"kind": executor} if isinstance(executor, str) else dict(executor or {"kind": "auto"})
    kind = spec.setdefault("kind", "auto")
    if kind not in KINDS:
        raise ValueError(f"unknown sweep executor {kind!r}; choose one of {KINDS} (or a dict with 'kind')")
    if kind == "auto":
        gpus = _visible_gpus()
        spec["kind"] = "gpus" if gpus > 1 else "sequential"  # one GPU or none: the run in this process is the same
    return spec


def run_jobs(jobs, executor="auto") -> list[pathlib.Path]:
    """Run every job with `executor` (see the module docstring); returns their run
    directories in job order. A failing job does not stop the others; after all of them
    ended, the failures are raised together, each with where its log is."""
    jobs = list(jobs)
    spec = resolve_executor(executor)
    kind = spec.pop("kind")
    if not jobs:
        return []
    if kind == "sequential":
        return [run_job(job) for job in jobs]
    # Generate each synthetic data set here, once, before several processes would race to.
    for profile, data in {(job.profile, job.data) for job in jobs}:
        notebook.dataset_root(profile, data=data)
    if kind in ("gpus", "processes"):
        return _run_processes(jobs, **spec, gpus=kind == "gpus")
    return _run_submitit(jobs, cluster=kind, **spec)


# --------------------------------------------------------------------------- local processes

def _visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _run_processes(jobs: list[Job], *, gpus: bool, devices=None, workers: int | None = None) -> list[pathlib.Path]:
    """At most one job per slot at a time; a slot is a GPU index ("gpus") or a CPU process."""
    if gpus:
        devices = list(devices) if devices is not None else list(range(_visible_gpus()))
        if not devices:
            raise RuntimeError("sweep executor 'gpus': no CUDA device is visible; use 'sequential' or 'processes'")
    else:
        devices = [None] * max(1, int(workers or 2))
    # Share the CPU between the processes instead of each taking every core.
    threads = max(1, (os.cpu_count() or 1) // len(devices))
    pending, running, failures = list(enumerate(jobs)), {}, []
    free = list(devices)
    while pending or running:
        while pending and free:
            index, job = pending.pop(0)
            device = free.pop(0)
            running[index] = (_start_process(job, device, threads), device, job)
        time.sleep(0.5)
        for index, (process, device, job) in list(running.items()):
            if process.poll() is None:
                continue
            del running[index]
            free.append(device)
            if process.returncode != 0:
                failures.append(f"{job.run_dir()} (exit {process.returncode}; log {job.run_dir() / 'sweep.log'})")
    if failures:
        raise RuntimeError(f"{len(failures)} of {len(jobs)} sweep runs failed: " + "; ".join(failures))
    return [job.run_dir() for job in jobs]


def _start_process(job: Job, device, threads: int) -> subprocess.Popen:
    out = job.run_dir()
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PROTOEF_SWEEP_THREADS": str(threads)}
    if device is not None:  # the run sees one GPU, as its cuda:0
        env["CUDA_VISIBLE_DEVICES"] = str(device)
    payload = json.dumps(dataclasses.asdict(job) | {"path": str(out)})
    with open(out / "sweep.log", "a") as log:  # appended: a resumed run keeps its earlier log
        return subprocess.Popen([sys.executable, "-m", "protoef.companion.executors", payload], stdout=log,
                                stderr=subprocess.STDOUT, cwd=notebook.REPO, env=env)


# --------------------------------------------------------------------------- submitit

def _run_submitit(jobs: list[Job], *, cluster: str, folder=None, **parameters) -> list[pathlib.Path]:
    try:
        import submitit
    except ImportError:
        raise RuntimeError(f"sweep executor {cluster!r} needs submitit: pip install -e '.[cluster]'") from None
    folder = pathlib.Path(folder) if folder else notebook.REPO / "runs" / "_submitit"
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=cluster)
    defaults = SLURM_DEFAULTS if cluster == "slurm" else {"timeout_min": 24 * 60}
    executor.update_parameters(**{"name": f"protoef-{jobs[0].profile}", **defaults, **parameters})
    # Fixed paths: the worker's run directory does not depend on where submitit starts it.
    fixed = [dataclasses.replace(job, path=str(job.run_dir())) for job in jobs]
    with _passive_openmp(cluster == "local" and len(fixed) > 1):
        submitted = executor.map_array(EnsureRun(), fixed)  # the local executor starts them here
    failures = []
    for job, handle in zip(fixed, submitted):
        try:
            handle.result()
        except Exception as error:  # noqa: BLE001 - every run's outcome is reported together
            first = str(error).strip().splitlines()[-1][:300] if str(error).strip() else type(error).__name__
            failures.append(f"{job.path} (submitit job {handle.job_id}, logs in {folder}: {first})")
    if failures:
        raise RuntimeError(f"{len(failures)} of {len(jobs)} sweep runs failed: " + "; ".join(failures))
    return [pathlib.Path(job.path) for job in fixed]


@contextlib.contextmanager
def _passive_openmp(wanted: bool):
    """``OMP_WAIT_POLICY=PASSIVE`` in os.environ while the block starts processes (unless the
    user set a policy): submitit's local jobs share this machine's cores, each with the pinned
    thread count, and libgomp's default lets idle threads spin, so two 2-thread jobs on 2
    cores do half the work of one (`python -m benchmarks --only concurrency`: 0.48x; passive
    1.02x). The policy changes waiting, not arithmetic: the runs' numbers stay the same."""
    if not wanted or "OMP_WAIT_POLICY" in os.environ:
        yield
        return
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        yield
    finally:
        del os.environ["OMP_WAIT_POLICY"]


def _main(argv=None) -> int:
    """Child of the "gpus"/"processes" executors: run one JSON-encoded job."""
    argv = sys.argv[1:] if argv is None else argv
    job = Job(**json.loads(argv[0]))
    threads = int(os.environ.get("PROTOEF_SWEEP_THREADS", "0"))
    if threads:
        import torch

        torch.set_num_threads(threads)
    print(f"[sweep] {job.name}: pid {os.getpid()}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '(all)')}", flush=True)
    print(f"[sweep] {job.name}: done, {run_job(job)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
