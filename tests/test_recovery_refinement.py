"""Block-wise refinement: each block's output error against the original's goes down, exact stays exact."""
import pytest
import torch
from torch import nn

import octify
from octify import refine
from octify.recovery.refinement import relative_error
from test_convert_oracles import PointwiseNet, block_constant, randomize_batchnorm
from test_recovery_reconstruction import smooth_images


class Residual(nn.Module):
    """A residual block: a dense and a depthwise 3x3 convolution, each with a BatchNorm."""

    def __init__(self, channels):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                                  nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1, groups=channels),
                                  nn.BatchNorm2d(channels))

    def forward(self, x):
        return torch.relu(x + self.body(x))


class BlockNet(nn.Module):
    """A stem, residual blocks around a strided block, and a head outside every block."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()),
            nn.Sequential(nn.Conv2d(16, 16, 1), nn.BatchNorm2d(16), nn.ReLU()),
            Residual(16),
            nn.Sequential(nn.Conv2d(16, 24, 3, stride=2, padding=1), nn.BatchNorm2d(24), nn.ReLU()),
            Residual(24))
        self.head = nn.Conv2d(24, 10, 1)

    def forward(self, x):
        return self.head(self.features(x))


def converted_block_net(data):
    model = randomize_batchnorm(BlockNet()).eval()
    return model, octify.convert(model, 0.5, example_inputs=(data[:1],), min_size=2).module


def output_error(converted, original, x):
    with torch.no_grad():
        return float(relative_error(converted(x), original(x)))


def test_refinement_lowers_every_blocks_error_and_the_networks():
    torch.manual_seed(0)
    data = smooth_images(64)
    model, converted = converted_block_net(data)
    before = output_error(converted, model, data)
    result = refine(converted, model, data, steps=40, progress=False)
    assert list(result.blocks) == ["features.1", "features.2", "features.3", "features.4", "head"], result
    assert not result.skipped and result.seconds > 0
    for name, (block_before, block_after) in result.blocks.items():
        assert block_after < block_before, (name, block_before, block_after)
    strided_before, strided_after = result.blocks["features.3"]  # the block that loses most at half resolution
    assert strided_after < 0.3 * strided_before
    assert output_error(converted, model, data) < 0.5 * before


class ListNet(nn.Module):
    """Blocks in an ``nn.ModuleList``, called in a loop."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.blocks = nn.ModuleList([Residual(16), Residual(16)])
        self.head = nn.Conv2d(16, 10, 1)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def test_the_children_of_a_module_list_are_blocks():
    torch.manual_seed(0)
    data = smooth_images(32)
    model = randomize_batchnorm(ListNet()).eval()
    converted = octify.convert(model, 0.5, example_inputs=(data[:1],), min_size=2).module
    before = output_error(converted, model, data)
    result = refine(converted, model, data, steps=20, progress=False)
    assert list(result.blocks) == ["blocks.0", "blocks.1", "head"], result
    assert all(after < before for before, after in result.blocks.values()), result.blocks
    assert output_error(converted, model, data) < before


def test_a_block_is_measured_as_its_output_in_the_converted_network():
    torch.manual_seed(0)
    data = smooth_images(16)
    model, converted = converted_block_net(data)
    result = refine(converted, model, data, steps=5, progress=False)
    last = converted.get_submodule("head")
    assert not last.low_out  # the head writes a plain map: its block is compared with the original's output
    assert result.blocks["head"][1] == pytest.approx(output_error(converted, model, data), rel=1e-4)


def test_an_exact_conversion_stays_exact():
    model = randomize_batchnorm(PointwiseNet()).eval()
    x = block_constant(3, 12, 12, batch=6)
    converted = octify.convert(model, 0.5, example_inputs=(x,), plain_stem=False, min_size=2).module
    state = {k: v.clone() for k, v in converted.state_dict().items()}
    result = refine(converted, model, x, steps=3, progress=False)
    assert result.blocks and all(after < 1e-10 for _, after in result.blocks.values()), result.blocks
    assert all(torch.equal(state[k], v) for k, v in converted.state_dict().items())


def test_a_block_that_does_not_improve_keeps_its_weights():
    torch.manual_seed(0)
    data = smooth_images(8)
    model, converted = converted_block_net(data)
    state = {k: v.clone() for k, v in converted.state_dict().items()}
    result = refine(converted, model, data, steps=2, lr=1e4, progress=False)  # a rate that only overshoots
    assert all(after == before for before, after in result.blocks.values()), result.blocks
    assert all(torch.equal(state[k], v) for k, v in converted.state_dict().items())


def test_the_original_and_modes_are_left_alone():
    data = smooth_images(8)
    model = randomize_batchnorm(BlockNet()).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    converted = octify.convert(model, 0.5, example_inputs=(data[:1],), min_size=2).module
    refine(converted, model, data, steps=2, progress=False)
    assert model.training and converted.training
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_zero_steps_measures_each_block_and_changes_nothing():
    torch.manual_seed(0)
    data = smooth_images(16)
    model, converted = converted_block_net(data)
    refined = refine(converted, model, data, steps=5, progress=False)
    weights = {name: value.clone() for name, value in converted.state_dict().items()}
    measured = refine(converted, model, data, steps=0, progress=False)
    assert all(torch.equal(value, weights[name]) for name, value in converted.state_dict().items())
    assert measured.blocks.keys() == refined.blocks.keys()
    for name, (before, after) in measured.blocks.items():
        assert before == after == pytest.approx(refined.blocks[name][1], rel=1e-4)  # the refinement's "after"
    assert any(after < before for before, after in refined.blocks.values())


def test_bad_arguments_are_errors():
    data = smooth_images(4)
    model, converted = converted_block_net(data)
    plain = octify.convert(model, 0.0, example_inputs=(data[:1],)).module
    with pytest.raises(ValueError, match="no octave convolution"):
        refine(plain, model, data, progress=False)
    with pytest.raises(ValueError, match="needs the converted GraphModule"):
        refine(model, model, data, progress=False)
    with pytest.raises(ValueError, match="steps must be a whole number"):
        refine(converted, model, data, steps=-1, progress=False)
    with pytest.raises(ValueError, match="lr must be positive"):
        refine(converted, model, data, lr=0.0, progress=False)
    with pytest.raises(ValueError, match="gave no batch"):
        refine(converted, model, [], progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_refines_on_the_converted_networks_device():
    data = smooth_images(16)
    model, converted = converted_block_net(data)
    converted.cuda()
    result = refine(converted, model, data, steps=5, progress=False)
    assert result.blocks and not result.skipped
    assert next(model.parameters()).device.type == "cpu"  # the original stays where it was
