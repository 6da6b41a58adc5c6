"""The EchoNet-Dynamic data set: ``FileList.csv`` + ``VolumeTracings.csv`` + the videos in
``Videos/`` (`protoef.data.locations`).

Clip semantics (docs/method.md §5; `protoef.data.clips`, the one definition). A clip is
``clip_length`` frames taken every ``period`` frames, so it spans ``clip_length·period`` frames.

- ``clips="random"``: one clip with a uniformly random start (training);
- ``clips="deterministic"``: one clip starting at frame 0 (validation; same every epoch);
- ``clips="tiles"``: non-overlapping clips at 0, s, 2s, … with the last one aligned to the
  end of the video (s = the span); ``clips=N`` (int): at most N of them. The video tensor
  then has a leading clip dimension, (K, 3, T, H, W). (EchoNet-Dynamic's ``clips="all"``,
  every start at stride 1, is not offered; ``"all"`` is refused with a pointer to ``"tiles"``.)
- a video shorter than one span is zero-padded at the end (black after normalisation).

Robustness: real files contain quirks. Each is either handled (documented below) or the
video is skipped with a reason in ``dataset.skipped`` and one warning summarises them;
``strict=True`` raises instead, naming the file. A bad video never costs a good one.
"""
from __future__ import annotations

import concurrent.futures
import functools
import logging
import pathlib
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, WeightedRandomSampler

from .clips import ClipSpec, normalise_clips
from .filelist import SPLITS, DataError, Tracings, read_file_list, read_volume_tracings, unassigned_rows
from .locations import video_folder, video_path
from .tracings import background_mask, trace_mask, tracing_outside_frame, tracing_problem
from .video import (TruncatedVideoError, VideoCache, VideoReadError, intensity_statistics, probe_video, read_frames,
                    read_video)

__all__ = [
    "EchoNet",
    "compute_mean_std",
    "oversampling_sampler",
]

log = logging.getLogger(__name__)


def _pair(size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


@dataclass
class _Record:
    filename: str
    path: pathlib.Path
    ef: float
    height: int  # original frame size: the tracings are in these pixel coordinates
    width: int
    tracings: dict[int, np.ndarray] = field(default_factory=dict)
    num_frames: int | None = None  # as the container reports it (verified at its last frame); None: not probed
    fps: float | None = None


class EchoNet(Dataset):
    """One split of an EchoNet-Dynamic-format data set.

    An item is a dict: ``video`` float32 (3, T, H, W) normalised, or (K, 3, T, H, W) for
    multi-clip modes; ``ef`` (float, percent); ``filename``; ``clip_starts`` (K,) long.
    With ``with_masks``: ``lv_mask`` (H, W) bool, union of ``ed_mask`` and ``es_mask``
    (frame-size bools), ``background`` (``feature_size``) float, the soft occurrence-loss
    background of docs/method.md §5, and ``ed_frame`` / ``es_frame`` (ED = the larger traced area).
    ``augment`` rotates video and masks by one random angle in ±``rotation_degrees``.

    Args:
        root: directory holding FileList.csv, VolumeTracings.csv, Videos/.
        clip_length, period, clips: the clips of an item (module docstring); also as
            ``dataset.clip_spec``, the `ClipSpec` that `predict` and the explanations reuse.
        split: "TRAIN", "VAL", "TEST" (any case), "ALL", or a list of them.
        mean, std: normalisation on the [0, 1] scale; None computes them on a sample of
            the TRAIN split (`compute_mean_std`). Give them explicitly to save that pass.
        feature_size: (H', W') of the backbone output, for ``background``.
        background_dilation: the LV dilation (max-pool size, odd) at feature size; 5 at
            the paper's 14×14. Scale it down with the feature map, or the dilated LV
            covers everything and the occurrence loss sees no background.
        cache_dir: a `VideoCache` directory (whole videos decoded once, then memory-mapped),
            or None to decode the AVI on every read, only up to the clip's last frame.
        verify: decode each video's first and last frame at construction, so unreadable
            and truncated files (and tracings past a video's end) are skipped up front
            instead of failing inside a DataLoader worker or being served padded.
        strict: raise on the first problem instead of skipping the video.
    """

    def __init__(
        self,
        root,
        split="TRAIN",
        *,
        clip_length: int = 64,
        period: int = 1,
        clips="random",
        resize=112,
        mean: float | None = None,
        std: float | None = None,
        with_masks: bool = False,
        feature_size=(14, 14),
        background_dilation: int = 5,
        augment: bool = False,
        rotation_degrees: float = 10.0,
        cache_dir=None,
        verify: bool = True,
        strict: bool = False,
        num_threads: int = 8,
    ):
        self.root = pathlib.Path(root)
        self.clip_length, self.period, self.clips = int(clip_length), int(period), clips
        self.clip_spec = ClipSpec(self.clip_length, self.period, clips)  # validates the mode
        self.size = _pair(resize)
        self.with_masks, self.feature_size = with_masks, _pair(feature_size)
        self.background_dilation = int(background_dilation)
        self.augment, self.rotation_degrees = augment, float(rotation_degrees)
        self.cache = VideoCache(cache_dir) if cache_dir is not None else None
        self.strict = strict
        self.skipped: list[tuple[str, str]] = []
        # Rows of FileList.csv in no split (blank or unknown Split): named, not dropped silently.
        self.unassigned: list[tuple[str, str]] = []

        splits = [split] if isinstance(split, str) else list(split)
        splits = [s.upper() for s in splits]
        if "ALL" in splits:
            splits = list(SPLITS)
        unknown = set(splits) - set(SPLITS)
        if unknown:
            raise ValueError(f"unknown split(s) {sorted(unknown)}; use TRAIN, VAL, TEST or ALL")

        table = read_file_list(self.root)
        if len(table) and not video_folder(self.root).is_dir():
            raise DataError(f"{video_folder(self.root)}: no such folder; an EchoNet-Dynamic root holds the videos named "
                            f"in FileList.csv in {video_folder(self.root).name}/ (see README, 'Data')")
        percent = bool((table["EF"] > 1.0).any())  # the file's EF are percentages (fractions are refused)
        self.unassigned = unassigned_rows(table)
        table = table[table["Split"].isin(splits) & table["FileName"].str.strip().ne("")]  # no FileName: unassigned
        tracings = read_volume_tracings(self.root) if with_masks else Tracings()
        if with_masks and not (self.root / "VolumeTracings.csv").is_file():
            raise DataError(f"{self.root / 'VolumeTracings.csv'}: not found, but with_masks=True needs it")

        candidates = []
        seen: set[str] = set()
        for filename, ef, text in zip(table["filename"], table["EF"], table["EF_text"]):
            if filename in seen:
                self._skip(filename, "listed more than once in FileList.csv (first row kept)")
            elif not np.isfinite(ef):
                written = "blank" if pd.isna(text) or str(text) in ("", "nan") else repr(str(text))
                self._skip(filename, f"EF {written} in FileList.csv is missing or not a finite number (EF is a "
                                     "percentage written as a plain number, e.g. 65 for 65 %)")
            elif percent and 0.0 < ef <= 1.0:
                self._skip(filename, f"EF {ef:g} in FileList.csv looks like a fraction while other rows are percentages "
                                     f"(EF {100 * ef:g} meant?); write it as a percentage")
            elif not 0.0 <= ef <= 100.0:
                self._skip(filename, f"EF {ef:g} in FileList.csv is outside 0-100 (EF is a percentage)")
            elif with_masks and tracings.unplaced.get(filename):
                rows = tracings.unplaced[filename]
                self._skip(filename, f"{len(rows)} row(s) in VolumeTracings.csv without a whole-number Frame "
                                     f"({'; '.join(rows[:3])}); the traced frame they belong to is unknown")
            elif with_masks and not self._usable_tracings(filename, tracings.get(filename, {})):
                pass  # _usable_tracings recorded the reason
            else:
                candidates.append((filename, float(ef)))
            seen.add(filename)

        with concurrent.futures.ThreadPoolExecutor(max(1, num_threads)) as pool:
            results = list(pool.map(functools.partial(self._inspect, tracings=tracings, verify=verify),
                                    candidates))  # OpenCV releases the GIL
        self.records: list[_Record] = []
        for record, problem in results:
            if problem:
                self._skip(*problem)
            else:
                self.records.append(record)
        if self.unassigned:
            names = ", ".join(name for name, _ in self.unassigned[:5])
            warnings.warn(f"{self.root / 'FileList.csv'}: {len(self.unassigned)} row(s) in no split (blank or unknown "
                          f"Split, or no FileName), not used: {names}{' ...' if len(self.unassigned) > 5 else ''}. "
                          "See dataset.unassigned.", stacklevel=2)
        if self.skipped:
            reasons = "; ".join(f"{name}: {why}" for name, why in self.skipped[:5])
            more = f" (+{len(self.skipped) - 5} more)" if len(self.skipped) > 5 else ""
            warnings.warn(
                f"EchoNet({self.root}, {'/'.join(splits)}): skipped {len(self.skipped)} video(s), "
                f"kept {len(self.records)}. {reasons}{more}. See dataset.skipped.",
                stacklevel=2,
            )

        if mean is None or std is None:
            mean, std = compute_mean_std(self.root, resize=self.size)
        self.mean, self.std = float(mean), float(std)

    # -- construction helpers ---------------------------------------------------------
    def _inspect(self, item, *, tracings: dict, verify: bool):
        """(record, None) for a usable video, (None, (filename, reason)) for one to skip."""
        filename, ef = item
        path = video_path(self.root, filename)
        traced = sorted(tracings.get(filename, {}))
        try:
            info = probe_video(path, check_end=True) if verify else None
        except TruncatedVideoError as error:
            beyond = [frame for frame in traced if frame >= error.decodable]
            lost = f"; traced frame(s) {beyond} lie beyond the decoded end" if beyond else ""
            return None, (filename, f"truncated video: the container promises {error.promised} frames, only "
                                    f"{error.decodable} decode{lost} (a damaged or incompletely copied file)")
        except VideoReadError as error:
            return None, (filename, f"unreadable video: {error}")
        if info is None and not path.is_file():
            return None, (filename, f"video file missing: {path}")
        needed = self.clip_spec.minimum_frames
        if info is not None and info.num_frames < needed:  # the rule `predict` applies (one rule for all)
            return None, (filename, f"too short: {info.num_frames} frame(s); the clips take {self.clip_length} frames "
                                    f"every {self.period}, and at least half of them must be real video, i.e. "
                                    f">= {needed} frames")
        if info is not None and info.num_frames > 0 and traced and traced[-1] >= info.num_frames:
            beyond = [frame for frame in traced if frame >= info.num_frames]
            return None, (filename, f"traced frame(s) {beyond} in VolumeTracings.csv lie beyond the video's "
                                    f"{info.num_frames} frames")
        outside = tracing_outside_frame(tracings.get(filename, {}), info.width, info.height) if info else None
        if outside:
            return None, (filename, outside)
        height, width = (info.height, info.width) if info else self.size
        return _Record(filename, path, ef, height, width, tracings.get(filename, {}),
                       num_frames=info.num_frames if info else None, fps=info.fps if info else None), None

    def _skip(self, filename: str, reason: str) -> None:
        if self.strict:
            raise DataError(f"{video_path(self.root, filename)}: {reason}")
        self.skipped.append((filename, reason))

    def _usable_tracings(self, filename: str, frames: dict[int, np.ndarray]) -> bool:
        problem = tracing_problem(frames)
        if problem:
            self._skip(filename, problem)
        return not problem

    # -- public helpers ----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    @property
    def filenames(self) -> list[str]:
        return [record.filename for record in self.records]

    @property
    def efs(self) -> np.ndarray:
        return np.array([record.ef for record in self.records], dtype=np.float64)

    def video_summary(self) -> dict:
        """Frame sizes, aspect ratios (width / height), frame rates and lengths of the split's
        videos as probed (min / max; None where not probed): what `predict` compares new
        videos with."""
        def span(values):
            values = [float(value) for value in values if value is not None and value > 0]
            return [min(values), max(values)] if values else None

        return {"videos": len(self.records),
                "frame_sizes": sorted({f"{r.height}x{r.width}" for r in self.records})[:20],
                "aspect": span(r.width / r.height for r in self.records),
                "fps": span(r.fps for r in self.records),
                "num_frames": span(r.num_frames for r in self.records)}

    def intensity_summary(self, samples: int = 32) -> dict:
        """Per-video pixel mean and std (`intensity_statistics`, min / max) over up to
        ``samples`` videos evenly spread over the split (the first always among them); no
        random draw, so training randomness is untouched."""
        chosen = sorted({int(i) for i in np.linspace(0, len(self) - 1, min(samples, len(self)))}) if len(self) else []
        stats = [intensity_statistics(self.frames(index)) for index in chosen]
        return {"intensity_videos": len(stats),
                "intensity_mean": [min(m for m, _ in stats), max(m for m, _ in stats)] if stats else None,
                "intensity_std": [min(s for _, s in stats), max(s for _, s in stats)] if stats else None}

    def frames(self, index: int) -> np.ndarray:
        """The whole decoded video (F, H, W) uint8 at the output size (cached if enabled)."""
        record = self.records[index]
        if self.cache is not None:
            return self.cache.read(record.path, self.size)
        return read_video(record.path, self.size)

    def masks(self, index: int) -> dict:
        """ED/ES LV masks at the output size, from the tracings (ED = larger area).

        A video with a single traced frame uses it as both ED and ES.
        """
        record = self.records[index]
        scale_x, scale_y = self.size[1] / record.width, self.size[0] / record.height
        traced = {}
        for frame, rows in record.tracings.items():
            x1, y1, x2, y2 = (rows[:, column] for column in range(4))
            traced[frame] = trace_mask(x1 * scale_x, y1 * scale_y, x2 * scale_x, y2 * scale_y, *self.size)
        by_area = sorted(traced, key=lambda frame: traced[frame].sum())
        ed_frame, es_frame = by_area[-1], by_area[0]
        return {"ed_frame": ed_frame, "es_frame": es_frame, "ed_mask": traced[ed_frame], "es_mask": traced[es_frame]}

    # -- the item ----------------------------------------------------------------------
    def _clips(self, index: int) -> tuple[torch.Tensor, list[int]]:
        """uint8 clips (K, T, H, W) of a video and their start frames (clip semantics above).

        With the decoded cache the whole video is read (and cached); without it only the
        clip's frames are decoded (`read_frames`): same clips, a fraction of the decode.
        """
        spec = self.clip_spec
        if self.cache is not None:
            return spec.cut(self.frames(index))  # the whole (F, H, W) uint8 video, cached
        chosen: list[int] = []

        def select(num_frames: int) -> np.ndarray:
            chosen[:] = spec.starts(num_frames)
            return spec.frame_indices(chosen)  # (K·T,)

        frames = read_frames(self.records[index].path, select, self.size)  # (K·T, H, W)
        return torch.from_numpy(frames.reshape(len(chosen), self.clip_length, *frames.shape[1:])), list(chosen)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        video, starts = self._clips(index)
        video = video.float().div_(255.0)  # (K, T, H, W) on the [0, 1] scale

        item = {"filename": record.filename, "ef": record.ef, "clip_starts": torch.tensor(starts)}
        masks = self.masks(index) if self.with_masks else None
        if self.augment:
            import torchvision.transforms.functional as TF  # only augmentation needs torchvision

            # One angle for the clip and its masks: they must stay registered.
            angle = float(torch.empty(()).uniform_(-self.rotation_degrees, self.rotation_degrees))
            num_clips, length, height, width = video.shape
            video = TF.rotate(video.reshape(-1, 1, height, width), angle, TF.InterpolationMode.BILINEAR)
            video = video.reshape(num_clips, length, height, width)  # rotation fills with black (0)
            if masks is not None:
                for key in ("ed_mask", "es_mask"):
                    mask = torch.from_numpy(masks[key])[None].float()
                    masks[key] = TF.rotate(mask, angle, TF.InterpolationMode.NEAREST)[0].bool().numpy()
        video = normalise_clips(video, self.mean, self.std)  # (K, 3, T, H, W)
        item["video"] = video if self.clip_spec.multi_clip else video[0]
        if masks is not None:
            lv_mask = masks["ed_mask"] | masks["es_mask"]
            item.update(
                lv_mask=torch.from_numpy(lv_mask),
                ed_mask=torch.from_numpy(masks["ed_mask"]),
                es_mask=torch.from_numpy(masks["es_mask"]),
                background=background_mask(lv_mask, self.feature_size, dilation=self.background_dilation),
                ed_frame=masks["ed_frame"],
                es_frame=masks["es_frame"],
            )
        return item


@functools.lru_cache(maxsize=8)
def _train_mean_std(root: str, size: tuple[int, int], samples: int, seed: int) -> tuple[float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the split's own dataset already reported its skips
        dataset = EchoNet(root, "TRAIN", resize=size, mean=0.0, std=1.0, clips="deterministic", verify=False)
    if len(dataset) == 0:
        raise DataError(f"{root}: no usable TRAIN video to compute the normalisation from; pass mean= and std=")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(dataset), size=min(samples, len(dataset)), replace=False)
    total = total_sq = count = 0.0
    for index in chosen:
        try:
            frames = dataset.frames(int(index)).astype(np.float64) / 255.0
        except VideoReadError as error:
            log.warning("mean/std: skipping %s", error)
            continue
        total += frames.sum()
        total_sq += np.square(frames).sum()
        count += frames.size
    mean = total / count
    return float(mean), float(np.sqrt(total_sq / count - mean**2))


def compute_mean_std(root, *, resize=112, samples: int = 128, seed: int = 0) -> tuple[float, float]:
    """Pixel mean and std on the [0, 1] scale over every frame of up to ``samples`` TRAIN
    videos (EchoNet-Dynamic gives ≈ 0.1289 / 0.1911). Cached per process."""
    return _train_mean_std(str(pathlib.Path(root).resolve()), _pair(resize), samples, seed)


def oversampling_sampler(efs, *, threshold: float = 50.0, generator: torch.Generator | None = None) -> WeightedRandomSampler:
    """A sampler that balances EF < ``threshold`` and EF ≥ ``threshold`` in expectation
    (inverse-frequency weights, with replacement, one epoch = len(efs) draws; docs/method.md §4)."""
    efs = np.asarray(efs, dtype=np.float64)
    low = efs < threshold
    counts = np.array([(~low).sum(), low.sum()], dtype=np.float64)
    if counts.min() == 0:  # one class only: nothing to balance
        weights = np.ones_like(efs)
    else:
        weights = np.where(low, 1.0 / counts[1], 1.0 / counts[0])
    return WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), len(efs), replacement=True, generator=generator)
