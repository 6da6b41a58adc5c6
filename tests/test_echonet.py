"""The EchoNet data layer on a tiny hand-built data set with every quirk real files have.

Videos are written with OpenCV as MJPG AVIs whose frames are uniform grey levels that
encode the frame index (10 + index before compression), so the pixel value tells which
frame of the video a clip frame came from. Expected values come from a direct OpenCV
decode of the file (the codec shifts uniform levels slightly), never from the dataset.
"""
from __future__ import annotations

import pathlib
import warnings

import cv2
import numpy as np
import pytest
import torch

from protoef.data import (
    DataError,
    EchoNet,
    VideoCache,
    clip_starts,
    collate_clips,
    compute_mean_std,
    oversampling_sampler,
)
from protoef.data.video import read_frames

SIZE = 64  # frame size of the hand-built videos (a multiple of the feature size 8)


def write_avi(path: pathlib.Path, frames: np.ndarray, fps: float = 50.0) -> None:
    height, width = frames.shape[1:]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(np.repeat(frame[:, :, None], 3, axis=2))
    writer.release()


def index_video(num_frames: int, height: int = SIZE, width: int = SIZE) -> np.ndarray:
    values = 10 + np.arange(num_frames)
    assert values.max() <= 255
    return np.broadcast_to(values[:, None, None], (num_frames, height, width)).astype(np.uint8)


def rectangle_tracing(left, right, top, bottom, chords=10):
    """Rows of a traced frame whose polygon is the rectangle [left, right] × [top, bottom]."""
    centre = (left + right) / 2
    rows = [(centre, top, centre, bottom)]  # the long axis comes first
    rows += [(left, y, right, y) for y in np.linspace(top, bottom, chords)]
    return rows


def tracing_rows(filename, frame, rows):
    return [f"{filename},{x1},{y1},{x2},{y2},{frame}" for x1, y1, x2, y2 in rows]


ED_BOX = (16, 48, 12, 52)  # left, right, top, bottom: the larger (end-diastolic) cavity
ES_BOX = (22, 42, 18, 46)


@pytest.fixture(scope="module")
def quirky_root(tmp_path_factory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("echonet")
    videos = root / "Videos"
    videos.mkdir()
    # name, EF, split (as written), frames, (height, width), tracing frames {frame: box}
    table = [
        ("0XGOOD1", "62.5", "TRAIN", 100, (SIZE, SIZE), {3: ED_BOX, 40: ES_BOX}),
        ("0XGOOD2", "35.0", "train", 80, (SIZE, SIZE), {50: ES_BOX, 7: ED_BOX}),  # ES listed first
        ("0XSHORT", "48.0", "Train", 20, (SIZE, SIZE), {0: ED_BOX, 10: ES_BOX}),  # shorter than a clip
        ("0XWIDE", "55.0", "TRAIN", 70, (48, 80), {1: ED_BOX, 30: ES_BOX}),  # not SIZE×SIZE
        ("0XONETRACE", "58.0", "TRAIN", 60, (SIZE, SIZE), {5: ED_BOX}),
        ("0XNOTRACE", "57.0", "TRAIN", 60, (SIZE, SIZE), {}),
        ("0XNOEF", "", "TRAIN", 60, (SIZE, SIZE), {1: ED_BOX, 20: ES_BOX}),
        ("0XMISSING", "50.0", "TRAIN", None, None, {1: ED_BOX, 20: ES_BOX}),
        ("0XCORRUPT", "45.0", "TRAIN", "garbage", None, {1: ED_BOX, 20: ES_BOX}),
        ("0XEMPTY", "45.0", "TRAIN", "empty", None, {1: ED_BOX, 20: ES_BOX}),
        ("0XVAL1", "70.0", "val", 90, (SIZE, SIZE), {2: ED_BOX, 30: ES_BOX}),
        ("0XTEST1", "30.0", "TEST", 150, (SIZE, SIZE), {2: ED_BOX, 30: ES_BOX}),
    ]
    file_rows = ["FileName,EF,ESV,EDV,FrameHeight,FrameWidth,FPS,NumberOfFrames,Split,ExtraColumn"]
    tracing_lines = ["FileName,X1,Y1,X2,Y2,Frame"]
    for name, ef, split, frames, size, traced in table:
        file_rows.append(f"{name},{ef},10,20,{SIZE},{SIZE},50,{frames},{split},whatever")
        for frame, box in traced.items():
            rows = rectangle_tracing(*box)
            if size and size != (SIZE, SIZE):  # tracings live in the video's own pixels
                rows = [(x1 * size[1] / SIZE, y1 * size[0] / SIZE, x2 * size[1] / SIZE, y2 * size[0] / SIZE) for x1, y1, x2, y2 in rows]
            tracing_lines += tracing_rows(f"{name}.avi", frame, rows)
        if isinstance(frames, int):
            write_avi(videos / f"{name}.avi", index_video(frames, *size))
        elif frames == "garbage":
            (videos / f"{name}.avi").write_bytes(b"RIFF\x00\x00this is not a video" * 50)
        elif frames == "empty":
            (videos / f"{name}.avi").write_bytes(b"")
    # Windows line endings in FileList, Unix in VolumeTracings.
    (root / "FileList.csv").write_bytes(("\r\n".join(file_rows) + "\r\n").encode())
    (root / "VolumeTracings.csv").write_text("\n".join(tracing_lines) + "\n")
    return root


def make(root, split="TRAIN", *, expect_warning=False, **options):
    """An EchoNet over the test set; the skip warning must appear exactly when expected."""
    options = {"clip_length": 32, "resize": SIZE, "mean": 0.0, "std": 1.0, "feature_size": (8, 8), **options}
    if expect_warning:
        with pytest.warns(UserWarning, match="skipped"):
            return EchoNet(root, split, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return EchoNet(root, split, **options)


def frame_levels(path) -> np.ndarray:
    """Mean grey level of every frame of an AVI, decoded directly with OpenCV."""
    capture = cv2.VideoCapture(str(path))
    levels = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return np.array(levels)
        levels.append(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).mean())


def decoded_indices(clip: torch.Tensor, levels: np.ndarray) -> np.ndarray:
    """Frame indices of a (3, T, H, W) clip on the [0, 1] scale, by nearest frame level."""
    values = clip[0].mean(dim=(1, 2)).numpy() * 255.0
    return np.abs(values[:, None] - levels[None, :]).argmin(axis=1)


def test_quirks_are_handled_or_skipped_with_reasons(quirky_root):
    dataset = make(quirky_root, with_masks=True, expect_warning=True)
    reasons = dict(dataset.skipped)
    assert set(dataset.filenames) == {"0XGOOD1.avi", "0XGOOD2.avi", "0XSHORT.avi", "0XWIDE.avi", "0XONETRACE.avi"}
    assert set(reasons) == {"0XNOTRACE.avi", "0XNOEF.avi", "0XMISSING.avi", "0XCORRUPT.avi", "0XEMPTY.avi"}
    assert "EF" in reasons["0XNOEF.avi"]
    assert "no traced frame" in reasons["0XNOTRACE.avi"]
    assert "not found" in reasons["0XMISSING.avi"]
    assert "unreadable" in reasons["0XCORRUPT.avi"] and "unreadable" in reasons["0XEMPTY.avi"]
    # Without masks a video with no tracing is perfectly usable.
    plain = make(quirky_root, expect_warning=True)
    assert "0XNOTRACE.avi" in plain.filenames
    assert len(plain) == 6


def test_split_names_are_case_insensitive(quirky_root):
    assert make(quirky_root, "val").filenames == ["0XVAL1.avi"]
    assert make(quirky_root, ["Val", "test"]).filenames == ["0XVAL1.avi", "0XTEST1.avi"]
    with pytest.raises(ValueError, match="unknown split"):
        make(quirky_root, "TRIAN")


def test_strict_raises_naming_the_file(quirky_root):
    with pytest.raises(DataError, match="0XNOTRACE.avi"):
        make(quirky_root, with_masks=True, strict=True)


def test_missing_file_list_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="FileList.csv.*not found"):
        EchoNet(tmp_path, mean=0.0, std=1.0)


def test_masks_follow_the_tracings_and_ed_is_the_larger(quirky_root):
    dataset = make(quirky_root, with_masks=True, clips="deterministic", expect_warning=True)
    expected_ed = np.zeros((SIZE, SIZE), bool)
    expected_ed[ED_BOX[2] : ED_BOX[3] + 1, ED_BOX[0] : ED_BOX[1] + 1] = True
    expected_es = np.zeros((SIZE, SIZE), bool)
    expected_es[ES_BOX[2] : ES_BOX[3] + 1, ES_BOX[0] : ES_BOX[1] + 1] = True
    for filename, (ed_frame, es_frame) in {"0XGOOD1.avi": (3, 40), "0XGOOD2.avi": (7, 50)}.items():
        item = dataset[dataset.filenames.index(filename)]
        assert (item["ed_frame"], item["es_frame"]) == (ed_frame, es_frame)
        # skimage's polygon rule may leave out the far edge; allow one row/column.
        assert (item["ed_mask"].numpy() ^ expected_ed).sum() <= (ED_BOX[1] - ED_BOX[0]) + (ED_BOX[3] - ED_BOX[2]) + 2
        assert torch.equal(item["lv_mask"], item["ed_mask"] | item["es_mask"])
    one = dataset[dataset.filenames.index("0XONETRACE.avi")]
    assert one["ed_frame"] == one["es_frame"] == 5
    # A 48×80 video resized to 64×64: its tracings scale with it.
    wide = dataset[dataset.filenames.index("0XWIDE.avi")]
    assert wide["video"].shape == (3, 32, SIZE, SIZE)
    overlap = (wide["ed_mask"].numpy() & expected_ed).sum() / (wide["ed_mask"].numpy() | expected_ed).sum()
    assert overlap > 0.9


def test_background_is_zero_on_the_lv_and_one_far_away(quirky_root):
    options = dict(with_masks=True, clips="deterministic", feature_size=(32, 32), expect_warning=True)
    background = make(quirky_root, **options)[0]["background"]
    assert background.shape == (32, 32)
    assert background.min() >= 0 and background.max() <= 1 + 1e-6
    # LV rows 12..52, cols 16..48 of 64 → 6..26 and 8..24 of 32, dilated by 2 on each side.
    assert background[16, 16] == pytest.approx(0.0, abs=1e-6)
    assert background[0, 0] == pytest.approx(1.0, abs=1e-6)
    assert 0.0 < background[16, 5] < 1.0  # the blur softens the dilated edge (cols 6..26)


def test_clip_sampling_modes(quirky_root):
    dataset = make(quirky_root, "TEST", clips="tiles")  # 150 frames, span 32 → 4 clips
    levels = frame_levels(dataset.records[0].path)
    item = dataset[0]
    assert item["video"].shape == (4, 3, 32, SIZE, SIZE)
    assert item["clip_starts"].tolist() == [0, 32, 64, 150 - 32]
    for clip, start in zip(item["video"], item["clip_starts"].tolist()):
        assert np.array_equal(decoded_indices(clip, levels), start + np.arange(32))
    capped = make(quirky_root, "TEST", clips=2)[0]
    assert capped["clip_starts"].tolist() == [0, 150 - 32]
    strided = make(quirky_root, "TEST", clips="deterministic", period=2)[0]
    assert np.array_equal(decoded_indices(strided["video"], levels), 2 * np.arange(32))
    torch.manual_seed(0)
    starts = {make(quirky_root, "TEST", clips="random")[0]["clip_starts"].item() for _ in range(20)}
    assert len(starts) > 1 and min(starts) >= 0 and max(starts) <= 150 - 32


def test_short_video_is_padded_with_black(quirky_root):
    dataset = make(quirky_root, clips="tiles", mean=0.2, std=0.5, expect_warning=True)
    item = dataset[dataset.filenames.index("0XSHORT.avi")]  # 20 frames, clips of 32
    levels = frame_levels(dataset.records[dataset.filenames.index("0XSHORT.avi")].path)
    assert item["video"].shape == (1, 3, 32, SIZE, SIZE)
    video = item["video"][0] * 0.5 + 0.2  # undo the normalisation
    assert np.array_equal(decoded_indices(video[:, :20], levels), np.arange(20))
    assert torch.allclose(video[:, 20:], torch.zeros(()), atol=1e-6)


def test_augmentation_rotates_masks_with_the_video(tmp_path):
    # One video whose bright pixels are exactly the traced LV: after any rotation the
    # bright pixels must still be where the (rotated) LV mask says.
    root = tmp_path
    (root / "Videos").mkdir()
    frames = np.zeros((40, SIZE, SIZE), np.uint8)
    frames[:, ED_BOX[2] : ED_BOX[3] + 1, ED_BOX[0] : ED_BOX[1] + 1] = 200
    write_avi(root / "Videos" / "0XROT.avi", frames)
    (root / "FileList.csv").write_text("FileName,EF,Split\n0XROT,50,TRAIN\n")
    lines = ["FileName,X1,Y1,X2,Y2,Frame"] + tracing_rows("0XROT.avi", 0, rectangle_tracing(*ED_BOX))
    lines += tracing_rows("0XROT.avi", 20, rectangle_tracing(*ES_BOX))
    (root / "VolumeTracings.csv").write_text("\n".join(lines) + "\n")
    dataset = make(root, with_masks=True, augment=True, rotation_degrees=10.0)
    torch.manual_seed(1)
    rotated_any = False
    for _ in range(5):
        item = dataset[0]
        bright = item["video"][0, 0].numpy() > 100 / 255
        agreement = (bright == item["lv_mask"].numpy()).mean()
        assert agreement > 0.97
        unrotated = np.zeros((SIZE, SIZE), bool)
        unrotated[ED_BOX[2] : ED_BOX[3] + 1, ED_BOX[0] : ED_BOX[1] + 1] = True
        rotated_any |= bool((item["lv_mask"].numpy() != unrotated).sum() > 20)
    assert rotated_any


def test_video_cache_round_trip(quirky_root, tmp_path):
    plain = make(quirky_root, "TEST", clips="deterministic")
    cached = make(quirky_root, "TEST", clips="deterministic", cache_dir=tmp_path / "cache")
    first = cached[0]["video"]
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    assert isinstance(cached.frames(0), np.memmap)  # the second read is memory-mapped
    assert torch.equal(first, cached[0]["video"])
    assert torch.equal(first, plain[0]["video"])
    cache = VideoCache(tmp_path / "cache")
    assert (plain.records[0].path, (SIZE, SIZE)) in cache
    assert (plain.records[0].path, (32, 32)) not in cache  # another size is another entry


@pytest.mark.parametrize("options", [dict(clips="random"), dict(clips="tiles"), dict(clips=2, period=3),
                                     dict(clips="deterministic", period=4), dict(clips="random", resize=32)])
def test_selective_decode_gives_the_clips_of_a_full_decode(quirky_root, tmp_path, options):
    # Without a cache only the clip frames are decoded (read_frames); with one the whole
    # video is read and the clips gathered from it. Same seed → the same item, every mode.
    plain = make(quirky_root, "TRAIN", expect_warning=True, **options)
    cached = make(quirky_root, "TRAIN", expect_warning=True, cache_dir=tmp_path / "cache", **options)
    for index in range(len(plain)):  # includes the 20-frame video (padded) and the 48×80 one
        torch.manual_seed(index)
        selective = plain[index]
        torch.manual_seed(index)
        full = cached[index]
        assert selective["clip_starts"].tolist() == full["clip_starts"].tolist()
        assert torch.equal(selective["video"], full["video"])


def test_read_frames_order_repeats_padding_and_a_lying_header(tmp_path):
    path = tmp_path / "index.avi"
    write_avi(path, index_video(100))
    levels = frame_levels(path)
    frames = read_frames(path, lambda count: [7, 3, 3, 99, 100, 250])
    assert frames.shape == (6, SIZE, SIZE)
    nearest = np.abs(frames[:4].mean(axis=(1, 2))[:, None] - levels[None]).argmin(axis=1)
    assert nearest.tolist() == [7, 3, 3, 99]
    assert not frames[4:].any()  # past the end: black
    # A truncated file: the header still says 100 frames, the decoder yields fewer. The
    # frames must then be those of a full decode, chosen for the true count.
    truncated = tmp_path / "truncated.avi"
    truncated.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.6)])
    decodable = len(frame_levels(truncated))
    assert 0 < decodable < 100 and int(cv2.VideoCapture(str(truncated)).get(cv2.CAP_PROP_FRAME_COUNT)) == 100
    counts = []

    def last_four(count):
        counts.append(count)
        return list(range(count - 4, count))

    frames = read_frames(truncated, last_four)
    assert counts == [100, decodable]
    nearest = np.abs(frames.mean(axis=(1, 2))[:, None] - levels[None]).argmin(axis=1)
    assert nearest.tolist() == list(range(decodable - 4, decodable))


def test_mean_std_matches_numpy(quirky_root):
    mean, std = compute_mean_std(quirky_root, resize=SIZE)
    # Independent: every readable TRAIN video (EF present) decoded directly, uniform frames.
    names = ("0XGOOD1", "0XGOOD2", "0XSHORT", "0XWIDE", "0XONETRACE", "0XNOTRACE")
    pixels = np.concatenate([frame_levels(quirky_root / "Videos" / f"{name}.avi") for name in names]) / 255.0
    assert mean == pytest.approx(pixels.mean(), abs=2e-3)
    assert std == pytest.approx(pixels.std(), abs=2e-3)


def test_clip_starts_rules():
    assert clip_starts(100, 32, "tiles") == [0, 32, 68]
    assert clip_starts(64, 64, "tiles") == [0]
    assert clip_starts(65, 64, 10) == [1]  # one clip fits: aligned to the end
    assert clip_starts(10, 64, "tiles") == [0]  # shorter than the span: padded
    assert clip_starts(1000, 64, 10) == [0, 64, 128, 192, 256, 320, 384, 448, 512, 936]
    with pytest.raises(ValueError):
        clip_starts(100, 32, "sometimes")


def test_sampler_balances_low_ef_in_expectation():
    efs = np.array([30.0] * 20 + [60.0] * 180)  # 10% below 50
    sampler = oversampling_sampler(efs)
    weights = sampler.weights.numpy()
    assert weights[efs < 50].sum() == pytest.approx(weights[efs >= 50].sum())
    assert len(sampler) == len(efs) and sampler.replacement
    draws = []
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        draws += list(oversampling_sampler(efs, generator=generator))
    fraction_low = np.mean(efs[np.array(draws)] < 50)
    assert fraction_low == pytest.approx(0.5, abs=0.02)


def test_collate_clips_concatenates_variable_clip_counts(quirky_root):
    dataset = make(quirky_root, ["VAL", "TEST"], clips="tiles")  # 90 frames → 2 clips, 150 → 4
    batch = collate_clips([dataset[0], dataset[1]])
    assert batch["video"].shape == (6, 3, 32, SIZE, SIZE)
    assert batch["num_clips"].tolist() == [2, 4]
    assert batch["ef"].tolist() == [70.0, 30.0]
