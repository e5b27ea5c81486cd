"""Octave layers: they know nothing about graphs, only about (high, low) tensors."""
from .branchwise import Branchwise, OctBatchNorm2d, OctMerge, OctSplit
from .channels import ChannelSplit, low_channel_count, parse_alpha
from .octconv import OctConv2d
from .resample import downsample, upsample_to

__all__ = ["Branchwise", "ChannelSplit", "OctBatchNorm2d", "OctConv2d", "OctMerge", "OctSplit",
           "downsample", "low_channel_count", "parse_alpha", "upsample_to"]
