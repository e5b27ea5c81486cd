"""Correctness oracles for the conversion: alpha 0 is exact, block-constant inputs are exact at any alpha."""
import pytest
import torch
from torch import nn

import octify
from octify.layers import ChannelSplit, OctConv2d


def block_constant(channels, height, width, batch=2):
    """A random input constant over 2x2 blocks (odd sizes keep a half block at the edge)."""
    coarse = torch.rand(batch, channels, (height + 1) // 2, (width + 1) // 2)
    return coarse.repeat_interleave(2, 2).repeat_interleave(2, 3)[:, :, :height, :width].contiguous()


class SqueezeExcite(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, max(channels // 4, 1), 1)
        self.fc2 = nn.Conv2d(max(channels // 4, 1), channels, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(self.pool(x)))))


class PointwiseNet(nn.Module):
    """1x1 convs, BN, activations, residual add, channel concat and squeeze-and-excitation."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 24, 1)
        self.bn = nn.BatchNorm2d(24)
        self.branch_a = nn.Conv2d(24, 16, 1)
        self.branch_b = nn.Sequential(nn.Conv2d(24, 8, 1), nn.BatchNorm2d(8), nn.SiLU())
        self.mix = nn.Conv2d(24, 24, 1, groups=3)
        self.se = SqueezeExcite(24)
        self.depthwise = nn.Conv2d(24, 24, 1, groups=24)
        self.head = nn.Conv2d(24, 10, 1)

    def forward(self, x):
        x = torch.relu(self.bn(self.stem(x)))
        y = torch.cat([self.branch_a(x), self.branch_b(x)], dim=1)
        y = self.se(nn.functional.hardswish(y))
        x = x + self.mix(y) * 0.5
        x = nn.functional.relu6(self.depthwise(x)) - x
        return self.head(x)


def randomize_batchnorm(model):
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            with torch.no_grad():
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return model


@pytest.mark.parametrize("alpha", [0.125, 0.25, 0.5, 0.75])
@pytest.mark.parametrize("size", [(16, 16), (15, 13)])
def test_block_constant_input_is_reproduced_at_any_alpha(alpha, size):
    torch.manual_seed(0)
    model = randomize_batchnorm(PointwiseNet()).eval()
    x = block_constant(3, *size)
    conversion = octify.convert(model, alpha, example_inputs=(x,), plain_stem=False, min_size=2)
    octave_layers = [m for m in conversion.module.modules() if isinstance(m, OctConv2d) and not m.is_plain]
    assert len(octave_layers) >= 2, conversion.explain()
    with torch.no_grad():
        torch.testing.assert_close(conversion.module.eval()(x), model(x), rtol=1e-5, atol=1e-5)


def test_alpha_zero_is_the_original_exactly():
    torch.manual_seed(0)
    model = randomize_batchnorm(PointwiseNet()).eval()
    x = torch.randn(2, 3, 17, 20)
    conversion = octify.convert(model, 0.0, example_inputs=(x,))
    with torch.no_grad():
        assert torch.equal(conversion.module.eval()(x), model(x))


def test_converted_weights_start_from_the_original():
    torch.manual_seed(0)
    model = PointwiseNet().eval()
    conversion = octify.convert(model, 0.5, input_shape=(1, 3, 16, 16), plain_stem=False, min_size=2)
    layer = conversion.module.get_submodule("branch_a")
    assert isinstance(layer, OctConv2d)
    original = model.branch_a.weight
    # its input is added to the output of `mix` (groups=3), so each group of 8 keeps its last 4 channels low
    low_in = ChannelSplit.concat([ChannelSplit.trailing(8, 4)] * 3)
    high_rows, low_rows = list(range(layer.high_out)), list(range(layer.high_out, 16))
    assert torch.equal(layer.h2h.weight, original[high_rows][:, list(low_in.high_index)])
    assert torch.equal(layer.l2l.weight, original[low_rows][:, list(low_in.low_index)])


class ConcatOfItself(nn.Module):
    """A concat that lists the same tensor twice: its split repeats that tensor's split."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 1), nn.Conv2d(12, 6, 1)

    def forward(self, x):
        y = self.b(self.a(x))
        return self.head(torch.cat([y, y, y], 1))


@pytest.mark.parametrize("alpha", [0.25, 0.5])
def test_a_concat_repeating_one_part_is_exact_on_block_constant_inputs(alpha):
    model = ConcatOfItself().eval()
    x = block_constant(3, 10, 10)
    conversion = octify.convert(model, alpha, example_inputs=(x,), plain_stem=False)
    assert not conversion.module.head.is_plain
    with torch.no_grad():
        torch.testing.assert_close(conversion.module.eval()(x), model(x), rtol=1e-5, atol=1e-6)
