"""Explanations (docs/method.md §6): occurrence maps on frames, the prototype gallery and local
explanations. Localisation (IoU against LV masks, Grad-CAM) lives in `protoef.localization`,
embeddings in `protoef.embeddings`.

Conventions
- A clip is ``clip_length`` frames taken every ``period`` frames from ``clip_start``, zero
  padded past the end of the video: the EchoNet data set's own semantics.
- The T' time slots of a map split the clip into equal consecutive segments (slot s covers
  clip frames [s·T/T', (s+1)·T/T')), as `F.interpolate(..., align_corners=False)` assumes.
"""
from __future__ import annotations

import logging
import math
import pathlib

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from . import plots
from .plots import overlay
from ..data.echonet import EchoNet, gather_clips, normalise_clips
from ..data.video import read_video
from ..model import ProtoEFNet, eval_mode
from ..training import runs

__all__ = [
    "upsample_maps", "take_clip", "clip_frames", "model_input", "prototype_maps", "push_dataset",
    "save_prototype_gallery", "explain_clip", "explain_video", "plot_local_explanation",
]
log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- maps and frames

def upsample_maps(occurrence_maps, size):
    """(…, T', H', W') → (…, T, H, W), trilinear (align_corners=False). Each output value is a
    convex combination of inputs, so maps in [0, 1] stay in [0, 1]. numpy in → numpy out."""
    as_numpy = not isinstance(occurrence_maps, Tensor)
    maps = torch.as_tensor(np.asarray(occurrence_maps) if as_numpy else occurrence_maps).float()
    size = tuple(int(s) for s in size)
    flat = maps.reshape(-1, 1, *maps.shape[-3:])
    out = F.interpolate(flat, size=size, mode="trilinear", align_corners=False).reshape(*maps.shape[:-3], *size)
    return out.numpy() if as_numpy else out


def take_clip(frames: np.ndarray, clip_start: int, clip_length: int, period: int) -> np.ndarray:
    """(F, H, W) → (T, H, W): frames clip_start + k·period, black past the end of the video."""
    return gather_clips(frames, [int(clip_start)], clip_length, int(period))[0].numpy()


def _video(dataset, filename: str) -> np.ndarray:
    """Whole video (F, H, W) uint8 at the data set's size; files of other splits of the same
    root are read from ``root/Videos``."""
    names = {name: i for i, name in enumerate(dataset.filenames)}
    if filename in names:
        return dataset.frames(names[filename])
    return read_video(pathlib.Path(dataset.root) / "Videos" / filename, dataset.size)


def clip_frames(dataset, filename: str, clip_start: int, *, clip_length: int | None = None,
                period: int | None = None) -> np.ndarray:
    """Raw uint8 frames (T, H, W) of one clip of `filename`, with the data set's clip length,
    period, size and zero padding (the frames the model saw, before normalisation)."""
    return take_clip(_video(dataset, filename), clip_start, clip_length or dataset.clip_length,
                     period or dataset.period)


def model_input(frames: np.ndarray, dataset) -> Tensor:
    """uint8 (T, H, W) → the model input (3, T, H, W), as EchoNet.__getitem__ builds it."""
    clip = torch.from_numpy(np.ascontiguousarray(frames))[None].float() / 255.0  # (1, T, H, W)
    return normalise_clips(clip, dataset.mean, dataset.std)[0]


# --------------------------------------------------------------------------- prototype gallery

def prototype_maps(run_dir) -> tuple[pd.DataFrame, dict[int, np.ndarray]]:
    """A run's prototypes table and each prototype's stored occurrence map (T', H', W')
    (`runs.RunDir.read_prototypes`). `run_dir` may be the run or its ``prototypes/`` folder."""
    table, artefacts = runs.RunDir.containing(run_dir).read_prototypes()
    return table, {prototype: artefact["occurrence_map"] for prototype, artefact in artefacts.items()}


def push_dataset(run_dir, *, data=None) -> EchoNet:
    """The TRAIN split a run pushed its prototypes onto, with the run's clip length, period,
    size and normalisation (from its ``config.json``). ``data`` replaces the run's data root
    (a run trained elsewhere); a synthetic set is regenerated if it is missing."""
    from ..config import from_dict
    from ..training.build import split_dataset

    config = from_dict(runs.RunDir(run_dir).read_config())
    if data is not None:
        config.data.root = str(data)
    return split_dataset(config, "TRAIN", clips="deterministic")


def save_prototype_gallery(run_dir, dataset=None, *, frames_per_strip: int = 8, gif: bool = True,
                           alpha: float = 0.5) -> list[pathlib.Path]:
    """Per prototype ``prototype_XX.png`` (its source clip's frames with the upsampled map
    overlaid; title: EF label, similarity, source) and ``prototype_XX.gif`` (every clip frame),
    plus ``gallery.png``: all prototypes sorted by EF label, each at the clip frame where its
    map is strongest, all in the run's ``prototypes/`` folder. `dataset`: an EchoNet over the
    root holding the source videos, with the training clip length and period; None builds
    `push_dataset` from the run's config. Returns the paths written. A missing source video
    gives a map-only strip and a warning.

    Not part of training (nothing plots inside a run): notebook 08 and ``python -m protoef
    gallery RUN`` call it. ~0.3 s per prototype on a CPU core."""
    run = runs.RunDir.containing(run_dir)
    if dataset is None:
        dataset = push_dataset(run)
    table, maps = prototype_maps(run)
    written, cells = [], []
    for row in table.itertuples():
        j = int(row.prototype)
        try:
            frames = clip_frames(dataset, row.source_filename, int(row.clip_start))
        except Exception as error:  # noqa: BLE001 - a missing video must not lose the other strips
            log.warning("prototype %d: source clip %s unavailable (%s)", j, row.source_filename, error)
            frames = np.zeros((dataset.clip_length, *dataset.size), np.uint8)
        heat = upsample_maps(maps[j], frames.shape)
        rgb = overlay(frames, heat, alpha=alpha)
        picks = plots.frame_picks(len(frames), frames_per_strip)
        first = int(row.clip_start)
        title = (f"prototype {j:02d} · EF label {row.ef_label:.1f}% · similarity {row.similarity:.3f}"
                 f"{' · fallback' if bool(getattr(row, 'fallback', False)) else ''}\n"
                 f"{row.source_filename}, clip from frame {first}")
        figure = plots.image_strip(list(rgb[picks]), titles=[f"frame {first + k * dataset.period}" for k in picks],
                                   suptitle=title)
        written.append(plots.save_figure(figure, run.prototype_file(j, ".png")))
        if gif:
            plots.save_gif(rgb, run.prototype_file(j, ".gif"))
            written.append(run.prototype_file(j, ".gif"))
        peak = int(heat.reshape(len(heat), -1).mean(axis=1).argmax())
        cells.append((float(row.ef_label), j, rgb[peak]))
    cells.sort(key=lambda cell: (cell[0], cell[1]))
    figure = plots.image_grid([image for *_, image in cells], titles=[f"#{j} · EF {ef:.1f}" for ef, j, _ in cells],
                              ncols=min(8, max(1, math.ceil(math.sqrt(len(cells))))),
                              suptitle="Prototypes by EF label (frame of strongest occurrence)")
    written.append(plots.save_figure(figure, run.gallery_file))
    return written


# --------------------------------------------------------------------------- local explanation

@torch.no_grad()
def explain_clip(model: ProtoEFNet, video: Tensor, *, top: int = 3, frames: np.ndarray | None = None,
                 clip_start: int = 0, period: int = 1) -> dict:
    """Explain one normalised clip `video` (3, T, H, W). Returns a dict with
    ``prediction`` (= Σ_k β_k l_k), ``weights`` β (P,), ``similarities`` (P,), ``labels`` (P,),
    ``top``: list of {rank, prototype, label, beta, similarity} by decreasing β,
    ``maps`` (top, T', H', W'): this clip's occurrence maps of those prototypes,
    ``frames`` (T, H, W) uint8 for display (min–max of the input when not given), and
    ``clip_start``, ``period``, ``clip_length`` (frame captions; `period` must be the training
    one, it is also used to cut the prototypes' source clips in `plot_local_explanation`)."""
    video = video[0] if video.dim() == 5 and len(video) == 1 else video
    with eval_mode(model):
        output = model(video.unsqueeze(0).to(next(model.parameters()).device))
    weights = output.weights[0].double().cpu().numpy()
    similarities = output.similarities[0].double().cpu().numpy()
    labels = model.prototype_labels.double().cpu().numpy()
    order = np.argsort(-weights, kind="stable")[:top]
    if frames is None:
        channel = video[0].float().cpu().numpy()
        frames = np.rint(255 * (channel - channel.min()) / max(float(np.ptp(channel)), 1e-12)).astype(np.uint8)
    return {
        "prediction": float(output.ef[0]),
        "weights": weights, "similarities": similarities, "labels": labels,
        "top": [{"rank": r + 1, "prototype": int(j), "label": float(labels[j]), "beta": float(weights[j]),
                 "similarity": float(similarities[j])} for r, j in enumerate(order)],
        "maps": output.occurrence_maps[0, torch.as_tensor(order)].float().cpu().numpy(),
        "frames": frames, "clip_length": int(video.shape[1]), "clip_start": int(clip_start), "period": int(period),
    }


def explain_video(model: ProtoEFNet, dataset, index: int, *, top: int = 3, clip_start: int | None = None) -> dict:
    """`explain_clip` on one clip of video `index` of an EchoNet data set, plus ``filename``,
    ``ef_true``, ``index``. The clip starts at `clip_start`, or at
    frame 0 (the data set's deterministic clip; never a random one). A multi-clip test-time
    prediction averages several clips: this explains one of them."""
    start = 0 if clip_start is None else int(clip_start)
    frames = take_clip(dataset.frames(index), start, dataset.clip_length, dataset.period)
    explanation = explain_clip(model, model_input(frames, dataset), top=top, frames=frames, clip_start=start,
                               period=dataset.period)
    explanation.update(filename=dataset.filenames[index], ef_true=float(dataset.records[index].ef), index=int(index))
    return explanation


def _source_frames(source, filename: str, start: int, length: int, period: int, size) -> np.ndarray | None:
    try:
        if source is None:
            return None
        if hasattr(source, "filenames"):  # an EchoNet data set over the prototypes' root
            return clip_frames(source, filename, start, clip_length=length, period=period)
        return take_clip(read_video(pathlib.Path(source) / "Videos" / filename, size), start, length, period)
    except Exception as error:  # noqa: BLE001 - show the map alone
        log.warning("prototype source clip %s unavailable: %s", filename, error)
        return None


def plot_local_explanation(explanation: dict, run_dir=None, *, source=None, frames: int = 4, alpha: float = 0.5):
    """Figure: one row per top prototype; left, the input clip with that prototype's map on it;
    right, the prototype's own source clip with its stored map (from ``run_dir/prototypes``).
    `source`: an EchoNet data set (any split of the training root) or the data-root path,
    to read the prototypes' source clips; None (or a missing file) shows the map alone."""
    clip = explanation["frames"]
    length, size = len(clip), clip.shape[1:]
    period = int(explanation.get("period", 1))
    table, proto_maps = prototype_maps(run_dir) if run_dir is not None else (None, {})
    picks = plots.frame_picks(length, frames)
    start = int(explanation.get("clip_start", 0))
    rows = []
    for entry, video_map in zip(explanation["top"], explanation["maps"]):
        j = entry["prototype"]
        left = overlay(clip, upsample_maps(video_map, clip.shape), alpha=alpha)[picks]
        row = {"left": list(left), "left_labels": [f"frame {start + k * period}" for k in picks],
               "left_title": f"input · prototype {j} · β {entry['beta']:.2f} · s {entry['similarity']:.2f}",
               "right": None, "right_title": f"prototype {j}: not in run directory"}
        if table is not None and j in proto_maps:
            info = table.set_index("prototype").loc[j]
            source_start = int(info["clip_start"])
            proto_clip = _source_frames(source, info["source_filename"], source_start, length, period, size)
            heat = upsample_maps(proto_maps[j], (length, *size))
            if proto_clip is None:
                right = list(np.rint(255 * plots.colour_map(heat[picks])).astype(np.uint8))
            else:
                right = list(overlay(proto_clip, heat, alpha=alpha)[picks])
            row.update(right=right, right_labels=[f"frame {source_start + k * period}" for k in picks],
                       right_title=f"prototype {j} · EF label {entry['label']:.1f}% · {info['source_filename']}")
        rows.append(row)
    truth = f" (true {explanation['ef_true']:.1f}%)" if "ef_true" in explanation else ""
    name = explanation.get("filename", "input clip")
    return plots.paired_rows(rows, suptitle=f"{name}: predicted EF {explanation['prediction']:.1f}%{truth}")
