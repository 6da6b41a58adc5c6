"""The clip pipeline (`protoef.data.clips`) and the video seam (`protoef.data.locations`),
checked against values written out by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from protoef.analysis.inference import other_files, video_paths
from protoef.data import ClipSpec, EchoNet, average_clips, clip_starts, model_input, read_file_list, videos_per_batch
from protoef.data.locations import list_videos, video_filename, video_path


def test_the_old_name_all_is_refused_with_the_new_one():
    for call in (lambda: clip_starts(100, 32, "all"), lambda: ClipSpec(8, 1, "all"), lambda: videos_per_batch(8, "all")):
        with pytest.raises(ValueError, match=r"clips='tiles'.*EchoNet-Dynamic's clips='all' means every start at stride 1"):
            call()
    with pytest.raises(ValueError, match="clips='tiles'"):
        EchoNet("/nonexistent", clips="all")  # refused before any file is read
    with pytest.raises(ValueError, match="'random', 'deterministic', 'tiles' or a positive int"):
        ClipSpec(8, 1, 0)


def test_tiles_and_a_capped_count():
    assert clip_starts(100, 32, "tiles") == [0, 32, 68]  # frames 64-67 lie between the last two tiles
    assert clip_starts(100, 32, 2) == [0, 68]
    assert clip_starts(20, 32, "tiles") == [0]  # shorter than one span: one padded clip


def test_a_spec_cuts_the_frames_it_names():
    spec = ClipSpec(3, 2, "tiles")
    assert spec.span == 6 and spec.multi_clip and not ClipSpec(3, 2, "random").multi_clip
    assert spec.frame_indices([0, 10]).tolist() == [0, 2, 4, 10, 12, 14]
    frames = np.arange(13, dtype=np.uint8)[:, None, None].repeat(2, 1).repeat(2, 2)  # frame f has value f
    clips, starts = spec.cut(frames)
    assert starts == [0, 7]  # two tiles of 6 frames in 13, the second aligned to the end
    assert clips[:, :, 0, 0].tolist() == [[0, 2, 4], [7, 9, 11]]
    assert spec.minimum_frames == 3  # (ceil(3 / 2) - 1) * 2 + 1: frames 0 and 2 are real


def test_model_input_scales_normalises_and_repeats_the_channel():
    clips = torch.tensor([0, 51, 255], dtype=torch.uint8).reshape(1, 3, 1, 1)  # (K, T, H, W)
    video = model_input(clips, 0.2, 0.5)
    assert video.shape == (1, 3, 3, 1, 1)
    expected = [(0 - 0.2) / 0.5, (0.2 - 0.2) / 0.5, (1 - 0.2) / 0.5]
    for channel in range(3):
        assert video[0, channel, :, 0, 0].tolist() == pytest.approx(expected)


def test_average_clips_gives_each_video_the_mean_of_its_own_clips():
    values = torch.tensor([[1.0, 10.0], [3.0, 30.0], [5.0, 0.0], [7.0, 0.0], [9.0, 3.0]])
    np.testing.assert_array_equal(average_clips(values, [2, 3]).numpy(), [[2.0, 20.0], [7.0, 1.0]])
    np.testing.assert_array_equal(average_clips(torch.tensor([4.0, 6.0]), torch.tensor([1, 1])).numpy(), [4.0, 6.0])


def test_evaluation_batches_hold_about_batch_size_clips():
    assert videos_per_batch(16, 10) == 1 and videos_per_batch(16, 3) == 5 and videos_per_batch(2, 3) == 1
    assert videos_per_batch(16, "deterministic") == 16 and videos_per_batch(16, "tiles") == 1


def test_a_filename_keeps_its_suffix_and_a_bare_one_gets_avi(tmp_path):
    assert video_filename("0X1A2B") == "0X1A2B.avi"
    assert video_filename(" 0X1A2B.AVI ") == "0X1A2B.AVI"
    assert video_filename("clip.mp4") == "clip.mp4"  # not clip.mp4.avi
    assert video_path(tmp_path, "0X1A2B") == tmp_path / "Videos" / "0X1A2B.avi"
    (tmp_path / "FileList.csv").write_text("FileName,EF,Split\n0X1A2B,50,TRAIN\nclip.mp4,40,VAL\n")
    assert read_file_list(tmp_path)["filename"].tolist() == ["0X1A2B.avi", "clip.mp4"]


def test_a_folder_splits_into_videos_and_other_files(tmp_path):
    for name in ("b.avi", "A.AVI", "notes.txt", "clip.mp4"):
        (tmp_path / name).write_bytes(b"")
    assert [path.name for path in list_videos(tmp_path)] == ["A.AVI", "b.avi"]
    assert video_paths(tmp_path) == list_videos(tmp_path)
    assert other_files(tmp_path) == ["clip.mp4", "notes.txt"]
