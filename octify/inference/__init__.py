"""Inference: BatchNorm folding, fused octave convolutions, 1x1 convolutions as matrix products,
channels-last, in-place adds.

``for_inference(model)`` returns an eval-mode copy of a plain or converted model that
computes the same outputs (to float32 rounding) faster.
"""
from . import counting  # noqa: F401  (registers the cost rule of the fast octave layers)
from .autocast import Autocast
from .folding import batchnorm_affine, fold_conv_batchnorm, fold_conv_split_batchnorm, fold_octconv_batchnorm
from .fused import FusedOctConv2d, fast_octconv
from .fusion import fuse_epilogues
from .grouped import GroupedOctConv2d
from .kernels import PointwiseConv2d
from .optimize import fold_batchnorms, for_inference, make_residual_adds_in_place
from .resample import add_upsampled_

__all__ = ["Autocast", "FusedOctConv2d", "GroupedOctConv2d", "PointwiseConv2d", "add_upsampled_", "batchnorm_affine",
           "fast_octconv", "fold_batchnorms", "fold_conv_batchnorm", "fold_conv_split_batchnorm",
           "fold_octconv_batchnorm", "for_inference", "fuse_epilogues", "make_residual_adds_in_place"]
