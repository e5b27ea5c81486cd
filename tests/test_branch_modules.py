"""The small modules and functions converted graphs use, checked directly against plain-tensor references."""
import pytest
import torch

from octify import ChannelSplit, OctMerge, OctSplit, ops
from octify.layers import ChannelSplitter, OctGlobalAvgPool, OctStochasticDepth

SPLITS = {"trailing": ChannelSplit.trailing(6, 2), "interleaved": ChannelSplit((True, False, False, True, False, True))}


def block_constant(channels, height, width):
    coarse = torch.rand(2, channels, (height + 1) // 2, (width + 1) // 2)
    return coarse.repeat_interleave(2, 2).repeat_interleave(2, 3)[:, :, :height, :width]


@pytest.mark.parametrize("split", SPLITS.values(), ids=SPLITS)
@pytest.mark.parametrize("size", [(8, 8), (7, 9), (5, 4)])
@pytest.mark.parametrize("keepdim", [True, False])
def test_global_average_pool_equals_pooling_the_merged_tensor(split, size, keepdim):
    x = OctSplit(split)(torch.rand(2, 6, *size))
    expected = OctMerge(split)(x).mean((2, 3), keepdim=keepdim)
    torch.testing.assert_close(OctGlobalAvgPool(split, keepdim)(x), expected)


@pytest.mark.parametrize("split", SPLITS.values(), ids=SPLITS)
@pytest.mark.parametrize("size", [(8, 8), (7, 9)])
def test_global_average_pool_of_a_split_block_constant_map_is_the_plain_pool(split, size):
    x = block_constant(6, *size)
    torch.testing.assert_close(OctGlobalAvgPool(split)(OctSplit(split)(x)), x.mean((2, 3), keepdim=True))


@pytest.mark.parametrize("split", SPLITS.values(), ids=SPLITS)
@pytest.mark.parametrize("shape, channel_dim", [((2, 6, 1, 1), 1), ((6, 1, 1), 0)])
def test_channel_splitter_picks_each_branch_channels_in_order(split, shape, channel_dim):
    channel = [1] * len(shape)
    channel[channel_dim] = 6
    vector = torch.arange(6.0).reshape(channel).expand(shape)  # each entry holds its channel number
    high, low = ChannelSplitter(split, channel_dim)(vector)
    assert high.shape[channel_dim] == split.n_high and low.shape[channel_dim] == split.n_low
    assert torch.equal(high.movedim(channel_dim, 0).flatten(1)[:, 0], torch.tensor(split.high_index, dtype=torch.float))
    assert torch.equal(low.movedim(channel_dim, 0).flatten(1)[:, 0], torch.tensor(split.low_index, dtype=torch.float))


@pytest.mark.parametrize("function, reference", [(ops.add, torch.add), (ops.sub, torch.sub), (ops.mul, torch.mul),
                                                 (ops.div, torch.div)])
def test_binary_ops_work_branch_by_branch_with_octave_plain_and_number_operands(function, reference):
    a = (torch.rand(2, 3, 8, 8) + 1, torch.rand(2, 2, 4, 4) + 1)
    b = (torch.rand(2, 3, 8, 8) + 1, torch.rand(2, 2, 4, 4) + 1)
    scale = torch.rand(2, 1, 1, 1) + 1
    for left, right in ((a, b), (a, 2.0), (3.0, b), (a, scale)):
        result = function(left, right)
        for index in (0, 1):
            pick = (lambda v: v[index] if isinstance(v, tuple) else v)
            torch.testing.assert_close(result[index], reference(pick(left), pick(right)))


def test_stochastic_depth_drops_whole_samples_in_both_branches_and_rescales_survivors():
    torch.manual_seed(0)
    layer = OctStochasticDepth(0.5, "row").train()
    high, low = torch.ones(64, 3, 4, 4), torch.ones(64, 2, 2, 2)
    out_high, out_low = layer((high, low))
    per_sample_high = out_high.flatten(1)
    per_sample_low = out_low.flatten(1)
    kept = per_sample_high[:, 0] > 0
    assert set(per_sample_high.unique().tolist()) == {0.0, 2.0}  # dropped, or kept and scaled by 1 / 0.5
    assert torch.equal(per_sample_high, per_sample_high[:, :1].expand_as(per_sample_high))  # one draw per sample
    assert torch.equal(kept, per_sample_low[:, 0] > 0)  # the same draw for both branches
    assert 16 < int(kept.sum()) < 48


def test_stochastic_depth_batch_mode_drops_everything_or_nothing_and_eval_is_identity():
    torch.manual_seed(1)
    layer = OctStochasticDepth(0.25, "batch").train()
    x = (torch.ones(8, 3, 4, 4), torch.ones(8, 2, 2, 2))
    draws = [layer(x) for _ in range(200)]
    outcomes = {tuple(round(v, 5) for v in branch.unique().tolist()) for draw in draws for branch in draw}
    assert outcomes == {(0.0,), (round(1 / 0.75, 5),)}
    assert all(torch.equal(high.flatten()[:1], low.flatten()[:1]) for high, low in draws)  # one draw for both
    layer.eval()
    assert all(out is branch for out, branch in zip(layer(x), x))
    with pytest.raises(ValueError, match="mode must be 'row' or 'batch'"):
        OctStochasticDepth(0.1, "column")
