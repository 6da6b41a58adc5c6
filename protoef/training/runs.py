"""Run directories: atomic result files, safe checkpoints, the environment record.

Layout of a run directory (see README, "Run directory"):

    config.json         the resolved config (profile + overrides + computed mean/std)
    environment.json    versions, device, git commit, command line, pinned numerics, lock differences
    history.csv         one row per epoch: losses, validation metrics, learning rates
    metrics.json        validation/test metrics before and after the push (written last)
    predictions.csv     per test video: EF, prediction, top-3 prototypes with labels and β
    test_attention.npz  ProtoEFNet: per test video β and s over all prototypes, with the labels
    checkpoints/        last.pt (resume), best.pt (best validation R²), final.pt (pushed)
    prototypes/         prototypes.csv + per prototype an .npz (feature, occurrence map, source
                        clip); `protoef gallery` / notebook 08 draw strips, GIFs and gallery.png here
    .run.lock           held by the one process writing the run (`run_lock`); .run-writer.json names it

Every file is written to a temporary name and renamed into place, so a run killed at any
moment leaves either the previous complete file or the new complete file, never half.
Checkpoints hold only tensors and plain containers and are read with
``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import pathlib
import platform
import socket
import subprocess
import sys

import filelock

import numpy as np
import pandas as pd
import torch

from .. import numerics
from ..config import flatten
from ..files import atomic_path

__all__ = ["CheckpointError", "RunLockedError", "atomic_write_text", "write_json", "write_csv", "write_npz", "save_checkpoint",
           "load_checkpoint", "environment", "run_lock", "config_differences", "is_runtime_difference", "read_config", "RUNTIME_KEYS",
           "same_folder", "DATA_SET_FILES", "data_set_files", "enclosing_run"]


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model it is loaded into."""


def atomic_write_text(path, text: str) -> None:
    with atomic_path(path) as temporary, open(temporary, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _plain(value):
    """JSON-safe values: numpy scalars/arrays to Python, NaN kept as null."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, torch.Tensor):
        return _plain(value.tolist())
    return value


def write_json(path, data) -> None:
    atomic_write_text(path, json.dumps(_plain(data), indent=2) + "\n")


def write_csv(path, table: pd.DataFrame) -> None:
    atomic_write_text(path, table.to_csv(index=False))


def write_npz(path, **arrays) -> None:
    """`numpy.savez_compressed`, atomically (a killed run never leaves half an archive)."""
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:  # a handle: numpy would append ".npz"
        np.savez_compressed(handle, **arrays)


def save_checkpoint(path, state: dict) -> None:
    with atomic_path(path) as temporary:
        torch.save(state, temporary)


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint written by `save_checkpoint` (tensors and plain containers only)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # truncated, corrupt, or not a torch file at all
        raise CheckpointError(
            f"{path}: not a readable checkpoint: the file is truncated, corrupt, or not a protoef checkpoint "
            f"({type(error).__name__}). Re-run training, or point to checkpoints/final.pt of a complete run."
        ) from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"{path}: not a protoef checkpoint (expected a dict with 'model' and 'config')")
    return state


def _git_commit() -> str | None:
    try:
        root = pathlib.Path(__file__).resolve().parents[2]  # the repository
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        return result.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device) -> dict:
    """What a reader needs to reproduce a run: versions, hardware, commit, command line."""
    import cv2
    import sklearn
    import torchvision

    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "scikit_learn": sklearn.__version__,
        "device": str(device),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "git_commit": _git_commit(),
        "command": sys.argv,
        # The pinned numerical environment and whether it took effect, and how the installed
        # versions differ from requirements.lock: the two things that decide whether this
        # run's numbers are the README's (README, "Same numbers on every machine").
        "numerics": numerics.state(),
        "lock": numerics.lock_differences(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_count"] = torch.cuda.device_count()
        info["cuda"] = torch.version.cuda
    return info


# ----------------------------------------------------------------------------- where a run may be written
DATA_SET_FILES = ("FileList.csv", "VolumeTracings.csv")


def data_set_files(folder) -> list[str]:
    """The EchoNet-format files (FileList.csv, VolumeTracings.csv) a folder holds: no run or
    prediction output may be written into a data set."""
    return [name for name in DATA_SET_FILES if (pathlib.Path(folder) / name).exists()]


def enclosing_run(path) -> pathlib.Path | None:
    """The run directory `path` is, or lies inside (a folder with checkpoints/ and
    config.json or metrics.json, symlinks resolved); None when there is none."""
    resolved = pathlib.Path(path).resolve()
    for folder in (resolved, *resolved.parents):
        if (folder / "checkpoints").is_dir() and ((folder / "config.json").is_file() or (folder / "metrics.json").is_file()):
            return folder
    return None


# ----------------------------------------------------------------------------- one writer per run
class RunLockedError(RuntimeError):
    """A run directory another process is writing."""


LOCK_NAME, WRITER_NAME = ".run.lock", ".run-writer.json"


@contextlib.contextmanager
def run_lock(out_dir):
    """Hold the run directory's lock while writing it: a second writer (another ``train``
    with the same ``--out``, a notebook's ``ensure_run``) is refused at once with
    `RunLockedError` naming the holder, instead of both mixing their files. The lock is an
    OS file lock (`filelock`), so a killed holder releases it; ``.run-writer.json`` says who
    holds it (pid, host, command, since when)."""
    out = pathlib.Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: is a file, not a run directory; choose another --out")
    found = data_set_files(out)
    if found:
        raise FileExistsError(f"{out}: holds a data set ({', '.join(found)}); a run written there would mix its files "
                              "with the data. Choose another --out, e.g. runs/NAME")
    out.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(out / LOCK_NAME, timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise RunLockedError(f"{out}: another process is writing this run ({_writer(out)}); wait for it to finish, "
                             "stop it, or choose another output directory") from None
    try:
        write_json(out / WRITER_NAME, {"pid": os.getpid(), "host": socket.gethostname(), "command": sys.argv,
                                       "since": datetime.datetime.now().isoformat(timespec="seconds")})
        yield out
    finally:
        (out / WRITER_NAME).unlink(missing_ok=True)
        lock.release()


def _writer(out: pathlib.Path) -> str:
    try:
        writer = json.loads((out / WRITER_NAME).read_text())
        return f"pid {writer['pid']} on {writer['host']} since {writer['since']}: {' '.join(map(str, writer['command']))}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not named itself yet"


# ----------------------------------------------------------------------------- which run is this?
# Keys that say where the data lives or how it is loaded and run, not what is trained: they
# may differ between two calls for the same run (another machine, another cache folder).
RUNTIME_KEYS = frozenset({"device", "data.cache_dir", "data.num_workers", "data.decoded_cache"})


def read_config(out_dir) -> dict:
    """A run directory's stored ``config.json``."""
    path = pathlib.Path(out_dir) / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path}: the run's config cannot be read ({error}); the run cannot be matched or "
                              "reused: delete the run directory or choose another") from None


def is_runtime_difference(key: str, stored, requested) -> bool:
    """Whether a difference says only how the run executes: `RUNTIME_KEYS`, or ``data.root``
    spelled differently for the same folder (``data/echo`` and ``./data/echo/``). The data
    set is part of what a run learns: another folder (or None, the synthetic set, versus a
    folder) is another run."""
    return key in RUNTIME_KEYS or (key == "data.root" and stored is not None and requested is not None
                                   and same_folder(stored, requested))


def same_folder(first, second) -> bool:
    """Whether two paths name one folder (after ``~`` and symbolic links are resolved)."""
    def resolved(path):
        return pathlib.Path(str(path)).expanduser().resolve()
    return resolved(first) == resolved(second)


def config_differences(stored: dict, requested: dict, *, runtime: bool = False) -> dict:
    """``{key: (stored value, requested value)}`` for every key where a run's stored config
    and a requested config disagree. A requested ``data.mean`` or ``data.std`` of None
    (computed by the run) does not count, nor, unless ``runtime``, a difference that
    `is_runtime_difference`."""
    stored, requested = flatten(stored), flatten(requested)
    differences = {}
    for key in sorted(set(stored) | set(requested)):
        old, new = stored.get(key), requested.get(key)
        if old == new or (key in ("data.mean", "data.std") and new is None):
            continue
        if runtime or not is_runtime_difference(key, old, new):
            differences[key] = (old, new)
    return differences
