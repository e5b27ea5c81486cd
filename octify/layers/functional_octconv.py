"""``FunctionalOctConv2d``: the octave form of ``F.conv2d(x, weight, bias, ...)`` with its weight passed in.

A graph that computes its convolution weight (weight standardization, a shared or tied
weight) or reads it as a parameter calls ``F.conv2d`` directly. This layer holds no
parameters: each call brings the weight (``nn.Conv2d``'s layout) and bias, and the layer
slices them into the octave paths as it runs, exactly as ``OctConv2d.from_conv`` slices a
module's weight once. So the weight keeps being computed as before, its gradient flows to
wherever it came from, and a weight whose value is the original's gives the original's
paths. Sizes, padding rule, splits and costs are those of ``OctConv2d``.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .channels import ChannelSplit
from .octconv import (IntPair, OctaveConvBase, OctaveTensor, Path, check_grouped_splits, path_weight_index,
                      splits_within_groups)


def _take(tensor: Tensor, dim: int, index: Sequence[int]) -> Tensor:
    """``tensor``'s entries ``index`` along ``dim``: a view when they are consecutive."""
    if len(index) == tensor.shape[dim] and tuple(index) == tuple(range(len(index))):
        return tensor
    if tuple(index) == tuple(range(index[0], index[0] + len(index))):
        return tensor.narrow(dim, index[0], len(index))
    return tensor.index_select(dim, torch.tensor(index, dtype=torch.long, device=tensor.device))


class FunctionalOctConv2d(OctaveConvBase):
    """``F.conv2d`` in octave form: ``forward(x, weight, bias=None)``.

    Args mirror ``F.conv2d``'s (zero padding only, as there); ``in_split`` / ``out_split``
    say which channels are low, with ``OctConv2d.from_conv``'s conventions.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair, stride: IntPair = 1,
                 padding: Union[IntPair, str] = 0, dilation: IntPair = 1, groups: int = 1, bias: bool = True, *,
                 in_split: ChannelSplit, out_split: ChannelSplit) -> None:
        check_grouped_splits(groups, in_channels, out_channels, in_split, out_split)
        within_groups = splits_within_groups(groups, in_split, out_split)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         in_split=ChannelSplit.trailing(in_channels, in_split.n_low),
                         out_split=ChannelSplit.trailing(out_channels, out_split.n_low), within_groups=within_groups)
        self.index: Dict[str, Tuple[Tuple[int, ...], Optional[Tuple[int, ...]]]] = {
            path.name: path_weight_index(path, in_split, out_split, groups, within_groups) for path in self.paths}

    def forward(self, x: Union[Tensor, OctaveTensor], weight: Tensor,
                bias: Optional[Tensor] = None) -> Union[Tensor, OctaveTensor]:
        if self.is_plain:
            return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

        def convolve(path: Path, source: Tensor) -> Tensor:
            rows, cols = self.index[path.name]
            path_weight = _take(weight, 0, rows)
            if cols is not None:
                path_weight = _take(path_weight, 1, cols)
            path_bias = _take(bias, 0, rows) if bias is not None and path.name in self.bias_paths else None
            return F.conv2d(source, path_weight, path_bias, 1, path.padding, path.dilation, path.groups)

        return self._octave_forward(x, convolve)
