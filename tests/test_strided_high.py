"""The strided high path option: the original strided convolution as h2h, same sizes and MACs as the paper's."""
import pytest
import torch
from torch import nn

import octify
from octify.layers import OctConv2d
from test_recovery_reconstruction import ConvNet


@pytest.mark.parametrize("padding, size", [(1, (15, 12)), (0, (16, 13)), (2, (9, 9))])
def test_strided_h2h_is_the_original_convolution_on_high_channels(padding, size):
    conv = nn.Conv2d(8, 6, 3, stride=2, padding=padding, padding_mode="zeros")
    strided = OctConv2d.from_conv(conv, 0.5, strided_high=True)
    pooled = OctConv2d.from_conv(conv, 0.5)
    x = torch.randn(2, 8, *size)
    octave_input = (x[:, :4], torch.zeros(2, 4, (size[0] + 1) // 2, (size[1] + 1) // 2))
    with torch.no_grad():
        high, low = strided(octave_input)
        reference_high, reference_low = pooled(octave_input)
        only_high = conv(torch.cat([x[:, :4], torch.zeros_like(x[:, 4:])], 1))
    assert high.shape == reference_high.shape and low.shape == reference_low.shape
    torch.testing.assert_close(high, only_high[:, :3], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(low, reference_low)  # only the high-to-high path changes


def test_strided_high_needs_numeric_padding():
    with pytest.raises(ValueError, match="numeric padding"):
        OctConv2d(8, 8, 3, stride=2, padding="same", alpha=0.5, strided_high=True)


def test_alpha_zero_is_exact_with_either_stride_option():
    model = ConvNet().eval()
    x = torch.randn(2, 3, 21, 19)
    for strided_high in (False, True):
        conversion = octify.convert(model, 0.0, example_inputs=(x,), strided_high=strided_high)
        with torch.no_grad():
            assert torch.equal(conversion.module(x), model(x))


def test_strided_high_conversion_keeps_shapes_and_macs():
    model = ConvNet().eval()
    x = torch.randn(1, 3, 24, 24)
    pooled = octify.convert(model, 0.5, example_inputs=(x,), min_size=2)
    strided = octify.convert(model, 0.5, example_inputs=(x,), min_size=2, strided_high=True)
    assert strided.module.down.strided_high and not pooled.module.down.strided_high
    assert strided.report.converted.macs == pooled.report.converted.macs
    odd = torch.randn(1, 3, 23, 21)
    with torch.no_grad():
        assert strided.module(odd).shape == model(odd).shape
    assert isinstance(octify.for_inference(strided.module).get_submodule("down"), OctConv2d)
