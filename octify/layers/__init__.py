"""Octave layers: they know nothing about graphs, only about (high, low) tensors."""
from .branchwise import (Branchwise, ChannelSplitter, OctBatchNorm2d, OctBatchNormFunction, OctGlobalAvgPool,
                         OctGroupNormFunction, OctMerge, OctPReLUFunction, OctSplit, OctStochasticDepth,
                         PerBranch)
from .channels_last import ChannelLayerNorm, ChannelsLast, OctChannelLayerNorm, PointwiseLinear
from .channels import ChannelSplit, low_channel_count, parse_alpha
from .functional_octconv import FunctionalOctConv2d
from .octconv import OctConv2d
from .octconv_transpose import OctConvTranspose2d
from .pooling import OctGlobalMaxPool, OctInterpolate, OctPool2d
from .resample import downsample, upsample_to

__all__ = ["Branchwise", "ChannelLayerNorm", "ChannelsLast", "ChannelSplit", "ChannelSplitter", "FunctionalOctConv2d",
           "OctChannelLayerNorm", "PointwiseLinear", "OctGlobalAvgPool", "OctGlobalMaxPool", "OctInterpolate",
           "OctPool2d", "OctStochasticDepth", "OctBatchNorm2d", "OctBatchNormFunction", "OctConv2d",
           "OctConvTranspose2d", "OctGroupNormFunction", "OctMerge", "OctPReLUFunction", "OctSplit", "PerBranch",
           "downsample", "low_channel_count", "parse_alpha", "upsample_to"]
