"""The channel-split convention, resampling, and the per-branch modules."""
import copy
import math
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from octify import Branchwise, ChannelSplit, OctBatchNorm2d, OctConv2d, OctMerge, OctSplit
from octify.layers import downsample, low_channel_count, parse_alpha, upsample_to
from octify.layers.channels import half_size


def block_constant(n, c, h, w):
    small = torch.rand(n, c, (h + 1) // 2, (w + 1) // 2)
    return small.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)[..., :h, :w]


INTERLEAVED = ChannelSplit.concat([ChannelSplit.trailing(4, 1), ChannelSplit.trailing(6, 3)])


# -- 7. one channel-split convention --------------------------------------------------------------

@pytest.mark.parametrize("channels, alpha, low", [
    (10, 0.25, 3), (3, 0.5, 2), (10, 0.5, 5), (20, 0.8, 16), (64, 0.125, 8), (10, 0.0, 0),
    (5, 0.1, 1), (5, 0.09, 0), (50, 0.29, 15), (100, 0.145, 15), (7, 0.5, 4),
])
def test_low_channel_count_rounds_half_up(channels, alpha, low):
    assert low_channel_count(channels, alpha) == low


@pytest.mark.parametrize("channels, alpha, unit, low", [
    (16, 0.3, 4, 4), (16, 0.375, 4, 8), (32, 0.5, 8, 16), (12, 0.25, 4, 4), (16, 0.1, 4, 0)])
def test_low_channel_count_in_whole_units(channels, alpha, unit, low):
    assert low_channel_count(channels, alpha, unit) == low


def test_low_channel_count_refuses_indivisible_units():
    with pytest.raises(ValueError, match="10 channels do not divide into units of 4"):
        low_channel_count(10, 0.5, 4)


@settings(max_examples=150, deadline=None)
@given(channels=st.integers(1, 512), thousandths=st.integers(0, 999))
def test_low_channel_count_is_exact_round_half_up_of_the_decimal(channels, thousandths):
    alpha = thousandths / 1000
    expected = math.floor(Fraction(thousandths, 1000) * channels + Fraction(1, 2))
    assert low_channel_count(channels, alpha) == expected
    assert ChannelSplit.from_alpha(channels, alpha).n_low == expected


@settings(max_examples=60, deadline=None)
@given(cin=st.integers(2, 40), cout=st.integers(2, 40),
       a_in=st.integers(0, 99), a_out=st.integers(0, 99))
def test_layer_split_agrees_with_low_channel_count(cin, cout, a_in, a_out):
    alpha = (a_in / 100, a_out / 100)
    low_in, low_out = low_channel_count(cin, alpha[0]), low_channel_count(cout, alpha[1])
    valid = all(low < c and (a == 0 or low > 0) for c, a, low in ((cin, a_in, low_in), (cout, a_out, low_out)))
    if not valid:
        with pytest.raises(ValueError):
            OctConv2d(cin, cout, 1, alpha=alpha)
        return
    layer = OctConv2d(cin, cout, 1, alpha=alpha)
    assert (layer.low_in, layer.low_out) == (low_in, low_out)
    assert (layer.high_in, layer.high_out) == (cin - low_in, cout - low_out)


def test_layer_and_batchnorm_use_the_same_split():
    layer = OctConv2d(10, 10, 3, padding=1, alpha=0.25)
    bn = OctBatchNorm2d(10, alpha=0.25)
    assert layer.low_in == layer.low_out == bn.split.n_low == 3
    assert OctConv2d(3, 3, 1, alpha=0.5).low_in == 2


@pytest.mark.parametrize("alpha", [1.0, 1, -0.1, 1.5, float("nan"), float("inf"), "0.5", True, False,
                                   None, (0.1, 0.2, 0.3), (0.5,), (0.5, "a"), (0.5, 1.0), [0.2, float("nan")]])
def test_bad_alpha_is_a_value_error(alpha):
    with pytest.raises(ValueError, match="alpha"):
        parse_alpha(alpha)
    with pytest.raises(ValueError, match="alpha"):
        OctConv2d(4, 4, 3, padding=1, alpha=alpha)


@pytest.mark.parametrize("alpha, expected", [(0.5, (0.5, 0.5)), (0, (0.0, 0.0)), ((0, 0.75), (0.0, 0.75)),
                                             ([0.25, 0.5], (0.25, 0.5))])
def test_good_alpha_is_parsed(alpha, expected):
    assert parse_alpha(alpha) == expected


# -- ChannelSplit ---------------------------------------------------------------------------------

def test_channel_split_basics():
    split = ChannelSplit.from_alpha(10, 0.25)
    assert split == ChannelSplit.trailing(10, 3)
    assert (split.channels, split.n_low, split.n_high) == (10, 3, 7)
    assert split.is_trailing and split.low_index == (7, 8, 9) and split.high_index == tuple(range(7))
    assert INTERLEAVED.low_index == (3, 7, 8, 9) and INTERLEAVED.high_index == (0, 1, 2, 4, 5, 6)
    assert not INTERLEAVED.is_trailing and INTERLEAVED.alpha == 0.4
    assert "interleaved" in repr(INTERLEAVED)
    with pytest.raises(ValueError, match="cannot make 5 of 4 channels low"):
        ChannelSplit.trailing(4, 5)


# -- resampling -----------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(7, 7), (15, 15), (225, 225), (199, 257), (8, 9), (1, 1)])
def test_down_and_up_sampling_at_any_size(size):
    x = torch.rand(1, 2, *size)
    low = downsample(x)
    assert tuple(low.shape[-2:]) == half_size(size) == tuple(math.ceil(s / 2) for s in size)
    back = upsample_to(low, size)
    assert back.shape[-2:] == size
    rows = torch.arange(size[0]) // 2
    cols = torch.arange(size[1]) // 2
    assert torch.equal(back, low[..., rows[:, None], cols[None, :]])  # pixel i reads low pixel i // 2


def test_downsample_averages_the_pixels_that_exist_at_an_odd_edge():
    x = torch.arange(9.0).reshape(1, 1, 3, 3)
    low = downsample(x)
    expected = torch.tensor([[(0 + 1 + 3 + 4) / 4, (2 + 5) / 2], [(6 + 7) / 2, 8.0]])
    torch.testing.assert_close(low[0, 0], expected)


# -- 10. per-branch pieces ------------------------------------------------------------------------

def _random_bn(channels):
    bn = nn.BatchNorm2d(channels)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.uniform_(-1.0, 1.0)
        bn.running_mean.uniform_(-1.0, 1.0)
        bn.running_var.uniform_(0.5, 2.0)
    bn.num_batches_tracked.fill_(7)
    return bn


@pytest.mark.parametrize("split", [ChannelSplit.trailing(10, 3), INTERLEAVED], ids=["trailing", "interleaved"])
def test_batchnorm_from_bn_slices_parameters_and_stats(split):
    bn = _random_bn(10).eval()
    obn = OctBatchNorm2d.from_bn(bn, split)
    assert not obn.training
    for branch, index in ((obn.bn_h, list(split.high_index)), (obn.bn_l, list(split.low_index))):
        for name in ("weight", "bias", "running_mean", "running_var"):
            assert torch.equal(getattr(branch, name), getattr(bn, name)[index]), name
        assert branch.num_batches_tracked.item() == 7
        assert branch.eps == bn.eps and branch.momentum == bn.momentum
    assert sum(p.numel() for p in obn.parameters()) == sum(p.numel() for p in bn.parameters())


@pytest.mark.parametrize("split", [ChannelSplit.trailing(10, 3), INTERLEAVED], ids=["trailing", "interleaved"])
def test_batchnorm_eval_equals_bn_on_the_same_channels(split):
    bn = _random_bn(10).eval()
    obn = OctBatchNorm2d.from_bn(bn, split)
    x_full = torch.rand(2, 10, 9, 9)
    x_low_res = torch.rand(2, 10, 5, 5)
    high, low = obn((x_full[:, list(split.high_index)], x_low_res[:, list(split.low_index)]))
    torch.testing.assert_close(high, bn(x_full)[:, list(split.high_index)], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(low, bn(x_low_res)[:, list(split.low_index)], atol=1e-6, rtol=1e-6)


def test_batchnorm_training_updates_each_channel_like_bn():
    split = INTERLEAVED
    bn = _random_bn(10).train()
    obn = OctBatchNorm2d.from_bn(bn, split)
    assert obn.training
    x, x_low = torch.randn(4, 10, 6, 6), torch.randn(4, 10, 3, 3)
    high, low = obn((x[:, list(split.high_index)], x_low[:, list(split.low_index)]))
    for branch, out, source, index in ((obn.bn_h, high, x, list(split.high_index)),
                                       (obn.bn_l, low, x_low, list(split.low_index))):
        reference_bn = copy.deepcopy(bn)
        torch.testing.assert_close(out, reference_bn(source)[:, index], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(branch.running_mean, reference_bn.running_mean[index])
        torch.testing.assert_close(branch.running_var, reference_bn.running_var[index])


def test_batchnorm_needs_both_branches():
    with pytest.raises(ValueError, match="both branches"):
        OctBatchNorm2d(4, alpha=0.0)
    with pytest.raises(ValueError, match="split describes 4 channels, BatchNorm has 5"):
        OctBatchNorm2d(5, split=ChannelSplit.trailing(4, 2))


@pytest.mark.parametrize("module", [nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True), nn.Sigmoid()])
def test_branchwise_applies_the_module_to_both_branches(module):
    high, low = torch.randn(1, 3, 9, 9), torch.randn(1, 2, 5, 5)
    out_high, out_low = Branchwise(module)((high, low))
    assert torch.equal(out_high, module(high))
    assert torch.equal(out_low, module(low))
    assert sum(1 for _ in Branchwise(module).parameters()) == 0


@pytest.mark.parametrize("size", [(8, 8), (7, 7), (15, 9), (1, 3)])
@pytest.mark.parametrize("split", [ChannelSplit.trailing(10, 3), INTERLEAVED], ids=["trailing", "interleaved"])
def test_merge_of_split_is_identity_on_block_constant_maps(size, split):
    x = block_constant(2, 10, *size)
    high, low = OctSplit(split)(x)
    assert high.shape == (2, split.n_high, *size)
    assert low.shape == (2, split.n_low, *half_size(size))
    torch.testing.assert_close(OctMerge(split)((high, low)), x, atol=1e-6, rtol=0)


def test_split_and_merge_keep_channel_order_for_interleaved_splits():
    split = INTERLEAVED
    x = torch.arange(10.0).reshape(1, 10, 1, 1).repeat(1, 1, 6, 6)  # channel c holds the value c
    high, low = OctSplit(split)(x)
    assert high[0, :, 0, 0].tolist() == [0.0, 1.0, 2.0, 4.0, 5.0, 6.0]
    assert low[0, :, 0, 0].tolist() == [3.0, 7.0, 8.0, 9.0]
    merged = OctMerge(split)((high, low))
    assert torch.equal(merged, x)
    # Any map: the high channels come back exactly, in their original places.
    y = torch.rand(1, 10, 7, 5)
    merged = OctMerge(split)(OctSplit(split)(y))
    assert torch.equal(merged[:, list(split.high_index)], y[:, list(split.high_index)])


@pytest.mark.parametrize("size", [(7, 7), (8, 8), (199, 257)])
def test_merge_upsamples_low_to_the_high_size(size):
    split = ChannelSplit.trailing(5, 2)
    high, low = torch.rand(1, 3, *size), torch.rand(1, 2, *half_size(size))
    merged = OctMerge(split)((high, low))
    assert merged.shape == (1, 5, *size)
    assert torch.equal(merged[:, :3], high)
    expected_low = F.interpolate(low, scale_factor=2.0, mode="nearest")[..., :size[0], :size[1]]
    assert torch.equal(merged[:, 3:], expected_low)


def test_split_and_merge_check_their_inputs():
    with pytest.raises(ValueError, match="both branches"):
        OctSplit(ChannelSplit.trailing(4, 0))
    with pytest.raises(ValueError, match="both branches"):
        OctMerge(ChannelSplit.trailing(4, 4))
    with pytest.raises(ValueError, match=r"OctSplit expects 4 channels, got \(1, 5, 4, 4\)"):
        OctSplit(ChannelSplit.trailing(4, 2))(torch.rand(1, 5, 4, 4))
    with pytest.raises(ValueError, match=r"needs batch 1 and size \(4, 4\)"):
        OctMerge(ChannelSplit.trailing(4, 2))((torch.rand(1, 2, 7, 7), torch.rand(1, 2, 3, 3)))
