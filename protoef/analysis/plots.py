"""Pure matplotlib figure code for the explanations (no model, no data set in here).

Every function builds a `matplotlib.figure.Figure` directly, without pyplot: no global
figure registry, nothing to close, no interactive backend needed (safe inside training runs
and on headless machines). `save_figure` writes a PNG atomically. In a notebook a returned
Figure displays itself.
"""
from __future__ import annotations

import pathlib
from typing import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from ..files import atomic_path

__all__ = ["overlay", "frame_picks", "save_gif", "save_figure", "image_strip", "image_grid", "paired_rows", "embedding_scatter", "iou_boxplot", "colour_map"]


def save_figure(figure: Figure, path, *, dpi: int = 100) -> pathlib.Path:
    """Write `figure` as a PNG via a temporary file + rename (a kill never leaves half a file)."""
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=dpi)
    return pathlib.Path(path)


def overlay(frames, heatmap, *, alpha: float = 0.5, cmap: str = "jet", normalize: bool = False) -> np.ndarray:
    """Heat map over grayscale frames: (T, H, W) uint8 + (T, H, W) (or broadcastable) → (T, H, W, 3) uint8.

    The colour is blended in with weight ``alpha·h``: cold regions leave the echo visible.
    `heatmap` is clipped to [0, 1]; ``normalize`` first rescales it to its own min–max range.
    """
    gray = np.asarray(frames, dtype=np.float64)[..., None] / 255.0
    heat = np.asarray(heatmap, dtype=np.float64)
    if normalize:
        span = heat.max() - heat.min()
        heat = (heat - heat.min()) / span if span > 0 else np.zeros_like(heat)
    heat = np.broadcast_to(np.clip(heat, 0.0, 1.0), gray.shape[:-1])
    weight = alpha * heat[..., None]
    rgb = (1.0 - weight) * gray + weight * colour_map(heat, cmap)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def frame_picks(length: int, count: int) -> np.ndarray:
    """Up to `count` evenly spaced, distinct frame indices of a clip of `length` frames."""
    return np.unique(np.linspace(0, length - 1, min(count, length)).round().astype(int))


def save_gif(rgb: np.ndarray, path, *, frame_ms: int = 60) -> pathlib.Path:
    """(T, H, W, 3) uint8 → an endlessly looping GIF (PIL), written atomically."""
    from PIL import Image

    images = [Image.fromarray(frame) for frame in rgb]
    with atomic_path(path) as temporary:
        images[0].save(temporary, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0)
    return pathlib.Path(path)


def _show(ax, image: np.ndarray | None, title: str | None = None) -> None:
    if image is None:
        ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes, color="0.5")
    else:
        if image.ndim == 2:
            ax.imshow(image, cmap="gray", vmin=0, vmax=255 if image.dtype == np.uint8 else 1)
        else:
            ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7)


def image_strip(images: Sequence[np.ndarray], *, titles: Sequence[str] | None = None,
                suptitle: str | None = None, cell: float = 1.6) -> Figure:
    """One row of images (each (H, W, 3) uint8 or (H, W)), e.g. the frames of a clip."""
    figure = Figure(figsize=(cell * len(images), cell + (0.55 if suptitle else 0.2)), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(images)))
    for k, (ax, image) in enumerate(zip(axes, images)):
        _show(ax, image, titles[k] if titles else None)
    if suptitle:
        figure.suptitle(suptitle, fontsize=8)
    return figure


def image_grid(images: Sequence[np.ndarray], *, titles: Sequence[str] | None = None, ncols: int = 8,
               suptitle: str | None = None, cell: float = 1.5) -> Figure:
    """Images in a grid, row-major, `ncols` per row (empty cells hidden)."""
    ncols = max(1, min(ncols, len(images)))
    nrows = max(1, -(-len(images) // ncols))
    figure = Figure(figsize=(cell * ncols, cell * nrows + (0.5 if suptitle else 0.1)), layout="constrained")
    axes = np.atleast_1d(figure.subplots(nrows, ncols)).ravel()
    for k, ax in enumerate(axes):
        if k < len(images):
            _show(ax, images[k], titles[k] if titles else None)
        else:
            ax.set_axis_off()
    if suptitle:
        figure.suptitle(suptitle, fontsize=9)
    return figure


def paired_rows(rows: Sequence[dict], *, suptitle: str | None = None, cell: float = 1.4) -> Figure:
    """Rows of two image strips side by side (the local explanation).

    Each row is a dict with ``left`` (list of images), ``left_title``, ``right`` (list of
    images, or None when unavailable), ``right_title`` and optional ``left_labels`` /
    ``right_labels`` (one short caption per image).
    """
    n = max(len(row["left"]) for row in rows)
    figure = Figure(figsize=(2 * n * cell + 0.3, len(rows) * (cell + 0.45) + (0.5 if suptitle else 0)), layout="constrained")
    subfigures = np.atleast_2d(figure.subfigures(len(rows), 2, wspace=0.04))
    for row, (left, right) in zip(rows, subfigures):
        for side, subfigure in (("left", left), ("right", right)):
            images = row.get(side) or [None] * n
            labels = row.get(f"{side}_labels") or [None] * len(images)
            axes = np.atleast_1d(subfigure.subplots(1, len(images)))
            for ax, image, label in zip(axes, images, labels):
                _show(ax, image, label)
            subfigure.suptitle(row.get(f"{side}_title", ""), fontsize=8)
    if suptitle:
        figure.suptitle(suptitle, fontsize=10)
    return figure


def embedding_scatter(table, *, title: str | None = None, ax=None, cmap: str = "viridis"):
    """2-D embedding coloured by EF. `table` has columns x, y, ef, kind ("video"/"prototype")
    as returned by `protoef.analysis.embeddings.embed_with_prototypes`. Returns the Figure (or draws into `ax`)."""
    if ax is None:
        figure = Figure(figsize=(5.2, 4.2), layout="constrained")
        ax = figure.subplots()
    norm = Normalize(vmin=float(table["ef"].min()), vmax=float(table["ef"].max()))
    videos, prototypes = table[table["kind"] == "video"], table[table["kind"] == "prototype"]
    points = ax.scatter(videos["x"], videos["y"], c=videos["ef"], cmap=cmap, norm=norm, s=12, alpha=0.8, label="videos")
    if len(prototypes):
        ax.scatter(prototypes["x"], prototypes["y"], c=prototypes["ef"], cmap=cmap, norm=norm, s=140, marker="*",
                   edgecolors="black", linewidths=0.8, label="prototypes")
    ax.figure.colorbar(points, ax=ax, label="EF (%)")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="best", fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    return ax.figure


def iou_boxplot(table, *, title: str = "Map vs LV mask IoU") -> Figure:
    """Distribution of IoU per method and frame kind (rows of the `*_iou_table` functions)."""
    groups = [(f"{method}\n{frame}", part["iou"].dropna().to_numpy())
              for (method, frame), part in table.groupby(["method", "frame"], sort=True)]
    figure = Figure(figsize=(max(5.0, 1.1 * len(groups)), 3.2), layout="constrained")
    ax = figure.subplots()
    ax.boxplot([values for _, values in groups], showmeans=True)
    ax.set_xticks(range(1, len(groups) + 1), [name for name, _ in groups], fontsize=8)
    ax.set_ylabel("IoU")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    return figure


def colour_map(values: np.ndarray, name: str = "jet") -> np.ndarray:
    """Values in [0, 1] → RGB floats in [0, 1] (…, 3)."""
    return colormaps[name](np.clip(values, 0.0, 1.0))[..., :3]
