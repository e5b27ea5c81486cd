"""Picking channels of an octave tensor: slices, chunks and channel shuffles, branch by branch."""
from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import Tensor, nn

from .channels import ChannelSplit
from .checks import OctaveTensor, octave_input
from .resample import upsample_to



def selected_split(split: ChannelSplit, index: Sequence[int]) -> ChannelSplit:
    """The split of channels ``index`` of a tensor split by ``split`` (output channel k is input channel index[k])."""
    return ChannelSplit(tuple(split.low[i] for i in index))


class OctSelect(nn.Module):
    """Channels ``index`` of an octave tensor split by ``split``: output channel k is input channel ``index[k]``.

    Each branch keeps its channels in output order, so the output's split is
    :func:`selected_split`. When the picked channels are all high the output is the plain
    high part (the merged tensor's very values); when they are all low it is the low part
    up-sampled to the high size (what :class:`OctMerge` gives for them).
    """

    def __init__(self, split: ChannelSplit, index: Sequence[int]) -> None:
        super().__init__()
        if any(not 0 <= i < split.channels for i in index) or not index:
            raise ValueError(f"channel index must pick some of the {split.channels} channels, got {tuple(index)}")
        self.split, self.index = split, tuple(index)
        self.out_split = selected_split(split, self.index)
        position = split.inverse_order  # where each channel sits in cat([high, low])
        high = [position[self.index[k]] for k in self.out_split.high_index]
        low = [position[self.index[k]] - split.n_high for k in self.out_split.low_index]
        self.high_pick, self.low_pick = _as_slice(high), _as_slice(low)
        if isinstance(self.high_pick, list):
            self.register_buffer("high_index", torch.tensor(high), persistent=False)
        if isinstance(self.low_pick, list):
            self.register_buffer("low_index", torch.tensor(low), persistent=False)

    def forward(self, x: OctaveTensor) -> Union[OctaveTensor, Tensor]:
        high, low = octave_input(x, "OctSelect", (self.split.n_high, self.split.n_low))
        if not self.out_split.n_low:
            return self._pick(high, self.high_pick, "high_index")
        picked_low = self._pick(low, self.low_pick, "low_index")
        if not self.out_split.n_high:
            return upsample_to(picked_low, high.shape[-2:])
        return self._pick(high, self.high_pick, "high_index"), picked_low

    def _pick(self, branch: Tensor, pick: Union[slice, list], buffer: str) -> Tensor:
        if isinstance(pick, slice):
            return branch[:, pick]
        return branch.index_select(1, getattr(self, buffer))

    def extra_repr(self) -> str:
        return f"{self.split!r} -> {self.out_split!r}"


def _as_slice(positions: Sequence[int]) -> Union[slice, list]:
    """A slice when ``positions`` are consecutive (a view, no copy), else the list itself."""
    if not positions:
        return slice(0, 0)
    start = positions[0]
    if list(positions) == list(range(start, start + len(positions))):
        return slice(start, start + len(positions))
    return list(positions)
