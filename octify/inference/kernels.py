"""Convolution kernels chosen for speed: a 1x1 convolution over few pixels as one matrix product.

oneDNN re-lays out a convolution's weights on every call; for a 1x1 convolution on a
small map (deep layers, batch 1) that copy costs more than the arithmetic. On a
channels-last map such a convolution is exactly ``pixels x in_channels @ in_channels x
out_channels``, which BLAS computes straight from the stored weights. Larger maps keep
``F.conv2d``, where oneDNN's kernels win.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch.nn.functional as F
from torch import Tensor, nn

GEMM_MAX_PIXELS = 1024  # batch x height x width up to which a 1x1 convolution runs as a matrix product
IntPair = Union[int, Tuple[int, int]]


def conv2d(x: Tensor, weight: Tensor, bias: Optional[Tensor], padding: Union[str, IntPair] = 0,
           dilation: IntPair = 1) -> Tensor:
    """``F.conv2d`` at stride 1 without groups, as a matrix product where that is faster."""
    if _is_small_pointwise(x, weight, padding):
        return pointwise_conv2d(x, weight, bias)
    return F.conv2d(x, weight, bias, 1, padding, dilation)


def pointwise_conv2d(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """A 1x1 convolution as one matrix product over the pixels; channels-last in, channels-last out."""
    pixels = x.permute(0, 2, 3, 1)  # [N, H, W, C]: contiguous when x is channels-last
    return F.linear(pixels, weight.view(weight.shape[0], -1), bias).permute(0, 3, 1, 2)


class PointwiseConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` with a 1x1 kernel, stride 1, no padding or groups, using :func:`conv2d`."""

    @classmethod
    def supports(cls, conv: nn.Module) -> bool:
        return (type(conv) is nn.Conv2d and conv.kernel_size == (1, 1) and conv.stride == (1, 1)
                and conv.groups == 1 and conv.padding in ((0, 0), "valid", "same"))

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> "PointwiseConv2d":
        """The same layer, sharing ``conv``'s parameters."""
        layer = cls(conv.in_channels, conv.out_channels, 1, bias=conv.bias is not None, padding=conv.padding,
                    device=conv.weight.device, dtype=conv.weight.dtype)
        layer.weight, layer.bias = conv.weight, conv.bias
        layer.train(conv.training)
        return layer

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4:
            return conv2d(x, self.weight, self.bias, self.padding, self.dilation)
        return super().forward(x)  # unbatched input


def _is_small_pointwise(x: Tensor, weight: Tensor, padding: Union[str, IntPair]) -> bool:
    return (weight.shape[-2:] == (1, 1) and padding in (0, (0, 0), "valid", "same")
            and x.shape[0] * x.shape[2] * x.shape[3] <= GEMM_MAX_PIXELS)
