"""Pooling, global max pooling and nearest resizing run on each branch (``octify/layers/pooling.py``).

The layers at every size modulo 4, then whole networks: exact where the octave form is
exact, original output shapes at every size, MACs equal to FlopCounterMode's.
"""
import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import octify
from octify.layers import (ChannelSplit, OctConv2d, OctGlobalMaxPool, OctInterpolate, OctMerge, OctPool2d,
                           OctSplit)
from octify.layers.channels import half_size

# kernel, stride, padding: VGG, ResNet, AlexNet, Inception's stride-1 pools
GEOMETRIES = [(2, 2, 0), (3, 2, 1), (3, 2, 0), (3, 1, 1)]
SIZES = range(1, 24)  # every size modulo 4, odd and even, down to one pixel


def pools():
    for kernel, stride, padding in GEOMETRIES:
        for ceil_mode in (False, True):
            yield nn.MaxPool2d(kernel, stride, padding, ceil_mode=ceil_mode)
            yield nn.AvgPool2d(kernel, stride, padding, ceil_mode=ceil_mode)
            yield nn.AvgPool2d(kernel, stride, padding, ceil_mode=ceil_mode, count_include_pad=False)


def merged(x, split):
    return OctMerge(split)(x)


def octave_pair(channels, low, height, width):
    return torch.randn(2, channels, height, width), torch.randn(2, low, *half_size((height, width)))


class TwoHeads(nn.Module):
    """An octave feature map read by a 1x1 convolution (so it stays octave) and by ``layer``."""

    def __init__(self, layer):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.c, self.layer = nn.Conv2d(8, 8, 1), layer

    def forward(self, x):
        y = self.b(self.a(x))
        return self.c(y), self.layer(y)


# -- the size rules ------------------------------------------------------------------------------

@pytest.mark.parametrize("pool", list(pools()), ids=repr)
def test_pooling_keeps_the_high_branch_exact_and_the_low_branch_at_half_size(pool):
    layer = OctPool2d(pool)
    for height in SIZES:
        width = height + 5
        high, low = octave_pair(3, 2, height, width)
        try:
            expected = pool(high)
        except RuntimeError:  # the original rejects this size (kernel larger than the padded input)
            continue
        out_high, out_low = layer((high, low))
        assert torch.equal(out_high, expected)
        assert tuple(out_low.shape[-2:]) == half_size(expected.shape[-2:]), (height, width)


def test_the_low_branch_is_pooled_in_ceil_mode_then_cropped():
    """2x2 / 2 at H mod 4 = 2: floor mode would give the low branch 1 row where the convention needs 2."""
    low = torch.arange(9.0).reshape(1, 1, 3, 3)
    high, out_low = OctPool2d(nn.MaxPool2d(2))((torch.zeros(1, 1, 6, 5), low))
    assert high.shape[-2:] == (3, 2) and F.max_pool2d(low, 2).shape[-2:] == (1, 1)
    assert out_low.tolist() == [[[[4.0], [7.0]]]]  # ceil mode: [[4, 5], [7, 8]], cropped to 2x1


@pytest.mark.parametrize("pool, high_rows, low_rows, expected", [
    (nn.MaxPool2d(3, 2, ceil_mode=True), 6, [1.0, 5.0, 4.0], [5.0, 4.0]),  # 6 rows pool to 3, so the low branch needs
    # 2; its 3 rows pool to 1 even in ceil mode: 2 more rows repeat the last (4), whose window gives 4
    (nn.MaxPool2d(2, 1), 2, [4.0], [4.0]),  # a one-row low branch is shorter than the kernel
    (nn.AvgPool2d(3, 1), 3, [2.0, 5.0], [4.0]),  # 2 rows, one repeated: (2 + 5 + 5) / 3
])
def test_where_ceil_mode_falls_short_the_low_branch_repeats_its_edge(pool, high_rows, low_rows, expected):
    high = torch.zeros(1, 1, high_rows, 4)
    low = torch.tensor(low_rows).reshape(1, 1, -1, 1).expand(1, 1, len(low_rows), 2)
    high_out, low_out = OctPool2d(pool)((high, low))
    assert torch.equal(high_out, pool(high))
    assert tuple(low_out.shape[-2:]) == half_size(high_out.shape[-2:])
    assert low_out[0, 0, :, 0].tolist() == expected
    conversion = octify.convert(TwoHeads(pool), 0.5, input_shape=(1, 3, 32, 32))
    assert any(isinstance(m, OctPool2d) for m in conversion.module.modules())


@pytest.mark.parametrize("pool, reason", [
    (nn.MaxPool2d(2, return_indices=True), "returns indices"),
    (nn.AvgPool2d(2, divisor_override=3), "divisor override"),
])
def test_pools_with_indices_or_divisor_override_stay_boundaries(pool, reason):
    conversion = octify.convert(TwoHeads(pool), 0.5, input_shape=(1, 3, 32, 32))
    assert reason in conversion.explain()
    assert not any(isinstance(m, OctPool2d) for m in conversion.module.modules())


@pytest.mark.parametrize("scale", [1, 2, 3, 4, (2, 3)])
@pytest.mark.parametrize("mode", ["nearest", "nearest-exact"])
def test_nearest_resizing_by_a_whole_factor_commutes_with_merging(scale, mode):
    """Exact for any input: resize-then-merge equals merge-then-resize, at every size modulo 4."""
    split = ChannelSplit((False, True, False, True, True))
    factors = scale if isinstance(scale, tuple) else (scale, scale)
    for height in range(1, 13):
        x = octave_pair(2, 3, height, height + 3)
        expected = F.interpolate(merged(x, split), scale_factor=scale, mode=mode)
        out = OctInterpolate(scale_factor=scale, mode=mode)(x)
        assert torch.equal(out[0], F.interpolate(x[0], scale_factor=scale, mode=mode))
        assert torch.equal(merged(out, split), expected), height
        target = (height * factors[0], (height + 3) * factors[1])
        resized = OctInterpolate(mode=mode)(x, target)
        assert torch.equal(merged(resized, split), F.interpolate(merged(x, split), size=target, mode=mode))


def test_resizing_to_a_size_that_is_not_a_whole_multiple_keeps_the_convention():
    """A UNet's skip at odd sizes: the low branch is resized straight to half the high output."""
    for before, after in [((16, 16), (33, 33)), ((32, 33), (65, 67)), ((9, 8), (9, 8))]:
        high, low = OctInterpolate()(octave_pair(2, 2, *before), after)
        assert tuple(high.shape[-2:]) == after and tuple(low.shape[-2:]) == half_size(after)


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "bilinear", "scale_factor": 2}, "mode 'nearest' or 'nearest-exact'"),
    ({"scale_factor": 1.5}, "whole-number scale factors"),
    ({"scale_factor": 0.5}, "whole-number scale factors"),
    ({"size": 8, "scale_factor": 2}, "not both"),
])
def test_resizes_without_an_exact_rule_are_errors_for_the_layer(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OctInterpolate(**kwargs)


@pytest.mark.parametrize("keepdim", [True, False])
def test_global_max_pooling_equals_pooling_the_merged_tensor(keepdim):
    split = ChannelSplit((True, False, False, True, False))
    for height in range(1, 10):
        x = octave_pair(3, 2, height, 2 * height + 1)
        expected = merged(x, split).amax((2, 3), keepdim=keepdim)
        assert torch.equal(OctGlobalMaxPool(split, keepdim)(x), expected)


# -- networks --------------------------------------------------------------------------------------

def block_constant(channels, height, width, block):
    coarse = torch.rand(2, channels, -(-height // block), -(-width // block))
    return coarse.repeat_interleave(block, 2).repeat_interleave(block, 3)[:, :, :height, :width].contiguous()


class PointwisePools(nn.Module):
    """1x1 convolutions, 2x2 max and average pooling, a nearest x2 resize and a global max."""

    def __init__(self, head):
        super().__init__()
        self.a, self.b, self.c, self.d = (nn.Conv2d(3, 12, 1), nn.Conv2d(12, 12, 1), nn.Conv2d(12, 12, 1),
                                          nn.Conv2d(12, 12, 1))
        self.pool, self.up, self.head = nn.MaxPool2d(2), nn.Upsample(scale_factor=2), head

    def forward(self, x):
        x = torch.relu(self.a(x))
        y = self.b(self.pool(x))
        z = self.c(F.avg_pool2d(y, 2))
        return self.head(self.d(self.up(z)))


HEADS = [lambda y: y.amax((2, 3)), lambda y: torch.amax(y, dim=(-1, -2), keepdim=True),
         lambda y: torch.flatten(F.adaptive_max_pool2d(y, 1), 1), nn.AdaptiveMaxPool2d(1),
         nn.Sequential(nn.AdaptiveMaxPool2d((1, 1)), nn.Flatten())]


class Head(nn.Module):
    def __init__(self, function):
        super().__init__()
        self.function = function

    def forward(self, y):
        return self.function(y)


@pytest.mark.parametrize("head", range(len(HEADS)))
@pytest.mark.parametrize("size", [(32, 32), (34, 33), (35, 39)])
def test_block_constant_input_is_reproduced_through_pools_resizes_and_a_global_max(head, size):
    """A 1x1 octave network reproduces maps constant over 2x2 blocks, and each 2x2 / 2 pool halves the blocks:
    after two pools the input must be constant over 8x8 (partial blocks at odd edges)."""
    torch.manual_seed(0)
    model = PointwisePools(Head(HEADS[head])).eval()
    x = block_constant(3, *size, block=8)
    conversion = octify.convert(model, 0.5, example_inputs=(x,), plain_stem=False, min_size=2)
    types = {type(m) for m in conversion.module.modules()}
    assert {OctPool2d, OctInterpolate, OctGlobalMaxPool} <= types, conversion.explain()
    assert OctMerge not in types and OctSplit not in types, conversion.explain()
    with torch.no_grad():
        torch.testing.assert_close(conversion.module(x), model(x), rtol=1e-5, atol=1e-6)


def test_alpha_zero_reproduces_pools_and_resizes_exactly():
    torch.manual_seed(0)
    model = PointwisePools(Head(HEADS[0])).eval()
    x = torch.randn(2, 3, 19, 22)
    with torch.no_grad():
        assert torch.equal(octify.convert(model, 0.0, example_inputs=(x,)).module(x), model(x))


def flop_counter_macs(module, x):
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        output = module(x)
    return output, counter.get_total_flops() // 2


def assert_macs_are_measured(conversion, model, x):
    """Same output shapes; the report's MACs are FlopCounterMode's, exactly; returns the MAC ratio."""
    expected, original_macs = flop_counter_macs(model, x)
    produced, converted_macs = flop_counter_macs(conversion.module, x)
    assert produced.shape == expected.shape
    assert (conversion.report.original.macs, conversion.report.converted.macs) == (original_macs, converted_macs)
    return converted_macs / original_macs


class VGGStyle(nn.Module):
    """Three stages of 3x3 convolutions with MaxPool2d(2) between them, a one-channel input, a global max head."""

    def __init__(self):
        super().__init__()
        widths = [1, 32, 64, 128]
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(), nn.Conv2d(b, b, 3, padding=1),
                          nn.BatchNorm2d(b), nn.ReLU()) for a, b in zip(widths, widths[1:]))
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(128, 10)

    def forward(self, x):
        x = self.pool(self.stages[0](x))
        x = self.pool(self.stages[1](x))
        return self.fc(self.stages[2](x).amax((2, 3)))


@pytest.mark.parametrize("size", [64, 66, 65, 67])
def test_vgg_style_network_with_max_pools_and_a_global_max_converts(size):
    torch.manual_seed(0)
    model = VGGStyle().eval()
    x = torch.randn(2, 1, size, size)
    conversion = octify.convert(model, 0.5, example_inputs=(x,))
    modules = dict(conversion.module.named_modules())
    assert isinstance(modules["pool"], OctPool2d) and not any(isinstance(m, OctMerge) for m in modules.values())
    assert sum(isinstance(m, OctConv2d) and m.alpha_out == 0.5 for m in modules.values()) == 5
    ratio = assert_macs_are_measured(conversion, model, x)
    assert conversion.report.ratios["macs"] == pytest.approx(ratio, rel=1e-12)
    assert ratio < 0.52  # stem 3% of the MACs, its next convolution 0.625, the other four 0.4375 (+ odd sizes)


class UNet(nn.Module):
    """Two max-pool downs, two nearest resizes to the skip's size, channel concat skips."""

    def __init__(self):
        super().__init__()
        def block(a, b):
            return nn.Sequential(nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(inplace=True))
        self.enc1, self.enc2, self.mid = block(3, 16), block(16, 32), block(32, 64)
        self.dec2, self.dec1 = block(64 + 32, 32), block(32 + 16, 16)
        self.out = nn.Conv2d(16, 2, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        m = self.mid(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([e2, F.interpolate(m, size=e2.shape[-2:])], dim=1))
        d1 = self.dec1(torch.cat([e1, F.interpolate(d2, size=e1.shape[-2:])], dim=1))
        return self.out(d1)


@pytest.mark.parametrize("size, resizes_kept, macs_below", [(64, 2, 0.50), (66, 1, 0.57), (65, 1, 0.63), (67, 0, 0.75)])
def test_unet_runs_with_the_original_shapes_at_every_size_modulo_4(size, resizes_kept, macs_below):
    """Resizes to a whole multiple run per branch; the others (16 to 33, 32 to 65) are boundaries, and the
    convolution before such a resize keeps a plain output."""
    torch.manual_seed(0)
    model = UNet().eval()
    x = torch.randn(1, 3, size, size)
    conversion = octify.convert(model, 0.5, example_inputs=(x,))
    modules = list(conversion.module.modules())
    assert sum(isinstance(m, OctInterpolate) for m in modules) == resizes_kept
    assert sum(isinstance(m, OctPool2d) for m in modules) == 1  # the other one pools the plain stem's output
    assert assert_macs_are_measured(conversion, model, x) < macs_below
    for other in (65, 67):  # converted at one size, the module runs at the others
        y = torch.randn(1, 3, other, other + 1)
        with torch.no_grad():
            assert conversion.module(y).shape == model(y).shape


@pytest.mark.parametrize("layer, reason", [
    (nn.Upsample(scale_factor=2, mode="bilinear"), "bilinear resizing blends neighbouring pixels"),
    (nn.UpsamplingBilinear2d(scale_factor=2), "bilinear resizing blends neighbouring pixels"),
    (nn.Upsample(scale_factor=1.5), "scale factor 1.5 is not a whole number"),
    (nn.Upsample(size=(53, 52)), "resizing 26x26 to 53x52 is not a whole-number enlargement"),
    (nn.AdaptiveAvgPool2d(2), "adaptive pooling to 2 (not 1x1)"),
    (nn.AdaptiveMaxPool2d(1, return_indices=True), "returns indices"),
])
def test_resizes_and_pools_without_an_exact_rule_merge_first_with_a_reason(layer, reason):
    torch.manual_seed(0)
    model = TwoHeads(layer).eval()
    x = torch.randn(1, 3, 26, 26)
    conversion = octify.convert(model, 0.5, example_inputs=(x,))
    assert reason in conversion.explain()
    assert conversion.module.get_submodule("b").alpha_out == 0.5


def torchvision_model(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torchvision.models.get_model(name, weights=None).eval()


def test_torchvision_vgg11_pools_per_branch():
    """At 224x224 (the report alone) and at 64x64 (run, MACs measured): every max pool runs per branch."""
    model = torchvision_model("vgg11")
    assert octify.convert(model, 0.5, input_shape=(1, 3, 224, 224)).report.ratios["macs"] <= 0.50
    x = torch.randn(1, 3, 64, 64)
    conversion = octify.convert(model, 0.5, example_inputs=(x,))
    pools = [m for m in conversion.module.modules() if isinstance(m, OctPool2d)]
    assert len(pools) == 2  # the others pool the plain stem or maps below min_size
    assert assert_macs_are_measured(conversion, model, x) < 0.66  # its last two stages are 4x4: plain


def test_torchvision_alexnet_pools_per_branch():
    """Its stride-4 stem stays plain; the four convolutions after it are octave, with 3x3 / 2 max pools per
    branch: the last pool's 6x6 output is below min_size, but no convolution reads it, so it runs per branch
    and the classifier gets a merged map."""
    model = torchvision_model("alexnet")
    x = torch.randn(1, 3, 224, 224)
    conversion = octify.convert(model, 0.5, example_inputs=(x,))
    octave = [name for name, m in conversion.module.named_modules() if isinstance(m, OctConv2d) and m.alpha_out]
    assert octave == ["features.3", "features.6", "features.8", "features.10"]
    assert all(isinstance(conversion.module.get_submodule(f"features.{i}"), OctPool2d) for i in (5, 12))
    assert assert_macs_are_measured(conversion, model, x) <= 0.62  # 0.78 with the pools as boundaries
