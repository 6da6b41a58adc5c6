"""Predict EF for your own echo videos with a trained run (``python -m protoef predict``).

Each video is decoded, resized and normalised exactly as the run's test split was (same
clip length, period, frame size, mean/std, up to ``data.test_clips`` non-overlapping
clips, predictions and β averaged over clips), so a result here is comparable with the
run's test metrics. For ProtoEFNet each row also names the top prototypes, their EF
labels, β and the real training clip each prototype was pushed onto.

Nothing is predicted silently from input unlike the training data. Each row carries the
video's decoded ``frames``, ``fps`` and ``height``/``width`` and the flags ``truncated``
(fewer frames decode than the container promises), ``short`` (shorter than one clip span:
padded with black), ``stretched`` (aspect ratio unlike the training frames') and
``fps_unlike_training`` (outside the training videos' frame-rate range) and
``intensity_unlike_training`` (pixel mean or std far outside the training videos': an
all-black, saturated or pure-noise clip) and, for ProtoEFNet, ``similarity_unlike_training``
(``max_similarity``, its best similarity to any prototype over its clips, is below the
lowest a TRAIN clip reaches: metrics.json ``train_similarity``), each explained in the
``warnings`` text. A video too short to give at least half of a clip's frames
(`minimum_frames`) is refused: its row has an ``error`` and no prediction.
"""
from __future__ import annotations

import logging
import pathlib

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..config import Config
from ..diagnostics import top_prototypes
from ..training import runs
from ..data import minimum_frames as data_minimum_frames
from ..data import VideoReadError, clip_starts, intensity_statistics, gather_clips, normalise_clips, probe_video, read_video

__all__ = ["video_paths", "other_files", "load_video_clips", "predict_videos", "minimum_frames", "training_reference", "video_warnings",
           "similarity_warning"]

# Relative tolerance of the aspect-ratio and frame-rate comparisons with the training videos
# (container rounding, a pixel of cropping).
TOLERANCE = 0.02
# How far (on the [0, 1] pixel scale, at least) a video's pixel mean/std may lie outside the
# training videos' range before it is flagged; half the range's width when that is more.
INTENSITY_MARGIN = 0.05
log = logging.getLogger(__name__)


def video_paths(target) -> list[pathlib.Path]:
    """One AVI, or every ``*.avi`` in a folder (sorted)."""
    target = pathlib.Path(target)
    if target.is_dir():
        paths = sorted(p for p in target.iterdir() if p.suffix.lower() == ".avi")
        if not paths:
            others = sorted(p.name for p in target.iterdir() if p.is_file())
            listed = f" (it holds {', '.join(others[:5])}{' ...' if len(others) > 5 else ''}: convert them to AVI)" if others else ""
            raise FileNotFoundError(f"{target}: no .avi file in this folder{listed}")
        return paths
    if not target.is_file():
        raise FileNotFoundError(f"{target}: no such video file or folder")
    return [target]


def other_files(target) -> list[str]:
    """The names of the files in a folder that `video_paths` does not take (not ``.avi``),
    so that ``predict`` can say what it left out; [] for a single file."""
    target = pathlib.Path(target)
    if not target.is_dir():
        return []
    return sorted(p.name for p in target.iterdir() if p.is_file() and p.suffix.lower() != ".avi")


def minimum_frames(config: Config) -> int:
    """The fewest frames a video needs for a prediction: half of a clip's sampled frames
    must be real video, not black padding."""
    return data_minimum_frames(config.data.clip_length, config.data.period)  # the rule the data sets apply


def training_reference(run_dir) -> dict | None:
    """The training videos' summary a run recorded (environment.json ``training_videos``):
    aspect and frame-rate ranges; None for a run written before it was recorded."""
    run = runs.RunDir(run_dir)
    try:
        reference = run.read_environment().get("training_videos")
    except (OSError, ValueError):
        return None
    if reference is not None:
        try:  # the TRAIN clips' best similarity to the final prototypes (metrics.json, since issue 20)
            similarity = run.read_metrics().get("train_similarity")
        except (OSError, ValueError):
            similarity = None
        if similarity and "minimum" in similarity:
            reference = {**reference, "similarity": similarity}
    return reference


def similarity_warning(max_similarity: float, reference: dict | None) -> dict:
    """The ``similarity_unlike_training`` flag and its note: a video whose best similarity
    to every prototype (max over its clips and the prototypes) is below the lowest the
    TRAIN clips reach is nothing the prototypes know, so β and the EF explain nothing."""
    expected = (reference or {}).get("similarity")
    flagged = bool(expected) and max_similarity < expected["minimum"]
    note = (f"unlike every prototype: best similarity {max_similarity:.3f}, below the lowest a TRAIN clip reaches "
            f"({expected['minimum']:.3f}, over {expected['clips']} clips); the prediction may mean nothing") if flagged else ""
    return {"similarity_unlike_training": flagged, "note": note}


def video_warnings(info, decoded: int, config: Config, reference: dict | None, intensity=None) -> dict:
    """The flag columns and ``warnings`` text of one video (see the module docstring);
    ``intensity``: its (mean, std) by `intensity_statistics`."""
    d = config.data
    span = d.clip_length * d.period
    flags, notes = {}, []
    flags["truncated"] = 0 < decoded < info.num_frames
    if flags["truncated"]:
        notes.append(f"truncated: the container promises {info.num_frames} frames, only {decoded} decode; "
                     "predicted from those")
    flags["short"] = decoded < span
    if flags["short"]:
        notes.append(f"short: {decoded} frames, less than one clip span of {span} ({d.clip_length} frames every "
                     f"{d.period}); the clip is padded with black")
    aspect = info.width / info.height
    expected = (reference or {}).get("aspect")
    flags["stretched"] = bool(expected) and not (expected[0] / (1 + TOLERANCE) <= aspect <= expected[1] * (1 + TOLERANCE))
    if flags["stretched"]:
        notes.append(f"stretched: {info.width}x{info.height} frames (aspect {aspect:.2f}) are resized to {d.resize}x{d.resize}; "
                     f"the training frames had aspect {_range(expected, '.2f')}")
    expected = (reference or {}).get("fps")
    flags["fps_unlike_training"] = bool(expected) and not (
        expected[0] / (1 + TOLERANCE) <= info.fps <= expected[1] * (1 + TOLERANCE))
    if flags["fps_unlike_training"]:
        notes.append(f"frame rate {info.fps:g} fps is outside the training videos' {_range(expected, 'g')} fps: "
                     "the heart moves at another speed per frame than in training")
    far = []
    for index, name in enumerate(("mean", "std")):
        expected = (reference or {}).get(f"intensity_{name}")
        if intensity is not None and expected:
            margin = max(0.5 * (expected[1] - expected[0]), INTENSITY_MARGIN)
            if not expected[0] - margin <= intensity[index] <= expected[1] + margin:
                far.append(f"pixel {name} {intensity[index]:.3f} (training videos {_range(expected, '.3f')})")
    flags["intensity_unlike_training"] = bool(far)
    if far:
        notes.append(f"unlike the training data: {', '.join(far)}; a black, saturated or noise clip or another "
                     "modality? the prediction may mean nothing")
    return {**flags, "warnings": "; ".join(notes)}


def _range(values, spec: str) -> str:
    low, high = values
    return f"{low:{spec}}" if low == high else f"{low:{spec}}-{high:{spec}}"


def load_video_clips(path, config: Config) -> tuple[torch.Tensor, list[int]]:
    """Model input (K, 3, T, H, W) and clip starts for one video, as the test split does it."""
    d = config.data
    frames = read_video(path, (d.resize, d.resize))  # (F, H, W) uint8
    return _clips_of(frames, config)


def _clips_of(frames: np.ndarray, config: Config) -> tuple[torch.Tensor, list[int]]:
    d = config.data
    starts = clip_starts(len(frames), d.clip_length * d.period, d.test_clips)
    clips = gather_clips(frames, starts, d.clip_length, d.period).float().div_(255.0)
    return normalise_clips(clips, d.mean, d.std), starts


@torch.no_grad()
def predict_videos(model, config: Config, paths, *, explain_dir=None, prototype_dir=None,
                   reference: dict | None = None) -> pd.DataFrame:
    """One row per video: prediction and, for ProtoEFNet, the top-3 prototypes, with the
    video's checks (module docstring; ``reference``: `training_reference` of the run, else
    aspect and frame rate are not compared).

    Unreadable or too short videos get a row with ``error`` set instead of stopping the
    whole batch. With ``explain_dir`` (ProtoEFNet only), one explanation PNG per video is
    written there.
    """
    if config.data.mean is None or config.data.std is None:
        raise ValueError("the run's config has no data.mean/std; was it written by protoef.training.lifecycle.fit?")
    device = next(model.parameters()).device
    prototypes = _prototype_table(prototype_dir)
    rows = []
    for path in tqdm(list(paths), desc="predict", dynamic_ncols=True):
        row = {"filename": pathlib.Path(path).name}
        try:
            info = probe_video(path)
            frames = read_video(path, (config.data.resize, config.data.resize))  # (F, H, W) uint8
        except VideoReadError as error:
            log.warning("skipping %s", error)
            rows.append({**row, "error": str(error)})
            continue
        row.update(frames=len(frames), fps=info.fps, height=info.height, width=info.width,
                   **video_warnings(info, len(frames), config, reference, intensity_statistics(frames)))
        if len(frames) < minimum_frames(config):
            error = (f"{path}: too short to predict: {len(frames)} frame(s); the run's clips take {config.data.clip_length} "
                     f"frames every {config.data.period}, and at least half of them must be real video, i.e. "
                     f">= {minimum_frames(config)} frames")
            log.warning("skipping %s", error)
            rows.append({**row, "error": error})
            continue
        video, starts = _clips_of(frames, config)
        output = model(video.to(device))
        row["num_clips"] = len(starts)
        row["prediction"] = float(output.ef.mean())
        if "weights" not in output.per_clip():  # a model without prototypes has nothing more to say
            rows.append(row)
            continue
        weights = output.weights.mean(0).cpu().numpy()  # (P,) averaged over clips
        row["max_similarity"] = float(output.similarities.amax())
        similarity = similarity_warning(row["max_similarity"], reference)
        row["similarity_unlike_training"] = similarity["similarity_unlike_training"]
        if similarity["note"]:
            row["warnings"] = "; ".join(note for note in (row["warnings"], similarity["note"]) if note)
        top = top_prototypes(weights[None], model.prototype_labels.cpu().numpy())  # the columns of predictions.csv
        for rank in (1, 2, 3):
            j = int(top[f"top{rank}_prototype"][0])
            row |= {f"top{rank}_prototype": j, f"top{rank}_label": float(top[f"top{rank}_label"][0]),
                    f"top{rank}_beta": float(top[f"top{rank}_beta"][0])}
            if prototypes is not None:
                row[f"top{rank}_source"] = prototypes.loc[j, "source_filename"]
        rows.append(row)
        if explain_dir is not None:
            _save_explanation(model, video, starts, path, explain_dir, prototype_dir, config)
    table = pd.DataFrame(rows)
    first = [column for column in ("filename", "prediction", "error", "warnings") if column in table]
    return table[first + [column for column in table if column not in first]]


def _prototype_table(prototype_dir):
    if prototype_dir is None:
        return None
    run = runs.RunDir.containing(prototype_dir)
    return pd.read_csv(run.prototypes_table_file).set_index("prototype") if run.has_prototypes else None


def _save_explanation(model, video, starts, path, explain_dir, prototype_dir, config) -> None:
    """One PNG: the video's first clip with the maps of its top prototypes, beside each
    prototype's source training clip (read from the run's data root when it is present)."""
    try:  # a figure problem must not lose the predictions
        from .explain import explain_clip, plot_local_explanation
        from .plots import save_figure

        frames = read_video(path, (config.data.resize, config.data.resize))
        first_clip = gather_clips(frames, starts[:1], config.data.clip_length, config.data.period)[0].numpy()
        explanation = explain_clip(model, video[0], frames=first_clip, clip_start=starts[0], period=config.data.period)
        explanation["filename"] = pathlib.Path(path).name
        source = _training_root(config)
        run_dir = runs.RunDir.containing(prototype_dir) if prototype_dir is not None else None
        figure = plot_local_explanation(explanation, run_dir, source=source)
        save_figure(figure, pathlib.Path(explain_dir) / f"{pathlib.Path(path).stem}.png")
    except Exception as error:  # noqa: BLE001
        log.warning("no explanation figure for %s: %s", path, error)


def _training_root(config: Config):
    """The run's data root if it is on this machine (prototype source clips live there)."""
    from ..training.build import synthetic_root

    root = pathlib.Path(config.data.root) if config.data.root else synthetic_root(config)
    return root if (root / "FileList.csv").is_file() else None
