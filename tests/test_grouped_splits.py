"""Grouped convolutions (ResNeXt, RegNet) split each group on its own: the planner gives every group the same
low channels, so the four paths of each octave layer keep the original's groups."""
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import octify
from octify.layers import OctConv2d


class Bottleneck(nn.Module):
    """1x1, 3x3 grouped (group width 8), 1x1, with a residual add: RegNetX's block."""

    def __init__(self, kernel=3):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 1)
        self.a = nn.Sequential(nn.Conv2d(32, 32, 1), nn.BatchNorm2d(32), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(32, 32, kernel, padding=kernel // 2, groups=4), nn.BatchNorm2d(32), nn.ReLU())
        self.c = nn.Conv2d(32, 32, 1)

    def forward(self, x):
        x = self.stem(x)
        return torch.relu(x + self.c(self.b(self.a(x))))


def randomized(model):
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    return model.eval()


def block_constant(n, c, h, w):
    return torch.rand(n, c, h // 2, w // 2).repeat_interleave(2, 2).repeat_interleave(2, 3)


def test_a_grouped_convolution_between_dense_ones_splits_within_its_groups():
    model = randomized(Bottleneck())
    x = torch.randn(2, 3, 16, 16)
    conversion = octify.convert(model, 0.5, example_inputs=(x,))
    grouped = conversion.module.get_submodule("b.0")
    assert isinstance(grouped, OctConv2d) and grouped.within_groups and grouped.low_in == grouped.low_out == 16
    assert [path.name for path in grouped.paths] == ["h2h", "h2l", "l2h", "l2l"]
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        conversion.module(x)
    assert conversion.report.converted.macs == counter.get_total_flops() // 2
    grouped_macs = next(row.macs for row in conversion.report.converted.layers if row.name == "b.0")
    assert grouped_macs == 2 * 16 * 16 * 32 * 8 * 9 * 7 // 16
    with torch.no_grad():
        assert torch.equal(octify.convert(model, 0.0, example_inputs=(x,)).module(x), model(x))
        inference = octify.for_inference(conversion.module)
        torch.testing.assert_close(inference(x), conversion.module(x), rtol=1e-4, atol=1e-4)


def test_pointwise_grouped_networks_reproduce_block_constant_inputs_exactly():
    model = randomized(Bottleneck(kernel=1))
    x = block_constant(2, 3, 12, 10)
    for alpha in (0.25, 0.5, 0.75):
        conversion = octify.convert(model, alpha, example_inputs=(x,))
        assert conversion.module.get_submodule("b.0").within_groups
        with torch.no_grad():
            torch.testing.assert_close(conversion.module(x), model(x), rtol=1e-5, atol=1e-5)
