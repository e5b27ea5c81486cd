"""ConvNeXt-style channels-last regions: rewritten onto channels-first maps, then converted."""
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import octify
from octify import OctConv2d
from octify.capture import capture
from octify import ops
from octify.layers import ChannelLayerNorm, ChannelsLast, ChannelSplit, OctChannelLayerNorm, PointwiseLinear
from octify.rules.channels_last import channels_first
from test_report_counting import measured_macs


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an N, C, H, W map, written as ConvNeXt writes it."""

    def forward(self, x):
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Block(nn.Module):
    def __init__(self, dim, functional=False):
        super().__init__()
        self.functional = functional
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc1, self.act, self.fc2 = nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.rand(dim, 1, 1))

    def forward(self, x):
        y = torch.permute(self.dwconv(x), [0, 2, 3, 1])
        y = self.fc1(self.norm(y))
        y = self.fc2(F.gelu(y) if self.functional else self.act(y))
        return x + self.gamma * y.permute(0, 3, 1, 2)


class TinyConvNeXt(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.blocks = nn.Sequential(Block(16), Block(16, functional=True))
        self.down = nn.Sequential(LayerNorm2d(16), nn.Conv2d(16, 32, 3, stride=2, padding=1))
        self.block = Block(32)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        x = self.block(self.down(self.blocks(self.stem(x))))
        return self.head(x.mean((2, 3)))


def randomized(model):
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return model.eval()


def test_channels_first_computes_exactly_the_same_numbers():
    model = randomized(TinyConvNeXt())
    x = torch.randn(2, 3, 19, 17)
    original = capture(model, (x,)).module
    rewritten = channels_first(original)
    kinds = [type(m) for m in rewritten.modules()]
    assert kinds.count(PointwiseLinear) == 6 and kinds.count(ChannelLayerNorm) == 4
    assert kinds.count(ChannelsLast) == 2 and sum(n.target is ops.channels_last for n in rewritten.graph.nodes) == 1
    assert not any(n.target in (torch.permute, "permute") for n in rewritten.graph.nodes)
    assert any(n.target in (torch.permute, "permute") for n in original.graph.nodes)  # the original is untouched
    with torch.no_grad():
        assert torch.equal(rewritten(x), model(x))


class OpenRegion(nn.Module):
    """A channels-last region that never permutes back, and one with an op that has no channels-first form."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        x = self.conv(x)
        y = self.fc(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        y = y + torch.softmax(x.permute(0, 2, 3, 1), dim=-1).permute(0, 3, 1, 2)
        return y, self.fc(x.permute(0, 2, 3, 1))


def test_regions_without_a_channels_first_form_stay_as_they_are():
    model = OpenRegion().eval()
    x = torch.randn(1, 3, 16, 16)
    rewritten = channels_first(capture(model, (x,)).module)
    assert not any(isinstance(m, PointwiseLinear) for m in rewritten.modules())  # fc is also called outside
    conversion = octify.convert(model, 0.5, example_inputs=(x,), plain_stem=False)
    with torch.no_grad():
        for got, expected in zip(conversion.module(x), model(x)):
            assert got.shape == expected.shape


def test_each_branch_is_normalized_over_its_own_channels():
    norm = randomized(nn.LayerNorm(6))
    split = ChannelSplit((False, True, False, False, True, False))
    layer = OctChannelLayerNorm(ChannelLayerNorm.from_parameters(6, norm.weight, norm.bias, norm.eps), split)
    high, low = torch.randn(2, 4, 5, 5), torch.randn(2, 2, 3, 3)
    y_h, y_l = layer((high, low))
    for x, y, index in ((high, y_h, [0, 2, 3, 5]), (low, y_l, [1, 4])):
        expected = F.layer_norm(x.movedim(1, -1), (len(index),), norm.weight[index], norm.bias[index], norm.eps)
        torch.testing.assert_close(y, expected.movedim(-1, 1), rtol=1e-6, atol=1e-6)


def test_pointwise_linear_is_a_one_by_one_convolution():
    layer = PointwiseLinear.from_linear(nn.Linear(6, 5))
    x = torch.randn(2, 6, 7, 3)
    torch.testing.assert_close(layer.as_conv()(x), layer(x), rtol=1e-5, atol=1e-5)


def test_convnext_block_network_converts():
    model = randomized(TinyConvNeXt())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(octify.convert(model, 0.0, example_inputs=(x,)).module(x), model(x))
    conversion = octify.convert(model, 0.5, example_inputs=(x,))
    converted = conversion.module.eval()
    names = {name for name, m in converted.named_modules() if isinstance(m, OctConv2d) and not m.is_plain}
    assert {"blocks.0.fc1", "blocks.0.fc2", "blocks.1.fc2", "block.fc1", "block.fc2"} <= names
    assert sum(isinstance(m, OctChannelLayerNorm) for m in converted.modules()) == 4
    ratio = measured_macs(converted, x) / measured_macs(model, x)
    assert conversion.report.converted.macs / conversion.report.original.macs == ratio
    assert ratio < 0.55
    with FlopCounterMode(display=False) as counter, torch.inference_mode():  # gamma is no module's input
        converted(x)
    assert counter.get_total_flops() // 2 == conversion.report.converted.macs
    odd = torch.randn(1, 3, 21, 15)
    with torch.no_grad():
        assert converted(odd).shape == model(odd).shape


def test_torchvision_convnext_tiny_mac_ratio():
    """At 224x224 the ratio is 0.544 (README); at 128x128 the same stages are at least min_size."""
    model = torchvision.models.convnext_tiny(weights=None).eval()
    x = torch.randn(1, 3, 128, 128)
    conversion = octify.convert(model, 0.5, example_inputs=(x,))
    assert not conversion.report.converted.uncounted
    ratio = measured_macs(conversion.module.eval(), x) / measured_macs(model, x)
    assert conversion.report.converted.macs / conversion.report.original.macs == ratio
    assert 0.5 < ratio < 0.6


def test_timm_convnext_atto_converts():
    timm = pytest.importorskip("timm")
    model = timm.create_model("convnext_atto", pretrained=False).eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(octify.convert(model, 0.0, example_inputs=(x,)).module(x), model(x))
    conversion = octify.convert(model, 0.5, example_inputs=(x,))
    assert conversion.report.converted.macs / conversion.report.original.macs < 0.6
    assert sum(isinstance(m, OctChannelLayerNorm) for m in conversion.module.modules()) > 0
