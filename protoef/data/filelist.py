"""The two CSV files of an EchoNet-Dynamic root, read and normalised (docs/method.md §5):
``FileList.csv`` (one row per video: FileName, EF, Split, ...) and ``VolumeTracings.csv``
(per traced frame, the long axis then the chords as X1, Y1, X2, Y2 rows)."""
from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd

from .locations import VIDEO_FOLDER, video_filename

__all__ = ["SPLITS", "DataError", "Tracings", "read_file_list", "read_volume_tracings", "unassigned_rows"]

SPLITS = ("TRAIN", "VAL", "TEST")


class DataError(ValueError):
    """A data-set file that cannot be used; the message names the file and the fix."""


def _read_csv(path: pathlib.Path, required: set[str]) -> pd.DataFrame:
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a CSV file; it must be the file itself")
    if not path.is_file():
        raise DataError(
            f"{path}: not found. An EchoNet-Dynamic root holds FileList.csv, "
            f"VolumeTracings.csv and the videos in {VIDEO_FOLDER}/ (see README, 'Data')."
        )
    try:
        table = pd.read_csv(path, skipinitialspace=True)  # CRLF line endings are handled by pandas
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty; it needs a header line ({', '.join(sorted(required))}) "
                        "and one row per video") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not a readable CSV file ({str(error).strip().splitlines()[0]})") from None
    header = _header(path)
    doubled = sorted({name for name in header if name in required and header.count(name) > 1})
    if doubled:  # pandas would rename the second one "EF.1" and use the first silently
        raise DataError(f"{path}: column(s) {doubled} appear more than once in the header; keep one of each")
    table.columns = [str(column).strip() for column in table.columns]
    missing = required - set(table.columns)
    if missing:
        found = list(table.columns)
        hint = next((f"; the header looks separated by {name}, but the file must be comma-separated"
                     for mark, name in ((";", "';'"), ("\t", "tabs")) if len(found) == 1 and mark in found[0]), "")
        raise DataError(f"{path}: missing column(s) {sorted(missing)}; found {found}{hint}")
    return table


def _header(path: pathlib.Path) -> list[str]:
    """The header line's column names as written (stripped), duplicates kept."""
    import csv

    with open(path, newline="", encoding="utf-8-sig", errors="replace") as file:
        return [name.strip() for name in next(csv.reader(file), [])]


def read_file_list(root) -> pd.DataFrame:
    """``FileList.csv`` with a normalised ``filename`` (the file name in ``Videos/``: a FileName
    without a suffix gets ``.avi``, one with a suffix is kept; `video_filename`), upper-case ``Split``
    (blank where missing) and numeric ``EF`` (NaN where missing or not a number). Extra
    columns are kept.

    Refused with a `DataError` naming the rows: a FileName that points outside ``Videos/``
    (absolute, or with ``..``), a video listed in two splits (leakage between TRAIN, VAL
    and TEST), and EF that looks like fractions (every EF <= 1: EF is a percentage).
    Rows whose Split is blank or not TRAIN/VAL/TEST belong to no split: `unassigned_rows`
    names them (`EchoNet` and ``check-data`` report them)."""
    path = pathlib.Path(root) / "FileList.csv"
    table = _read_csv(path, {"FileName", "EF", "Split"})
    table["FileName"] = table["FileName"].fillna("").astype(str)
    table["filename"] = table["FileName"].map(video_filename)
    table["Split"] = table["Split"].fillna("").astype(str).str.strip().str.upper()
    table["EF_text"] = table["EF"].astype(str).str.strip()  # as written, for the skip reasons
    table["EF"] = pd.to_numeric(table["EF"], errors="coerce")
    outside = [name for name in table["FileName"].str.strip() if _escapes_videos(name)]
    if outside:
        raise DataError(f"{path}: FileName(s) {outside[:5]} point outside {VIDEO_FOLDER}/ (absolute or with '..'); "
                        f"a FileName names a file inside {VIDEO_FOLDER}/, e.g. 0X1A2B3C4D5E6F7A8B")
    assigned = table[table["Split"].isin(SPLITS)]
    splits = assigned.groupby("filename")["Split"].unique()
    leaked = splits[splits.map(len) > 1]
    if len(leaked):
        listed = "; ".join(f"{name} in {'/'.join(sorted(values))}" for name, values in leaked.head(5).items())
        more = f" (+{len(leaked) - 5} more)" if len(leaked) > 5 else ""
        raise DataError(f"{path}: {len(leaked)} video(s) listed in more than one split: {listed}{more}. A video in "
                        "two splits leaks between training and evaluation; give each FileName one Split")
    efs = table["EF"].dropna()
    if len(efs) and (efs.abs() <= 1.0).all():
        raise DataError(f"{path}: every EF is <= 1 (max {efs.max():g}): EF looks like fractions, but the EF column is a "
                        "percentage (0-100); multiply it by 100")
    return table


def _escapes_videos(name: str) -> bool:
    posix = pathlib.PurePosixPath(name.replace("\\", "/"))
    return posix.is_absolute() or pathlib.PureWindowsPath(name).is_absolute() or ".." in posix.parts


def unassigned_rows(table: pd.DataFrame) -> list[tuple[str, str]]:
    """``(filename, reason)`` for each row of a `read_file_list` table that belongs to no
    split (blank or unknown Split, or no FileName: e.g. the half-written last row of a
    truncated file), in file order."""
    rows = []
    for line, (name, split) in enumerate(zip(table["FileName"].str.strip(), table["Split"]), start=2):
        if not name:
            rows.append((f"(row {line})", "no FileName in FileList.csv; the row names no video"))
        elif not split:
            rows.append((video_filename(name), f"blank Split in FileList.csv (row {line}); the video belongs to no split"))
        elif split not in SPLITS:
            rows.append((video_filename(name), f"Split {split!r} in FileList.csv (row {line}) is not TRAIN, VAL or TEST; "
                                          "the video belongs to no split"))
    return rows


class Tracings(dict):
    """{filename: {frame: rows (R, 4)}}, file names as `video_filename` gives them, and
    ``unplaced``: per video, the rows whose Frame is missing, not a number or not a whole
    number (they belong to no traced frame, so the frame they were part of lacks them;
    `EchoNet` skips such a video with the reason)."""

    def __init__(self, *args, unplaced: dict[str, list[str]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.unplaced: dict[str, list[str]] = dict(unplaced or {})


def read_volume_tracings(root) -> Tracings:
    """``VolumeTracings.csv`` as {filename: {frame: rows (R, 4) of X1, Y1, X2, Y2}}.

    Row order inside a frame is kept: the first row is the long axis. Coordinates that are
    missing or not numbers are NaN (a caller must not use such a frame); rows without a
    whole-number Frame are listed in ``.unplaced`` (a `Tracings`). An absent file gives
    an empty mapping (masks are then unavailable, which only matters with ``with_masks``).
    """
    path = pathlib.Path(root) / "VolumeTracings.csv"
    if not path.is_file():
        return Tracings()
    table = _read_csv(path, {"FileName", "X1", "Y1", "X2", "Y2", "Frame"})
    table["filename"] = table["FileName"].map(video_filename)
    coords = table[["X1", "Y1", "X2", "Y2"]].apply(pd.to_numeric, errors="coerce")
    frames = pd.to_numeric(table["Frame"], errors="coerce")
    # Rows with missing coordinates stay (as NaN): dropping them would make the next chord
    # the long axis; `EchoNet` skips such a video with the reason. Rows without a whole
    # frame number cannot be placed in any traced frame: `Tracings.unplaced` names them.
    valid = frames.notna() & (frames == frames.round())
    unplaced: dict[str, list[str]] = {}
    for line, (filename, frame) in zip(table.index[~valid] + 2, table.loc[~valid, ["filename", "Frame"]].itertuples(index=False)):
        unplaced.setdefault(filename, []).append(f"row {line}: Frame {'blank' if pd.isna(frame) else repr(str(frame))}")
    values = coords[valid].to_numpy(np.float64)
    keys = pd.DataFrame({"filename": table.loc[valid, "filename"].to_numpy(), "frame": frames[valid].astype(int).to_numpy()})
    tracings = Tracings(unplaced=unplaced)
    # .indices keeps the file's row order inside each group: the long axis stays first.
    for (filename, frame), rows in keys.groupby(["filename", "frame"], sort=False).indices.items():
        tracings.setdefault(filename, {})[int(frame)] = values[rows]
    return tracings
