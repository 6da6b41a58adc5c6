"""Procedural echocardiography videos written as a complete EchoNet-Dynamic-format data set.

The real EchoNet-Dynamic release is gated, so this generator is the project's embedded
default data set. ``generate(out_dir)`` (or ``python -m protoef.data.synthetic OUT_DIR``)
writes::

    OUT_DIR/FileList.csv        FileName (no .avi), EF, ESV, EDV, FrameHeight, FrameWidth,
                                FPS, NumberOfFrames, Split (TRAIN/VAL/TEST, 75/12.5/12.5)
    OUT_DIR/VolumeTracings.csv  FileName (with .avi), X1, Y1, X2, Y2, Frame; per traced
                                frame (ED and ES, block order varies per video) the long
                                axis (apex -> mitral-annulus midpoint) then 20 chords
    OUT_DIR/Videos/<FileName>.avi   MJPG, 112x112, decodes to 3 identical channels
    OUT_DIR/LVMasks/<FileName>.npz  side file, NOT part of the EchoNet format (see below)

Side file ``LVMasks/<FileName>.npz`` (``np.savez_compressed``): ``masks`` bool (F, H, W),
the rendered LV cavity of every frame (True inside); ``volume_ml`` float32 (F,), the
method-of-discs LV volume of every frame in mL (same chords and spacing as the CSVs).

Geometry. The LV cavity is a half-ellipse hanging from a fixed apex near the top of a 90°
sector: long-axis length L(t) (apex -> annulus midpoint) and base half-width W(t). Any
chord set at fixed fractions of the axis then gives a method-of-discs volume ∝ L·W², so
the end-systolic scalings follow exactly from the target EF and the tracings, the
rendered cavity and FileList all describe one shape. Volumes use a pixel spacing of
``PIXEL_SPACING_CM`` = 0.14 cm (≈ 16 cm of depth over 112 px) per pixel, isotropic.

Labels. EF comes from a clipped two-component normal mixture tuned to the EchoNet label
statistics (mean ≈ 56, sd ≈ 12, ≈ 22 % below 50). The end-diastolic size, wall thickness,
heart rate, frame rate, length, phase, rotation and gain are drawn independently of EF,
so no single frame reveals EF: only the motion between frames does. FileList's EDV/ESV/EF
are the disc volumes of the two traced frames (ED = least, ES = most contracted sampled
frame), so they can sit a fraction of an EF point below the drawn target.

Determinism. Video ``i`` is drawn from ``SeedSequence(seed, spawn_key=(i,))`` (the i-th
spawned child), so its content depends on ``(seed, i)`` only, not on ``workers`` nor on
the number of videos; the split is a seeded permutation of all indices.
"""
from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import pathlib
from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from protoef.data.locations import video_filename, video_folder, video_path
from protoef.data.tracings import disc_volume, ejection_fraction

__all__ = ["PIXEL_SPACING_CM", "SPLIT_FRACTIONS", "VideoParams", "generate", "lv_time_course", "main", "video_parameters"]

FRAME_SIZE = 112
N_CHORDS = 20
PIXEL_SPACING_CM = 0.14
SECTOR_APEX_XY = (55.5, 0.0)  # pixel coordinates (x = column, y = row)
SECTOR_RADIUS_PX = 111.0
SECTOR_HALF_ANGLE_RAD = np.pi / 4  # 90° sector
SPLIT_FRACTIONS = {"TRAIN": 0.75, "VAL": 0.125, "TEST": 0.125}
CHUNK_FRAMES = 16  # frames rendered at once: keeps the working set in cache
FILELIST_COLUMNS = [
    "FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS", "NumberOfFrames", "Split",
]
TRACING_COLUMNS = ["FileName", "X1", "Y1", "X2", "Y2", "Frame"]


@dataclass(frozen=True)
class VideoParams:
    """Everything that defines one synthetic video (drawn by `video_parameters`)."""

    name: str
    ef_target_percent: float
    fps: int
    n_frames: int
    heart_rate_bpm: float
    phase0: float  # cardiac phase at frame 0, in cycles (0 = end-diastole)
    systole_fraction: float  # share of the cycle spent contracting
    early_filling_share: float  # share of diastolic filling in the E wave (rest: atrial kick)
    long_axis_share: float  # share of log-volume change carried by long-axis shortening
    apex_xy: tuple[float, float]
    axis_angle_rad: float  # LV long axis from the image vertical, probe rotation included
    ed_length_px: float
    ed_halfwidth_px: float
    ed_wall_px: float
    myocardium_level: float
    tissue_level: float
    gain: float
    attenuation: float
    noise_sd: float
    speckle_corr: float
    es_first: bool  # write the ES tracing block before the ED one
    render_seed: int


def _draw_ef_percent(rng: np.random.Generator) -> float:
    # Mixture: a normal-function bulk plus a broad reduced-function component; the clip
    # leaves tails down to ~10 and up to ~85 like the real label distribution.
    if rng.random() < 0.18:
        return float(np.clip(rng.normal(37.0, 12.5), 8.0, 88.0))
    return float(np.clip(rng.normal(60.5, 7.5), 8.0, 88.0))


def video_parameters(seed: int, index: int) -> VideoParams:
    """Draw the parameters of video ``index`` of the data set with ``seed`` (no rendering)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))
    name = "0X" + rng.bytes(8).hex().upper()
    ef_percent = _draw_ef_percent(rng)
    fps = 50 if rng.random() < 0.8 else int(rng.choice([30, 40, 60, 73, 100]))
    heart_rate_bpm = float(rng.uniform(50.0, 110.0))
    short = rng.random() < 0.04
    n_frames = int(rng.integers(40, 64) if short else rng.integers(100, 251))
    # Both ED and ES must be on screen: keep at least 1.1 cardiac cycles (+2 frames),
    # first by speeding up the heart (keeps short videos short), then by lengthening.
    needed_bpm = 60.0 * fps * 1.1 / (n_frames - 2)
    if heart_rate_bpm < needed_bpm:
        heart_rate_bpm = float(rng.uniform(min(needed_bpm, 110.0), 110.0))
    n_frames = max(n_frames, int(np.ceil(1.1 * 60.0 * fps / heart_rate_bpm)) + 2)
    probe_rotation_rad = np.deg2rad(rng.uniform(-5.0, 5.0))
    apex_rel = np.array([rng.uniform(1.0, 5.0), rng.uniform(10.0, 15.0)])
    rot = np.array([[np.cos(probe_rotation_rad), -np.sin(probe_rotation_rad)],
                    [np.sin(probe_rotation_rad), np.cos(probe_rotation_rad)]])
    apex_xy = np.array(SECTOR_APEX_XY) + rot @ apex_rel  # rotate about the transducer
    return VideoParams(
        name=name,
        ef_target_percent=ef_percent,
        fps=fps,
        n_frames=n_frames,
        heart_rate_bpm=heart_rate_bpm,
        phase0=float(rng.random()),
        systole_fraction=float(rng.uniform(0.30, 0.38)),
        early_filling_share=float(rng.uniform(0.6, 0.8)),
        long_axis_share=float(rng.uniform(0.15, 0.30)),
        apex_xy=(float(apex_xy[0]), float(apex_xy[1])),
        # x grows to the right and y downwards, so +angle tilts the base to the right.
        axis_angle_rad=float(np.deg2rad(rng.uniform(3.0, 9.0)) - probe_rotation_rad),
        ed_length_px=float(np.clip(rng.normal(60.0, 6.0), 46.0, 74.0)),
        ed_halfwidth_px=float(np.clip(rng.normal(17.0, 2.5), 12.0, 23.0)),
        ed_wall_px=float(rng.uniform(5.5, 8.0)),
        myocardium_level=float(rng.uniform(0.7, 0.95)),
        tissue_level=float(rng.uniform(0.2, 0.32)),
        gain=float(rng.uniform(0.8, 1.25)),
        attenuation=float(rng.uniform(0.4, 1.1)),
        noise_sd=float(rng.uniform(0.01, 0.03)),
        speckle_corr=float(rng.uniform(0.6, 0.85)),
        es_first=bool(rng.random() < 0.5),
        render_seed=int(rng.integers(2**63)),
    )


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def lv_time_course(p: VideoParams) -> dict[str, np.ndarray]:
    """Per-frame contraction c (0 = ED, 1 = ES), cavity length/half-width and wall (px)."""
    phase = (p.phase0 + np.arange(p.n_frames) * p.heart_rate_bpm / (60.0 * p.fps)) % 1.0
    fs = p.systole_fraction
    # Asymmetric cycle: fast cosine systole, then diastole = early (E) filling in its
    # first 40 % and an atrial kick (A) in its last 20 %, diastasis in between.
    x = (phase - fs) / (1.0 - fs)
    e_share = p.early_filling_share
    diastole = 1.0 - e_share * _smoothstep(x / 0.4) - (1.0 - e_share) * _smoothstep((x - 0.8) / 0.2)
    c = np.where(phase < fs, 0.5 - 0.5 * np.cos(np.pi * phase / fs), diastole)
    # V ∝ L·W²: split the ES volume ratio (1 − EF) between length and width^2.
    es_ratio = 1.0 - p.ef_target_percent / 100.0
    length_es = es_ratio ** p.long_axis_share
    width_es = es_ratio ** ((1.0 - p.long_axis_share) / 2.0)
    length = p.ed_length_px * (1.0 - (1.0 - length_es) * c)
    halfwidth = p.ed_halfwidth_px * (1.0 - (1.0 - width_es) * c)
    # Wall thickens as the cavity shrinks: keep the myocardial (half-ring) area constant,
    # (L+T)(W+T) − L·W = const, solved for T.
    k = p.ed_wall_px**2 + p.ed_wall_px * (p.ed_length_px + p.ed_halfwidth_px)
    wall = 0.5 * (-(length + halfwidth) + np.sqrt((length + halfwidth) ** 2 + 4.0 * k))
    closed = ((phase < fs + 0.03) & (phase > 0.01)).astype(np.float32)  # mitral valve shut
    return {"phase": phase, "c": c, "length": length, "halfwidth": halfwidth, "wall": wall,
            "mitral_closed": closed}


def _traced_frames(c: np.ndarray, period_frames: float) -> tuple[int, int]:
    """ED = frame of least contraction; ES = most contracted frame within a cycle of it."""
    ed = int(np.argmin(c))
    lo, hi = max(0, int(ed - period_frames)), min(c.size, int(np.ceil(ed + period_frames)) + 1)
    return ed, lo + int(np.argmax(c[lo:hi]))


def _chords(p: VideoParams, length: float, halfwidth: float) -> np.ndarray:
    """(1 + N_CHORDS, 4) rows X1, Y1, X2, Y2: long axis, then chords ⟂ to it at i/N of L."""
    apex = np.array(p.apex_xy)
    axis = np.array([np.sin(p.axis_angle_rad), np.cos(p.axis_angle_rad)])
    normal = np.array([np.cos(p.axis_angle_rad), -np.sin(p.axis_angle_rad)])
    s = np.arange(1, N_CHORDS + 1) / N_CHORDS  # fraction of the axis from the apex
    half = halfwidth * np.sqrt(1.0 - (1.0 - s) ** 2)  # half-ellipse profile
    centre = apex + (s * length)[:, None] * axis
    rows = np.concatenate([centre - half[:, None] * normal, centre + half[:, None] * normal], axis=1)
    return np.vstack([np.concatenate([apex, apex + length * axis]), rows])


def _ramp(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 1.0, out=x)  # in place: these arrays are temporaries


def _paint(img: np.ndarray, mask: np.ndarray, level: float) -> None:
    img += mask * (level - img)  # soft "painter's" overwrite, in place (img may be a view)


def _uv_box(p: VideoParams, u_lo: float, u_hi: float, v_lo: float, v_hi: float) -> tuple[slice, slice]:
    """Pixel window (rows, cols) covering a rectangle of the LV (u, v) frame, 2 px margin."""
    sin_a, cos_a = np.sin(p.axis_angle_rad), np.cos(p.axis_angle_rad)
    uu, vv = np.meshgrid([u_lo, u_hi], [v_lo, v_hi])
    xs, ys = p.apex_xy[0] + uu * sin_a + vv * cos_a, p.apex_xy[1] + uu * cos_a - vv * sin_a
    rows, cols = (np.clip([np.floor(q.min()) - 2, np.ceil(q.max()) + 3], 0, FRAME_SIZE) for q in (ys, xs))
    return slice(*rows.astype(int)), slice(*cols.astype(int))


def _render(p: VideoParams, tc: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Render uint8 frames (F, H, W) and the hard LV cavity masks (F, H, W).

    Arrays are laid out (H, W, frames) so per-frame scalars broadcast on the last axis
    and cv2 filters a chunk of frames as one multi-channel image. Each moving structure
    is only computed inside its own pixel window (the speed target needs it).
    """
    rng = np.random.default_rng(p.render_seed)
    n, size, half = p.n_frames, FRAME_SIZE, FRAME_SIZE // 2
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    # Sector, depth attenuation and lateral fall-off are static per video.
    rx, ry = xx - SECTOR_APEX_XY[0], yy - SECTOR_APEX_XY[1]
    radius, angle = np.hypot(rx, ry), np.arctan2(rx, ry)
    sector = (radius <= SECTOR_RADIUS_PX) & (np.abs(angle) <= SECTOR_HALF_ANGLE_RAD)
    lateral = 1.0 - 0.3 * (angle / SECTOR_HALF_ANGLE_RAD) ** 4
    scale = p.gain * np.exp(-p.attenuation * radius / SECTOR_RADIUS_PX) * lateral
    scale = (255.0 * scale * sector)[..., None].astype(np.float32)
    # LV frame: u along the long axis from the apex, v across it (> 0 towards the lateral wall).
    sin_a, cos_a = float(np.sin(p.axis_angle_rad)), float(np.cos(p.axis_angle_rad))  # keep float32
    u = ((xx - p.apex_xy[0]) * sin_a + (yy - p.apex_xy[1]) * cos_a)[..., None]
    v = ((xx - p.apex_xy[0]) * cos_a - (yy - p.apex_xy[1]) * sin_a)[..., None]
    # Static tissue: level with low-frequency texture, near-field clutter, pericardium.
    texture = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), 6.0)
    tissue = p.tissue_level * (1.0 + 2.5 * texture) + 0.25 * np.exp(-radius / 5.0)
    l0, w0, t0 = p.ed_length_px, p.ed_halfwidth_px, p.ed_wall_px
    peri = ((u[..., 0] - l0) / (l0 + t0 + 4)) ** 2 + (v[..., 0] / (w0 + t0 + 4)) ** 2
    tissue += 0.3 * np.exp(-(((np.sqrt(peri) - 1.0) * (w0 + t0 + 4)) ** 2) / 2.0) * (u[..., 0] < l0)
    # Faint neighbours, ellipses in (u, v) with per-frame centre/semi-axes: the RV beside
    # the septum contracts with the LV; the atria below fill while the ventricles empty,
    # the LA stretching as the base rises.
    c, L, W, T = tc["c"], tc["length"], tc["halfwidth"], tc["wall"]
    rv_v, ones = -(1.55 * w0 + t0 + 2.0), np.ones(n)
    la_a = 0.28 * l0 * (1.0 + 0.12 * c) + 0.5 * (l0 - L)
    neighbours = []
    for uc, au, bv, vc in ((0.5 * l0 * ones, 0.42 * l0 * (1 - 0.2 * c), 0.55 * w0 * (1 - 0.2 * c), rv_v),
                           (1.32 * l0 * ones, 0.3 * l0 * (1 + 0.12 * c), 0.6 * w0 * (1 + 0.12 * c), rv_v),
                           (L + 0.85 * la_a, la_a, 0.85 * w0 * ones, 0.0)):
        reach_v = 1.16 * bv.max()  # the wall ramp ends at r = 1.155
        box = _uv_box(p, (uc - 1.16 * au).min(), (uc + 1.16 * au).max(), vc - reach_v, vc + reach_v)
        uc, au, bv = (x.astype(np.float32) for x in (uc, au, bv))
        neighbours.append((box, u[box], v[box] - np.float32(vc), uc, au, bv))
    lv_box = _uv_box(p, -T.max(), l0 + 2.5, -(W + T).max(), (W + T).max())
    u_lv, v2_lv = u[lv_box], v[lv_box] ** 2
    mv_band = (v2_lv < w0**2).astype(np.float32)

    # Speckle: Rayleigh amplitude of complex noise at half resolution (≈2 px grains), a
    # static part mixed with an AR(1) part decorrelating over frames; plus additive noise.
    z = rng.standard_normal((n + 1, 3, half, half), dtype=np.float32)
    rho = np.float32(p.speckle_corr)
    for t in range(2, n + 1):
        z[t, :2] = rho * z[t - 1, :2] + np.sqrt(1 - rho**2) * z[t, :2]
    re, im = np.sqrt(0.5) * (z[0, 0] + z[1:, 0]), np.sqrt(0.5) * (z[0, 1] + z[1:, 1])
    speckle_lo = np.ascontiguousarray(np.moveaxis(np.hypot(re, im) / np.float32(np.sqrt(np.pi / 2)), 0, 2))
    noise_lo = np.ascontiguousarray(np.moveaxis(z[1:, 2] * np.float32(p.noise_sd), 0, 2))

    def upsample(lo_res):
        return cv2.resize(lo_res, (size, size), interpolation=cv2.INTER_LINEAR)

    frames, masks = np.empty((n, size, size), np.uint8), np.zeros((n, size, size), bool)
    wall_level = 0.45 * p.myocardium_level
    for start in range(0, n, CHUNK_FRAMES):
        sl = slice(start, min(n, start + CHUNK_FRAMES))
        img = np.repeat(tissue[..., None], sl.stop - sl.start, axis=2)
        for box, ub, vb, uc, au, bv in neighbours:
            r2 = ((ub - uc[sl]) / au[sl]) ** 2 + (vb / bv[sl]) ** 2
            _paint(img[box], _ramp(6.0 * (1.0 - 0.75 * r2)), wall_level)
            _paint(img[box], _ramp(6.0 * (1.0 - r2)), 0.03)  # blood
        # LV: half-ellipses centred on the annulus midpoint (u = L), axes (L, W) for the
        # cavity and (L+T, W+T) for the epicardium; soft edges ≈ 1 px from a first-order
        # distance f/|∇f|, cut at the base plane where the LV opens into the LA.
        Lc, Wc, Tc = (x[sl].astype(np.float32) for x in (L, W, T))
        du = u_lv - Lc
        du2 = du * du
        base_cut = _ramp(0.5 - du)
        lv = img[lv_box]
        for lx, wx, level in ((Lc + Tc, Wc + Tc, p.myocardium_level), (Lc, Wc, 0.03)):
            f = du2 / lx**2 + v2_lv / wx**2 - 1.0
            dist = f / (2.0 * np.sqrt(du2 / lx**4 + v2_lv / wx**4) + 1e-3)
            _paint(lv, _ramp(0.5 - dist) * base_cut, level)
        masks[sl, lv_box[0], lv_box[1]] = np.moveaxis((f < 0) & (du <= 0), 2, 0)  # cavity f
        closed = tc["mitral_closed"][sl].astype(np.float32)
        _paint(lv, _ramp(1.0 - np.abs(du - 0.75)) * mv_band * closed, 0.6 * p.myocardium_level)
        img *= upsample(speckle_lo[..., sl]).reshape(img.shape)
        img += upsample(noise_lo[..., sl]).reshape(img.shape)
        img = cv2.GaussianBlur(img, (3, 3), 0.7).reshape(img.shape)
        img *= scale
        frames[sl] = np.moveaxis(np.clip(img, 0, 255), 2, 0).astype(np.uint8)
    return frames, masks


def _write_avi(path: pathlib.Path, frames: np.ndarray, fps: int) -> None:
    # A grayscale MJPG stream: OpenCV (and EchoNet's loader) decodes it to 3 identical
    # channels, whereas a colour stream would pick up ±2 chroma-rounding differences.
    fourcc = cv2.VideoWriter_fourcc(*"MJPG")
    writer = cv2.VideoWriter(str(path), fourcc, float(fps), (FRAME_SIZE, FRAME_SIZE), isColor=False)
    if not writer.isOpened():
        raise RuntimeError(f"cv2.VideoWriter could not open {path} (MJPG)")
    for frame in frames:
        writer.write(frame)
    writer.release()


def _make_video(job: tuple[str, int, int, bool, int | None]) -> tuple[dict, list[list]]:
    """Worker: render, write the AVI (+ masks) of one video; return its CSV rows."""
    out_dir, seed, index, write_masks, min_frames = job
    root = pathlib.Path(out_dir)
    p = video_parameters(seed, index)
    if min_frames and p.n_frames < min_frames:  # longer videos, same heart: more cycles
        p = dataclasses.replace(p, n_frames=int(min_frames))
    tc = lv_time_course(p)
    ed, es = _traced_frames(tc["c"], 60.0 * p.fps / p.heart_rate_bpm)
    traces = {t: _chords(p, tc["length"][t], tc["halfwidth"][t]) for t in (ed, es)}
    ml_per_px3 = PIXEL_SPACING_CM**3
    edv_ml, esv_ml = (disc_volume(*traces[t].T) * ml_per_px3 for t in (ed, es))
    frames, masks = _render(p, tc)
    _write_avi(video_path(root, p.name), frames, p.fps)
    if write_masks:
        # Per-frame volumes of the same disc model: V(t) = V_ED · (L·W²)(t) / (L·W²)(ED).
        lw2 = tc["length"] * tc["halfwidth"] ** 2
        volume_ml = (edv_ml * lw2 / lw2[ed]).astype(np.float32)
        np.savez_compressed(root / "LVMasks" / f"{p.name}.npz", masks=masks, volume_ml=volume_ml)
    row = {"FileName": p.name, "EF": ejection_fraction(edv_ml, esv_ml), "ESV": esv_ml, "EDV": edv_ml,
           "FrameHeight": FRAME_SIZE, "FrameWidth": FRAME_SIZE, "FPS": p.fps, "NumberOfFrames": p.n_frames}
    order = (es, ed) if p.es_first else (ed, es)
    tracing_rows = [[video_filename(p.name), *xy, t] for t in order for xy in traces[t].tolist()]
    return row, tracing_rows


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already; avoid oversubscription


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def generate(out_dir: str | os.PathLike, *, videos: int = 400, seed: int = 0, workers: int | None = None,
             write_masks: bool = True, progress: bool = True, val_fraction: float = SPLIT_FRACTIONS["VAL"],
             test_fraction: float = SPLIT_FRACTIONS["TEST"], min_frames: int | None = None,
             overwrite: bool = False) -> pathlib.Path:
    """Write a synthetic EchoNet-Dynamic-format data set of ``videos`` videos to ``out_dir``.

    ``workers``: processes (default: usable CPUs; <= 1 renders in this process). The output
    is identical for any ``workers``. Workers are *spawned*, so a script calling this with
    ``workers > 1`` needs the usual ``if __name__ == "__main__":`` guard. A folder that already
    holds a data set (FileList.csv or VolumeTracings.csv) is refused unless ``overwrite``
    (``synth --overwrite``), which replaces files of the same names. ``write_masks``: also write ``LVMasks/*.npz``.
    ``val_fraction`` / ``test_fraction``: shares of VAL and TEST (TRAIN gets the rest).
    ``min_frames``: lengthen shorter videos to this many frames (e.g. 640 for ten 64-frame
    test clips); ``None`` keeps the drawn lengths (100–250 frames, a few 40–63).
    Returns the data-set root.
    """
    if videos < 3:
        raise ValueError(f"videos must be >= 3 (at least one TRAIN, one VAL and one TEST video), got {videos}")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"val_fraction {val_fraction} and test_fraction {test_fraction} must be in [0, 1) "
                         "and leave a share for TRAIN")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0 (synth --seed), got {seed!r}")
    root = pathlib.Path(out_dir)
    existing = [name for name in ("FileList.csv", "VolumeTracings.csv") if (root / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{root}: holds a data set already ({', '.join(existing)}); writing a synthetic set there "
                              "would replace its files. Choose an empty folder, or pass --overwrite (overwrite=True)")
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root}: is a file, not a folder; synth OUT_DIR must be a new or empty folder")
    video_folder(root).mkdir(parents=True, exist_ok=True)
    if write_masks:
        (root / "LVMasks").mkdir(exist_ok=True)
    workers = min(videos, _default_workers() if workers is None else max(1, int(workers)))
    jobs = [(str(root), int(seed), i, bool(write_masks), min_frames) for i in range(videos)]
    bar = dict(total=videos, desc="synthetic echo videos", unit="video", disable=not progress)
    if workers == 1:
        results = [_make_video(job) for job in tqdm(jobs, **bar)]
    else:
        # "spawn": safe even when the caller has torch/OpenMP/cv2 thread pools running.
        with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
            results = list(tqdm(pool.imap(_make_video, jobs, chunksize=2), **bar))
    filelist = pd.DataFrame([row for row, _ in results])
    if filelist["FileName"].duplicated().any():  # 64-bit random names: practically never
        raise RuntimeError("duplicate synthetic file names; use another seed")
    # Exact split counts on a seeded permutation (TEST gets the rounding rest); every split
    # gets at least one video, so a tiny set still trains, validates and tests.
    n_val = max(1, round(val_fraction * videos))
    n_train = min(round((1.0 - val_fraction - test_fraction) * videos), videos - n_val - 1)
    split = np.array(["TEST"] * videos, dtype=object)
    order = np.random.default_rng(np.random.SeedSequence(seed)).permutation(videos)
    split[order[:n_train]], split[order[n_train:n_train + n_val]] = "TRAIN", "VAL"
    filelist["Split"] = split
    filelist[FILELIST_COLUMNS].to_csv(root / "FileList.csv", index=False, float_format="%.4f")
    tracings = pd.DataFrame([r for _, rows in results for r in rows], columns=TRACING_COLUMNS)
    tracings.to_csv(root / "VolumeTracings.csv", index=False, float_format="%.4f")
    return root


def main(argv: list[str] | None = None) -> pathlib.Path:
    parser = argparse.ArgumentParser(prog="python -m protoef.data.synthetic",
                                     description="Write a synthetic EchoNet-Dynamic-format data set.")
    parser.add_argument("out_dir", type=pathlib.Path, help="output directory (created if missing)")
    parser.add_argument("--videos", type=int, default=400, help="number of videos (default 400)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all usable CPUs)")
    parser.add_argument("--no-masks", action="store_true", help="skip the LVMasks/*.npz side files")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--overwrite", action="store_true", help="replace the files of a data set already in out_dir")
    args = parser.parse_args(argv)
    root = generate(args.out_dir, videos=args.videos, seed=args.seed, workers=args.workers,
                    write_masks=not args.no_masks, progress=not args.quiet, overwrite=args.overwrite)
    print(f"wrote {args.videos} videos to {root}")
    return root


if __name__ == "__main__":
    main()
