"""Files → tensors: the EchoNet-Dynamic data layer and its synthetic stand-in."""
from .filelist import DataError, Tracings, read_file_list, read_volume_tracings, unassigned_rows
from .clips import (
    ClipSpec,
    average_clips,
    clip_starts,
    collate_clips,
    gather_clips,
    minimum_frames,
    model_input,
    normalise_clips,
    videos_per_batch,
)
from .echonet import EchoNet, compute_mean_std, oversampling_sampler
from .locations import list_videos, video_filename, video_folder, video_path
from .tracings import background_mask, disc_volume, ejection_fraction, trace_mask
from .video import TruncatedVideoError, VideoCache, VideoReadError, intensity_statistics, probe_video, read_video

__all__ = [
    "ClipSpec",
    "DataError",
    "EchoNet",
    "TruncatedVideoError",
    "VideoCache",
    "VideoReadError",
    "average_clips",
    "background_mask",
    "clip_starts",
    "collate_clips",
    "compute_mean_std",
    "disc_volume",
    "ejection_fraction",
    "gather_clips",
    "intensity_statistics",
    "list_videos",
    "minimum_frames",
    "model_input",
    "normalise_clips",
    "oversampling_sampler",
    "probe_video",
    "read_file_list",
    "read_video",
    "read_volume_tracings",
    "Tracings",
    "trace_mask",
    "unassigned_rows",
    "video_filename",
    "video_folder",
    "video_path",
    "videos_per_batch",
]
