"""for_inference: fused octave convolutions, BatchNorm folding, in-place adds, whole models."""
import copy
import operator
import shutil

import pytest
import torch
import torchvision
from torch import fx, nn
from torch.utils.flop_counter import FlopCounterMode

import octify
from octify.capture import OctifyTracer
from octify import Branchwise, ChannelSplit, OctBatchNorm2d, OctConv2d, OctSplit, upsample_to
from octify.inference import (FusedOctConv2d, GroupedOctConv2d, PointwiseConv2d, add_upsampled_, fast_octconv,
                              fold_conv_batchnorm, fold_conv_split_batchnorm, fold_octconv_batchnorm, for_inference,
                              make_residual_adds_in_place)
from octify.inference.kernels import conv2d
from octave_helpers import TOLERANCE, assert_same, octave_input



def channels_last(x):
    return x.contiguous(memory_format=torch.channels_last)


def randomize_batchnorms(model):
    """Non-trivial statistics and affine parameters, so that folding has something to fold."""
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.5, 0.5)
    return model


# -- up-sampling fused with the add ----------------------------------------------------------------

@pytest.mark.parametrize("size", [(8, 6), (7, 7), (5, 9), (1, 1), (2, 3), (15, 16)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_add_upsampled_equals_interpolate_then_add(size, layout):
    high = torch.randn(2, 3, *size).contiguous(memory_format=layout)
    low = torch.randn(2, 3, (size[0] + 1) // 2, (size[1] + 1) // 2).contiguous(memory_format=layout)
    expected = high + upsample_to(low, size)
    result = add_upsampled_(high, low)
    assert result is high
    torch.testing.assert_close(result, expected, rtol=0, atol=0)


def test_add_upsampled_reads_a_channel_slice_of_a_channels_last_map():
    both = channels_last(torch.randn(2, 10, 4, 5))
    high = channels_last(torch.randn(2, 4, 7, 9))
    expected = high + upsample_to(both[:, :4], (7, 9))
    torch.testing.assert_close(add_upsampled_(high, both[:, :4]), expected, rtol=0, atol=0)


# -- fused octave convolution ------------------------------------------------------------------------

ALPHAS = [(0.5, 0.5), (0.0, 0.5), (0.5, 0.0), (0.25, 0.75)]
GEOMETRIES = [(1, 1, 1), (3, 1, 1), (3, 1, 2), (1, 2, 1), (3, 2, 1)]  # kernel, stride, dilation


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("kernel,stride,dilation", GEOMETRIES)
@pytest.mark.parametrize("size", [(7, 7), (15, 15), (8, 6)])
def test_fused_octconv_equals_reference(alpha, kernel, stride, dilation, size):
    conv = OctConv2d(12, 10, kernel, stride, padding=dilation * (kernel - 1) // 2, dilation=dilation,
                     alpha=alpha).eval()
    fused = fast_octconv(conv)
    assert isinstance(fused, FusedOctConv2d)
    x = octave_input(conv, 2, *size)
    assert_same(fused(x), conv(x))


@pytest.mark.parametrize("kernel,dilation", [(3, 1), (5, 2)])
def test_fused_octconv_with_same_padding(kernel, dilation):
    conv = OctConv2d(8, 8, kernel, padding="same", dilation=dilation, alpha=0.5).eval()
    x = octave_input(conv, 2, 9, 7)
    assert_same(fast_octconv(conv)(x), conv(x))


@pytest.mark.parametrize("kernel,stride", [(3, 1), (3, 2), (1, 1)])
def test_fused_octconv_at_a_large_odd_non_square_size(kernel, stride):
    conv = OctConv2d(8, 8, kernel, stride, padding=kernel // 2, alpha=0.5).eval()
    x = octave_input(conv, 1, 225, 199)
    assert_same(fast_octconv(conv)(x), conv(x))


def test_fused_octconv_keeps_channels_last():
    conv = OctConv2d(16, 16, 3, padding=1, alpha=0.5).eval().to(memory_format=torch.channels_last)
    high, low = octave_input(conv, 2, 9, 9)
    out = fast_octconv(conv)((channels_last(high), channels_last(low)))
    assert all(y.is_contiguous(memory_format=torch.channels_last) for y in out)


@pytest.mark.parametrize("groups,alpha", [(2, 0.5), (4, 0.5), (16, 0.5), (16, 0.25)])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [(8, 8), (7, 9)])
def test_grouped_and_depthwise_layers_run_one_convolution_per_branch(groups, alpha, stride, size):
    conv = OctConv2d(16, 16, 3, stride, padding=1, groups=groups, alpha=alpha).eval()
    fast = fast_octconv(conv)
    assert isinstance(fast, GroupedOctConv2d)
    x = octave_input(conv, 2, *size)
    assert_same(fast(x), conv(x))


def test_grouped_layers_that_cross_branches_keep_the_reference():
    conv = OctConv2d(16, 16, 3, padding=1, groups=4, alpha=(0.5, 0.25)).eval()
    assert fast_octconv(conv) is conv


def test_plain_octconv_becomes_its_convolution():
    conv = OctConv2d(6, 8, 3, 2, padding=1, alpha=0.0).eval()
    assert fast_octconv(conv) is conv.h2h


def test_fused_octconv_has_the_reference_parameter_count():
    conv = OctConv2d(12, 10, 3, padding=1, alpha=(0.25, 0.75))
    fused = FusedOctConv2d(conv)
    assert sum(p.numel() for p in fused.parameters()) == sum(p.numel() for p in conv.parameters())


# -- 1x1 convolutions as matrix products -------------------------------------------------------------

@pytest.mark.parametrize("size", [(1, 7, 7), (2, 15, 16), (1, 40, 40)])  # the last one keeps F.conv2d
@pytest.mark.parametrize("bias", [False, True])
def test_pointwise_conv2d_equals_conv2d(size, bias):
    batch, height, width = size
    conv = nn.Conv2d(24, 40, 1, bias=bias).to(memory_format=torch.channels_last)
    x = channels_last(torch.randn(batch, 24, height, width))
    layer = PointwiseConv2d.from_conv(conv)
    assert layer.weight is conv.weight
    y = layer(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, conv(x), **TOLERANCE)
    torch.testing.assert_close(conv2d(x, conv.weight, conv.bias), conv(x), **TOLERANCE)


def test_pointwise_conv2d_accepts_contiguous_and_unbatched_input():
    conv = nn.Conv2d(6, 5, 1)
    layer = PointwiseConv2d.from_conv(conv)
    for x in (torch.randn(2, 6, 5, 5), torch.randn(6, 5, 5)):
        torch.testing.assert_close(layer(x), conv(x), **TOLERANCE)


@pytest.mark.parametrize("conv", [nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 1, stride=2), nn.Conv2d(4, 4, 1, groups=2),
                                  nn.Conv2d(4, 4, 1, padding=1)])
def test_pointwise_conv2d_only_takes_plain_1x1_convolutions(conv):
    assert not PointwiseConv2d.supports(conv)


# -- BatchNorm folding ---------------------------------------------------------------------------------

@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("groups", [1, 4])
def test_fold_conv_batchnorm(bias, groups):
    conv = nn.Conv2d(8, 12, 3, padding=1, bias=bias, groups=groups)
    bn = randomize_batchnorms(nn.BatchNorm2d(12)).eval()
    x = torch.randn(2, 8, 9, 9)
    torch.testing.assert_close(fold_conv_batchnorm(conv, bn)(x), bn(conv(x)), **TOLERANCE)


@pytest.mark.parametrize("alpha,groups,stride,bias", [
    ((0.5, 0.5), 1, 1, False), ((0.5, 0.5), 1, 2, True), ((0.0, 0.5), 1, 1, False), ((0.25, 0.75), 1, 1, True),
    ((0.5, 0.5), 4, 1, False), ((0.5, 0.5), 16, 2, True)])
def test_fold_octconv_batchnorm_branchwise(alpha, groups, stride, bias):
    conv = OctConv2d(16, 16, 3, stride, padding=1, groups=groups, bias=bias, alpha=alpha).eval()
    bn = randomize_batchnorms(OctBatchNorm2d(16, alpha=alpha[1])).eval()
    x = octave_input(conv, 2, 9, 7)
    folded = fold_octconv_batchnorm(conv, bn)
    assert_same(folded(x), bn(conv(x)))
    assert_same(fast_octconv(folded)(x), bn(conv(x)))


def test_fold_octconv_with_plain_output_takes_a_plain_batchnorm():
    conv = OctConv2d(16, 10, 1, alpha=(0.5, 0.0), bias=False).eval()
    bn = randomize_batchnorms(nn.BatchNorm2d(10)).eval()
    x = octave_input(conv, 2, 7, 7)
    assert_same(fold_octconv_batchnorm(conv, bn)(x), bn(conv(x)))


@pytest.mark.parametrize("split", [ChannelSplit.trailing(8, 3), ChannelSplit((True, False) * 4)])
def test_fold_batchnorm_through_an_octave_split(split):
    conv = nn.Conv2d(3, 8, 3, padding=1)
    splitter = OctSplit(split)
    bn = OctBatchNorm2d(8, split=split)
    randomize_batchnorms(bn).eval()
    x = torch.randn(2, 3, 9, 8)
    expected = bn(splitter(conv(x)))
    assert_same(splitter(fold_conv_split_batchnorm(conv, splitter, bn)(x)), expected)


def test_fold_rejects_mismatched_batchnorm():
    conv = OctConv2d(16, 16, 1, alpha=0.5)
    with pytest.raises(ValueError, match="do not match"):
        fold_octconv_batchnorm(conv, OctBatchNorm2d(16, alpha=0.25))


# -- for_inference on modules --------------------------------------------------------------------------

class OctaveBlock(nn.Module):
    """OctConv -> OctBatchNorm -> ReLU -> OctConv -> OctBatchNorm, with a residual add."""

    def __init__(self, channels=16, alpha=0.5):
        super().__init__()
        self.conv1 = OctConv2d(channels, channels, 3, padding=1, alpha=alpha, bias=False)
        self.bn1 = OctBatchNorm2d(channels, alpha)
        self.relu = Branchwise(nn.ReLU(inplace=True))
        self.conv2 = OctConv2d(channels, channels, 1, alpha=alpha, bias=False)
        self.bn2 = OctBatchNorm2d(channels, alpha)

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return octify.ops.add(y, x)


def test_for_inference_never_modifies_its_input():
    model = randomize_batchnorms(OctaveBlock()).train()
    before = copy.deepcopy(model.state_dict())
    types = [type(m) for m in model.modules()]
    optimized = for_inference(model)
    assert optimized is not model
    assert model.training and [type(m) for m in model.modules()] == types
    assert all(p.requires_grad for p in model.parameters())
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_for_inference_on_a_hand_built_octave_block():
    model = randomize_batchnorms(OctaveBlock()).eval()
    x = (torch.randn(2, 8, 10, 10), torch.randn(2, 8, 5, 5))
    optimized = for_inference(model)
    assert not optimized.training
    assert not any(isinstance(m, (OctBatchNorm2d, OctConv2d)) for m in optimized.modules())
    assert not any(p.requires_grad for p in optimized.parameters())
    assert_same(optimized(x), model(x))


def test_for_inference_on_plain_resnet18():
    model = randomize_batchnorms(torchvision.models.resnet18(weights=None)).eval()
    x = torch.randn(2, 3, 64, 64)
    optimized = for_inference(model)
    assert isinstance(optimized, fx.GraphModule)  # captured as convert captures, so every graph pass applies
    assert "inplace_add_relu_into" in optimized.code  # residual add + ReLU in one in-place pass
    assert not any(isinstance(m, nn.BatchNorm2d) for m in optimized.modules())
    assert optimized.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(optimized(x), model(x), rtol=1e-4, atol=1e-4)


def test_for_inference_leaves_untraceable_models_unfolded_but_correct():
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), randomize_batchnorms(nn.BatchNorm2d(4))

        def forward(self, x):
            return self.bn(self.conv(x)) if x.sum() > 0 else x

    model = DataDependent().eval()
    x = torch.rand(1, 3, 8, 8)
    with pytest.warns(UserWarning, match="DataDependent cannot be traced.*BatchNorm folding.*skipped.*example_inputs"):
        optimized = for_inference(model)
    assert isinstance(optimized.bn, nn.BatchNorm2d)
    torch.testing.assert_close(optimized(x), model(x), **TOLERANCE)


def test_for_inference_captures_size_dependent_models_with_fixed_sizes():
    class SizeDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), randomize_batchnorms(nn.BatchNorm2d(4))

        def forward(self, x):
            return self.bn(self.conv(x)) if x.shape[-1] > 4 else x

    model = SizeDependent().eval()
    x = torch.rand(2, 3, 8, 8)
    with pytest.warns(UserWarning, match=r"sizes fixed at \(2, 3, 8, 8\)"):
        optimized = for_inference(model, example_inputs=(x,))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in optimized.modules())
    torch.testing.assert_close(optimized(x), model(x), **TOLERANCE)
    with pytest.raises(ValueError, match="accepts inputs of shape"):
        optimized(torch.rand(2, 3, 8, 4))


def test_shared_batchnorm_is_not_folded():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 3, padding=1)
            self.bn = randomize_batchnorms(nn.BatchNorm2d(4))

        def forward(self, x):
            return self.bn(self.a(x)) + self.bn(self.b(x))

    model = Shared().eval()
    x = torch.randn(2, 3, 8, 8)
    optimized = for_inference(model)
    assert isinstance(optimized.bn, nn.BatchNorm2d)
    torch.testing.assert_close(optimized(x), model(x), **TOLERANCE)


@pytest.fixture(scope="module")
def converted_resnet18():
    torch.manual_seed(0)
    model = randomize_batchnorms(torchvision.models.resnet18(weights=None)).eval()
    return model, octify.convert(model, 0.5, input_shape=(1, 3, 64, 64)).module.eval()


def test_for_inference_on_a_converted_model(converted_resnet18):
    _, converted = converted_resnet18
    x = torch.randn(2, 3, 64, 64)
    optimized = for_inference(converted)
    kinds = {type(m) for m in optimized.modules()}
    assert FusedOctConv2d in kinds and OctBatchNorm2d not in kinds and nn.BatchNorm2d not in kinds
    with torch.no_grad():
        torch.testing.assert_close(optimized(x), converted(x), rtol=1e-4, atol=1e-4)


def test_optimized_model_macs_match_flop_counter(converted_resnet18):
    _, converted = converted_resnet18
    optimized = for_inference(converted)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        optimized(x)
    report = octify.cost(optimized, input_shape=(1, 3, 64, 64))
    assert report.macs * 2 == counter.get_total_flops()
    assert report.macs == octify.cost(converted, input_shape=(1, 3, 64, 64)).macs
    assert not any("FusedOctConv2d" in str(entry) for entry in report.uncounted)


# -- in-place residual adds ------------------------------------------------------------------------------

class TwoConvs(nn.Module):
    def __init__(self, reuse):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1)
        self.reuse = reuse

    def forward(self, x):
        y = self.a(x)
        s = y + self.b(x)
        return s * y if self.reuse else s


@pytest.mark.parametrize("reuse", [False, True])
def test_adds_go_in_place_only_into_unshared_convolution_outputs(reuse):
    model = fx.symbolic_trace(TwoConvs(reuse))
    x = torch.randn(1, 3, 4, 4)
    expected = model(x)
    assert make_residual_adds_in_place(model) == 1  # into b's output (reuse) or a's (no reuse)
    targets = [n for n in model.graph.nodes if n.op == "call_function" and n.target is not operator.mul]
    assert targets[0].args[0].target == ("b" if reuse else "a")
    torch.testing.assert_close(model(x), expected, rtol=0, atol=0)


def test_in_place_add_falls_back_when_shapes_differ():
    class Broadcast(nn.Module):
        def __init__(self):
            super().__init__()
            self.pool = nn.Conv2d(3, 3, 4)

        def forward(self, x):
            return self.pool(x) + x

    model = fx.symbolic_trace(Broadcast())
    x = torch.randn(1, 3, 4, 4)
    expected = model(x)
    make_residual_adds_in_place(model)
    torch.testing.assert_close(model(x), expected, rtol=0, atol=0)


def test_octave_adds_go_in_place():
    block = OctaveBlock().eval()
    model = fx.GraphModule(block, OctifyTracer().trace(block))
    x = (torch.randn(1, 8, 6, 6), torch.randn(1, 8, 3, 3))
    expected = model(x)
    assert make_residual_adds_in_place(model) == 1
    assert_same(model(x), expected)


def test_optimized_octave_block_runs_under_torch_compile():
    model = for_inference(randomize_batchnorms(OctaveBlock()).eval())
    x = (torch.randn(1, 8, 10, 10), torch.randn(1, 8, 5, 5))
    expected = model(x)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    assert_same(compiled(x), expected)


@pytest.mark.skipif(shutil.which("g++") is None, reason="inductor needs a C++ compiler")
def test_optimized_converted_resnet_compiles_with_inductor():
    """The benchmark's --compile path: inductor with frozen weights on an optimized conversion."""
    from torch._inductor import config as inductor_config

    model = for_inference(octify.convert(torchvision.models.resnet18(weights=None), alpha=0.5).module)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode(), inductor_config.patch(freezing=True):
        expected = model(x)
        assert_same(torch.compile(model)(x), expected)
