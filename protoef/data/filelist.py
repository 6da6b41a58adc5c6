"""The two CSV files of an EchoNet-Dynamic root, read and normalised (docs/method.md §5):
``FileList.csv`` (one row per video: FileName, EF, Split, ...) and ``VolumeTracings.csv``
(per traced frame, the long axis then the chords as X1, Y1, X2, Y2 rows)."""
from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd

__all__ = ["SPLITS", "DataError", "read_file_list", "read_volume_tracings"]

SPLITS = ("TRAIN", "VAL", "TEST")


class DataError(ValueError):
    """A data-set file that cannot be used; the message names the file and the fix."""


def _read_csv(path: pathlib.Path, required: set[str]) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(
            f"{path}: not found. An EchoNet-Dynamic root holds FileList.csv, "
            "VolumeTracings.csv and Videos/*.avi (see README, 'Data')."
        )
    table = pd.read_csv(path, skipinitialspace=True)  # CRLF line endings are handled by pandas
    table.columns = [str(column).strip() for column in table.columns]
    missing = required - set(table.columns)
    if missing:
        raise DataError(f"{path}: missing column(s) {sorted(missing)}; found {list(table.columns)}")
    return table


def _with_avi(name: str) -> str:
    name = str(name).strip()
    return name if name.lower().endswith(".avi") else f"{name}.avi"


def read_file_list(root) -> pd.DataFrame:
    """``FileList.csv`` with a normalised ``filename`` (always ``.avi``), upper-case ``Split``
    and numeric ``EF`` (NaN where missing or not a number). Extra columns are kept."""
    table = _read_csv(pathlib.Path(root) / "FileList.csv", {"FileName", "EF", "Split"})
    table["filename"] = table["FileName"].map(_with_avi)
    table["Split"] = table["Split"].astype(str).str.strip().str.upper()
    table["EF"] = pd.to_numeric(table["EF"], errors="coerce")
    return table


def read_volume_tracings(root) -> dict[str, dict[int, np.ndarray]]:
    """``VolumeTracings.csv`` as {filename.avi: {frame: rows (R, 4) of X1, Y1, X2, Y2}}.

    Row order inside a frame is kept: the first row is the long axis. An absent file gives
    an empty mapping (masks are then unavailable, which only matters with ``with_masks``).
    """
    path = pathlib.Path(root) / "VolumeTracings.csv"
    if not path.is_file():
        return {}
    table = _read_csv(path, {"FileName", "X1", "Y1", "X2", "Y2", "Frame"})
    table["filename"] = table["FileName"].map(_with_avi)
    coords = table[["X1", "Y1", "X2", "Y2"]].apply(pd.to_numeric, errors="coerce")
    frames = pd.to_numeric(table["Frame"], errors="coerce")
    valid = coords.notna().all(axis=1) & frames.notna()
    values = coords[valid].to_numpy(np.float64)
    keys = pd.DataFrame({"filename": table.loc[valid, "filename"].to_numpy(), "frame": frames[valid].astype(int).to_numpy()})
    tracings: dict[str, dict[int, np.ndarray]] = {}
    # .indices keeps the file's row order inside each group: the long axis stays first.
    for (filename, frame), rows in keys.groupby(["filename", "frame"], sort=False).indices.items():
        tracings.setdefault(filename, {})[int(frame)] = values[rows]
    return tracings
