"""octify: turn a CNN into an Octave Convolution network automatically."""
from .layers import (Branchwise, ChannelSplit, OctBatchNorm2d, OctConv2d, OctMerge, OctSplit,
                     downsample, upsample_to)

from .convert import Conversion, convert
from .errors import ConversionError, InternalError
from .inference import for_inference
from .plan import Schedule
from .report import ModelCost, Report, cost

__version__ = "0.1.0"

__all__ = ["Conversion", "ConversionError", "InternalError", "Schedule", "convert", "Branchwise", "ChannelSplit", "OctBatchNorm2d", "OctConv2d", "OctMerge", "OctSplit",
           "downsample", "upsample_to", "__version__", "ModelCost", "Report", "cost", "for_inference"]
