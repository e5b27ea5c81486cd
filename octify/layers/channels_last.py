"""Channels-last operations (``Linear`` and ``LayerNorm`` over the last dimension of an
``N, H, W, C`` tensor, as in ConvNeXt blocks) expressed on ``N, C, H, W`` feature maps.

``PointwiseLinear``, ``ChannelLayerNorm`` and ``ChannelsLast`` (for element-wise modules)
take and return ``N, C, H, W`` maps, and compute exactly what the channels-last layer
computes between ``permute(0, 2, 3, 1)`` and ``permute(0, 3, 1, 2)`` (they permute
internally, so the numbers are the same). A pointwise
linear layer is a 1x1 convolution on the channels (:meth:`PointwiseLinear.as_conv`).

``OctChannelLayerNorm`` normalizes each branch of an octave tensor over its own channels,
with the slices of the original weight and bias: at ``alpha > 0`` this is a different
function from one LayerNorm over all channels (the mean and variance are per branch).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .channels import ChannelSplit
from .checks import octave_input
from .octconv import OctaveTensor

TO_CHANNELS_LAST, TO_CHANNELS_FIRST = (0, 2, 3, 1), (0, 3, 1, 2)


class PointwiseLinear(nn.Linear):
    """``nn.Linear`` over the channels of an ``N, C, H, W`` map (same parameters, same numbers);
    it describes itself as the 1x1 convolution it is (``kernel_size``, ``stride``, ...)."""

    kernel_size, stride, padding, dilation, groups = (1, 1), (1, 1), (0, 0), (1, 1), 1

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "PointwiseLinear":
        """A PointwiseLinear sharing ``linear``'s parameters."""
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, device="meta")
        layer.weight, layer.bias = linear.weight, linear.bias
        return layer.train(linear.training)

    @property
    def in_channels(self) -> int:
        return self.in_features

    @property
    def out_channels(self) -> int:
        return self.out_features

    def as_conv(self) -> nn.Conv2d:
        """The equivalent 1x1 convolution, with copies of the weights."""
        conv = nn.Conv2d(self.in_features, self.out_features, 1, bias=self.bias is not None, device="meta")
        conv = conv.to_empty(device=self.weight.device).to(dtype=self.weight.dtype)
        with torch.no_grad():
            conv.weight.copy_(self.weight[:, :, None, None])
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv.train(self.training)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x.permute(TO_CHANNELS_LAST), self.weight, self.bias).permute(TO_CHANNELS_FIRST)


class ChannelsLast(nn.Module):
    """An element-wise module applied to an ``N, C, H, W`` map viewed channels-last: the numbers of
    the channels-last region it comes from (some kernels, GELU's among them, round differently
    on other layouts)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x.permute(TO_CHANNELS_LAST)).permute(TO_CHANNELS_FIRST)


class ChannelLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the channels of an ``N, C, H, W`` map (same parameters, same numbers)."""

    @classmethod
    def from_parameters(cls, channels: int, weight: Tensor | None, bias: Tensor | None,
                        eps: float) -> "ChannelLayerNorm":
        """A ChannelLayerNorm over ``channels`` sharing the given parameters (None: not affine)."""
        layer = cls(channels, eps, elementwise_affine=weight is not None, bias=bias is not None, device="meta")
        if weight is not None:
            layer.weight = weight
        if bias is not None:
            layer.bias = bias
        return layer

    def forward(self, x: Tensor) -> Tensor:
        normalized = F.layer_norm(x.permute(TO_CHANNELS_LAST), self.normalized_shape, self.weight, self.bias,
                                  self.eps)
        return normalized.permute(TO_CHANNELS_FIRST)


class OctChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of an octave tensor: each branch over its own channels."""

    def __init__(self, norm: ChannelLayerNorm, split: ChannelSplit) -> None:
        super().__init__()
        if split.channels != norm.normalized_shape[0] or not split.n_low or not split.n_high:
            raise ValueError(f"OctChannelLayerNorm needs channels in both branches of {norm.normalized_shape[0]}, "
                             f"got {split!r}")
        self.split = split
        self.norm_h, self.norm_l = (_sliced(norm, split.branch_index(low)) for low in (False, True))

    def forward(self, x: OctaveTensor) -> OctaveTensor:
        high, low = octave_input(x, "OctChannelLayerNorm", (self.split.n_high, self.split.n_low))
        return self.norm_h(high), self.norm_l(low)

    def extra_repr(self) -> str:
        return f"{self.split.channels}, low={self.split.n_low}"


def _sliced(norm: ChannelLayerNorm, channels: tuple) -> ChannelLayerNorm:
    def pick(parameter):
        if parameter is None:
            return None
        index = torch.tensor(channels, dtype=torch.long, device=parameter.device)
        return nn.Parameter(parameter.detach().index_select(0, index), parameter.requires_grad)

    return ChannelLayerNorm.from_parameters(len(channels), pick(norm.weight), pick(norm.bias), norm.eps) \
        .train(norm.training)
