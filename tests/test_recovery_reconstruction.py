"""Per-layer reconstruction: each octave layer's output error against the original's goes down, exact stays exact."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import octify
from octify import reconstruct
from test_convert_oracles import PointwiseNet, block_constant, randomize_batchnorm


class ConvNet(nn.Module):
    """3x3 convolutions (one strided, one depthwise, one with reflect padding), BatchNorm, a residual add."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.a = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.down = nn.Conv2d(16, 24, 3, stride=2, padding=1)
        self.depthwise = nn.Conv2d(24, 24, 3, padding=1, groups=24)
        self.b = nn.Conv2d(24, 24, 3, padding=1, padding_mode="reflect")
        self.head = nn.Conv2d(24, 10, 1)

    def forward(self, x):
        x = self.a(torch.relu(self.stem(x)))
        x = torch.relu(self.down(x))
        x = x + self.b(torch.relu(self.depthwise(x)))
        return self.head(x)


def smooth_images(batch, size=20):
    """Random images with some spatial correlation, like photographs have."""
    return F.avg_pool2d(torch.randn(batch, 3, size + 2, size + 2), 3, stride=1)


def layer_errors(converted, original, names, x):
    """Relative squared error of each named octave layer's output (merged to a plain map) against the original's."""
    outputs = {}

    def keep(store, name):
        return lambda module, args, result: store.__setitem__(name, result)

    mine, theirs = {}, {}
    handles = [converted.get_submodule(n).register_forward_hook(keep(mine, n)) for n in names]
    handles += [original.get_submodule(n).register_forward_hook(keep(theirs, n)) for n in names]
    with torch.no_grad():
        converted(x), original(x)
    for handle in handles:
        handle.remove()
    for name in names:
        layer, result = converted.get_submodule(name), mine[name]
        _, split = layer.original_splits
        target = theirs[name]
        high, low = (result, None) if not layer.low_out else result
        error = (high - target[:, list(split.high_index)]).square().sum()
        energy = target[:, list(split.high_index)].square().sum()
        if low is not None:
            pooled = F.avg_pool2d(target[:, list(split.low_index)], 2, ceil_mode=True)
            error, energy = error + (low - pooled).square().sum(), energy + pooled.square().sum()
        outputs[name] = float(error / energy)
    return outputs


def test_reconstruction_lowers_every_layers_output_error():
    model = randomize_batchnorm(ConvNet()).eval()
    data, x = smooth_images(96), smooth_images(4)
    conversion = octify.convert(model, 0.5, example_inputs=(x,), min_size=2,
                                calibration_data=data)
    names = [n for n, m in conversion.module.named_modules() if isinstance(m, octify.OctConv2d) and not m.is_plain]
    assert {"a.0", "down", "depthwise", "b"} <= set(names), conversion.explain()
    result = reconstruct(conversion.module, model, data, ridge=1e-6)
    assert set(result.layers) == set(names) and not result.skipped
    for name, (before, after) in result.layers.items():
        assert after < 0.9 * before, (name, before, after)
    measured = layer_errors(conversion.module, model, names, data)
    for name in names:  # the reported errors are those of the fitted layers in the converted network
        assert measured[name] == pytest.approx(result.layers[name][1], rel=1e-3, abs=1e-9)
    with torch.no_grad():
        fitted = (conversion.module(x) - model(x)).norm()
        unfitted = (octify.convert(model, 0.5, example_inputs=(x,), min_size=2, calibration_data=data)
                    .module(x) - model(x)).norm()
    assert fitted < 0.5 * unfitted


def test_an_exact_conversion_stays_exact():
    model = randomize_batchnorm(PointwiseNet()).eval()
    x = block_constant(3, 12, 12, batch=6)
    conversion = octify.convert(model, 0.5, example_inputs=(x,), plain_stem=False, min_size=2)
    result = reconstruct(conversion.module, model, x)
    assert result.layers and all(after < 1e-8 for _, after in result.layers.values()), result.layers
    with torch.no_grad():
        torch.testing.assert_close(conversion.module(x), model(x), rtol=1e-4, atol=1e-5)


def test_the_original_and_modes_are_left_alone():
    model = randomize_batchnorm(ConvNet()).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    conversion = octify.convert(model, 0.5, input_shape=(1, 3, 20, 20), min_size=2)
    reconstruct(conversion.module, model, smooth_images(4))
    assert model.training and conversion.module.training
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_nothing_to_fit_is_an_error():
    model = ConvNet().eval()
    conversion = octify.convert(model, 0.0, input_shape=(1, 3, 20, 20))
    with pytest.raises(ValueError, match="no octave convolution"):
        reconstruct(conversion.module, model, smooth_images(2))


def test_too_little_data_leaves_a_layer_as_it_is():
    model = ConvNet().eval()
    conversion = octify.convert(model, 0.5, input_shape=(1, 3, 20, 20), min_size=2)
    weights = {k: v.clone() for k, v in conversion.module.state_dict().items()}
    result = reconstruct(conversion.module, model, smooth_images(1, size=6))
    assert "b" in result.skipped and "too few" in result.skipped["b"]  # 9 pixels, 24 * 9 + 1 weights
    assert all(torch.equal(weights[k], v) for k, v in conversion.module.get_submodule("b").state_dict(
        prefix="b.").items())


class GroupedNet(nn.Module):
    """A grouped convolution between two dense ones."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.grouped = nn.Conv2d(16, 16, 3, padding=1, groups=2)
        self.head = nn.Conv2d(16, 8, 3, padding=1)

    def forward(self, x):
        return self.head(torch.relu(self.grouped(torch.relu(self.a(x)))))


def test_grouped_layers_are_fitted_too():
    model = GroupedNet().eval()
    data = smooth_images(64, size=16)
    conversion = octify.convert(model, 0.5, example_inputs=(data[:1],), plain_stem=False, min_size=2)
    layer = conversion.module.grouped
    assert isinstance(layer, octify.OctConv2d) and not layer.is_plain
    result = reconstruct(conversion.module, model, data)
    before, after = result.layers["grouped"]
    assert after < 0.9 * before
    measured = layer_errors(conversion.module, model, ["grouped"], data)["grouped"]
    assert measured == pytest.approx(after, rel=1e-3, abs=1e-9)
