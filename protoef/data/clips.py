"""Clips: which frames of a video the model sees, and how per-clip outputs become one per
video (docs/method.md §5, §6). The data set, `predict` and the explanations all cut clips
here, so a clip means the same thing everywhere.

A clip is ``length`` frames taken every ``period`` frames: frames s, s + period, …,
s + (length − 1)·period from its start s, so it spans ``length·period`` frames. Which
starts a video of F frames gets is the clip mode:

- ``"random"``: one clip, start uniform in [0, F − span] (training);
- ``"deterministic"``: one clip starting at frame 0 (validation, the push; same every epoch);
- ``"tiles"``: ⌊F / span⌋ non-overlapping clips (at least one), starting at 0, span,
  2·span, … with the last one moved to end at the video's last frame. The F − ⌊F/span⌋·span
  leftover frames lie uncovered between the last two tiles. (Not EchoNet-Dynamic's
  ``clips="all"``, which takes every start at stride 1.)
- an int N ≥ 1: the tiles, at most N of them (the first N − 1 and the end-aligned one;
  TEST, ``data.test_clips``).

A video shorter than one span gets one clip at 0, padded at the end with black (0) frames.
Multi-clip modes give a leading clip dimension (K, …); their per-clip outputs are averaged
back per video by `average_clips`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["ClipSpec", "CLIP_MODES", "clip_starts", "gather_clips", "normalise_clips", "model_input",
           "minimum_frames", "check_mode", "collate_clips", "average_clips", "videos_per_batch"]

CLIP_MODES = ("random", "deterministic", "tiles")  # besides a positive int


def _is_count(clips) -> bool:
    return isinstance(clips, (int, np.integer)) and not isinstance(clips, bool) and clips >= 1


def check_mode(clips) -> None:
    """Raise ValueError unless ``clips`` is a clip mode (module docstring)."""
    if clips == "all":
        raise ValueError("clips='all' is now clips='tiles' (non-overlapping clips covering the video). It was renamed "
                         "because EchoNet-Dynamic's clips='all' means every start at stride 1, which this package "
                         "does not offer; pass clips='tiles', or an int to cap the number of tiles")
    if not (clips in CLIP_MODES or _is_count(clips)):
        raise ValueError(f"clips must be 'random', 'deterministic', 'tiles' or a positive int, got {clips!r}")


def minimum_frames(clip_length: int, period: int) -> int:
    """The fewest frames a video needs to be used (trained on, evaluated or predicted):
    half of a clip's sampled frames must be real video, not black padding."""
    return (-(-int(clip_length) // 2) - 1) * int(period) + 1


def clip_starts(num_frames: int, span: int, clips, *, generator: torch.Generator | None = None) -> list[int]:
    """Start frames of the clips of a ``num_frames`` video in mode ``clips`` (module docstring)."""
    check_mode(clips)
    last = max(num_frames - span, 0)  # short videos: one clip at 0, padded
    if clips == "random":
        return [int(torch.randint(0, last + 1, (1,), generator=generator))]
    if clips == "deterministic":
        return [0]
    count = max(1, num_frames // span)
    if clips != "tiles":
        count = min(count, int(clips))
    # count·span <= num_frames, so the end-aligned last clip cannot overlap the others.
    return [index * span for index in range(count - 1)] + [last]


def gather_clips(frames: np.ndarray, starts, clip_length: int, period: int = 1) -> torch.Tensor:
    """uint8 clips (K, T, H, W) of a (F, H, W) video; frames past the end are black (0)."""
    offsets = np.arange(clip_length) * period
    needed = max(int(start) for start in starts) + int(offsets[-1]) + 1
    if len(frames) < needed:  # zero-pad at the end: black, whatever the normalisation
        frames = np.concatenate([frames, np.zeros((needed - len(frames), *frames.shape[1:]), dtype=frames.dtype)])
    return torch.from_numpy(np.stack([frames[start + offsets] for start in starts]))


def normalise_clips(clips: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """(K, T, H, W) on the [0, 1] scale → normalised model input (K, 3, T, H, W)."""
    clips = (clips - mean) / std
    return clips.unsqueeze(1).expand(-1, 3, -1, -1, -1).contiguous()


def model_input(clips: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """uint8 clips (K, T, H, W) → the model input (K, 3, T, H, W): scaled to [0, 1], then
    `normalise_clips`. The data set does the same two steps with its augmentation between."""
    return normalise_clips(clips.float().div_(255.0), mean, std)


def collate_clips(items: list[dict]) -> dict:
    """Batch multi-clip items: ``video`` (ΣK, 3, T, H, W) plus ``num_clips`` (N,) to average
    per-video predictions back; the other fields are batched as the default collate does."""
    batch = torch.utils.data.default_collate([{k: v for k, v in item.items() if k not in ("video", "clip_starts")} for item in items])
    batch["video"] = torch.cat([item["video"] for item in items])
    batch["num_clips"] = torch.tensor([len(item["video"]) for item in items])
    batch["clip_starts"] = [item["clip_starts"] for item in items]
    return batch


def average_clips(values: torch.Tensor, counts) -> torch.Tensor:
    """Per-clip outputs (ΣK, …) of videos with ``counts`` clips each → per-video means (N, …),
    in order (the inverse of `collate_clips`' concatenation)."""
    return torch.stack([chunk.mean(0) for chunk in values.split(list(counts))])


def videos_per_batch(batch_size: int, clips) -> int:
    """How many videos one evaluation batch holds so that it holds about ``batch_size``
    clips: ``batch_size // N`` (at least 1) for at most N clips per video, 1 for
    ``"tiles"`` (a long video may give many), ``batch_size`` for single-clip modes."""
    check_mode(clips)
    if clips in ("random", "deterministic"):
        return int(batch_size)
    if clips == "tiles":
        return 1
    return max(1, int(batch_size) // int(clips))


@dataclass(frozen=True)
class ClipSpec:
    """The clips a run cuts from a video: ``length`` frames every ``period``, mode ``clips``
    (module docstring). The data set, `predict` and the explanations take one of these."""

    length: int
    period: int = 1
    clips: object = "deterministic"

    def __post_init__(self):
        check_mode(self.clips)

    @property
    def span(self) -> int:
        """Frames of the video one clip covers, ``length·period``."""
        return self.length * self.period

    @property
    def multi_clip(self) -> bool:
        """Whether items carry a leading clip dimension (K, …)."""
        return self.clips not in ("random", "deterministic")

    @property
    def minimum_frames(self) -> int:
        return minimum_frames(self.length, self.period)

    def starts(self, num_frames: int, *, generator: torch.Generator | None = None) -> list[int]:
        return clip_starts(num_frames, self.span, self.clips, generator=generator)

    def frame_indices(self, starts) -> np.ndarray:
        """The frame of every clip position, (K·T,) clip after clip, for `read_frames`."""
        return (np.asarray(starts)[:, None] + np.arange(self.length) * self.period).ravel()

    def gather(self, frames: np.ndarray, starts) -> torch.Tensor:
        """uint8 clips (K, T, H, W) of a decoded video (F, H, W), black past its end."""
        return gather_clips(frames, starts, self.length, self.period)

    def cut(self, frames: np.ndarray) -> tuple[torch.Tensor, list[int]]:
        """uint8 clips (K, T, H, W) of a whole decoded video (F, H, W) and their starts
        (a random mode draws from torch's global generator)."""
        starts = self.starts(len(frames))
        return self.gather(frames, starts), starts
