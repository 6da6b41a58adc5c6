"""Files → tensors: the EchoNet-Dynamic data layer and its synthetic stand-in."""
from .filelist import DataError, read_file_list, read_volume_tracings
from .echonet import (
    EchoNet,
    clip_starts,
    collate_clips,
    compute_mean_std,
    gather_clips,
    normalise_clips,
    oversampling_sampler,
)
from .tracings import background_mask, disc_volume, ejection_fraction, trace_mask
from .video import TruncatedVideoError, VideoCache, VideoReadError, probe_video, read_video

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
    "normalise_clips",
    "oversampling_sampler",
    "probe_video",
    "read_file_list",
    "read_video",
    "read_volume_tracings",
    "trace_mask",
]
