"""The EchoNet-Dynamic data set: ``FileList.csv`` + ``VolumeTracings.csv`` + ``Videos/*.avi``.

Clip semantics (docs/method.md §5). A clip is ``clip_length`` frames taken every ``period`` frames,
so it spans ``clip_length·period`` frames of the video.

- ``clips="random"``: one clip with a uniformly random start (training);
- ``clips="deterministic"``: one clip starting at frame 0 (validation; same every epoch);
- ``clips=N`` (int): up to N non-overlapping clips, starts 0, s, 2s, … and the last one
  aligned to the end of the video (s = the span); ``clips="all"``: every such clip.
  The video tensor then has a leading clip dimension, (K, 3, T, H, W);
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

from .filelist import SPLITS, DataError, Tracings, read_file_list, read_volume_tracings, unassigned_rows
from .tracings import background_mask, trace_mask, tracing_outside_frame, tracing_problem
from .video import (TruncatedVideoError, VideoCache, VideoReadError, intensity_statistics, probe_video, read_frames,
                    read_video)

__all__ = [
    "EchoNet",
    "clip_starts",
    "minimum_frames",
    "compute_mean_std",
    "gather_clips",
    "normalise_clips",
    "oversampling_sampler",
    "collate_clips",
]

log = logging.getLogger(__name__)


def minimum_frames(clip_length: int, period: int) -> int:
    """The fewest frames a video needs to be used (trained on, evaluated or predicted):
    half of a clip's sampled frames must be real video, not black padding."""
    return (-(-int(clip_length) // 2) - 1) * int(period) + 1


def clip_starts(num_frames: int, span: int, clips, *, generator: torch.Generator | None = None) -> list[int]:
    """Start frames of the clips of a ``num_frames`` video (see the module docstring)."""
    last = max(num_frames - span, 0)  # short videos: one clip at 0, padded
    if clips == "random":
        return [int(torch.randint(0, last + 1, (1,), generator=generator))]
    if clips == "deterministic":
        return [0]
    if clips == "all" or (isinstance(clips, int) and not isinstance(clips, bool) and clips >= 1):
        count = max(1, num_frames // span)
        if clips != "all":
            count = min(count, clips)
        # count·span <= num_frames, so the end-aligned last clip cannot overlap the others.
        return [index * span for index in range(count - 1)] + [last]
    raise ValueError(f"clips must be 'random', 'deterministic', 'all' or a positive int, got {clips!r}")


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
        clip_starts(self.clip_length * self.period, self.clip_length * self.period, clips)  # validates
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
        if len(table) and not (self.root / "Videos").is_dir():
            raise DataError(f"{self.root / 'Videos'}: no such folder; an EchoNet-Dynamic root holds the videos named in "
                            "FileList.csv in Videos/ (see README, 'Data')")
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
        path = self.root / "Videos" / filename
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
        needed = minimum_frames(self.clip_length, self.period)
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
            raise DataError(f"{self.root / 'Videos' / filename}: {reason}")
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
        span = self.clip_length * self.period
        if self.cache is not None:
            frames = self.frames(index)  # (F, H, W) uint8
            starts = clip_starts(len(frames), span, self.clips)
            return gather_clips(frames, starts, self.clip_length, self.period), starts
        chosen: list[int] = []

        def select(num_frames: int) -> np.ndarray:
            chosen[:] = clip_starts(num_frames, span, self.clips)
            return (np.asarray(chosen)[:, None] + np.arange(self.clip_length) * self.period).ravel()  # (K·T,)

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
        item["video"] = video if self._multi_clip else video[0]
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

    @property
    def _multi_clip(self) -> bool:
        return self.clips not in ("random", "deterministic")


def collate_clips(items: list[dict]) -> dict:
    """Batch multi-clip items: ``video`` (ΣK, 3, T, H, W) plus ``num_clips`` (N,) to average
    per-video predictions back; the other fields are batched as the default collate does."""
    batch = torch.utils.data.default_collate([{k: v for k, v in item.items() if k not in ("video", "clip_starts")} for item in items])
    batch["video"] = torch.cat([item["video"] for item in items])
    batch["num_clips"] = torch.tensor([len(item["video"]) for item in items])
    batch["clip_starts"] = [item["clip_starts"] for item in items]
    return batch


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
