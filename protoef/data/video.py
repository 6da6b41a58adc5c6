"""Video decoding (OpenCV) and a decoded-video cache.

EchoNet-Dynamic videos are MJPG AVIs whose three channels are identical, so a video is
kept as one grayscale uint8 array (F, H, W): a third of the memory of the RGB frames, and
the model's three input channels are restored by a broadcast at the very end.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["VideoReadError", "VideoInfo", "probe_video", "read_video", "VideoCache"]

# Decoding happens inside DataLoader workers; OpenCV's own thread pool would only fight
# them for the same cores.
cv2.setNumThreads(1)


class VideoReadError(RuntimeError):
    """A video file that is missing, cannot be opened, or yields no frame."""


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int  # as the container reports it; the decoder is the final word
    height: int
    width: int
    fps: float


def _to_gray(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return frame
    return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)


def probe_video(path) -> VideoInfo:
    """Open a video and decode its first frame; raise `VideoReadError` if either fails."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise VideoReadError(f"{path}: file not found")
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise VideoReadError(f"{path}: OpenCV cannot open it (not a readable video container)")
        ok, frame = capture.read()
        if not ok or frame is None:
            raise VideoReadError(f"{path}: no frame could be decoded (empty or corrupt file)")
        return VideoInfo(
            num_frames=int(capture.get(cv2.CAP_PROP_FRAME_COUNT)),
            height=frame.shape[0],
            width=frame.shape[1],
            fps=float(capture.get(cv2.CAP_PROP_FPS)),
        )
    finally:
        capture.release()


def read_video(path, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode every frame of ``path`` into a grayscale uint8 array (F, H, W).

    ``size`` = (height, width) resizes each frame (area interpolation, the right choice for
    shrinking, bilinear-like for enlarging). Frames after a decoding error are dropped: a
    truncated file yields the frames before the damage, and the dataset pads short videos.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise VideoReadError(f"{path}: file not found")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise VideoReadError(f"{path}: OpenCV cannot open it (not a readable video container)")
    frames = []
    try:
        while True:
            ok, frame = capture.read()
            if not ok or frame is None:
                break
            frame = _to_gray(frame)
            if size is not None and frame.shape != tuple(size):
                frame = cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)
            frames.append(frame)
    finally:
        capture.release()
    if not frames:
        raise VideoReadError(f"{path}: no frame could be decoded (empty or corrupt file)")
    return np.stack(frames)  # (F, H, W) uint8


class VideoCache:
    """Decoded videos as memory-mapped ``.npy`` files, so later epochs skip the AVI decode.

    Keyed by the video's absolute path, byte size, modification time and the output size:
    an edited or replaced video, or another ``resize``, gets a new entry. Entries are
    written to a temporary file and renamed, so concurrent DataLoader workers and a run
    killed mid-write never leave a truncated entry behind. The cache never evicts;
    delete the directory to reclaim the space (≈ F·H·W bytes per video: ~2 MB for a
    172-frame 112×112 EchoNet video).
    """

    def __init__(self, directory):
        self.directory = pathlib.Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def entry(self, path, size: tuple[int, int] | None) -> pathlib.Path:
        path = pathlib.Path(path).resolve()
        stat = path.stat()
        key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{size}"
        digest = hashlib.sha1(key.encode()).hexdigest()[:16]
        return self.directory / f"{path.stem}-{digest}.npy"

    def __contains__(self, item) -> bool:
        path, size = item
        return self.entry(path, size).is_file()

    def read(self, path, size: tuple[int, int] | None = None) -> np.ndarray:
        """The decoded video (F, H, W) uint8, memory-mapped when it was cached before."""
        entry = self.entry(path, size)
        if entry.is_file():
            try:
                return np.load(entry, mmap_mode="r")
            except (ValueError, OSError):
                entry.unlink(missing_ok=True)  # unreadable entry: decode again below
        video = read_video(path, size)
        temporary = entry.with_name(f"{entry.name}.{os.getpid()}.tmp")
        with open(temporary, "wb") as handle:
            np.save(handle, video)
        os.replace(temporary, entry)
        return video
