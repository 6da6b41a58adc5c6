"""The synthetic EchoNet-format generator, checked against independently computed values.

One small data set is generated once for the module; every check re-derives what it
needs from the files on disk (CSV, AVI decoded with OpenCV, the npz side file) with the
independent helpers of `protoef.data.tracings`, never by re-running generator internals.
"""
from __future__ import annotations

import re

import cv2
import numpy as np
import pandas as pd
import pytest

from protoef.data import synthetic
from protoef.data.tracings import disc_volume, ejection_fraction, trace_mask

N_VIDEOS = 32
SIZE = 112


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return synthetic.generate(tmp_path_factory.mktemp("synth"), videos=N_VIDEOS, seed=0, workers=1, progress=False)


@pytest.fixture(scope="module")
def tables(root):
    return pd.read_csv(root / "FileList.csv"), pd.read_csv(root / "VolumeTracings.csv")


def decode(path) -> np.ndarray:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return np.stack(frames)


def traced(tracings: pd.DataFrame, name: str) -> dict[int, pd.DataFrame]:
    rows = tracings[tracings["FileName"] == f"{name}.avi"]
    return {int(frame): block for frame, block in rows.groupby("Frame", sort=False)}


def ed_es(blocks: dict[int, pd.DataFrame]) -> tuple[int, int]:
    volumes = {t: disc_volume(b.X1, b.Y1, b.X2, b.Y2) for t, b in blocks.items()}
    return max(volumes, key=volumes.get), min(volumes, key=volumes.get)


def test_csv_columns_and_naming_quirks(tables):
    filelist, tracings = tables
    assert list(filelist.columns) == ["FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth",
                                      "FPS", "NumberOfFrames", "Split"]
    assert list(tracings.columns) == ["FileName", "X1", "Y1", "X2", "Y2", "Frame"]
    assert len(filelist) == N_VIDEOS and filelist["FileName"].is_unique
    assert all(re.fullmatch(r"0X[0-9A-F]{16}", name) for name in filelist["FileName"])  # no .avi
    assert tracings["FileName"].str.endswith(".avi").all()
    assert set(tracings["FileName"].str[:-4]) == set(filelist["FileName"])
    assert (filelist["FrameHeight"] == SIZE).all() and (filelist["FrameWidth"] == SIZE).all()


def test_split_counts(tables):
    counts = tables[0]["Split"].value_counts().to_dict()
    assert counts == {"TRAIN": 24, "VAL": 4, "TEST": 4}  # 75 / 12.5 / 12.5 % of 32


def test_tracing_geometry(tables):
    filelist, tracings = tables
    orders = set()
    for name, n_frames in zip(filelist["FileName"], filelist["NumberOfFrames"]):
        blocks = traced(tracings, name)
        assert len(blocks) == 2 and all(len(b) == 21 for b in blocks.values())
        assert all(0 <= t < n_frames for t in blocks)
        ed, es = ed_es(blocks)
        orders.add(next(iter(blocks)) == ed)
        for block in blocks.values():
            xy = block[["X1", "Y1", "X2", "Y2"]].to_numpy()
            assert ((xy >= 0) & (xy <= SIZE - 1)).all()
            axis = xy[0, 2:] - xy[0, :2]
            axis /= np.linalg.norm(axis)
            assert axis[1] > 0.9  # apex at the top, mitral annulus below it
            chords = xy[1:, 2:] - xy[1:, :2]
            cosines = chords @ axis / np.linalg.norm(chords, axis=1)
            assert np.abs(cosines).max() < 1e-3  # chords perpendicular to the long axis
            # Chord midpoints lie on the long axis, between apex and annulus.
            rel = (xy[1:, :2] + xy[1:, 2:]) / 2 - xy[0, :2]
            across = rel[:, 0] * axis[1] - rel[:, 1] * axis[0]
            assert np.abs(across).max() < 1e-3
    assert orders == {True, False}  # both ED-first and ES-first blocks, as in real data


def test_ef_from_tracings_matches_filelist(tables):
    filelist, tracings = tables
    for row in filelist.itertuples():
        blocks = traced(tracings, row.FileName)
        ed, es = ed_es(blocks)
        volume_px3 = {t: disc_volume(b.X1, b.Y1, b.X2, b.Y2) for t, b in blocks.items()}
        ef = ejection_fraction(volume_px3[ed], volume_px3[es])
        assert abs(ef - row.EF) <= 2.0, row.FileName
        assert abs(ef - row.EF) < 0.05  # in fact equal up to the CSV's rounding
        # The mL columns: same volumes at the documented pixel spacing, consistent with EF.
        ml_per_px3 = synthetic.PIXEL_SPACING_CM**3
        assert row.EDV == pytest.approx(volume_px3[ed] * ml_per_px3, rel=1e-3)
        assert row.ESV == pytest.approx(volume_px3[es] * ml_per_px3, rel=1e-3)
        assert 100 * (row.EDV - row.ESV) / row.EDV == pytest.approx(row.EF, abs=0.05)
        area = {t: trace_mask(b.X1, b.Y1, b.X2, b.Y2, SIZE, SIZE).sum() for t, b in blocks.items()}
        assert area[ed] > area[es]


def test_label_ranges(tables):
    filelist = tables[0]
    assert filelist["EF"].between(5, 90).all()
    assert filelist["EDV"].between(20, 300).all() and (filelist["ESV"] < filelist["EDV"]).all()


def test_videos_decode(root, tables):
    filelist = tables[0]
    for row in filelist.itertuples():
        path = root / "Videos" / f"{row.FileName}.avi"
        capture = cv2.VideoCapture(str(path))
        assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(row.FPS)
        assert capture.get(cv2.CAP_PROP_FOURCC) == cv2.VideoWriter_fourcc(*"MJPG")
        capture.release()
        video = decode(path)
        assert video.shape == (row.NumberOfFrames, SIZE, SIZE, 3) and video.dtype == np.uint8
        assert (video[..., 0] == video[..., 1]).all() and (video[..., 0] == video[..., 2]).all()


def test_outside_sector_is_black(root, tables):
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    dx = np.abs(xx - (SIZE - 1) / 2)
    outside = (dx > yy + 3) | (np.hypot(dx, yy) > SIZE + 3)  # beyond the 45° edges / the arc
    inside = (dx < yy - 10) & (np.hypot(dx, yy) < SIZE - 15)
    for name in tables[0]["FileName"][:8]:
        video = decode(root / "Videos" / f"{name}.avi")[..., 0].astype(float)
        assert video[:, outside].mean() < 1.0 and np.percentile(video[:, outside], 99.9) <= 12
        assert video[:, inside].mean() > 15


def test_rendered_cavity_matches_tracings(root, tables):
    filelist, tracings = tables
    kernel = np.ones((3, 3), np.uint8)
    for row in filelist.itertuples():
        side = np.load(root / "LVMasks" / f"{row.FileName}.npz")
        masks, volume_ml = side["masks"], side["volume_ml"]
        assert masks.dtype == bool and masks.shape == (row.NumberOfFrames, SIZE, SIZE)
        assert volume_ml.shape == (row.NumberOfFrames,)
        video = decode(root / "Videos" / f"{row.FileName}.avi")[..., 0].astype(float)
        blocks = traced(tracings, row.FileName)
        ed, es = ed_es(blocks)
        assert volume_ml[ed] == pytest.approx(row.EDV, rel=1e-3)
        assert volume_ml[es] == pytest.approx(row.ESV, rel=1e-3)
        for t, b in blocks.items():
            traced_mask = trace_mask(b.X1, b.Y1, b.X2, b.Y2, SIZE, SIZE)
            iou = (traced_mask & masks[t]).sum() / (traced_mask | masks[t]).sum()
            assert iou > 0.85, (row.FileName, t, iou)
            # In the pixels themselves: a dark cavity inside the tracing, bright wall around it.
            lv = traced_mask.astype(np.uint8)
            core = cv2.erode(lv, kernel, iterations=2).astype(bool)
            ring = (cv2.dilate(lv, kernel, iterations=6) - cv2.dilate(lv, kernel, iterations=2)).astype(bool)
            assert video[t][core].mean() < 0.5 * video[t][ring].mean()


def test_same_seed_same_data_any_workers(root, tables, tmp_path):
    # 6 videos from 2 worker processes must equal the first 6 of the in-process 32-video set.
    small = synthetic.generate(tmp_path / "a", videos=6, seed=0, workers=2, progress=False)
    filelist, tracings = tables
    small_list = pd.read_csv(small / "FileList.csv")
    pd.testing.assert_frame_equal(small_list.drop(columns="Split"), filelist.drop(columns="Split").iloc[:6])
    small_tracings = pd.read_csv(small / "VolumeTracings.csv")
    expected = tracings[tracings["FileName"].isin(small_list["FileName"] + ".avi")].reset_index(drop=True)
    pd.testing.assert_frame_equal(small_tracings, expected)
    for name in small_list["FileName"]:
        np.testing.assert_array_equal(decode(small / "Videos" / f"{name}.avi"), decode(root / "Videos" / f"{name}.avi"))
    other = pd.read_csv(synthetic.generate(tmp_path / "b", videos=3, seed=1, workers=1, progress=False) / "FileList.csv")
    assert not set(other["FileName"]) & set(filelist["FileName"])
    assert not np.allclose(other["EF"], filelist["EF"].iloc[:3])


def test_single_frame_does_not_reveal_ef(root, tables):
    filelist = tables[0]
    rng = np.random.default_rng(0)
    single, change = [], []
    for name in filelist["FileName"]:
        area = np.load(root / "LVMasks" / f"{name}.npz")["masks"].sum(axis=(1, 2))
        single.append(area[rng.integers(area.size)])
        change.append(1 - area.min() / area.max())
    assert abs(np.corrcoef(single, filelist["EF"])[0, 1]) < 0.5  # 32 videos: loose bound
    assert np.corrcoef(change, filelist["EF"])[0, 1] > 0.9


def test_single_frame_does_not_reveal_ef_many_videos():
    # Cheap: parameters and the LV time course only (no rendering), 600 videos.
    rng = np.random.default_rng(1)
    single_area, ed_volume, change, ef = [], [], [], []
    for index in range(600):
        params = synthetic.video_parameters(7, index)
        course = synthetic.lv_time_course(params)
        area = np.pi / 2 * course["length"] * course["halfwidth"]  # half-ellipse area
        single_area.append(area[rng.integers(area.size)])
        ed_volume.append(params.ed_length_px * params.ed_halfwidth_px**2)
        change.append(1 - area.min() / area.max())
        ef.append(params.ef_target_percent)
    assert abs(np.corrcoef(single_area, ef)[0, 1]) < 0.35
    assert abs(np.corrcoef(ed_volume, ef)[0, 1]) < 0.12  # EDV independent of EF
    assert np.corrcoef(change, ef)[0, 1] > 0.95


def test_label_and_nuisance_statistics():
    params = [synthetic.video_parameters(3, index) for index in range(3000)]
    ef = np.array([p.ef_target_percent for p in params])
    assert 54 <= ef.mean() <= 58 and 10.5 <= ef.std() <= 14
    assert 0.18 <= (ef < 50).mean() <= 0.27
    assert ef.min() < 20 and ef.max() > 75 and 5 <= ef.min() and ef.max() <= 90
    heart_rate = np.array([p.heart_rate_bpm for p in params])
    assert heart_rate.min() >= 50 and heart_rate.max() <= 110
    assert np.mean([p.fps == 50 for p in params]) > 0.7
    frames = np.array([p.n_frames for p in params])
    assert 0.01 < (frames < 64).mean() < 0.1 and frames.max() <= 250
    cycle_frames = np.array([60 * p.fps / p.heart_rate_bpm for p in params])
    assert (frames >= 1.1 * cycle_frames).all()  # ED and ES both on screen


def test_volume_curve_is_asymmetric():
    params = synthetic.video_parameters(0, 5)
    course = synthetic.lv_time_course(params)
    volume = course["length"] * course["halfwidth"] ** 2
    phase = course["phase"]
    cycle = volume[np.argsort(phase)]  # one cycle, sampled at the video's phases
    ejecting = np.mean(np.diff(cycle) < 0)
    assert 0.25 < ejecting < 0.42  # fast systole (~1/3 of the cycle), slower diastole


def test_cli(tmp_path):
    root = synthetic.main([str(tmp_path / "cli"), "--videos", "3", "--seed", "5", "--workers", "1",
                           "--quiet", "--no-masks"])
    filelist = pd.read_csv(root / "FileList.csv")
    assert len(filelist) == 3 and not (root / "LVMasks").exists()
    assert all((root / "Videos" / f"{name}.avi").is_file() for name in filelist["FileName"])


def test_min_frames_lengthens_short_videos_only(tmp_path):
    plain = synthetic.generate(tmp_path / "plain", videos=3, seed=7, workers=1, progress=False, write_masks=False)
    long = synthetic.generate(tmp_path / "long", videos=3, seed=7, workers=1, progress=False, write_masks=False,
                              min_frames=640)
    a, b = pd.read_csv(plain / "FileList.csv"), pd.read_csv(long / "FileList.csv")
    assert (a["NumberOfFrames"] < 640).all() and (b["NumberOfFrames"] == 640).all()
    assert list(a["FileName"]) == list(b["FileName"])  # the same videos, only longer
    for name in b["FileName"]:
        capture = cv2.VideoCapture(str(long / "Videos" / f"{name}.avi"))
        count = 0
        while capture.read()[0]:
            count += 1
        assert count == 640
