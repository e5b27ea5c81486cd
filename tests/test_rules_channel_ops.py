"""Channel bookkeeping keeps the octave form: split, chunk, slices, narrow and channel shuffle."""
import pytest
import torch
import torchvision
from timm.layers import MixedConv2d
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.shufflenetv2 import InvertedResidual

import octify
from octify.layers import OctConv2d, OctMerge, OctSelect
from test_convert_oracles import block_constant, randomize_batchnorm

OCTAVE = dict(plain_stem=False, min_size=2)
TOLERANCE = dict(rtol=1e-5, atol=1e-5)


def shuffle(x, groups):
    """torchvision's channel shuffle, sizes read from the tensor."""
    batch, channels, height, width = x.size()
    x = x.view(batch, groups, channels // groups, height, width)
    return torch.transpose(x, 1, 2).contiguous().view(batch, channels, height, width)


CHANNEL_OPS = {
    "chunk method": lambda x: x.chunk(3, dim=1)[1],
    "torch.chunk": lambda x: torch.chunk(x, 2, 1)[0],
    "split method": lambda x: x.split([5, 7], dim=1)[1],
    "torch.split": lambda x: torch.split(x, 4, dim=1)[2],
    "slice": lambda x: x[:, 3:11],
    "slice with step": lambda x: x[:, 1::2, :, :],
    "narrow": lambda x: x.narrow(1, 2, 8),
    "torch.narrow": lambda x: torch.narrow(x, 1, 4, 6),
    "shuffle": lambda x: shuffle(x, 3),
    "reshape permute": lambda x: x.reshape(x.shape[0], 4, 3, x.shape[2], x.shape[3]).permute(0, 2, 1, 3, 4)
    .reshape(x.shape),
    "unflatten flatten": lambda x: x.unflatten(1, (2, 6)).transpose(1, 2).flatten(1, 2),
}


class Around(nn.Module):
    """1x1 convolutions before and after the channel op, and one beside it: exact on 2x2-block-constant inputs."""

    def __init__(self, op, channels=12):
        super().__init__()
        self.op = op
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 1), nn.BatchNorm2d(channels), nn.ReLU())
        picked = op(torch.empty(1, channels, 8, 8)).shape[1]
        self.head, self.side = nn.Conv2d(picked, 5, 1), nn.Conv2d(channels, 5, 1)

    def forward(self, x):
        y = self.stem(x)
        return self.head(torch.relu(self.op(y))).mean((2, 3)) + self.side(y).mean((2, 3))


def layers(module, kind):
    return [m for m in module.modules() if isinstance(m, kind)]


def macs_of_running(module, x):
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(x)
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("name", CHANNEL_OPS)
def test_channel_op_at_alpha_zero_is_exact(name):
    model = randomize_batchnorm(Around(CHANNEL_OPS[name])).eval()
    x = torch.randn(2, 3, 9, 10)
    conversion = octify.convert(model, 0.0, example_inputs=(x,))
    with torch.no_grad():
        assert torch.equal(conversion.module.eval()(x), model(x))


@pytest.mark.parametrize("alpha", [0.25, 0.5])
@pytest.mark.parametrize("name", CHANNEL_OPS)
def test_channel_op_keeps_the_octave_form_exactly(name, alpha):
    model = randomize_batchnorm(Around(CHANNEL_OPS[name])).eval()
    x = block_constant(3, 9, 10)
    conversion = octify.convert(model, alpha, example_inputs=(x,), **OCTAVE)
    module = conversion.module.eval()
    assert len(layers(module, OctSelect)) == 1 and not layers(module, OctMerge), conversion.explain()
    head = module.get_submodule("head")
    assert head.low_in > 0 and head.high_in > 0
    with torch.no_grad():
        torch.testing.assert_close(module(x), model(x), **TOLERANCE)
        assert module(torch.randn(2, 3, 13, 7)).shape == model(torch.randn(2, 3, 13, 7)).shape


class Interleaved(nn.Module):
    """Two octave halves concatenated, shuffled in 4 groups, then sliced: every branch interleaves."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)
        self.mid = nn.Conv2d(8, 8, 1)
        self.head = nn.Conv2d(6, 4, 1)

    def forward(self, x):
        y = shuffle(torch.cat([self.a(x), self.b(x)], 1), 4)
        return self.head(torch.relu(y[:, 2:8])) + self.mid(y)[:, :4].mean(1, keepdim=True)


def test_interleaved_splits_follow_the_channels():
    model = Interleaved().eval()
    x = block_constant(3, 8, 8)
    conversion = octify.convert(model, 0.5, example_inputs=(x,), **OCTAVE)
    module = conversion.module.eval()
    # cat: a0 a1 [a2 a3] b0 b1 [b2 b3] (low in brackets); shuffled in 4 groups: a0 [a2] b0 [b2] a1 [a3] b1 [b3]
    concatenated = (False, False, True, True, False, False, True, True)
    shuffled = (False, True, False, True, False, True, False, True)
    picks = {(m.split.low, m.out_split.low) for m in layers(module, OctSelect)}
    # mid's output is cut at channel 4, so each part gets its own trailing half
    assert picks == {(concatenated, shuffled), (shuffled, shuffled[2:8]), (concatenated, concatenated[:4])}
    assert (module.get_submodule("mid").low_in, module.get_submodule("head").low_in) == (4, 3)
    with torch.no_grad():
        torch.testing.assert_close(module(x), model(x), **TOLERANCE)


@pytest.mark.parametrize("index", [(0, 1, 2, 3, 4, 5), (5, 3, 1, 0, 2, 4), (0, 1), (4, 5), (1, 5, 1), (2,)])
def test_select_layer_picks_what_the_merged_tensor_holds(index):
    split = octify.ChannelSplit((False, True, False, False, True, True))
    x = torch.randn(2, 3, 7, 5), torch.randn(2, 3, 4, 3)
    layer = OctSelect(split, index)
    picked = layer(x)
    expected = OctMerge(split)(x)[:, list(index)]
    if layer.out_split.n_low and layer.out_split.n_high:
        torch.testing.assert_close(OctMerge(layer.out_split)(picked), expected, rtol=0, atol=0)
    else:
        torch.testing.assert_close(picked, expected, rtol=0, atol=0)


class Halves(nn.Module):
    """Two octave tensors concatenated, then sliced into a part of high and a part of low channels only."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)
        self.p, self.q = nn.Conv2d(2, 3, 1), nn.Conv2d(2, 3, 1)

    def forward(self, x):
        y = torch.relu(torch.cat([self.a(x), self.b(x)], 1))  # a0 a1 [a2 a3] b0 b1 [b2 b3]
        return self.p(y[:, :2]) + self.q(y[:, 2:4])


def test_a_part_without_low_channels_is_the_plain_high_part_and_one_without_high_is_merged():
    model = Halves().eval()
    x = block_constant(3, 9, 8)
    conversion = octify.convert(model, 0.5, example_inputs=(x,), **OCTAVE)
    module = conversion.module.eval()
    merges = [note for note in conversion.notes if note.kind == "merge"]
    assert [note.reason for note in merges] == [
        "the channels getitem_1 picks from relu are all low: up-sampled to a plain tensor"]
    assert not layers(module, OctMerge)
    assert type(module.get_submodule("p")) is type(module.get_submodule("q")) is nn.Conv2d
    with torch.no_grad():
        torch.testing.assert_close(module(x), model(x), **TOLERANCE)



class HighPickPlusConv(Halves):
    """A pick of high channels only, added to a convolution's output."""

    def __init__(self):
        super().__init__()
        self.c, self.head = nn.Conv2d(3, 2, 1), nn.Conv2d(2, 3, 1)

    def forward(self, x):
        y = torch.relu(torch.cat([self.a(x), self.b(x)], 1))
        return self.head(y[:, :2] + self.c(x))


def test_a_plain_pick_leaves_its_class_to_the_convolution_that_writes_it():
    model = HighPickPlusConv().eval()
    x = block_constant(3, 9, 8)
    conversion = octify.convert(model, 0.5, example_inputs=(x,), **OCTAVE)
    module = conversion.module.eval()
    assert module.get_submodule("c").low_out == 1 and module.get_submodule("head").low_in == 1
    assert [note.name for note in conversion.notes if note.kind in ("split", "merge")] == ["split_getitem"]
    with torch.no_grad():
        torch.testing.assert_close(module(x), model(x), **TOLERANCE)

RESHAPES = {
    "view mixing channels into height": (lambda x: x.view(x.shape[0], 6, 16, 8), "does more than pick channels"),
    "spatial transpose": (lambda x: x.transpose(2, 3), "does more than pick channels"),
    "spatial slice": (lambda x: x[:, :, 1:], "does more than pick channels"),
    "flatten": (lambda x: x.flatten(2).mean(-1, keepdim=True).unsqueeze(-1), "not a feature map, nor a step"),
}


@pytest.mark.parametrize("name", RESHAPES)
def test_reshapes_that_do_more_than_pick_channels_merge_first(name):
    op, reason = RESHAPES[name]
    model = randomize_batchnorm(Around(op)).eval()
    x = block_constant(3, 8, 8)
    conversion = octify.convert(model, 0.5, example_inputs=(x,), **OCTAVE)
    merges = [note.reason for note in conversion.notes if note.kind == "merge"]
    assert len(merges) == 1 and reason in merges[0], conversion.explain()
    assert not layers(conversion.module, OctSelect)
    with torch.no_grad():
        torch.testing.assert_close(conversion.module.eval()(x), model(x), **TOLERANCE)


def test_shufflenet_units_keep_both_branches_through_chunk_and_shuffle():
    model = randomize_batchnorm(nn.Sequential(
        nn.Conv2d(3, 24, 1), nn.BatchNorm2d(24), nn.ReLU(),
        InvertedResidual(24, 48, 2), InvertedResidual(48, 48, 1), InvertedResidual(48, 48, 1))).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(octify.convert(model, 0.0, example_inputs=(x,)).module.eval()(x), model(x))
    conversion = octify.convert(model, 0.5, example_inputs=(x,), **OCTAVE)
    module = conversion.module.eval()
    # each part of a concat keeps its low channels at the end of every range later shuffles and chunks pick,
    # so every chunk holds both branches; only the last shuffle is merged, for the network's output
    assert [note.name for note in conversion.notes if note.kind == "merge"] == ["merge_view_5"]
    assert [module.get_submodule(f"{unit}.branch2.0").low_in for unit in (4, 5)] == [12, 12]  # half of each chunk
    assert not [node for node in module.graph.nodes if node.target is octify.ops.size], "shuffle sizes, unused"
    with torch.no_grad():
        odd = torch.randn(1, 3, 29, 31)
        assert module(odd).shape == model(odd).shape


def test_shufflenet_v2_costs_what_its_running_layers_count():
    model = torchvision.models.shufflenet_v2_x0_5(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    conversion = octify.convert(model, 0.5, example_inputs=(x,), min_size=4)
    module = conversion.module.eval()
    ratio = macs_of_running(module, x) / macs_of_running(model, x)
    assert conversion.report.ratios["macs"] == ratio
    assert ratio < 0.85, "merging before every shuffle keeps 0.87 of the MACs, all-low chunks 0.85"
    merges = [note.reason for note in conversion.notes if note.kind == "merge"]
    assert len(merges) == 1 and not any("are all low" in reason for reason in merges), merges
    with torch.no_grad():
        odd = torch.randn(1, 3, 67, 61)
        assert module(odd).shape == model(odd).shape


class Mixed(nn.Module):
    """timm's MixedConv2d (MixNet): split the channels, one convolution per part, concatenate."""

    def __init__(self, kernels, depthwise=False):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.mixed = MixedConv2d(16, 16, kernels, depthwise=depthwise)
        self.out = MixedConv2d(16, 12, [1, 1, 1])

    def forward(self, x):
        return self.out(torch.relu(self.mixed(self.stem(x))))


@pytest.mark.parametrize("kernels, depthwise, size", [([1, 1], False, (10, 9)), ([3, 5, 7], True, (15, 16))])
def test_mixed_convolutions_read_both_branches_in_every_part(kernels, depthwise, size):
    model = randomize_batchnorm(Mixed(kernels, depthwise)).eval()
    x = block_constant(3, *size)
    with torch.no_grad():
        assert torch.equal(octify.convert(model, 0.0, example_inputs=(x,)).module.eval()(x), model(x))
    conversion = octify.convert(model, 0.5, example_inputs=(x,), **OCTAVE)
    module = conversion.module.eval()
    parts = [m for name, m in module.named_modules() if isinstance(m, OctConv2d) and name.startswith(("mixed", "out"))]
    assert len(parts) == len(kernels) + 3 and all(p.low_in and p.high_in for p in parts), conversion.explain()
    assert [note.name for note in conversion.notes if note.kind == "merge"] == ["merge_cat_1"]  # the output
    with torch.no_grad():
        if kernels == [1, 1]:
            torch.testing.assert_close(module(x), model(x), **TOLERANCE)
        assert module(torch.randn(1, 3, 11, 7)).shape == model(torch.randn(1, 3, 11, 7)).shape

