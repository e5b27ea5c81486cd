"""``FusedOctConv2d``: the outputs of an ``OctConv2d`` with fewer, larger convolutions.

The reference layer runs up to four path convolutions, pools, up-samples and adds.
Re-arranging the weights once (at construction) removes most of that:

* stride 1: the two paths reading the low input (l2h, l2l) are one convolution with their
  weights stacked along the output channels; its l2h part is up-sampled straight into the
  high output (:func:`add_upsampled_`, no copy) and its l2l part is added in place into
  h2l's result. Three convolutions, one pooling, no interpolation and no new tensor for
  the sums.
* stride 2: the high input is pooled to the low input's size first, so the two paths
  writing the high output are one convolution over ``cat(pool(x_h), x_l)`` with their
  weights side by side along the input channels, and the two writing the low output are
  one convolution over the pooled concatenation. Two convolutions.

Each output channel's bias sits in the convolution that writes it first. A residual
(``forward``'s second argument) and a following ReLU (``relu``) are applied in the same
in-place adds (see :mod:`.epilogue`). The result equals the reference to float32 rounding;
only dense (``groups == 1``), zero-padded layers are fused; :func:`fast_octconv` picks the
module for any layer.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..layers import OctConv2d
from ..layers.checks import OctaveTensor
from ..layers.resample import downsample
from .epilogue import accumulate_, add_then_relu, residual_fits
from .grouped import GroupedOctConv2d
from .kernels import conv2d
from .resample import add_upsampled_

Padding = Union[str, Tuple[int, int]]


def fast_octconv(conv: OctConv2d) -> nn.Module:
    """The fastest exact module for ``conv``: its plain convolution, a fused or grouped layer, or itself.

    The result may share parameters with ``conv``.
    """
    if conv.is_plain:
        return conv.h2h
    if conv.strided_high:  # the faster forms assume stride-1 paths
        return conv
    for faster in (FusedOctConv2d, GroupedOctConv2d):
        if faster.supports(conv):
            return faster(conv)
    return conv


class FusedOctConv2d(nn.Module):
    """An ``OctConv2d`` (dense, zero padding) as two or three convolutions; same inputs and outputs."""

    def __init__(self, conv: OctConv2d) -> None:
        super().__init__()
        if not self.supports(conv):
            raise ValueError(f"FusedOctConv2d needs a dense, zero-padded octave layer, got {conv!r}")
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.high_in, self.low_in = conv.high_in, conv.low_in
        self.high_out, self.low_out = conv.high_out, conv.low_out
        self.kernel_size, self.strided = conv.kernel_size, conv.stride[0] == 2
        self.padding, self.dilation = conv.h2h.padding, conv.h2h.dilation
        self.relu = False  # set by for_inference when a ReLU follows (see .epilogue)
        paths = {path.name: path_conv for path, path_conv in conv.path_convs()}
        self.low_padding, self.low_dilation = _low_geometry(paths)
        high_bias, low_bias = _branch_bias(paths, "h2h", "l2h", conv.high_out), _branch_bias(
            paths, "l2l", "h2l", conv.low_out)
        if self.strided:
            self._init_strided(paths, high_bias, low_bias)
        else:
            self._init_same_size(paths, high_bias, low_bias)

    @staticmethod
    def supports(conv: OctConv2d) -> bool:
        """Dense octave layers with zero, size-keeping padding at stride 1 or 2; at stride 2 also a
        single dilation for all paths."""
        if (conv.is_plain or conv.groups != 1 or conv.padding_mode != "zeros" or conv.pads_at_run_time
                or conv.stride[0] not in (1, 2)):
            return False
        return conv.stride[0] == 1 or all(path_conv.dilation == conv.h2h.dilation for _, path_conv in conv.path_convs())

    # -- construction ---------------------------------------------------------------------
    def _init_same_size(self, paths: dict, high_bias: Optional[Tensor], low_bias: Optional[Tensor]) -> None:
        """Stride 1: h2h (high bias); [l2h; l2l] on the low input; h2l on the pooled high input (low bias)."""
        self.high_weight, self.high_bias = _param(paths["h2h"].weight), _param(high_bias)
        readers = [paths[name].weight for name in ("l2h", "l2l") if name in paths]
        self.low_input_weight = _param(torch.cat(readers)) if readers else None
        self.h2l_weight = _param(paths["h2l"].weight) if "h2l" in paths else None
        self.h2l_bias = _param(low_bias)

    def _init_strided(self, paths: dict, high_bias: Optional[Tensor], low_bias: Optional[Tensor]) -> None:
        """Stride 2: [h2h | l2h] on cat(pool(x_h), x_l); [h2l | l2l] on its pooled copy."""
        self.high_weight = _param(_side_by_side(paths, "h2h", "l2h"))
        self.high_bias = _param(high_bias)
        self.low_weight = _param(_side_by_side(paths, "h2l", "l2l")) if self.low_out else None
        self.low_bias = _param(low_bias)

    def convolutions(self) -> List[Tuple[Tensor, bool]]:
        """Each convolution's weight, and whether it runs at the low output resolution (else the high)."""
        if self.strided:
            pairs = [(self.high_weight, False), (self.low_weight, True)]
        else:
            pairs = [(self.high_weight, False), (self.low_input_weight, True), (self.h2l_weight, True)]
        return [(weight, low) for weight, low in pairs if weight is not None]

    # -- forward --------------------------------------------------------------------------
    def forward(self, x: Union[Tensor, OctaveTensor], residual: Optional[Union[Tensor, OctaveTensor]] = None
                ) -> Union[Tensor, OctaveTensor]:
        """The layer's output, plus ``residual`` if given, then a ReLU if ``self.relu``."""
        high, low = (x[0], x[1]) if self.low_in else (x, None)
        if self.strided:
            high_out, low_out, pending = self._convolve_strided(high, low)
        else:
            high_out, low_out, pending = self._convolve_same_size(high, low)
        output = high_out if low_out is None else (high_out, low_out)
        if residual is None or residual_fits(output, residual):
            extra = () if residual is None else (residual,) if low_out is None else residual
            return self._finish(high_out, low_out, pending, extra, self.relu)
        return add_then_relu(self._finish(high_out, low_out, pending, (), False), residual, self.relu)

    def _convolve_same_size(self, high: Tensor, low: Optional[Tensor]) -> Tuple[Tensor, Optional[Tensor], tuple]:
        """h2h, h2l, and [l2h; l2l] on the low input; the last is returned pending (not yet added)."""
        high_out = conv2d(high, self.high_weight, self.high_bias, self.padding, self.dilation)
        low_out = None
        if self.low_out:
            low_out = conv2d(downsample(high), self.h2l_weight, self.h2l_bias, self.low_padding, self.low_dilation)
        if low is None:
            return high_out, low_out, ()
        from_low = conv2d(low, self.low_input_weight, None, self.low_padding, self.low_dilation)
        return high_out, low_out, (from_low[:, :self.high_out], from_low[:, self.high_out:])

    def _convolve_strided(self, high: Tensor, low: Optional[Tensor]) -> Tuple[Tensor, Optional[Tensor], tuple]:
        both = downsample(high) if low is None else torch.cat([downsample(high), low], 1)
        high_out = conv2d(both, self.high_weight, self.high_bias, self.padding, self.dilation)
        if not self.low_out:
            return high_out, None, ()
        return high_out, conv2d(downsample(both), self.low_weight, self.low_bias, self.low_padding,
                                self.low_dilation), ()

    @staticmethod
    def _finish(high_out: Tensor, low_out: Optional[Tensor], pending: tuple, extra: Sequence[Tensor],
                relu: bool) -> Union[Tensor, OctaveTensor]:
        """Add the pending low-input paths and ``extra`` (one tensor per output branch), then ReLU."""
        if pending:
            accumulate_(high_out, extra[:1], False)
            add_upsampled_(high_out, pending[0], relu)
        else:
            accumulate_(high_out, extra[:1], relu)
        if low_out is None:
            return high_out
        return high_out, accumulate_(low_out, (*extra[1:], *pending[1:]), relu)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={2 if self.strided else 1}, low=({self.low_in}, {self.low_out})"
                f"{', relu=True' if self.relu else ''}")


def _param(tensor: Optional[Tensor]) -> Optional[nn.Parameter]:
    return None if tensor is None else nn.Parameter(tensor.detach().clone(), requires_grad=False)


def _low_geometry(paths: dict) -> Tuple[Padding, Tuple[int, int]]:
    """Padding and dilation shared by the paths at low resolution (h2l, l2h, l2l)."""
    low = [paths[name] for name in ("h2l", "l2h", "l2l") if name in paths]
    reference = low[0] if low else paths["h2h"]
    return reference.padding, reference.dilation


def _branch_bias(paths: dict, same: str, cross: str, channels: int) -> Optional[Tensor]:
    """The bias of one output branch: the sum of its writers' biases, or None if none has one."""
    biases: List[Tensor] = [paths[name].bias for name in (same, cross) if name in paths and paths[name].bias is not None]
    if not channels or not biases:
        return None
    return torch.stack(biases).sum(0)


def _side_by_side(paths: dict, first: str, second: str) -> Tensor:
    """Weights of the paths writing one branch, concatenated along the input channels (high input first)."""
    return torch.cat([paths[name].weight for name in (first, second) if name in paths], 1)
