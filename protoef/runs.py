"""Run directories: atomic result files, safe checkpoints, the environment record.

Layout of a run directory (see README, "Run directory"):

    config.json         the resolved config (profile + overrides + computed mean/std)
    environment.json    versions, device, git commit, command line
    history.csv         one row per epoch: losses, validation metrics, learning rates
    metrics.json        validation/test metrics before and after the push (written last)
    predictions.csv     per test video: EF, prediction, top-3 prototypes with labels and β
    test_attention.npz  ProtoEFNet: per test video β and s over all prototypes, with the labels
    checkpoints/        last.pt (resume), best.pt (best validation R²), final.pt (pushed)
    prototypes/         prototypes.csv + per prototype an .npz (occurrence map) and a PNG strip

Every file is written to a temporary name and renamed into place, so a run killed at any
moment leaves either the previous complete file or the new complete file, never half.
Checkpoints hold only tensors and plain containers and are read with
``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import json
import os
import pathlib
import platform
import subprocess
import sys

import numpy as np
import pandas as pd
import torch

__all__ = ["CheckpointError", "atomic_write_text", "write_json", "write_csv", "write_npz", "save_checkpoint", "load_checkpoint", "environment"]


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model it is loaded into."""


def _temporary(path: pathlib.Path) -> pathlib.Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_write_text(path, text: str) -> None:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary(path)
    with open(temporary, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


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
    """Compressed .npz, written to a temporary name and renamed into place."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary(path)
    with open(temporary, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    os.replace(temporary, path)


def save_checkpoint(path, state: dict) -> None:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary(path)
    torch.save(state, temporary)
    os.replace(temporary, path)


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
        root = pathlib.Path(__file__).resolve().parents[1]
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
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_count"] = torch.cuda.device_count()
        info["cuda"] = torch.version.cuda
    return info
