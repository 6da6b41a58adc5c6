"""Where the videos of an EchoNet-format root live, and which files are videos: the one place
that knows the ``Videos/`` folder and the file suffix (docs/method.md §5).

EchoNet-Dynamic's ``FileList.csv`` names a video without its suffix (``0X1A2B3C4D5E6F7A8B``)
while ``VolumeTracings.csv`` names it with one (``0X1A2B3C4D5E6F7A8B.avi``); both are mapped to
the file name in ``Videos/`` by `video_filename`. To read another container (MP4, say), add
its suffix to `VIDEO_SUFFIXES`: decoding is OpenCV's (`protoef.data.video`), which opens any
container its FFmpeg build knows.
"""
from __future__ import annotations

import os
import pathlib

__all__ = ["VIDEO_FOLDER", "DEFAULT_SUFFIX", "VIDEO_SUFFIXES", "video_filename", "video_folder", "video_path",
           "is_video", "list_videos"]

VIDEO_FOLDER = "Videos"  # inside a data-set root, beside FileList.csv and VolumeTracings.csv
DEFAULT_SUFFIX = ".avi"  # what a FileName without a suffix gets: EchoNet-Dynamic's AVIs
VIDEO_SUFFIXES = (".avi",)  # the files `list_videos` takes from a folder (compared in lower case)


def video_filename(name) -> str:
    """The file name in ``Videos/`` of a FileName: ``name`` itself when it has a suffix
    (``a.avi``, ``a.AVI``, ``a.mp4`` are kept as written), else ``name + ".avi"``.
    Surrounding blanks are stripped. A suffix is what `os.path.splitext` finds, the rule
    EchoNet-Dynamic's own loader uses ("assume avi if no suffix")."""
    name = str(name).strip()
    return name if os.path.splitext(name)[1] else f"{name}{DEFAULT_SUFFIX}"


def video_folder(root) -> pathlib.Path:
    """``root/Videos``: the folder holding the videos a data-set root's FileList.csv names."""
    return pathlib.Path(root) / VIDEO_FOLDER


def video_path(root, name) -> pathlib.Path:
    """The video file of FileName (or file name) ``name`` in data-set root ``root``."""
    return video_folder(root) / video_filename(name)


def is_video(path) -> bool:
    """Whether ``path`` names a file `list_videos` takes (by its suffix, any case)."""
    return pathlib.Path(path).suffix.lower() in VIDEO_SUFFIXES


def list_videos(folder) -> list[pathlib.Path]:
    """The entries directly inside ``folder`` with a video suffix, sorted by name; [] when
    there are none. A folder named like a video is listed too, so that reading it fails
    with a message naming it instead of it being passed over silently."""
    return sorted(path for path in pathlib.Path(folder).iterdir() if is_video(path))
