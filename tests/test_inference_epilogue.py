"""Residual adds and ReLUs joined to the pass before them: the layers, the helpers, the graph pass."""
import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

import octify
from octify import Branchwise, OctConv2d, upsample_to
from octify.capture import OctifyTracer
from octify.inference import FusedOctConv2d, GroupedOctConv2d, add_upsampled_, fast_octconv, for_inference, fuse_epilogues
from octify.inference.epilogue import add_
from octify.inference.inplace import add_relu_into, octave_add_relu_into
from octave_helpers import TOLERANCE, assert_same, octave_input

def like(y):
    """A random residual with the shapes of ``y`` (a tensor or an octave pair)."""
    return tuple(torch.randn_like(t) for t in y) if isinstance(y, tuple) else torch.randn_like(y)


def reference(conv, x, residual, relu):
    y = conv(x)
    if residual is not None:
        y = octify.ops.add(y, residual) if isinstance(y, tuple) else y + residual
    if relu:
        y = tuple(F.relu(t) for t in y) if isinstance(y, tuple) else F.relu(y)
    return y


# -- helpers -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(8, 6), (7, 7), (5, 9), (1, 1)])
def test_add_upsampled_with_relu_is_relu_of_the_sum(size):
    high = torch.randn(2, 3, *size)
    low = torch.randn(2, 3, (size[0] + 1) // 2, (size[1] + 1) // 2)
    expected = F.relu(high + upsample_to(low, size))
    torch.testing.assert_close(add_upsampled_(high, low, relu=True), expected, rtol=0, atol=0)


def test_add_relu_into_writes_into_its_first_operand_when_it_fits():
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    expected = F.relu(a + b)
    assert add_relu_into(a, b) is a
    torch.testing.assert_close(a, expected, rtol=0, atol=0)
    small = torch.randn(1, 3, 1, 1)
    torch.testing.assert_close(add_relu_into(small, b), F.relu(small + b), rtol=0, atol=0)
    torch.testing.assert_close(add_relu_into(b.clone(), 0.5), F.relu(b + 0.5), rtol=0, atol=0)


def test_add_and_relu_off_the_cpu_takes_two_passes():
    target, other = torch.empty(2, 3, device="meta"), torch.empty(2, 3, device="meta")
    assert add_(target, other, relu=True) is target  # the fused kernel exists for CPU only


def test_octave_add_relu_into_falls_back_for_a_plain_operand():
    a = (torch.randn(1, 2, 4, 4), torch.randn(1, 2, 2, 2))
    expected = tuple(F.relu(t + 1.0) for t in a)
    assert_same(octave_add_relu_into(a, 1.0), expected)


# -- the layers ---------------------------------------------------------------------------------------

ALPHAS = [(0.5, 0.5), (0.0, 0.5), (0.5, 0.0), (0.25, 0.75)]


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("kernel,stride", [(1, 1), (3, 1), (3, 2)])
@pytest.mark.parametrize("size", [(8, 6), (7, 9)])
@pytest.mark.parametrize("with_residual,relu", [(True, False), (False, True), (True, True)])
def test_fused_layer_adds_the_residual_and_applies_the_relu(alpha, kernel, stride, size, with_residual, relu):
    conv = OctConv2d(12, 10, kernel, stride, padding=kernel // 2, alpha=alpha).eval()
    fused = fast_octconv(conv)
    assert isinstance(fused, FusedOctConv2d)
    fused.relu = relu
    x = octave_input(conv, 2, *size)
    residual = like(conv(x)) if with_residual else None
    assert_same(fused(x, residual), reference(conv, x, residual, relu))


@pytest.mark.parametrize("stride", [1, 2])
def test_grouped_layer_adds_the_residual_and_applies_the_relu(stride):
    conv = OctConv2d(16, 16, 3, stride, padding=1, groups=16, alpha=0.5).eval()
    fast = fast_octconv(conv)
    assert isinstance(fast, GroupedOctConv2d)
    fast.relu = True
    x = octave_input(conv, 2, 9, 7)
    residual = like(conv(x))
    assert_same(fast(x, residual), reference(conv, x, residual, True))


@pytest.mark.parametrize("make_residual", [lambda y: 0.5, lambda y: (y[0][:, :, :1, :1], torch.ones(1, 1, 1, 1))],
                         ids=["number", "broadcast"])
def test_residual_that_does_not_fit_the_output_is_added_out_of_place(make_residual):
    conv = OctConv2d(8, 8, 3, padding=1, alpha=0.5).eval()
    fused = fast_octconv(conv)
    fused.relu = True
    x = octave_input(conv, 1, 6, 6)
    residual = make_residual(conv(x))
    assert_same(fused(x, residual), reference(conv, x, residual, True))


# -- the graph pass -----------------------------------------------------------------------------------

class ResidualBlock(nn.Module):
    """conv -> relu -> conv (+ x) -> relu, with the ReLU written several ways."""

    def __init__(self, relu_style):
        super().__init__()
        self.conv1 = OctConv2d(8, 8, 3, padding=1, alpha=0.5)
        self.conv2 = OctConv2d(8, 8, 1, alpha=0.5)
        self.relu = Branchwise(nn.ReLU(inplace=True))
        self.relu_style = relu_style

    def forward(self, x):
        y = self.conv2(self.relu(self.conv1(x)))
        y = octify.ops.add(y, x)
        if self.relu_style == "module":
            return self.relu(y)
        if self.relu_style == "function":
            return octify.ops.branchwise("torch.nn.functional.relu", y)
        return octify.ops.branchwise_method("relu", y)


def trace(module):
    return fx.GraphModule(module, OctifyTracer().trace(module))


@pytest.mark.parametrize("relu_style", ["module", "function", "method"])
def test_pass_moves_residual_and_relus_into_the_octave_layers(relu_style):
    block = ResidualBlock(relu_style).eval()
    x = (torch.randn(2, 4, 10, 10), torch.randn(2, 4, 5, 5))
    expected = block(x)
    optimized = for_inference(trace(block))
    calls = [n for n in optimized.graph.nodes if n.op not in ("placeholder", "output")]
    assert [n.target for n in calls] == ["conv1", "conv2"]  # the add and both ReLUs are gone
    assert calls[1].args[1].op == "placeholder"  # the block input is conv2's residual
    assert optimized.conv1.relu and optimized.conv2.relu
    assert_same(optimized(x), expected)


def test_pass_leaves_an_output_with_another_user_alone():
    class Reused(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = OctConv2d(8, 8, 3, padding=1, alpha=0.5)
            self.relu = Branchwise(nn.ReLU())

        def forward(self, x):
            y = self.conv(x)
            return octify.ops.add(self.relu(y), y)

    module = Reused().eval()
    model = trace(module)
    for name, child in list(model.named_children()):
        if isinstance(child, OctConv2d):
            setattr(model, name, fast_octconv(child))
    x = (torch.randn(1, 4, 6, 6), torch.randn(1, 4, 3, 3))
    expected = module(x)
    assert fuse_epilogues(model) == 0
    assert not model.conv.relu
    assert_same(model(x), expected)


def test_pass_joins_relu_to_plain_residual_adds():
    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            return F.relu(self.conv(x) + x)

    module = Plain().eval()
    x = torch.randn(2, 4, 6, 6)
    optimized = for_inference(fx.symbolic_trace(module))
    targets = [n.target for n in optimized.graph.nodes if n.op == "call_function"]
    assert targets == [add_relu_into]
    torch.testing.assert_close(optimized(x), module(x), **TOLERANCE)


def test_converted_resnet_keeps_its_outputs_with_every_relu_joined():
    import torchvision
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    converted = octify.convert(model, 0.5, input_shape=(1, 3, 64, 64)).module.eval()
    optimized = for_inference(converted)
    def module(node):
        return optimized.get_submodule(node.target) if node.op == "call_module" else None

    relus = [n for n in optimized.graph.nodes if isinstance(module(n), (nn.ReLU, Branchwise))]
    assert relus and not any(isinstance(module(n.args[0]), FusedOctConv2d) for n in relus)
    assert sum(isinstance(m, FusedOctConv2d) and m.relu for m in optimized.modules()) >= 8
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(optimized(x), converted(x), rtol=1e-4, atol=1e-4)
