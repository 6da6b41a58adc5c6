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
from ..config import Config, flatten
from ..files import atomic_path

__all__ = ["CheckpointError", "RunLockedError", "atomic_write_text", "write_json", "write_csv", "write_npz", "save_checkpoint",
           "load_checkpoint", "environment", "run_lock", "config_differences", "is_runtime_difference", "RUNTIME_KEYS",
           "RunDir", "CHECKPOINTS",
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


# ----------------------------------------------------------------------------- the layout
CHECKPOINTS = ("last", "best", "final")  # resume; best validation R²; pushed and finished


def _member(relative: str) -> property:
    return property(lambda run: run.path / relative, doc=f"``{relative}`` of the run")


class RunDir:
    """A run directory (the layout in this module's docstring): the one place that spells
    its file names, says whether it is finished, reads and writes its files (atomically),
    and decides whether it is the run of a given config (`require_config`).

        run = RunDir("runs/demo-protoefnet-seed0")
        run.finished, run.read_metrics()["test"]["post_push"]["mae"], run.checkpoint("final")
    """

    def __init__(self, path) -> None:
        self.path = pathlib.Path(path)

    @classmethod
    def containing(cls, path) -> "RunDir":
        """The run of `path`: the run directory itself or its ``prototypes/`` folder."""
        path = pathlib.Path(path)
        return cls(path.parent) if path.name == "prototypes" and not (path / "checkpoints").is_dir() else cls(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:  # messages name the folder
        return str(self.path)

    def __fspath__(self) -> str:  # open(), pathlib and os accept a RunDir where a folder is meant
        return str(self.path)

    # --- where each file lives (the names of the layout above, spelled here only)
    config_file = _member("config.json")
    environment_file = _member("environment.json")
    history_file = _member("history.csv")
    metrics_file = _member("metrics.json")
    predictions_file = _member("predictions.csv")
    attention_file = _member("test_attention.npz")
    timings_file = _member("timings.json")
    checkpoints_dir = _member("checkpoints")
    prototypes_dir = _member("prototypes")
    prototypes_table_file = _member("prototypes/prototypes.csv")
    gallery_file = _member("prototypes/gallery.png")  # drawn later (`protoef.analysis.explain`), not by the run

    def checkpoint(self, which: str) -> pathlib.Path:
        """``checkpoints/<which>.pt``: "last" (resume), "best" (best validation R²), "final" (pushed)."""
        if which not in CHECKPOINTS:
            raise ValueError(f"no checkpoint {which!r}: a run has {', '.join(CHECKPOINTS)}")
        return self.checkpoints_dir / f"{which}.pt"

    def prototype_file(self, prototype: int, suffix: str = ".npz") -> pathlib.Path:
        """``prototypes/prototype_XX.npz`` (the artefact; ``.png``/``.gif``: its drawings)."""
        return self.prototypes_dir / f"prototype_{int(prototype):02d}{suffix}"

    # --- state
    @property
    def finished(self) -> bool:
        """metrics.json is written last, so its presence marks a finished run."""
        return self.metrics_file.is_file()

    @property
    def resumable(self) -> bool:
        """At least one complete epoch is saved (``checkpoints/last.pt``)."""
        return self.checkpoint("last").is_file()

    @property
    def has_prototypes(self) -> bool:
        """The push wrote its artefacts (a finished ProtoEFNet run)."""
        return self.prototypes_table_file.is_file()

    # --- readers
    def read_config(self) -> dict:
        """The stored ``config.json``."""
        try:
            return json.loads(self.config_file.read_text())
        except (OSError, ValueError) as error:
            raise CheckpointError(f"{self.config_file}: the run's config cannot be read ({error}); the run cannot be "
                                  "matched or reused: delete the run directory or choose another") from None

    def read_metrics(self) -> dict:
        return json.loads(self.metrics_file.read_text())

    def read_environment(self) -> dict:
        return json.loads(self.environment_file.read_text())

    def read_timings(self) -> dict:
        return json.loads(self.timings_file.read_text())

    def read_history(self) -> pd.DataFrame:
        return pd.read_csv(self.history_file)

    def read_predictions(self) -> pd.DataFrame:
        return pd.read_csv(self.predictions_file)

    def read_attention(self) -> dict[str, np.ndarray]:
        """test_attention.npz: filename, ef, weights β (N, P), similarities (N, P), prototype_labels (P,)."""
        with np.load(self.attention_file) as stored:
            return {name: stored[name] for name in stored.files}

    def read_prototypes(self) -> tuple[pd.DataFrame, dict[int, dict[str, np.ndarray]]]:
        """prototypes.csv and, per prototype, its artefact (occurrence_map (T', H', W'),
        feature (D,), ef_label, source_filename, clip_start)."""
        table = pd.read_csv(self.prototypes_table_file)
        artefacts = {}
        for prototype in table["prototype"]:
            with np.load(self.prototype_file(prototype)) as stored:
                artefacts[int(prototype)] = {name: stored[name] for name in stored.files}
        return table, artefacts

    def load_checkpoint(self, which: str, map_location="cpu") -> dict:
        return load_checkpoint(self.checkpoint(which), map_location=map_location)

    # --- writers (each atomic)
    def save_checkpoint(self, which: str, state: dict) -> None:
        save_checkpoint(self.checkpoint(which), state)

    def write_config(self, text: str) -> None:
        atomic_write_text(self.config_file, text)

    def write_environment(self, info: dict) -> None:
        write_json(self.environment_file, info)

    def write_history(self, table: pd.DataFrame) -> None:
        write_csv(self.history_file, table)

    def write_metrics(self, metrics: dict) -> None:
        """Written last by a run: from here on it is `finished`."""
        write_json(self.metrics_file, metrics)

    def write_timings(self, timings: dict) -> None:
        write_json(self.timings_file, timings)

    def write_predictions(self, table: pd.DataFrame) -> None:
        write_csv(self.predictions_file, table)

    def write_attention(self, **arrays) -> None:
        write_npz(self.attention_file, **arrays)

    def write_prototypes(self, table: pd.DataFrame, artefacts: dict[int, dict]) -> None:
        write_csv(self.prototypes_table_file, table)
        for prototype, arrays in artefacts.items():
            write_npz(self.prototype_file(prototype), **arrays)

    # --- is this the run of that config?
    def require_config(self, requested: dict, *, checkpoint: str | None = None,
                       refusal: str = "holds a run of another config", remedy: str = "") -> tuple[dict, dict]:
        """The one check that this is the run of `requested` (a config dict): its
        ``config.json`` and, given `checkpoint` ("last" or "final", when that file exists), the
        config inside the checkpoint its results come from must not differ from `requested`
        except in how it runs (`is_runtime_difference`): an edited config.json does not make a
        τ = 0.2 run a τ = 0.5 one. Otherwise ValueError "<run>: <refusal>: <each key, the
        run's value, the requested one>. <remedy>". Returns (the run's config, as stored in
        the checkpoint when given, else config.json; the runtime differences {key: (run's,
        requested)}, which a resume applies)."""
        sources = [("", self.read_config())]
        if checkpoint is not None and self.checkpoint(checkpoint).is_file():
            sources.append((f" (by its checkpoints/{checkpoint}.pt, whatever config.json says)",
                            self.load_checkpoint(checkpoint)["config"]))
        for source, stored in sources:
            differences = config_differences(stored, requested, runtime=True)
            refused = {key: pair for key, pair in differences.items() if not is_runtime_difference(key, *pair)}
            if refused:
                listed = ", ".join(f"{key} (run: {old!r}, requested: {new!r})" for key, (old, new) in refused.items())
                raise ValueError(f"{self.path}: {refusal}{source}: {listed}. {remedy}".rstrip())
        return stored, differences


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
        run = RunDir(folder)
        if run.checkpoints_dir.is_dir() and (run.config_file.is_file() or run.finished):
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
    (computed by the run) does not count, nor a key the stored config lacks whose requested
    value is the field's declared default (a knob added after the run was made: its default
    keeps the behaviour the run had), nor, unless ``runtime``, a difference that
    `is_runtime_difference`."""
    stored, requested = flatten(stored), flatten(requested)
    defaults = flatten(Config().to_dict())
    differences = {}
    for key in sorted(set(stored) | set(requested)):
        old, new = stored.get(key), requested.get(key)
        if old == new or (key in ("data.mean", "data.std") and new is None):
            continue
        if key not in stored and key in defaults and new == defaults[key]:
            continue
        if runtime or not is_runtime_difference(key, old, new):
            differences[key] = (old, new)
    return differences
