"""Files → tensors: the EchoNet-Dynamic data layer and its synthetic stand-in."""
from .filelist import DataError, Tracings, read_file_list, read_volume_tracings, unassigned_rows
from .echonet import (
    EchoNet,
    clip_starts,
    collate_clips,
    compute_mean_std,
    gather_clips,
    minimum_frames,
    normalise_clips,
    oversampling_sampler,
)
from .tracings import background_mask, disc_volume, ejection_fraction, trace_mask
from .video import TruncatedVideoError, VideoCache, VideoReadError, intensity_statistics, probe_video, read_video

__all__ = [
    "DataError",
    "EchoNet",
    "TruncatedVideoError",
    "VideoCache",
    "VideoReadError",
    "background_mask",
    "clip_starts",
    "collate_clips",
    "compute_mean_std",
    "disc_volume",
    "ejection_fraction",
    "gather_clips",
    "intensity_statistics",
    "minimum_frames",
    "normalise_clips",
    "oversampling_sampler",
    "probe_video",
    "read_file_list",
    "read_video",
    "read_volume_tracings",
    "Tracings",
    "trace_mask",
    "unassigned_rows",
]
