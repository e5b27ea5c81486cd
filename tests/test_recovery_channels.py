"""Low channels chosen from calibration data: the same function before training, the smooth channels go low."""
import pytest
import torch
from torch import nn

import octify
from octify.capture import capture
from octify.layers import OctConv2d
from octify.recovery.channels import channel_scores
from test_convert_oracles import PointwiseNet, block_constant, randomize_batchnorm


def octave_layers(module):
    return {name: layer for name, layer in module.named_modules()
            if isinstance(layer, OctConv2d) and not layer.is_plain}


@pytest.mark.parametrize("alpha", [0.25, 0.5])
def test_data_chosen_channels_keep_block_constant_inputs_exact(alpha):
    model = randomize_batchnorm(PointwiseNet()).eval()
    x = block_constant(3, 15, 13)
    conversion = octify.convert(model, alpha, example_inputs=(x,), plain_stem=False, min_size=2,
                                calibration_data=torch.randn(6, 3, 15, 13))
    chosen = [note for note in conversion.notes if note.kind == "channels"]
    moved = [layer for layer in octave_layers(conversion.module).values() if not layer.original_splits[1].is_trailing]
    assert chosen and moved, conversion.explain()
    with torch.no_grad():
        torch.testing.assert_close(conversion.module.eval()(x), model(x), rtol=1e-5, atol=1e-5)


def test_alpha_zero_with_calibration_data_is_the_original_exactly():
    model = randomize_batchnorm(PointwiseNet()).eval()
    x = torch.randn(2, 3, 17, 20)
    conversion = octify.convert(model, 0.0, example_inputs=(x,), calibration_data=torch.randn(4, 3, 17, 20))
    with torch.no_grad():
        assert torch.equal(conversion.module.eval()(x), model(x))
    assert not [note for note in conversion.notes if note.kind == "channels"]


class Identity1x1(nn.Module):
    """A 1x1 convolution copying its 8 input channels, then a convolution that reads them."""

    def __init__(self):
        super().__init__()
        self.copy, self.head = nn.Conv2d(8, 8, 1, bias=False), nn.Conv2d(8, 4, 1)
        with torch.no_grad():
            self.copy.weight.copy_(torch.eye(8)[:, :, None, None])

    def forward(self, x):
        return self.head(self.copy(x))


def smooth_and_sharp(batch=4, size=16):
    """Channels 1, 3, 4, 6 constant over 2x2 blocks, the others noise."""
    x = torch.randn(batch, 8, size, size)
    smooth = [1, 3, 4, 6]
    x[:, smooth] = block_constant(len(smooth), size, size, batch) * 3
    return x, smooth


def test_scores_are_the_loss_at_half_resolution():
    model = Identity1x1()
    x, smooth = smooth_and_sharp()
    graph = capture(model, (x[:1],)).module  # a plain graph with shapes recorded
    scores = channel_scores(graph, x)
    copy_scores = scores["copy"]
    assert copy_scores[smooth].abs().max() < 1e-6
    sharp = [c for c in range(8) if c not in smooth]
    assert copy_scores[sharp].min() > 0.5  # white noise keeps 3/4 of its energy above the half band


def test_channels_with_most_high_frequency_energy_stay_high():
    model = Identity1x1()
    x, smooth = smooth_and_sharp()
    conversion = octify.convert(model, 0.5, example_inputs=(x[:1],), plain_stem=False, min_size=2,
                                calibration_data=x)
    assert conversion.module.copy.original_splits[1].low_index == tuple(smooth)
    fixed = octify.convert(model, 0.5, example_inputs=(x[:1],), plain_stem=False, min_size=2)
    assert fixed.module.copy.original_splits[1].low_index == (4, 5, 6, 7)
    with torch.no_grad():
        error = (conversion.module(x) - model(x)).norm()
        fixed_error = (fixed.module(x) - model(x)).norm()
    assert error < 1e-4 * fixed_error  # the smooth channels lose nothing at half resolution


class AddAndConcat(nn.Module):
    """Two convolutions added (one class), two concatenated, a convolution reading the concat."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(3, 8, 1)
        self.c, self.d = nn.Conv2d(8, 6, 1), nn.Conv2d(8, 4, 1)
        self.head = nn.Conv2d(10, 5, 1)

    def forward(self, x):
        y = self.a(x) + self.b(x)
        return self.head(torch.cat([self.c(y), self.d(torch.relu(y))], dim=1))


def test_channel_choice_is_consistent_across_adds_and_concats():
    model = AddAndConcat().eval()
    x = block_constant(3, 12, 12)
    conversion = octify.convert(model, 0.5, example_inputs=(x,), plain_stem=False, min_size=2,
                                calibration_data=torch.randn(4, 3, 12, 12))
    layers = conversion.module
    a, b, c, d = (layers.get_submodule(name).original_splits for name in "abcd")
    assert a[1] == b[1] == c[0] == d[0]
    assert not a[1].is_trailing or not c[1].is_trailing or not d[1].is_trailing
    assert layers.head.original_splits[0] == octify.ChannelSplit.concat([c[1], d[1]])
    with torch.no_grad():
        torch.testing.assert_close(layers(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("data, message", [([], "empty"), ("images", "must be a tensor"),
                                           ([torch.zeros(1, 3, 8, 8), 3], "batch 1")])
def test_bad_calibration_data_is_refused(data, message):
    with pytest.raises(ValueError, match=message):
        octify.convert(PointwiseNet().eval(), 0.5, input_shape=(1, 3, 8, 8), calibration_data=data)
