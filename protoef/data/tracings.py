"""LV tracings: the polygon rule, the method of discs and the occurrence-loss mask.

EchoNet-Dynamic traces two frames per video (ED and ES). In `VolumeTracings.csv` each
traced frame is a block of rows ``X1, Y1, X2, Y2``: the first row is the LV long axis
(apex to mitral-annulus midpoint), every further row is one chord across the cavity,
perpendicular to that axis. These helpers turn one such block into

- a rasterised LV mask (`trace_mask`), the polygon through the chords' first ends
  followed by their second ends in reverse order (docs/method.md §5);
- a single-plane method-of-discs volume (`disc_volume`) and from two of them an EF.

They are deliberately independent of the video decoder and of the synthetic generator,
so the tests and the generator can use them as an independent check of each other.
"""
from __future__ import annotations

import numpy as np
import skimage.draw
import torch
import torch.nn.functional as F

__all__ = [
    "trace_mask",
    "tracing_problem",
    "tracing_outside_frame",
    "disc_volume",
    "ejection_fraction",
    "background_mask",
]


def _as_rows(*coords) -> list[np.ndarray]:
    arrays = [np.asarray(c, dtype=np.float64).reshape(-1) for c in coords]
    if len({a.size for a in arrays}) != 1:
        raise ValueError(f"tracing coordinates differ in length: {[a.size for a in arrays]}")
    if arrays[0].size < 2:
        raise ValueError("a traced frame needs the long axis plus at least one chord (>= 2 rows)")
    return arrays


def trace_mask(x1, y1, x2, y2, height: int, width: int) -> np.ndarray:
    """Rasterise one traced frame into a boolean LV mask of shape (height, width).

    Row 0 (the long axis) is not part of the outline; rows 1.. are chords. The polygon
    visits (X1, Y1) of rows 1.. in order, then (X2, Y2) of the same rows reversed, and is
    rasterised at rounded vertex positions like ``skimage.draw.polygon``.
    Coordinates are in pixels of a (height, width) frame.
    """
    x1, y1, x2, y2 = _as_rows(x1, y1, x2, y2)
    xs = np.concatenate([x1[1:], x2[1:][::-1]])
    ys = np.concatenate([y1[1:], y2[1:][::-1]])
    rows, cols = skimage.draw.polygon(np.rint(ys), np.rint(xs), (height, width))
    mask = np.zeros((height, width), dtype=bool)
    mask[rows, cols] = True
    return mask


def disc_volume(x1, y1, x2, y2) -> float:
    """Single-plane method-of-discs volume (pixel³) of one traced frame.

    Each chord i of length d_i is the diameter of a disc of height h = L / n, where L is
    the long-axis length (row 0) and n the number of chords: V = Σ π/4 · d_i² · h.
    Only ratios of such volumes (EF) are meaningful without a pixel spacing.
    """
    x1, y1, x2, y2 = _as_rows(x1, y1, x2, y2)
    long_axis = float(np.hypot(x2[0] - x1[0], y2[0] - y1[0]))
    diameters = np.hypot(x2[1:] - x1[1:], y2[1:] - y1[1:])
    disc_height = long_axis / diameters.size
    return float(np.pi / 4.0 * np.sum(diameters**2) * disc_height)


def ejection_fraction(edv: float, esv: float) -> float:
    """EF in percent from end-diastolic and end-systolic volumes: 100·(EDV−ESV)/EDV."""
    if edv <= 0:
        raise ValueError(f"end-diastolic volume must be positive, got {edv}")
    return 100.0 * (edv - esv) / edv


def _gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    offsets = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    kernel_1d = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel_1d = kernel_1d / kernel_1d.sum()
    return torch.outer(kernel_1d, kernel_1d)


def background_mask(
    lv_mask,
    feature_size: tuple[int, int],
    *,
    dilation: int = 5,
    blur_size: int = 3,
    blur_sigma: float = 2.0,
) -> torch.Tensor:
    """Soft background for the occurrence loss (docs/method.md §5), shape ``feature_size`` (H', W').

    LV mask (frame size, bool) → nearest downsample to (H', W') → dilate the LV with a
    ``dilation``×``dilation`` max-pool → background = 1 − LV → Gaussian blur
    (``blur_size``×``blur_size``, σ = ``blur_sigma``, reflect padding). ≈1 well outside
    the LV, ≈0 inside it. Broadcast over prototypes and T' by the loss.
    """
    lv = torch.as_tensor(np.asarray(lv_mask), dtype=torch.float32)[None, None]  # (1, 1, H, W)
    lv = F.interpolate(lv, size=tuple(feature_size), mode="nearest")  # (1, 1, H', W')
    lv = F.max_pool2d(lv, kernel_size=dilation, stride=1, padding=dilation // 2)
    background = 1.0 - lv
    pad = blur_size // 2
    background = F.pad(background, (pad, pad, pad, pad), mode="reflect")
    kernel = _gaussian_kernel(blur_size, blur_sigma)[None, None]
    return F.conv2d(background, kernel)[0, 0]  # (H', W')


# Pixels a traced coordinate may lie outside the frame (sub-pixel tracing at the border).
TRACING_MARGIN = 1.0


def tracing_problem(frames: dict[int, np.ndarray]) -> str | None:
    """Why a video's traced frames ({frame: rows (R, 4) of X1, Y1, X2, Y2}, the long axis
    first) cannot give a mask, as a skip reason naming VolumeTracings.csv; None when usable."""
    if not frames:
        return "no traced frame in VolumeTracings.csv (with_masks=True needs one)"
    for frame, rows in frames.items():
        if frame < 0:
            return f"traced frame {frame} in VolumeTracings.csv is negative (frames count from 0)"
        if not np.isfinite(rows).all():
            bad = int((~np.isfinite(rows)).any(axis=1).sum())
            return (f"traced frame {frame} has {bad} row(s) with missing or non-numeric X1/Y1/X2/Y2 "
                    "in VolumeTracings.csv; without them the long axis and chords are unknown")
        if len(rows) < 2:
            return f"traced frame {frame} has {len(rows)} row(s); needs a long axis and chords"
        lengths = np.hypot(rows[:, 2] - rows[:, 0], rows[:, 3] - rows[:, 1])
        if lengths[0] == 0 or not lengths[1:].any():
            return (f"traced frame {frame} in VolumeTracings.csv has a zero-length "
                    f"{'long axis' if lengths[0] == 0 else 'set of chords'}: it encloses no area")
    return None


def tracing_outside_frame(frames: dict[int, np.ndarray], width: int, height: int) -> str | None:
    """A skip reason when a traced coordinate lies outside the width x height frame (by more
    than `TRACING_MARGIN`): the tracing belongs to another frame size; None otherwise."""
    for frame, rows in frames.items():
        if not len(rows) or not np.isfinite(rows).all():
            continue
        xs, ys = rows[:, 0::2], rows[:, 1::2]
        if min(xs.min(), ys.min()) < -TRACING_MARGIN or xs.max() > width + TRACING_MARGIN or ys.max() > height + TRACING_MARGIN:
            return (f"traced frame {frame} in VolumeTracings.csv has coordinates outside the video's {width}x{height} "
                    f"frame (X {xs.min():g} to {xs.max():g}, Y {ys.min():g} to {ys.max():g}): traced on another frame size?")
    return None
