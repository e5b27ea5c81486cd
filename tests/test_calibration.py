"""octify.calibrate: BatchNorm statistics re-estimated from data, on plain and converted networks."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import octify
from octify.layers import OctBatchNorm2d
from octify.layers.branchwise import PerBranch
from timm.layers import BatchNormAct2d

from test_convert_oracles import block_constant, randomize_batchnorm


class PointwiseBatchNormNet(nn.Module):
    """1x1 convolutions and BatchNorms only: exact at any alpha on 2x2-block-constant inputs."""

    def __init__(self, norm=nn.BatchNorm2d):
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(3, 16, 1), norm(16), nn.ReLU(),
                                    nn.Conv2d(16, 24, 1), norm(24), nn.ReLU(), nn.Dropout(0.5),
                                    nn.Conv2d(24, 8, 1), nn.BatchNorm2d(8))

    def forward(self, x):
        return self.layers(x)


class FunctionalBatchNormNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.register_buffer("mean", torch.zeros(8))
        self.register_buffer("var", torch.ones(8))
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.head(F.batch_norm(self.conv(x), self.mean, self.var, training=False))


def per_branch_norms(module):
    """``(high, low, split)`` for each octave BatchNorm: OctBatchNorm2d, or PerBranch copies of timm's."""
    return [(m.bn_h, m.bn_l, m.split) if isinstance(m, OctBatchNorm2d) else (m.high, m.low, m.split)
            for m in module.modules() if isinstance(m, (OctBatchNorm2d, PerBranch))]


def batch_norms(module):
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


def test_alpha_zero_calibrates_exactly_like_the_original():
    model = randomize_batchnorm(PointwiseBatchNormNet()).eval()
    data = [torch.randn(4, 3, 9, 10) + 1 for _ in range(3)]
    converted = octify.convert(model, 0.0, example_inputs=(data[0],)).module
    calibrated, reference = octify.calibrate(converted, data), octify.calibrate(model, data)
    for ours, theirs in zip(batch_norms(calibrated), batch_norms(reference), strict=True):
        assert torch.equal(ours.running_mean, theirs.running_mean)
        assert torch.equal(ours.running_var, theirs.running_var)
        assert ours.num_batches_tracked == theirs.num_batches_tracked == 3
    x = torch.randn(2, 3, 9, 10)
    with torch.no_grad():
        assert torch.equal(calibrated.eval()(x), reference.eval()(x))


@pytest.mark.parametrize("norm", [nn.BatchNorm2d, BatchNormAct2d], ids=["BatchNorm2d", "timm-BatchNormAct2d"])
def test_block_constant_inputs_calibrate_each_branch_like_the_original(norm):
    model = randomize_batchnorm(PointwiseBatchNormNet(norm)).eval()
    data = [block_constant(3, 12, 12, batch=4) for _ in range(3)]
    converted = octify.convert(model, 0.5, example_inputs=(data[0],), plain_stem=False, min_size=2).module
    calibrated, reference = octify.calibrate(converted, data), octify.calibrate(model, data)
    octave = per_branch_norms(calibrated)
    assert len(octave) == 2  # the last BatchNorm feeds the plain output
    # every pixel of the low branch stands for a 2x2 block: the same mean and biased variance, while
    # the unbiased running variance corrects by its own pixel count
    pixels = 4 * 12 * 12
    bessel_low = (pixels / 4 / (pixels / 4 - 1)) / (pixels / (pixels - 1))
    for (high_norm, low_norm, split), original in zip(octave, batch_norms(reference)[:2]):
        high, low = list(split.high_index), list(split.low_index)
        assert high_norm.num_batches_tracked == low_norm.num_batches_tracked == 3
        torch.testing.assert_close(high_norm.running_mean, original.running_mean[high])
        torch.testing.assert_close(low_norm.running_mean, original.running_mean[low])
        torch.testing.assert_close(high_norm.running_var, original.running_var[high])
        torch.testing.assert_close(low_norm.running_var, original.running_var[low] * bessel_low)
    last, original_last = batch_norms(calibrated)[-1], batch_norms(reference)[-1]
    assert last.num_features == 8
    torch.testing.assert_close(last.running_mean, original_last.running_mean)
    torch.testing.assert_close(last.running_var, original_last.running_var)


def test_functional_batch_norm_in_a_graph_warns_that_it_keeps_its_statistics():
    model = FunctionalBatchNormNet().eval()
    converted = octify.convert(model, 0.5, input_shape=(1, 3, 8, 8), plain_stem=False, min_size=2).module
    with pytest.warns(UserWarning, match=r"1 functional batch_norm call\(s\) \(batch_norm\) keep their statistics"):
        octify.calibrate(converted, torch.randn(4, 3, 8, 8))


def test_input_is_unchanged_unless_inplace_and_modes_are_restored():
    model = randomize_batchnorm(PointwiseBatchNormNet()).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = torch.randn(70, 3, 8, 8)  # split into batches of 32, 32 and 6
    calibrated = octify.calibrate(model, data)
    assert calibrated is not model
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert batch_norms(calibrated)[0].num_batches_tracked == 3
    assert all(m.training for m in calibrated.modules())
    assert [m.momentum for m in batch_norms(calibrated)] == [0.1] * 3
    assert octify.calibrate(model, data, batches=2, inplace=True) is model
    assert batch_norms(model)[0].num_batches_tracked == 2
    torch.testing.assert_close(batch_norms(model)[0].running_mean,
                               batch_norms(octify.calibrate(model, data[:64]))[0].running_mean)


def test_dropout_is_off_while_calibrating():
    model = PointwiseBatchNormNet()
    x = torch.randn(8, 3, 6, 6)
    calibrated = octify.calibrate(model, [x])
    without_dropout = copy.deepcopy(model).train()
    without_dropout.layers[6] = nn.Identity()
    with torch.no_grad():  # BatchNorms in train mode normalize with the batch's statistics
        features = without_dropout.layers[:8](x)
    torch.testing.assert_close(batch_norms(calibrated)[2].running_mean, features.mean((0, 2, 3)))


def test_batches_with_labels_and_device_argument():
    model = PointwiseBatchNormNet()
    data = [(torch.randn(4, 3, 6, 6), torch.tensor([0, 1, 2, 3])) for _ in range(2)]
    calibrated = octify.calibrate(model, data, device="cpu")
    assert batch_norms(calibrated)[0].num_batches_tracked == 2


@pytest.mark.parametrize("data, message", [
    ("images/", "data must be a tensor or an iterable"),
    ({"x": torch.randn(2, 3, 6, 6)}, "data must be a tensor or an iterable"),
    (torch.randn(5), "a data tensor must hold a batch of inputs"),
    ([[1, 2]], "batch 0 of the data is a list"),
    ([], "the data gave no batch"),
])
def test_bad_data_is_a_clear_error(data, message):
    with pytest.raises(ValueError, match=message):
        octify.calibrate(PointwiseBatchNormNet(), data)


def test_bad_batch_count_is_a_clear_error():
    with pytest.raises(ValueError, match="batches must be a positive integer"):
        octify.calibrate(PointwiseBatchNormNet(), torch.randn(4, 3, 6, 6), batches=0)


def test_a_model_without_batch_norm_warns():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())
    with pytest.warns(UserWarning, match="no BatchNorm with running statistics"):
        calibrated = octify.calibrate(model, torch.randn(2, 3, 4, 4))
    assert calibrated is not model
