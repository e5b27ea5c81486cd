"""nn.ConvTranspose2d becomes OctConvTranspose2d: sizes, weights, MACs and whole decoders."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import octify
from octify import OctConvTranspose2d
from octify.report import cost
from test_report_counting import measured_macs

GEOMETRIES = {
    "k2s2": dict(kernel_size=2, stride=2),
    "k4s2p1": dict(kernel_size=4, stride=2, padding=1),
    "k3s2p1op1": dict(kernel_size=3, stride=2, padding=1, output_padding=1),
    "k3s2p1": dict(kernel_size=3, stride=2, padding=1),
    "k3s1p1": dict(kernel_size=3, stride=1, padding=1),
    "k1s1": dict(kernel_size=1, stride=1),
}


def reference(conv, split_in, split_out, high, low):
    """The documented paths from the original weights: every low-resolution path computed with the
    largest output_padding and cropped to ceil(high / 2); low up-sampled by repeating pixels."""
    def transposed(x, rows, cols, with_bias, size):
        weight = conv.weight[rows][:, cols]
        bias = conv.bias[cols] if with_bias else None
        y = F.conv_transpose2d(x, weight, bias, conv.stride, conv.padding, conv.stride[0] - 1)
        return y[..., :size[0], :size[1]]

    hi_in, lo_in, hi_out, lo_out = (list(range(split_in)), list(range(split_in, conv.in_channels)),
                                    list(range(split_out)), list(range(split_out, conv.out_channels)))
    y_h = F.conv_transpose2d(high, conv.weight[hi_in][:, hi_out], conv.bias[hi_out], conv.stride, conv.padding,
                             conv.output_padding)
    size = tuple((s + 1) // 2 for s in y_h.shape[-2:])
    l2h = transposed(low, lo_in, hi_out, False, size)
    y_h = y_h + l2h.repeat_interleave(2, 2).repeat_interleave(2, 3)[..., :y_h.shape[-2], :y_h.shape[-1]]
    pooled = F.avg_pool2d(high, 2, 2, ceil_mode=True)
    y_l = transposed(low, lo_in, lo_out, True, size) + transposed(pooled, hi_in, lo_out, False, size)
    return y_h, y_l


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("height", [8, 9, 10, 11])  # every height mod 4
def test_paths_match_the_reference_at_every_size(geometry, height):
    conv = nn.ConvTranspose2d(8, 6, **GEOMETRIES[geometry])
    layer = OctConvTranspose2d.from_conv(conv, 0.5)
    high, low = torch.randn(2, 4, height, 7), torch.randn(2, 4, (height + 1) // 2, 4)
    y_h, y_l = layer((high, low))
    plain = conv(torch.randn(2, 8, height, 7))
    assert y_h.shape == plain.shape[:1] + (3,) + plain.shape[2:]
    assert y_l.shape[-2:] == tuple((s + 1) // 2 for s in plain.shape[-2:])
    expected_h, expected_l = reference(conv, 4, 3, high, low)
    torch.testing.assert_close(y_h, expected_h, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y_l, expected_l, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_alpha_zero_is_the_transposed_convolution_exactly(geometry):
    conv = nn.ConvTranspose2d(8, 6, **GEOMETRIES[geometry])
    layer = OctConvTranspose2d.from_conv(conv, 0.0)
    x = torch.randn(2, 8, 9, 6)
    assert torch.equal(layer(x), conv(x))
    assert sum(p.numel() for p in layer.parameters()) == sum(p.numel() for p in conv.parameters())


@pytest.mark.parametrize("alpha", [(0.0, 0.5), (0.5, 0.5), (0.5, 0.0), (0.25, 0.75)])
def test_one_bias_per_output_channel_and_plain_ends(alpha):
    conv = nn.ConvTranspose2d(8, 8, 2, stride=2)
    layer = OctConvTranspose2d.from_conv(conv, alpha)
    assert sum(p.numel() for p in layer.parameters()) == sum(p.numel() for p in conv.parameters())
    x = torch.randn(1, 8, 5, 5) if alpha[0] == 0 else (torch.randn(1, 8 - layer.low_in, 5, 5),
                                                        torch.randn(1, layer.low_in, 3, 3))
    y = layer(x)
    assert isinstance(y, torch.Tensor) == (alpha[1] == 0)


def dense_equivalent(conv):
    """A groups=1 transposed convolution computing ``conv`` (zero weights between groups)."""
    dense = nn.ConvTranspose2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                               conv.output_padding)
    rows, cols = conv.in_channels // conv.groups, conv.out_channels // conv.groups
    with torch.no_grad():
        dense.weight.zero_()
        for g in range(conv.groups):
            dense.weight[g * rows:(g + 1) * rows, g * cols:(g + 1) * cols] = conv.weight[g * rows:(g + 1) * rows]
        dense.bias.copy_(conv.bias)
    return dense


@pytest.mark.parametrize("channels,groups,alpha", [((8, 12), 4, (0.5, 0.5)), ((8, 12), 4, (0.25, 0.75)),
                                                   ((8, 12), 2, (0.0, 0.5)), ((8, 8), 8, (0.5, 0.5))])
@pytest.mark.parametrize("height", [8, 9])
def test_grouped_layer_matches_its_dense_equivalent(channels, groups, alpha, height):
    conv = nn.ConvTranspose2d(*channels, 3, stride=2, padding=1, output_padding=1, groups=groups)
    layer = OctConvTranspose2d.from_conv(conv, alpha)
    dense = OctConvTranspose2d.from_conv(dense_equivalent(conv), alpha)
    assert sum(p.numel() for p in layer.parameters()) == sum(p.numel() for p in conv.parameters())
    high = torch.randn(2, channels[0] - layer.low_in, height, 7)
    x = (high, torch.randn(2, layer.low_in, (height + 1) // 2, 4)) if layer.low_in else high
    for got, expected in zip(layer(x), dense(x)):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    plain = torch.randn(2, channels[0], height, 7)
    assert torch.equal(OctConvTranspose2d.from_conv(conv, 0.0)(plain), conv(plain))
    model = Wrap(layer)
    inputs = x if isinstance(x, tuple) else (x,)
    assert cost(model, example_inputs=inputs).macs == measured_macs(model, *inputs)


def test_pointwise_network_reproduces_a_block_constant_input_at_alpha_half():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.ConvTranspose2d(8, 8, 1), nn.ReLU(),
                          nn.ConvTranspose2d(8, 4, 1)).eval()
    coarse = torch.rand(2, 3, 7, 6)
    x = coarse.repeat_interleave(2, 2).repeat_interleave(2, 3)[:, :, :13, :11]
    conversion = octify.convert(model, 0.5, example_inputs=(x,), plain_stem=False, min_size=2)
    assert sum(isinstance(m, OctConvTranspose2d) and not m.is_plain for m in conversion.module.modules()) == 2
    with torch.no_grad():
        torch.testing.assert_close(conversion.module(x), model(x), rtol=1e-5, atol=1e-5)


class Wrap(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, *x):
        return self.layer(x if self.layer.low_in else x[0])


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("alpha", [(0.0, 0.5), (0.5, 0.5), (0.5, 0.0), (0.0, 0.0)])
def test_macs_match_flop_counter_exactly(geometry, alpha):
    layer = OctConvTranspose2d.from_conv(nn.ConvTranspose2d(8, 6, **GEOMETRIES[geometry]), alpha)
    inputs = (torch.randn(1, 8, 11, 9),) if not layer.low_in else (
        torch.randn(1, 8 - layer.low_in, 11, 9), torch.randn(1, layer.low_in, 6, 5))
    model = Wrap(layer)
    assert cost(model, example_inputs=inputs).macs == measured_macs(model, *inputs)


def test_plain_grouped_transposed_convolution_macs_match_flop_counter():
    """The report's rule for nn.ConvTranspose2d itself (before any conversion)."""
    model = nn.Sequential(nn.ConvTranspose2d(8, 12, 3, stride=2, padding=1, output_padding=1, groups=4))
    x = torch.randn(2, 8, 7, 5)
    assert cost(model, example_inputs=x).macs == measured_macs(model, x)


def test_unsupported_geometries_are_errors_that_say_why():
    with pytest.raises(ValueError, match="dilation 1"):
        OctConvTranspose2d(8, 8, 3, padding=2, dilation=2, alpha=0.5)
    with pytest.raises(ValueError, match="in whole groups of 4"):
        OctConvTranspose2d(8, 8, 2, stride=2, groups=2, alpha=0.1)
    with pytest.raises(ValueError, match="depthwise"):
        OctConvTranspose2d(8, 8, 2, stride=2, groups=8, alpha=(0.5, 0.25))
    with pytest.raises(ValueError, match="size-preserving"):
        OctConvTranspose2d(8, 8, 3, alpha=0.5)
    with pytest.raises(ValueError, match="cannot bring the low branch"):
        OctConvTranspose2d(8, 8, 2, stride=2, padding=1, output_padding=1, alpha=0.5)
    layer = OctConvTranspose2d(8, 8, 2, stride=2, alpha=0.5)
    with pytest.raises(ValueError, match="expects 4 high and 4 low channels"):
        layer((torch.randn(1, 5, 6, 6), torch.randn(1, 3, 3, 3)))
    with pytest.raises(ValueError, match="ceil of half"):
        layer((torch.randn(1, 4, 6, 6), torch.randn(1, 4, 2, 3)))


def block(inputs, outputs):
    return nn.Sequential(nn.Conv2d(inputs, outputs, 3, padding=1), nn.BatchNorm2d(outputs), nn.ReLU())


class SmallUNet(nn.Module):
    """Encoder with max pooling, decoder with transposed convolutions and skip concats."""

    def __init__(self, up_kwargs):
        super().__init__()
        self.enc1, self.enc2, self.enc3 = block(3, 16), block(16, 32), block(32, 64)
        self.up2 = nn.ConvTranspose2d(64, 32, **up_kwargs)
        self.dec2 = block(64, 32)
        self.up1 = nn.ConvTranspose2d(32, 16, **up_kwargs)
        self.dec1 = block(32, 16)
        self.head = nn.Conv2d(16, 2, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        e3 = self.enc3(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(e3), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        return self.head(d1)


@pytest.mark.parametrize("geometry", ["k2s2", "k4s2p1", "k3s2p1op1"])
def test_unet_decoder_converts_with_the_measured_mac_ratio(geometry):
    model = SmallUNet(GEOMETRIES[geometry]).eval()
    x = torch.randn(1, 3, 64, 64)
    conversion = octify.convert(model, 0.5, example_inputs=(x,))
    octave_ups = [m for m in conversion.module.modules() if isinstance(m, OctConvTranspose2d) and not m.is_plain]
    assert len(octave_ups) == 2, conversion.explain()
    converted = conversion.module.eval()
    ratio = measured_macs(converted, x) / measured_macs(model, x)
    assert conversion.report.converted.macs / conversion.report.original.macs == ratio
    assert ratio < 0.55
    odd = torch.randn(1, 3, 68, 76)  # the decoder's skips need sizes divisible by 4
    with torch.no_grad():
        assert converted(odd).shape == model(odd).shape
        assert torch.equal(octify.convert(model, 0.0, example_inputs=(x,)).module(x), model(x))


class CallsWithOutputSize(nn.Module):
    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.mid = nn.Conv2d(8, 8, 3, padding=1)
        self.up = nn.ConvTranspose2d(8, 8, 3, stride=2, padding=1)

    def forward(self, x):
        return self.up(self.mid(self.down(x)), output_size=x.shape[-2:])


def test_output_size_at_call_time_stays_plain_with_its_reason():
    model = CallsWithOutputSize().eval()
    x = torch.randn(1, 8, 33, 33)
    conversion = octify.convert(model, 0.5, example_inputs=(x,), plain_stem=False)
    assert isinstance(conversion.module.get_submodule("up"), nn.ConvTranspose2d)
    assert "output_size= at call time" in conversion.explain()
    with torch.no_grad():
        assert conversion.module(x).shape == model(x).shape


def test_grouped_and_depthwise_up_sampling_convert():
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                          nn.ConvTranspose2d(16, 16, 2, stride=2, groups=16), nn.ReLU(),
                          nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1, groups=4), nn.ReLU(),
                          nn.Conv2d(8, 4, 3, padding=1)).eval()
    x = torch.randn(1, 3, 11, 9)
    conversion = octify.convert(model, 0.5, example_inputs=(x,))
    for name in ("3", "5"):
        layer = conversion.module.get_submodule(name)
        assert isinstance(layer, OctConvTranspose2d) and layer.low_in and layer.low_out, conversion.explain()
    with torch.no_grad():
        assert conversion.module(x).shape == model(x).shape
        assert torch.equal(octify.convert(model, 0.0, example_inputs=(x,)).module(x), model(x))
    assert conversion.report.converted.macs == measured_macs(conversion.module, x)
