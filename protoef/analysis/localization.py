"""Where the models look, against where the LV is (docs/method.md §6): occurrence-map IoU with
the traced LV masks, and Grad-CAM of the black-box baseline for the same comparison.

Conventions
- IoU (`occurrence_iou`): each map is upsampled **bilinearly in space** to the frame size and
  the **nearest time slot** to the traced frame is taken; then thresholded by
  - ``"top"`` (default): keep the top-q fraction of pixels, q = the LV's area fraction in
    that frame (so prediction and mask have the same area; Dice = 2·IoU / (1 + IoU)) or a fixed
    ``fraction``; exactly round(q·H·W) pixels are kept, ties broken by position;
  - ``"otsu"``: keep pixels above `skimage.filters.threshold_otsu` of the slice;
  - a number: keep pixels ≥ that value.
- Dataset tables choose, per video, a clip that covers **both** traced frames (ED and ES),
  centred on their midpoint so they sit away from the clip's zero-padded temporal borders;
  when they are further apart than a clip spans, one clip is centred on each
  (`covering_clip_start`). The data set's own ``clips`` mode is therefore not used there.
- Grad-CAM (`gradcam`): default layer = the black box's ``layer4`` (output of its last
  block, the one the pooling and fc read: the standard Grad-CAM choice); `matching_gradcam_layer`
  names the block whose output has the spatial size of ProtoEFNet's maps (layer3 at output
  stride 8, layer2 at output stride 4), for a comparison at the same resolution.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .explain import model_input, take_clip
from ..model import BlackBoxRegressor, ProtoEFNet, eval_mode

__all__ = [
    "threshold_map", "mask_iou", "occurrence_iou", "localization_scores", "covering_clip_start", "occurrence_iou_table",
    "gradcam", "gradcam_iou_table", "BLACKBOX_BLOCKS", "matching_gradcam_layer",
]

BLACKBOX_BLOCKS = ("layer1", "layer2", "layer3", "layer4")  # the black box's residual stages, input side first


# --------------------------------------------------------------------------- IoU with the LV

def threshold_map(heat: np.ndarray, *, threshold="top", fraction: float | None = None) -> np.ndarray:
    """(H, W) scores → bool mask by one of the rules in the module docstring."""
    heat = np.asarray(heat, dtype=np.float64)
    if threshold == "top":
        if fraction is None:
            raise ValueError("threshold='top' needs a fraction (the LV area fraction, or a fixed q)")
        keep = int(round(float(fraction) * heat.size))
        mask = np.zeros(heat.size, bool)
        mask[np.argsort(-heat.ravel(), kind="stable")[:keep]] = True
        return mask.reshape(heat.shape)
    if threshold == "otsu":
        from skimage.filters import threshold_otsu

        if np.ptp(heat) == 0:
            return np.zeros(heat.shape, bool)  # nothing stands out
        # skimage returns the centre of the last background bin of its 256-bin histogram; its
        # variance criterion splits at that bin's upper edge, so cut there (half a bin higher).
        return heat > threshold_otsu(heat, nbins=256) + np.ptp(heat) / 512
    if isinstance(threshold, (int, float)) and not isinstance(threshold, bool):
        return heat >= threshold
    raise ValueError(f"threshold must be 'top', 'otsu' or a number, got {threshold!r}")


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """|a ∩ b| / |a ∪ b| of two bool masks; NaN when both are empty."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else math.nan


def _time_slot(frame: int, *, clip_start: int, clip_length: int, period: int, slots: int) -> int | None:
    """Map slot of video frame `frame` (nearest sampled frame, then its slot); None outside the clip."""
    position = (frame - clip_start) / period
    if not -0.5 <= position < clip_length - 0.5:
        return None
    position = math.floor(position + 0.5)
    return min(int((position + 0.5) * slots / clip_length), slots - 1)


def localization_scores(occurrence_maps, lv_masks, frame_indices, *, clip_start: int, clip_length: int,
                        period: int = 1, threshold="top", fraction: float | None = None) -> dict[str, np.ndarray]:
    """How well each map of one clip finds the LV at each traced frame, three ways (module docstring):

    - ``iou``: IoU of the thresholded map with the LV mask;
    - ``mass_share``: the share of the (upsampled, non-negative) map's mass inside the LV mask;
      a map spread evenly over the frame scores the LV's area fraction;
    - ``pointing``: 1.0 when the map's maximum pixel lies inside the LV, else 0.0 (the pointing
      game; first maximum in row-major order on ties).

    occurrence_maps (P, T', H', W') (or (T', H', W')), non-negative scores of any scale;
    lv_masks (K, H, W) bool (or (H, W)); frame_indices (K,) video frame of each mask (or an int).
    Each value is (P, K) (or (P,) for a single mask); NaN where the frame is outside the clip.
    """
    maps = np.asarray(occurrence_maps, dtype=np.float32)
    maps = maps[None] if maps.ndim == 3 else maps
    masks = np.asarray(lv_masks, dtype=bool)
    single = masks.ndim == 2
    masks, frames = (masks[None], [int(frame_indices)]) if single else (masks, [int(f) for f in frame_indices])
    scores = {name: np.full((len(maps), len(masks)), np.nan) for name in ("iou", "mass_share", "pointing")}
    for k, (mask, frame) in enumerate(zip(masks, frames)):
        slot = _time_slot(frame, clip_start=clip_start, clip_length=clip_length, period=period, slots=maps.shape[1])
        if slot is None:
            continue
        heat = F.interpolate(torch.from_numpy(np.ascontiguousarray(maps[:, slot]))[:, None], size=mask.shape,
                             mode="bilinear", align_corners=False)[:, 0].numpy()  # (P, H, W)
        q = mask.mean() if fraction is None else fraction
        for p in range(len(maps)):
            scores["iou"][p, k] = mask_iou(threshold_map(heat[p], threshold=threshold, fraction=q), mask)
            total = float(heat[p].clip(min=0).sum())
            scores["mass_share"][p, k] = float(heat[p].clip(min=0)[mask].sum()) / total if total > 0 else math.nan
            scores["pointing"][p, k] = float(mask.ravel()[int(np.argmax(heat[p]))])
    return {name: value[:, 0] for name, value in scores.items()} if single else scores


def occurrence_iou(occurrence_maps, lv_masks, frame_indices, *, clip_start: int, clip_length: int,
                   period: int = 1, threshold="top", fraction: float | None = None) -> np.ndarray:
    """The ``iou`` of `localization_scores`: (P, K) (or (P,) for a single mask), NaN outside the clip."""
    return localization_scores(occurrence_maps, lv_masks, frame_indices, clip_start=clip_start, clip_length=clip_length,
                               period=period, threshold=threshold, fraction=fraction)["iou"]


def covering_clip_start(num_frames: int, frames, *, clip_length: int, period: int = 1) -> int:
    """Start of a clip that contains every frame in `frames`, centred on their midpoint
    (clamped to the video; aligned so the first frame is sampled when the period allows).
    Raises ValueError when they are further apart than one clip reaches."""
    low, high = min(frames), max(frames)
    reach = (clip_length - 1) * period  # distance from the first to the last sampled frame
    if high - low > reach:
        raise ValueError(f"frames {low} and {high} do not fit in one clip of {clip_length}×{period}")
    lower, upper = max(high - reach, 0), max(min(low, num_frames - 1 - reach), 0)
    start = min(max(int(math.floor((low + high - reach) / 2 + 0.5)), lower), upper)
    offset = (low - start) % period  # shift so that `low` is a sampled frame, if the bounds allow
    for aligned in sorted((start + offset, start + offset - period), key=lambda s: abs(s - start)):
        if lower <= aligned <= upper:
            return aligned
    return start


def _iou_table(map_fn, dataset, *, method: str, threshold, fraction, batch_size: int, progress: bool) -> pd.DataFrame:
    from tqdm.auto import tqdm

    if not getattr(dataset, "with_masks", False):
        raise ValueError("the IoU tables need the LV tracings: build the data set with with_masks=True")
    length, period = dataset.clip_length, dataset.period
    rows, pending = [], []

    def flush():
        maps = map_fn(torch.stack([model_input(clip, dataset) for _, _, clip, _ in pending]))  # (B, P, T', H', W')
        for (filename, start, _, traced), clip_maps in zip(pending, maps):
            scores = localization_scores(clip_maps, np.stack([m for _, _, m in traced]), [f for _, f, _ in traced],
                                         clip_start=start, clip_length=length, period=period, threshold=threshold,
                                         fraction=fraction)
            for k, (kind, frame, mask) in enumerate(traced):
                rows.extend({"method": method, "filename": filename, "prototype": p, "frame": kind, "frame_index": frame,
                             "clip_start": start, "lv_fraction": float(mask.mean()), "iou": scores["iou"][p, k],
                             "lv_mass_share": scores["mass_share"][p, k], "pointing_hit": scores["pointing"][p, k]}
                            for p in range(len(clip_maps)))
        pending.clear()

    for index in tqdm(range(len(dataset)), desc=f"{method} IoU", leave=False, disable=not progress):
        video, masks = dataset.frames(index), dataset.masks(index)
        traced = [("ED", masks["ed_frame"], masks["ed_mask"]), ("ES", masks["es_frame"], masks["es_mask"])]
        try:
            groups = [(covering_clip_start(len(video), [t[1] for t in traced], clip_length=length, period=period), traced)]
        except ValueError:  # ED and ES too far apart: one clip for each
            groups = [(covering_clip_start(len(video), [t[1]], clip_length=length, period=period), [t]) for t in traced]
        for start, group in groups:
            pending.append((dataset.filenames[index], start, take_clip(video, start, length, period), group))
            if len(pending) == batch_size:
                flush()
    if pending:
        flush()
    return pd.DataFrame(rows, columns=["method", "filename", "prototype", "frame", "frame_index", "clip_start", "lv_fraction",
                                       "iou", "lv_mass_share", "pointing_hit"])


def occurrence_iou_table(model: ProtoEFNet, dataset, *, threshold="top", fraction: float | None = None,
                         batch_size: int = 8, progress: bool = True) -> pd.DataFrame:
    """IoU of every prototype's occurrence map with the LV mask at the traced ED and ES frames
    of every video of `dataset` (built with ``with_masks=True``; its clip length and period
    are used, the clip start is chosen by `covering_clip_start`). One row per video, traced
    frame and prototype: method, filename, prototype, frame ("ED"/"ES"), frame_index,
    clip_start, lv_fraction, iou, lv_mass_share, pointing_hit (`localization_scores`). Summaries: ``table.groupby(["prototype", "frame"]).iou.mean()``."""
    device = next(model.parameters()).device

    @torch.no_grad()
    def maps(video):
        return model.occurrence(video.to(device)).float().cpu().numpy()

    with eval_mode(model):
        return _iou_table(maps, dataset, method="occurrence", threshold=threshold, fraction=fraction,
                          batch_size=batch_size, progress=progress)


# --------------------------------------------------------------------------- Grad-CAM

def _resolve_layer(model: nn.Module, layer) -> nn.Module:
    if isinstance(layer, nn.Module):
        return layer
    if layer is None:
        if isinstance(model, BlackBoxRegressor):
            return model.network.layer4
        if isinstance(model, ProtoEFNet):
            return model.backbone[-1]  # its last stage: layer3, or layer2 (model.feature_stage)
        raise ValueError(f"no default Grad-CAM layer for {type(model).__name__}; pass layer=")
    for root in (model, getattr(model, "network", None), getattr(model, "backbone", None)):
        try:
            return root.get_submodule(layer)
        except (AttributeError, TypeError):
            continue
    raise ValueError(f"{type(model).__name__} has no submodule {layer!r}")


def gradcam(model: nn.Module, video: Tensor, *, layer=None, normalize: bool = True, absolute: bool = False) -> Tensor:
    """Grad-CAM of a regressor's output (the predicted EF) at a conv layer: (N, 3, T, H, W)
    (or (3, T, H, W)) → (N, T', H', W') non-negative maps, detached, on the input's device.

    A forward hook keeps the layer's output A (N, C, T', H', W'); the channel weights are the
    gradient of ŷ w.r.t. A averaged over (t, h, w); map = ReLU(Σ_c w_c A_c) (|·| with
    ``absolute``: regions that lower the EF count too). ``normalize`` scales each map to max 1.
    `layer`: a module or a dotted name ("layer3", "network.layer4.0"); default in the
    module docstring. Parameters' .grad are untouched; the model's train/eval mode is restored."""
    batched = video.dim() == 5
    video = video if batched else video.unsqueeze(0)
    module, captured = _resolve_layer(model, layer), {}
    handle = module.register_forward_hook(lambda _m, _i, output: captured.__setitem__("activation", output))
    try:
        with eval_mode(model), torch.enable_grad():
            x = video.detach().clone().requires_grad_(True)  # so A needs a gradient even with frozen weights
            output = model(x)
            output = output[0] if isinstance(output, tuple) else output  # ProtoEFNet: its EF
            activation = captured["activation"]
            (gradient,) = torch.autograd.grad(output.sum(), activation)
    finally:
        handle.remove()
    weights = gradient.mean(dim=(2, 3, 4), keepdim=True)
    cam = (weights * activation).sum(dim=1).detach()
    cam = cam.abs() if absolute else cam.clamp_min(0)
    if normalize:
        cam = cam / cam.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return cam if batched else cam[0]


def gradcam_iou_table(model: nn.Module, dataset, *, layer=None, threshold="top", fraction: float | None = None,
                      absolute: bool = False, batch_size: int = 8, progress: bool = True,
                      method: str | None = None) -> pd.DataFrame:
    """`occurrence_iou_table` for the Grad-CAM map (one map per clip: prototype = 0;
    method = "gradcam", or "gradcam <layer>" when a layer name is given)."""
    method = method or ("gradcam" if layer is None or not isinstance(layer, str) else f"gradcam {layer}")
    device = next(model.parameters()).device

    def maps(video):
        return gradcam(model, video.to(device), layer=layer, absolute=absolute)[:, None].float().cpu().numpy()

    return _iou_table(maps, dataset, method=method, threshold=threshold, fraction=fraction,
                      batch_size=batch_size, progress=progress)


def matching_gradcam_layer(blackbox: nn.Module, map_size: tuple[int, int], video: Tensor) -> str:
    """The black box's block (`BLACKBOX_BLOCKS`, deepest first) whose output's (H', W') is
    `map_size`, e.g. ProtoEFNet's occurrence maps' ``maps.shape[-2:]``, found by running
    `video` (N, 3, T, H, W) through it once. ValueError when no block has that size."""
    sizes, handles = {}, []
    for name in BLACKBOX_BLOCKS:
        handles.append(_resolve_layer(blackbox, name).register_forward_hook(
            lambda _m, _i, output, name=name: sizes.__setitem__(name, tuple(output.shape[-2:]))))
    try:
        with eval_mode(blackbox), torch.no_grad():
            blackbox(video)
    finally:
        for handle in handles:
            handle.remove()
    matching = [name for name in reversed(BLACKBOX_BLOCKS) if sizes[name] == tuple(map_size)]
    if not matching:
        raise ValueError(f"no black-box block has {tuple(map_size)} maps: {sizes}")
    return matching[0]
