"""Convolution forms beyond size-keeping nn.Conv2d: any padding and padding mode, TensorFlow SAME,
stride 4, timm's Conv2d subclasses, and F.conv2d with a parameter or computed weight."""
import pytest
import timm
import timm.layers as timm_layers
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import octify
from octave_helpers import macs_by_flop_counter
from octify import ChannelSplit, OctConv2d, OctMerge, OctSplit
from octify.layers import FunctionalOctConv2d
from octify.report import OpCall, find_rule

SIZES = [16, 17, 18, 19]  # every H mod 4
WIDTH = 21

# (kwargs of nn.Conv2d / OctConv2d, id); "same" at stride 2 is TensorFlow SAME (OctConv2d only)
GEOMETRIES = [
    (dict(kernel_size=3), "valid 3x3"),
    (dict(kernel_size=3, stride=2), "valid 3x3 stride 2"),
    (dict(kernel_size=(1, 7), padding=(0, 2)), "1x7 partial padding"),
    (dict(kernel_size=(7, 1), padding=(1, 0)), "7x1 partial padding"),
    (dict(kernel_size=5, padding=1, dilation=2), "dilated partial padding"),
    (dict(kernel_size=3, padding=2), "3x3 over-padded"),
    (dict(kernel_size=3, padding=1, padding_mode="reflect"), "reflect"),
    (dict(kernel_size=3, padding=0, padding_mode="replicate"), "replicate valid"),
    (dict(kernel_size=5, padding=1, padding_mode="circular"), "circular partial"),
    (dict(kernel_size=2, padding="same"), "even kernel same"),
    (dict(kernel_size=4, padding="same", dilation=1), "kernel 4 same"),
    (dict(kernel_size=4, stride=4), "4x4 stride 4"),
    (dict(kernel_size=11, stride=4, padding=2), "11x11 stride 4"),
    (dict(kernel_size=3, padding=0, groups=2), "grouped valid"),
    (dict(kernel_size=3, stride=2, groups=12), "depthwise valid stride 2"),
]
TF_SAME = [(dict(kernel_size=3, stride=2, padding="same"), "TF SAME 3x3 stride 2"),
           (dict(kernel_size=4, stride=2, padding="same"), "TF SAME 4x4 stride 2")]
ALPHAS = [(0.0, 0.5), 0.5, (0.5, 0.0)]


def geometry_ids(cases):
    return [name for _, name in cases]


def tf_same_size(size, stride):
    return -(-size // stride)


def block_constant(channels, height, width, batch=2):
    coarse = torch.rand(batch, channels, (height + 1) // 2, (width + 1) // 2)
    return coarse.repeat_interleave(2, 2).repeat_interleave(2, 3)[:, :, :height, :width].contiguous()


class Octave(nn.Module):
    """Plain in, plain out around one octave layer, so the cost report and FlopCounterMode see it whole."""

    def __init__(self, layer, in_split, out_split):
        super().__init__()
        self.split = OctSplit(in_split) if in_split.n_low else nn.Identity()
        self.layer = layer
        self.merge = OctMerge(out_split) if out_split.n_low else nn.Identity()

    def forward(self, x):
        return self.merge(self.layer(self.split(x)))


def splits_of(layer):
    return (ChannelSplit.trailing(layer.in_channels, layer.low_in),
            ChannelSplit.trailing(layer.out_channels, layer.low_out))


# -- the layer: sizes, exact high path, costs, functional form ---------------------------------------

def make_layer(kwargs, alpha):
    channels = 12
    if "padding" in kwargs and kwargs["padding"] == "same" and kwargs.get("stride", 1) > 1:
        return OctConv2d(channels, channels, alpha=alpha, **kwargs), None
    conv = nn.Conv2d(channels, channels, **kwargs)
    return OctConv2d.from_conv(conv, alpha), conv


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("kwargs", [g for g, _ in GEOMETRIES + TF_SAME], ids=geometry_ids(GEOMETRIES + TF_SAME))
@pytest.mark.parametrize("alpha", ALPHAS, ids=str)
def test_sizes_and_macs_at_every_height_mod_4(kwargs, alpha):
    if kwargs.get("groups", 1) == 12 and alpha != 0.5:
        with pytest.raises(ValueError, match="depthwise OctConv2d .* needs alpha_in == alpha_out"):
            make_layer(kwargs, alpha)
        return
    layer, conv = make_layer(kwargs, alpha)
    in_split, _ = splits_of(layer)
    counting_rule = find_rule(layer)
    for height in SIZES:
        x = torch.rand(1, 12, height, WIDTH)
        if conv is not None:
            expected = conv(x).shape[-2:]
        else:
            expected = torch.Size(tf_same_size(s, kwargs["stride"]) for s in (height, WIDTH))
        octave_x = OctSplit(in_split)(x) if in_split.n_low else x
        out = layer(octave_x)
        high, low = out if isinstance(out, tuple) else (out, None)
        assert high.shape[-2:] == expected
        if low is not None:
            assert tuple(low.shape[-2:]) == tuple((s + 1) // 2 for s in expected)
        assert counting_rule.macs(OpCall(layer, (octave_x,), {}, out)) == macs_by_flop_counter(layer, octave_x)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("kwargs", [g for g, _ in GEOMETRIES if g.get("stride", 1) == 1],
                         ids=[n for g, n in GEOMETRIES if g.get("stride", 1) == 1])
def test_high_path_at_stride_1_is_the_original_convolution(kwargs):
    """With a plain input, the high output channels are exactly the original's: the padding rule
    gives h2h the original padding, in the original mode."""
    conv = nn.Conv2d(12, 12, **kwargs)
    layer = OctConv2d.from_conv(conv, alpha=(0.0, 0.5))
    for height in SIZES:
        x = torch.rand(2, 12, height, WIDTH)
        high, _ = layer(x)
        if conv.groups == 1:
            assert torch.equal(high, conv(x)[:, :layer.high_out])
        else:  # the grouped kernel on fewer groups may round differently
            torch.testing.assert_close(high, conv(x)[:, :layer.high_out])


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("kwargs", [g for g, _ in GEOMETRIES], ids=geometry_ids(GEOMETRIES))
def test_alpha_zero_is_the_convolution_and_parameters_match(kwargs):
    conv = nn.Conv2d(12, 12, **kwargs)
    x = torch.rand(2, 12, 17, WIDTH)
    assert torch.equal(OctConv2d.from_conv(conv, alpha=0)(x), conv(x))
    layer = OctConv2d.from_conv(conv, alpha=0.5)
    assert sum(p.numel() for p in layer.parameters()) == sum(p.numel() for p in conv.parameters())


@pytest.mark.parametrize("kwargs", [g for g, _ in GEOMETRIES + TF_SAME if g.get("padding_mode", "zeros") == "zeros"],
                         ids=[n for g, n in GEOMETRIES + TF_SAME if g.get("padding_mode", "zeros") == "zeros"])
def test_functional_form_computes_what_the_module_form_computes(kwargs):
    """FunctionalOctConv2d slices the weight it is given into the same paths as from_conv,
    for trailing and (dense layers) interleaved channel splits."""
    padding = kwargs.get("padding", 0)
    conv = nn.Conv2d(12, 12, **{**kwargs, "padding": 0 if padding == "same" else padding})
    interleaved = ChannelSplit(tuple(c % 2 == 1 for c in range(12)))
    trailing = ChannelSplit.trailing(12, 6)
    for in_split in ([trailing, interleaved] if conv.groups == 1 else [trailing]):
        layer = OctConv2d.from_conv(conv, in_split=in_split, out_split=trailing, padding=padding)
        functional = FunctionalOctConv2d(12, 12, conv.kernel_size, conv.stride, padding, conv.dilation,
                                         conv.groups, in_split=in_split, out_split=trailing)
        assert list(functional.parameters()) == []
        for height in SIZES:
            x = OctSplit(in_split)(torch.rand(2, 12, height, WIDTH))
            for expected, actual in zip(layer(x), functional(x, conv.weight, conv.bias), strict=True):
                assert torch.equal(actual, expected)


def test_padding_rule_places_low_paths_on_the_original_grid():
    """A 1x1 convolution with padding 2 is reproduced exactly on 2x2-block-constant inputs
    (even sizes, where the padding keeps the blocks aligned) at any alpha."""
    conv = nn.Conv2d(8, 10, 1, padding=2)
    for alpha in (0.25, 0.5, (0.0, 0.5), (0.5, 0.0)):
        layer = OctConv2d.from_conv(conv, alpha)
        assert layer.pads_at_run_time
        wrapped = Octave(layer, *splits_of(layer))
        for height, width in ((16, 20), (18, 14)):
            x = block_constant(8, height, width)
            torch.testing.assert_close(wrapped(x), conv(x), rtol=1e-5, atol=1e-5)


def test_size_keeping_layers_keep_padding_inside_their_path_convolutions():
    """Only layers whose padding does not keep sizes pad at run time (the others run as before)."""
    assert not OctConv2d(8, 8, 3, padding=1, alpha=0.5).pads_at_run_time
    assert not OctConv2d(8, 8, 3, stride=2, padding=1, alpha=0.5).pads_at_run_time
    assert OctConv2d(8, 8, 3, alpha=0.5).pads_at_run_time
    assert OctConv2d(8, 8, 3, stride=2, padding="same", alpha=0.5).pads_at_run_time


def test_too_small_input_and_plain_tf_same_are_refused_clearly():
    layer = OctConv2d(8, 8, 5, alpha=0.5)
    with pytest.raises(ValueError, match=r"input of \(3, 3\) is too small for kernel_size=\(5, 5\)"):
        layer((torch.rand(1, 4, 3, 3), torch.rand(1, 4, 2, 2)))
    with pytest.raises(ValueError, match="TensorFlow SAME"):
        OctConv2d(8, 8, 3, stride=2, padding="same", alpha=0)


# -- conversion: geometries inside a network ---------------------------------------------------------

def network(middle):
    return nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.ReLU(), nn.Conv2d(12, 12, 3, padding=1), nn.ReLU(),
                         middle, nn.BatchNorm2d(middle.out_channels), nn.ReLU(),
                         nn.Conv2d(middle.out_channels, 8, 3, padding=1)).eval()


def converted_layer(conversion, name="4"):
    module = conversion.module.get_submodule(name)
    assert isinstance(module, (OctConv2d, FunctionalOctConv2d)) and not module.is_plain, conversion.explain()
    return module


@pytest.mark.parametrize("middle", [nn.Conv2d(12, 16, 3), nn.Conv2d(12, 16, 3, stride=2),
                                    nn.Conv2d(12, 16, (1, 7), padding=(0, 2)),
                                    nn.Conv2d(12, 16, 3, padding=1, padding_mode="reflect"),
                                    nn.Conv2d(12, 16, 4, stride=4)], ids=repr)
def test_converted_networks_match_shapes_and_flop_counter(middle):
    model = network(middle)
    for height in (32, 33, 34, 35):
        x = torch.rand(1, 3, height, height + 2)
        conversion = octify.convert(model, 0.5, example_inputs=(x,), min_size=4)
        converted_layer(conversion)
        assert conversion.module(x).shape == model(x).shape
        assert conversion.report.converted.macs == macs_by_flop_counter(conversion.module, x)
        assert conversion.report.original.macs == macs_by_flop_counter(model, x)
        assert conversion.report.ratios["macs"] < 0.7
    assert torch.equal(octify.convert(model, 0, example_inputs=(x,)).module(x), model(x))


# -- timm's Conv2d subclasses ------------------------------------------------------------------------

def test_conv2d_same_converts_as_a_leaf_with_tensorflow_padding():
    model = network(timm_layers.Conv2dSame(12, 16, 3, stride=2))
    x = torch.rand(1, 3, 33, 34)
    conversion = octify.convert(model, 0.5, example_inputs=(x,))
    layer = converted_layer(conversion)
    assert isinstance(layer, OctConv2d) and layer.padding == "same" and layer.stride == (2, 2)
    assert conversion.capture_method.startswith("captured by symbolic tracing")
    assert conversion.report.converted.macs == macs_by_flop_counter(conversion.module, x)
    for height in SIZES + [32, 35]:  # the graph is general: other sizes give the original's shapes
        other = torch.rand(1, 3, height, WIDTH)
        assert conversion.module(other).shape == model(other).shape
    assert torch.equal(octify.convert(model, 0, example_inputs=(x,)).module(x), model(x))


@pytest.mark.parametrize("make", [lambda: timm_layers.StdConv2d(12, 16, 3, padding=1),
                                  lambda: timm_layers.ScaledStdConv2d(12, 16, 3, stride=2, padding=1),
                                  lambda: timm_layers.ScaledStdConv2d(12, 16, 3)],
                         ids=["StdConv2d", "ScaledStdConv2d stride 2", "ScaledStdConv2d valid"])
def test_weight_standardized_convolutions_slice_the_standardized_weight(make):
    model = network(make())
    x = torch.rand(2, 3, 33, 34)
    conversion = octify.convert(model, 0.5, example_inputs=(x,))
    layer = converted_layer(conversion, "4.octave")
    assert isinstance(layer, FunctionalOctConv2d)
    assert conversion.report.converted.macs == macs_by_flop_counter(conversion.module, x)
    assert conversion.module(x).shape == model(x).shape
    assert torch.equal(octify.convert(model, 0, example_inputs=(x,)).module(x), model(x))
    # the graph still standardizes the original parameter on every forward, and trains it
    conversion.module.train()
    conversion.module(x).sum().backward()
    assert conversion.module.get_parameter("4.weight").grad.abs().sum() > 0


def test_standardized_1x1_convolution_reproduces_block_constant_inputs():
    model = nn.Sequential(nn.Conv2d(3, 12, 1), timm_layers.StdConv2d(12, 16, 1), nn.Conv2d(16, 8, 1)).eval()
    for height, width in ((16, 16), (15, 13)):
        x = block_constant(3, height, width)
        conversion = octify.convert(model, 0.5, example_inputs=(x,), plain_stem=False, min_size=2)
        converted_layer(conversion, "1.octave")
        torch.testing.assert_close(conversion.module(x), model(x), rtol=1e-5, atol=1e-5)


class Routed(nn.Module):
    """CondConv2d fed routing weights computed from the input."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3, padding=1)
        self.route = nn.Linear(12, 4)
        self.cond = timm_layers.CondConv2d(12, 16, 3, padding=1, num_experts=4)

    def forward(self, x):
        x = self.stem(x)
        return self.cond(x, torch.sigmoid(self.route(x.mean((2, 3)))))


@pytest.mark.parametrize("leaf", [False, True], ids=["traced into", "leaf"])
def test_per_sample_weights_stay_plain_with_a_reason(leaf):
    model = Routed().eval()
    x = torch.rand(2, 3, 16, 16)
    conversion = octify.convert(model, 0.5, example_inputs=(x,),
                                leaf_modules=[timm_layers.CondConv2d] if leaf else ())
    reason = "routing weights" if leaf else "computed from the network input"
    assert any(reason in line for line in conversion.explain().splitlines()), conversion.explain()
    assert torch.equal(conversion.module(x), model(x))


def test_a_weight_standardizing_leaf_stays_plain_rather_than_use_the_raw_weight():
    model = network(timm_layers.StdConv2d(12, 16, 3, padding=1))
    x = torch.rand(1, 3, 20, 20)
    conversion = octify.convert(model, 0.5, example_inputs=(x,), leaf_modules=[timm_layers.StdConv2d])
    assert "4: it standardizes its weight on every forward" in conversion.explain()
    assert type(conversion.module.get_submodule("4")) is timm_layers.StdConv2d


# -- F.conv2d in a graph -----------------------------------------------------------------------------

class FunctionalNet(nn.Module):
    """F.conv2d with a parameter weight, and with a weight computed from parameters."""

    def __init__(self, kernel_size=3, padding=1):
        super().__init__()
        self.stem = nn.Conv2d(3, 12, kernel_size, padding=padding)
        self.weight = nn.Parameter(torch.randn(16, 12, kernel_size, kernel_size) * 0.1)
        self.bias = nn.Parameter(torch.randn(16))
        self.base = nn.Parameter(torch.randn(8, 16, kernel_size, kernel_size) * 0.1)
        self.scale = nn.Parameter(torch.rand(8, 1, 1, 1) + 0.5)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(F.conv2d(x, self.weight, self.bias, padding=self.stem.padding))
        x = F.conv2d(x, self.base * self.scale, None, 1, self.stem.padding)
        return self.head(torch.relu(x))


def test_functional_convolutions_convert_with_parameter_and_computed_weights():
    model = FunctionalNet().eval()
    x = torch.rand(2, 3, 19, 18)
    conversion = octify.convert(model, 0.5, example_inputs=(x,))
    functional = [m for m in conversion.module.modules() if isinstance(m, FunctionalOctConv2d)]
    assert len(functional) == 2 and all(not m.is_plain for m in functional), conversion.explain()
    assert conversion.report.converted.macs == macs_by_flop_counter(conversion.module, x)
    assert conversion.module(x).shape == model(x).shape
    assert torch.equal(octify.convert(model, 0, example_inputs=(x,)).module(x), model(x))


def test_functional_1x1_convolutions_reproduce_block_constant_inputs():
    model = FunctionalNet(kernel_size=1, padding=0).eval()
    for height, width in ((16, 16), (15, 13)):
        x = block_constant(3, height, width)
        conversion = octify.convert(model, 0.5, example_inputs=(x,), plain_stem=False, min_size=2)
        assert sum(isinstance(m, FunctionalOctConv2d) for m in conversion.module.modules()) == 2
        torch.testing.assert_close(conversion.module(x), model(x), rtol=1e-5, atol=1e-5)


def test_schedules_name_a_functional_convolution_by_its_module():
    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = FunctionalNet()

        def forward(self, x):
            return self.inner(x)

    x = torch.rand(1, 3, 16, 16)
    conversion = octify.convert(Wrapped().eval(), {"inner": 0, "*": 0.5}, example_inputs=(x,))
    assert not any(isinstance(m, FunctionalOctConv2d) and m.low_out for m in conversion.module.modules())
    assert "inner: alpha 0 (pattern 'inner')" in conversion.explain()


# -- models ------------------------------------------------------------------------------------------

def test_nf_resnet26_converts_its_scaled_standardized_convolutions():
    model = timm.create_model("nf_resnet26", pretrained=False).eval()
    x = torch.rand(1, 3, 64, 64)
    conversion = octify.convert(model, 0.5, example_inputs=(x,))
    assert sum(isinstance(m, FunctionalOctConv2d) and not m.is_plain for m in conversion.module.modules()) >= 8
    original, converted = macs_by_flop_counter(model, x), macs_by_flop_counter(conversion.module, x)
    assert (conversion.report.original.macs, conversion.report.converted.macs) == (original, converted)
    assert converted / original < 0.8


def test_tf_efficientnet_keeps_conv2d_same_a_leaf_and_counts_exactly():
    """Its ratio needs timm's BatchNormAct2d on both branches; here: a general graph, exact costs."""
    model = timm.create_model("tf_efficientnet_b0", pretrained=False).eval()
    x = torch.rand(1, 3, 64, 64)
    conversion = octify.convert(model, 0.5, example_inputs=(x,))
    assert conversion.capture_method.startswith("captured by symbolic tracing")
    assert any(isinstance(m, timm_layers.Conv2dSame) for m in conversion.module.modules())
    assert conversion.report.converted.macs == macs_by_flop_counter(conversion.module, x)
    other = torch.rand(1, 3, 67, 61)
    assert conversion.module(other).shape == model(other).shape


def test_inception_v3_valid_and_strided_reductions_convert():
    model = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False).eval()
    conversion = octify.convert(model, 0.5, input_shape=(1, 3, 224, 224))
    valid_or_strided = ("Conv2d_2a_3x3.conv", "Conv2d_4a_3x3.conv", "Mixed_6a.branch3x3.conv",
                        "Mixed_6a.branch3x3dbl_3.conv")
    for name in valid_or_strided:
        layer = conversion.module.get_submodule(name)
        assert isinstance(layer, OctConv2d) and not layer.is_plain and layer.pads_at_run_time, name
    assert conversion.report.ratios["macs"] <= 0.53
