"""Video decoding (OpenCV) and a decoded-video cache.

EchoNet-Dynamic videos are MJPG AVIs whose three channels are identical, so a video is
kept as one grayscale uint8 array (F, H, W): a third of the memory of the RGB frames, and
the model's three input channels are restored by a broadcast at the very end.
"""
from __future__ import annotations

import hashlib
import pathlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ..files import atomic_path

__all__ = ["VideoReadError", "TruncatedVideoError", "VideoInfo", "count_decodable_frames", "probe_video", "read_video", "read_frames", "VideoCache",
           "intensity_statistics"]

# Decoding happens inside DataLoader workers; OpenCV's own thread pool would only fight
# them for the same cores.
cv2.setNumThreads(1)


class VideoReadError(RuntimeError):
    """A video file that is missing, cannot be opened, or yields no frame."""


class TruncatedVideoError(VideoReadError):
    """A video whose decoder ends before the frame count its container promises."""

    def __init__(self, path, promised: int, decodable: int):
        super().__init__(f"{path}: truncated or damaged: the container promises {promised} frames, only {decodable} decode")
        self.promised, self.decodable = promised, decodable


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


def _open(path: pathlib.Path) -> cv2.VideoCapture:
    if path.is_dir():
        raise VideoReadError(f"{path}: is a folder, not a video file")
    if not path.is_file():
        raise VideoReadError(f"{path}: file not found")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise VideoReadError(f"{path}: OpenCV cannot open it (not a readable video container)")
    return capture


def probe_video(path, *, check_end: bool = False) -> VideoInfo:
    """Open a video and decode its first frame; raise `VideoReadError` if either fails.

    ``check_end`` also seeks to and decodes the last frame the container promises (about a
    millisecond), and raises `TruncatedVideoError` if it does not decode: a truncated file
    would otherwise be served as if complete, padded with black."""
    path = pathlib.Path(path)
    capture = _open(path)
    try:
        ok, frame = capture.read()
        if not ok or frame is None:
            raise VideoReadError(f"{path}: no frame could be decoded (empty or corrupt file)")
        info = VideoInfo(
            num_frames=int(capture.get(cv2.CAP_PROP_FRAME_COUNT)),
            height=frame.shape[0],
            width=frame.shape[1],
            fps=float(capture.get(cv2.CAP_PROP_FPS)),
        )
        if check_end and info.num_frames > 1:
            capture.set(cv2.CAP_PROP_POS_FRAMES, info.num_frames - 1)
            ok, frame = capture.read()
            if not ok or frame is None:
                raise TruncatedVideoError(path, info.num_frames, count_decodable_frames(path))
        return info
    finally:
        capture.release()


def count_decodable_frames(path) -> int:
    """How many frames the decoder yields, whatever the container says (a full decode)."""
    capture = _open(pathlib.Path(path))
    count = 0
    try:
        while capture.grab():
            count += 1
    finally:
        capture.release()
    return count


def _prepare(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    frame = _to_gray(frame)
    if size is not None and frame.shape != tuple(size):
        frame = cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return frame


def read_video(path, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode every frame of ``path`` into a grayscale uint8 array (F, H, W).

    ``size`` = (height, width) resizes each frame (area interpolation, the right choice for
    shrinking, bilinear-like for enlarging). Frames after a decoding error are dropped: a
    truncated file yields the frames before the damage, and the dataset pads short videos.
    """
    path = pathlib.Path(path)
    capture = _open(path)
    frames = []
    try:
        while True:
            ok, frame = capture.read()
            if not ok or frame is None:
                break
            frames.append(_prepare(frame, size))
    finally:
        capture.release()
    if not frames:
        raise VideoReadError(f"{path}: no frame could be decoded (empty or corrupt file)")
    return np.stack(frames)  # (F, H, W) uint8


def read_frames(path, select: Callable[[int], Sequence[int]], size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode only the frames a clip needs: (len(indices), H, W) uint8.

    ``select(num_frames)`` receives the video's frame count and returns the wanted frame
    indices (any order, repeats allowed); indices at or past the end come back black (0),
    as `gather_clips` pads short videos. Frames before the last wanted one are only
    *grabbed* (demuxed and decoded, never converted to grey or resized) and decoding stops
    after it, so a 64-frame clip of a 175-frame video costs a fraction of `read_video`
    (ratios: benchmarks/README.md).

    The count is the container's. If the decoder ends before a wanted frame the header
    promised (a truncated file, a wrong header), the whole video is decoded and ``select``
    is called once more with the true count: the result is then exactly `read_video`
    followed by indexing, and ``select`` may have drawn random numbers twice.
    """
    path = pathlib.Path(path)
    capture = _open(path)
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if count > 0:  # some containers report 0 or -1: decode everything below
            wanted = [int(index) for index in select(count)]
            decoded = _decode_selected(capture, sorted({i for i in wanted if 0 <= i < count}), size)
            if decoded is not None:
                blank = np.zeros_like(next(iter(decoded.values())))
                return np.stack([decoded.get(index, blank) for index in wanted])
    finally:
        capture.release()
    frames = read_video(path, size)  # header and stream disagree: take the decoder's word
    wanted = [int(index) for index in select(len(frames))]
    blank = np.zeros_like(frames[0])
    return np.stack([frames[index] if 0 <= index < len(frames) else blank for index in wanted])


def _decode_selected(capture, needed: list[int], size) -> dict[int, np.ndarray] | None:
    """{index: frame} for the sorted `needed` indices, or None if the stream ends first."""
    decoded, position = {}, 0
    for index in needed:
        while position < index:
            if not capture.grab():
                return None
            position += 1
        ok, frame = capture.read()
        if not ok or frame is None:
            return None
        decoded[index] = _prepare(frame, size)
        position += 1
    return decoded or None


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
        with atomic_path(entry) as temporary, open(temporary, "wb") as handle:
            np.save(handle, video)
        return video


def intensity_statistics(frames) -> tuple[float, float]:
    """(mean, std) of a decoded video's pixels (F, H, W) uint8 on the [0, 1] scale: what
    ``predict`` compares with the training videos (an all-black or pure-noise clip lies far
    outside them)."""
    values = np.asarray(frames, dtype=np.float64) / 255.0
    return (float(values.mean()), float(values.std())) if values.size else (0.0, 0.0)
