"""Octave layers refuse inputs of the wrong shape with a ValueError naming expected and actual shapes."""
import re

import pytest
import torch
from torch import nn

from octify import Branchwise, ChannelSplit, OctBatchNorm2d, OctConv2d, OctMerge, OctSplit
from octify.layers import OctGlobalAvgPool, OctGlobalMaxPool, OctInterpolate, OctPool2d, OctStochasticDepth
from octify.layers.select import OctSelect

SPLIT = ChannelSplit.trailing(5, 3)  # 2 high, 3 low: OctConv2d(5, ..., alpha=0.5) rounds 2.5 up to 3 low


def octave(high_channels=2, low_channels=3, size=(8, 8), low_size=None, batch=(1, 1)):
    low_size = low_size or tuple((s + 1) // 2 for s in size)
    return torch.rand(batch[0], high_channels, *size), torch.rand(batch[1], low_channels, *low_size)


LAYERS = {
    "OctConv2d": lambda: OctConv2d(5, 10, 3, alpha=(0.5, 0.5), padding=1),
    "OctBatchNorm2d": lambda: OctBatchNorm2d(5, split=SPLIT).eval(),
    "OctMerge": lambda: OctMerge(SPLIT),
    "OctGlobalAvgPool": lambda: OctGlobalAvgPool(SPLIT),
    "OctGlobalMaxPool": lambda: OctGlobalMaxPool(SPLIT),
    "OctSelect": lambda: OctSelect(SPLIT, (4, 0, 3)),
}


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("channels", [(3, 3), (7, 9), (2, 2), (3, 2)])
def test_wrong_channel_counts_are_refused(name, channels):
    layer = LAYERS[name]()
    with pytest.raises(ValueError, match=re.escape(f"expects 2 high and 3 low channels, got high (1, {channels[0]}, 8, 8) "
                                                   f"and low (1, {channels[1]}, 4, 4)")):
        layer(octave(*channels))


@pytest.mark.parametrize("name", LAYERS)
def test_right_channel_counts_run(name):
    out = LAYERS[name]()(octave())
    assert (out if isinstance(out, torch.Tensor) else out[0]).shape[0] == 1


ALL_OCTAVE_LAYERS = dict(LAYERS, Branchwise=lambda: Branchwise(nn.ReLU()),
                         OctStochasticDepth=lambda: OctStochasticDepth(0.2, "row"),
                         OctPool2d=lambda: OctPool2d(nn.MaxPool2d(2)),
                         OctInterpolate=lambda: OctInterpolate(scale_factor=2.0, mode="nearest"))


@pytest.mark.parametrize("name", ALL_OCTAVE_LAYERS)
@pytest.mark.parametrize("size, low_size", [((8, 8), (8, 8)), ((7, 9), (3, 5)), ((7, 9), (4, 4)), ((6, 6), (4, 3))])
def test_wrong_low_size_is_refused(name, size, low_size):
    expected = tuple((s + 1) // 2 for s in size)
    with pytest.raises(ValueError, match=re.escape(f"needs batch 1 and size {expected} (ceil of half)")):
        ALL_OCTAVE_LAYERS[name]()(octave(size=size, low_size=low_size))


@pytest.mark.parametrize("name", ALL_OCTAVE_LAYERS)
def test_batch_mismatch_and_dimensionality_are_refused(name):
    layer = ALL_OCTAVE_LAYERS[name]()
    with pytest.raises(ValueError, match=re.escape("needs batch 2")):
        layer(octave(batch=(2, 1)))
    with pytest.raises(ValueError, match=re.escape("expects 4-d (N, C, H, W) branches, got high (2, 8, 8)")):
        layer((torch.rand(2, 8, 8), torch.rand(3, 4, 4)))


@pytest.mark.parametrize("name", ALL_OCTAVE_LAYERS)
def test_a_plain_tensor_is_not_an_octave_tensor(name):
    with pytest.raises(TypeError, match=re.escape("expects an octave tensor (high, low), got (1, 5, 8, 8)")):
        ALL_OCTAVE_LAYERS[name]()(torch.rand(1, 5, 8, 8))


def test_plain_inputs_are_checked_too():
    with pytest.raises(ValueError, match=re.escape("OctConv2d (alpha_in=0) expects 5 channels, got (1, 4, 8, 8)")):
        OctConv2d(5, 10, 3, alpha=(0.0, 0.5), padding=1)(torch.rand(1, 4, 8, 8))
    with pytest.raises(ValueError, match=re.escape("expects a 4-d (N, C, H, W) tensor, got (5, 8, 8)")):
        OctSplit(SPLIT)(torch.rand(5, 8, 8))
    with pytest.raises(TypeError, match=re.escape("expects a single tensor, got a tuple of 2: (1, 2, 8, 8), (1, 3, 4, 4)")):
        OctConv2d(5, 10, 3, alpha=(0.0, 0.5), padding=1)(octave())
