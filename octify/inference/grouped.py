"""``GroupedOctConv2d``: a grouped or depthwise ``OctConv2d`` whose groups stay in their branch.

When ``alpha_in == alpha_out`` the groups split the same way on both sides, so only the
h2h and l2l paths exist: the layer is one grouped convolution per branch (after pooling at
stride 2). This module runs exactly those two, without the reference layer's bookkeeping,
and takes a residual and a ReLU like :class:`FusedOctConv2d`.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

from torch import Tensor, nn

from ..layers import OctConv2d
from ..layers.checks import OctaveTensor
from ..layers.resample import downsample
from .epilogue import accumulate_, add_then_relu, residual_fits



class GroupedOctConv2d(nn.Module):
    """``(x_h, x_l) -> (h2h(x_h), l2l(x_l))``, each input pooled first at stride 2."""

    def __init__(self, conv: OctConv2d) -> None:
        super().__init__()
        if not self.supports(conv):
            raise ValueError(f"GroupedOctConv2d needs an octave layer with only h2h and l2l paths, got {conv!r}")
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.strided = conv.kernel_size, conv.stride[0] == 2
        self.high, self.low = conv.h2h, conv.l2l  # shared with ``conv``
        self.relu = False  # set by for_inference when a ReLU follows (see .epilogue)

    @staticmethod
    def supports(conv: OctConv2d) -> bool:
        return (not conv.is_plain and not conv.pads_at_run_time and conv.stride[0] in (1, 2)
                and [path.name for path in conv.paths] == ["h2h", "l2l"])

    def convolutions(self) -> List[Tuple[Tensor, bool]]:
        """Each convolution's weight, and whether it runs at the low output resolution (else the high)."""
        return [(self.high.weight, False), (self.low.weight, True)]

    def forward(self, x: OctaveTensor, residual: Optional[OctaveTensor] = None) -> OctaveTensor:
        """The layer's output, plus ``residual`` if given, then a ReLU if ``self.relu``."""
        high, low = x[0], x[1]
        if self.strided:
            high, low = downsample(high), downsample(low)
        output = self.high(high), self.low(low)
        if residual is None or residual_fits(output, residual):
            extra = ((), ()) if residual is None else ((residual[0],), (residual[1],))
            return accumulate_(output[0], extra[0], self.relu), accumulate_(output[1], extra[1], self.relu)
        return add_then_relu(output, residual, self.relu)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={2 if self.strided else 1}, groups=({self.high.groups}, {self.low.groups})"
                f"{', relu=True' if self.relu else ''}")
