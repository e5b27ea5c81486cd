"""OctConv2d: sizes, stride, bias, groups, dilation, weight transfer, cost and training."""
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from octify import Branchwise, ChannelSplit, OctBatchNorm2d, OctConv2d, OctMerge, OctSplit
from octify.layers import low_channel_count


# -- independent reference implementation ----------------------------------------------------------

def pool(x):
    return F.avg_pool2d(x, kernel_size=2, stride=2, ceil_mode=True)


def up(x, size):
    return x.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)[..., :size[0], :size[1]]


def block_constant(n, c, h, w):
    """A map that is constant over each aligned 2x2 block (cropped at odd sizes)."""
    small = torch.rand(n, c, (h + 1) // 2, (w + 1) // 2)
    return small.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)[..., :h, :w]


def dense_weight(conv):
    """The groups == 1 weight equivalent to ``conv`` (block diagonal when grouped)."""
    g = conv.groups
    out_unit, in_unit = conv.out_channels // g, conv.in_channels // g
    weight = torch.zeros(conv.out_channels, conv.in_channels, *conv.kernel_size)
    for i in range(g):
        weight[i * out_unit:(i + 1) * out_unit, i * in_unit:(i + 1) * in_unit] = \
            conv.weight[i * out_unit:(i + 1) * out_unit]
    return weight


def reference_octconv(conv, x_h, x_l, low_in, low_out):
    """The octave convolution written out from the paper with F.conv2d on a dense weight.

    Trailing splits; stride-1 "same" padding for every path; low paths at dilation max(1, d // 2).
    """
    weight = dense_weight(conv)
    bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
    d = conv.dilation[0]
    d_low = max(1, d // 2)
    k = conv.kernel_size[0]
    hi_out, hi_in = conv.out_channels - low_out, conv.in_channels - low_in

    def c(x, w, dil):
        return F.conv2d(x, w, None, 1, dil * (k - 1) // 2, dil)

    strided = conv.stride[0] == 2
    if strided:
        x_h = pool(x_h)
    y_h = c(x_h, weight[:hi_out, :hi_in], d) + bias[:hi_out, None, None]
    if low_in:
        cross = c(x_l, weight[:hi_out, hi_in:], d_low)
        y_h = y_h + (cross if strided else up(cross, y_h.shape[-2:]))
    if not low_out:
        return y_h, None
    y_l = c(pool(x_h), weight[hi_out:, :hi_in], d_low) + bias[hi_out:, None, None]
    if low_in:
        y_l = y_l + c(pool(x_l) if strided else x_l, weight[hi_out:, hi_in:], d_low)
    return y_h, y_l


def octave_input(channels, low, h, w):
    if not low:
        return torch.rand(1, channels, h, w)
    return torch.rand(1, channels - low, h, w), torch.rand(1, low, (h + 1) // 2, (w + 1) // 2)


def as_pair(x):
    return x if isinstance(x, tuple) else (x, None)


def refused(cin, cout, groups, alpha):
    """Whether the documented rules refuse this layer: every channel low, a nonzero alpha
    rounding to no whole group, or a depthwise layer with different in and out splits."""
    a_in, a_out = alpha if isinstance(alpha, tuple) else (alpha, alpha)
    lows = []
    for channels, a in ((cin, a_in), (cout, a_out)):
        low = low_channel_count(channels, a, 1 if groups == 1 else channels // groups)
        if low == channels or (a > 0 and low == 0):
            return True
        lows.append(low)
    return groups == cin == cout and lows[0] != lows[1]


# -- 1. drop-in for octconv 0.2.0 ------------------------------------------------------------------

def test_octconv_package_example_runs_unchanged():
    x = torch.rand(5, 3, 200, 200)
    conv1 = OctConv2d(in_channels=3, out_channels=10, kernel_size=3, alpha=(0., 0.5), padding=1)
    conv2 = OctConv2d(in_channels=10, out_channels=20, kernel_size=7, alpha=(0.5, 0.8), padding=3)
    conv3 = OctConv2d(in_channels=20, out_channels=1, kernel_size=3, alpha=(0.8, 0.), padding=1)
    out = conv3(conv2(conv1(x)))
    assert out.shape == (5, 1, 200, 200)
    assert (conv1.low_out, conv2.low_in, conv2.low_out, conv3.low_in) == (5, 5, 16, 16)


# -- 2. any spatial size ---------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(7, 7), (15, 15), (225, 225), (199, 257)])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("alpha", [(0.0, 0.5), (0.5, 0.5), (0.5, 0.0), (0.25, 0.75)])
def test_any_size_matches_plain_conv_geometry(size, stride, alpha):
    kwargs = dict(kernel_size=3, stride=stride, padding=1)
    layer = OctConv2d(4, 4, alpha=alpha, **kwargs)
    x = octave_input(4, layer.low_in, *size)
    high, low = as_pair(layer(x))
    plain = nn.Conv2d(4, 4, **kwargs)(torch.rand(1, 4, *size))
    assert high.shape[-2:] == plain.shape[-2:]
    assert high.shape[1] == layer.high_out
    if layer.low_out:
        assert low.shape[-2:] == tuple((s + 1) // 2 for s in high.shape[-2:])
        assert low.shape[1] == layer.low_out
    else:
        assert low is None


@pytest.mark.parametrize("size", [(7, 7), (15, 15), (199, 257)])
def test_dilated_and_large_kernel_any_size(size):
    layer = OctConv2d(4, 6, kernel_size=5, padding=4, dilation=2, alpha=0.5)
    high, low = layer(octave_input(4, 2, *size))
    assert high.shape[-2:] == size
    assert low.shape[-2:] == tuple((s + 1) // 2 for s in size)


@pytest.mark.parametrize("size", [(7, 7), (15, 15), (225, 225), (199, 257), (8, 9)])
def test_low_to_high_reaches_exact_high_size(size):
    """alpha_out = 0: the l2h path's output is up-sampled to exactly the high size."""
    layer = OctConv2d(4, 3, kernel_size=3, padding=1, alpha=(0.5, 0.0))
    x_h, x_l = octave_input(4, 2, *size)
    out = layer((x_h, x_l))
    assert out.shape == (1, 3, *size)
    expected, _ = reference_octconv(_as_conv(layer), x_h, x_l, 2, 0)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_mismatched_branch_sizes_are_rejected():
    layer = OctConv2d(4, 4, kernel_size=3, padding=1, alpha=0.5)
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        layer((torch.rand(1, 2, 7, 7), torch.rand(1, 2, 3, 3)))


# -- 3. stride 2 is pool then convolve -------------------------------------------------------------

@pytest.mark.parametrize("alpha", [(0.0, 0.5), (0.5, 0.5), (0.5, 0.0), (0.25, 0.5)])
@pytest.mark.parametrize("groups", [1, 2])
def test_stride_two_layers_have_only_stride_one_convs(alpha, groups):
    layer = OctConv2d(8, 8, kernel_size=3, stride=2, padding=1, groups=groups, alpha=alpha)
    convs = list(layer.path_convs())
    assert convs
    for _, conv in convs:
        assert conv.stride == (1, 1)
    assert not any(isinstance(m, nn.Conv2d) and m.stride != (1, 1) for m in layer.modules())


@pytest.mark.parametrize("size", [(16, 16), (15, 13)])
def test_stride_two_equals_pool_then_convolve_by_hand(size):
    layer = OctConv2d(3, 6, kernel_size=3, stride=2, padding=1, alpha=(0.0, 0.5))
    x = torch.rand(2, 3, *size)
    high, low = layer(x)
    expected_high = layer.h2h(F.avg_pool2d(x, 2, 2, ceil_mode=True))
    expected_low = layer.h2l(F.avg_pool2d(F.avg_pool2d(x, 2, 2, ceil_mode=True), 2, 2, ceil_mode=True))
    assert torch.equal(high, expected_high)
    assert torch.equal(low, expected_low)
    assert not hasattr(layer, "l2h") and not hasattr(layer, "l2l")


def test_stride_two_full_octave_by_hand():
    layer = OctConv2d(4, 4, kernel_size=3, stride=2, padding=1, alpha=0.5)
    x_h, x_l = octave_input(4, 2, 15, 15)
    high, low = layer((x_h, x_l))
    p = pool(x_h)
    torch.testing.assert_close(high, layer.h2h(p) + layer.l2h(x_l), atol=1e-6, rtol=0)
    torch.testing.assert_close(low, layer.l2l(pool(x_l)) + layer.h2l(pool(p)), atol=1e-6, rtol=0)
    assert high.shape[-2:] == (8, 8) and low.shape[-2:] == (4, 4)


# -- the layer agrees with the written-out reference -----------------------------------------------

def _as_conv(layer):
    """A plain conv whose weights, split trailing, reproduce ``layer`` (inverse of from_conv)."""
    conv = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                     layer.padding, layer.dilation, layer.groups, bias=True)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        g = layer.groups
        for path, path_conv in layer.path_convs():
            out_start = (layer.high_out if path.dst_low else 0) + path.out_range[0]
            out_stop = out_start + path.out_range[1] - path.out_range[0]
            if g == 1:
                in_start = (layer.high_in if path.src_low else 0) + path.in_range[0]
                in_stop = in_start + path.in_range[1] - path.in_range[0]
                conv.weight[out_start:out_stop, in_start:in_stop] = path_conv.weight
            else:
                conv.weight[out_start:out_stop] = path_conv.weight
            if path_conv.bias is not None:
                conv.bias[out_start:out_stop] += path_conv.bias
    return conv


@pytest.mark.parametrize("cfg", [
    dict(cin=6, cout=8, k=3, stride=1, dilation=1, groups=1, alpha=(0.5, 0.5)),
    dict(cin=6, cout=8, k=3, stride=2, dilation=1, groups=1, alpha=(0.5, 0.25)),
    dict(cin=6, cout=8, k=5, stride=1, dilation=2, groups=1, alpha=(0.0, 0.5)),
    dict(cin=6, cout=8, k=3, stride=2, dilation=2, groups=1, alpha=(0.5, 0.0)),
    dict(cin=16, cout=32, k=3, stride=1, dilation=1, groups=4, alpha=(0.25, 0.5)),
    dict(cin=16, cout=32, k=3, stride=2, dilation=1, groups=4, alpha=(0.5, 0.25)),
    dict(cin=16, cout=32, k=3, stride=1, dilation=2, groups=4, alpha=(0.0, 0.5)),
    dict(cin=8, cout=8, k=3, stride=1, dilation=1, groups=8, alpha=(0.5, 0.5)),
    dict(cin=8, cout=8, k=3, stride=2, dilation=2, groups=8, alpha=(0.25, 0.25)),
])
@pytest.mark.parametrize("size", [(12, 12), (9, 13)])
def test_from_conv_matches_reference(cfg, size):
    d, k = cfg["dilation"], cfg["k"]
    conv = nn.Conv2d(cfg["cin"], cfg["cout"], k, cfg["stride"], d * (k - 1) // 2, d, cfg["groups"])
    layer = OctConv2d.from_conv(conv, alpha=cfg["alpha"])
    x_h, x_l = as_pair(octave_input(cfg["cin"], layer.low_in, *size))
    high, low = as_pair(layer(x_h if x_l is None else (x_h, x_l)))
    ref_high, ref_low = reference_octconv(conv, x_h, x_l, layer.low_in, layer.low_out)
    torch.testing.assert_close(high, ref_high, atol=1e-5, rtol=1e-5)
    if layer.low_out:
        torch.testing.assert_close(low, ref_low, atol=1e-5, rtol=1e-5)


# -- 4. one bias per output branch -----------------------------------------------------------------

@pytest.mark.parametrize("cin, cout, groups", [(8, 8, 1), (6, 10, 1), (16, 32, 4), (8, 8, 8), (12, 12, 3)])
@pytest.mark.parametrize("alpha", [0.0, 0.25, 0.5, 0.75, (0.0, 0.5), (0.5, 0.0), (0.25, 0.5), (0.75, 0.25)])
@pytest.mark.parametrize("bias", [True, False])
def test_parameter_count_equals_plain_conv(cin, cout, groups, alpha, bias):
    if refused(cin, cout, groups, alpha):
        with pytest.raises(ValueError):
            OctConv2d(cin, cout, 3, padding=1, groups=groups, alpha=alpha, bias=bias)
        return
    layer = OctConv2d(cin, cout, 3, padding=1, groups=groups, alpha=alpha, bias=bias)
    plain = nn.Conv2d(cin, cout, 3, padding=1, groups=groups, bias=bias)
    count = sum(p.numel() for p in layer.parameters())
    assert count == sum(p.numel() for p in plain.parameters())
    biases = sum(conv.bias.numel() for _, conv in layer.path_convs() if conv.bias is not None)
    assert biases == (cout if bias else 0)


@pytest.mark.parametrize("alpha", [(0.5, 0.5), (0.0, 0.5), (0.5, 0.0), (0.25, 0.5), (0.75, 0.25)])
@pytest.mark.parametrize("groups, stride", [(1, 1), (1, 2), (4, 1), (4, 2)])
def test_bias_is_added_exactly_once(alpha, groups, stride):
    conv = nn.Conv2d(8, 8, 3, stride, 1, groups=groups)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.copy_(torch.arange(1.0, 9.0))
    layer = OctConv2d.from_conv(conv, alpha=alpha)
    x = octave_input(8, layer.low_in, 11, 11)
    high, low = as_pair(layer(x))
    assert torch.equal(high, conv.bias[:layer.high_out, None, None].expand_as(high))
    if layer.low_out:
        assert torch.equal(low, conv.bias[layer.high_out:, None, None].expand_as(low))


# -- 5. groups ------------------------------------------------------------------------------------

@pytest.mark.parametrize("alpha", [0.25, 0.5, (0.0, 0.5), (0.25, 0.5), (0.5, 0.25), (0.5, 0.0)])
def test_arbitrary_groups(alpha):
    layer = OctConv2d(16, 32, 3, padding=1, groups=4, alpha=alpha)
    assert layer.low_in % 4 == 0 and layer.low_out % 8 == 0
    for _, conv in layer.path_convs():
        assert conv.in_channels // conv.groups == 4 and conv.out_channels // conv.groups == 8
    high, low = as_pair(layer(octave_input(16, layer.low_in, 10, 10)))
    assert high.shape == (1, 32 - layer.low_out, 10, 10)
    if layer.low_out:
        assert low.shape == (1, layer.low_out, 5, 5)


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.75])
@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_has_only_same_frequency_paths(alpha, stride):
    layer = OctConv2d(8, 8, 3, stride, 1, groups=8, alpha=alpha)
    assert [path.name for path in layer.paths] == ["h2h", "l2l"]
    assert layer.h2h.groups == layer.high_in and layer.l2l.groups == layer.low_in
    high, low = layer(octave_input(8, layer.low_in, 9, 9))
    assert high.shape[1] == layer.high_out and low.shape[1] == layer.low_out


@pytest.mark.parametrize("padding", [1, "same"])
def test_depthwise_with_different_alphas_is_refused(padding):
    with pytest.raises(ValueError, match="depthwise"):
        OctConv2d(8, 8, 3, padding=padding, groups=8, alpha=(0.5, 0.25))
    with pytest.raises(ValueError, match="depthwise"):
        OctConv2d(8, 8, 3, padding=padding, groups=8, alpha=(0.0, 0.5))


def test_split_rounding_to_no_whole_group_names_the_numbers():
    # 0.1 of 16 channels in groups of 4 is 0.4 groups: rounds to none.
    with pytest.raises(ValueError, match=r"alpha_in=0\.1 of 16 input channels rounds to 0 .*groups of 4"):
        OctConv2d(16, 32, 3, padding=1, groups=4, alpha=(0.1, 0.5))


def test_explicit_unaligned_split_names_the_numbers():
    with pytest.raises(ValueError, match=r"groups=4: 3 low of 16 input channels .*groups of 4"):
        OctConv2d(16, 32, 3, padding=1, groups=4, alpha=0.5, in_split=ChannelSplit.trailing(16, 3))
    with pytest.raises(ValueError, match=r"groups=4: 4 low of 32 output channels .*groups of 8"):
        OctConv2d(16, 32, 3, padding=1, groups=4, alpha=0.5, out_split=ChannelSplit.trailing(32, 4))


def test_split_that_leaves_no_high_channel_is_refused():
    with pytest.raises(ValueError, match="alpha_out=0.99 makes all 10 output channels low"):
        OctConv2d(4, 10, 1, alpha=(0.0, 0.99))
    # 0.75 of two groups rounds to both groups; the error quotes the alpha asked for.
    with pytest.raises(ValueError, match="alpha_out=0.75 makes all 8 output channels low"):
        OctConv2d.from_conv(nn.Conv2d(8, 8, 3, padding=1, groups=2), alpha=(0.5, 0.75))


def test_grouped_split_rounds_to_whole_groups():
    layer = OctConv2d(16, 32, 3, padding=1, groups=4, alpha=0.3)  # 1.2 groups in, 1.2 groups out
    assert (layer.low_in, layer.low_out) == (4, 8)


@pytest.mark.parametrize("kwargs, message", [
    (dict(kernel_size=3, padding=1, stride=3), "stride 1, 2 or 4"),
    (dict(kernel_size=3, padding=1, stride=(1, 2)), "the same in both directions"),
    (dict(kernel_size=3, padding=-1), "non-negative padding"),
    (dict(kernel_size=3, padding=1, groups=3), "groups=3 must divide"),
])
def test_unsupported_geometry_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OctConv2d(8, 8, alpha=0.5, **kwargs)


# -- 6. dilation ----------------------------------------------------------------------------------

@pytest.mark.parametrize("dilation, low_dilation", [(1, 1), (2, 1), (3, 1), (4, 2)])
def test_low_paths_use_half_dilation(dilation, low_dilation):
    layer = OctConv2d(4, 4, 3, padding=dilation, dilation=dilation, alpha=0.5)
    for path, conv in layer.path_convs():
        expected = dilation if path.name == "h2h" else low_dilation
        assert conv.dilation == (expected, expected)
        assert conv.padding == (expected, expected)


def _blocks_read(output, pixel, source):
    """Input pixels of ``source`` that ``output[..., pixel]`` depends on, as 2x2 block indices."""
    grad, = torch.autograd.grad(output[0, 0, pixel[0], pixel[1]], source, retain_graph=True)
    rows, cols = torch.nonzero(grad[0, 0], as_tuple=True)
    return {(r, c) for r, c in zip(rows.tolist(), cols.tolist())}


@pytest.mark.parametrize("dilation", [2, 4])
def test_low_path_receptive_field_matches_high_path_in_input_pixels(dilation):
    layer = OctConv2d(2, 2, 3, padding=dilation, dilation=dilation, alpha=0.5)
    with torch.no_grad():
        for _, conv in layer.path_convs():
            conv.weight.fill_(1.0)  # positive everywhere: no accidental cancellation
    x_h = torch.rand(1, 1, 32, 32, requires_grad=True)
    x_l = torch.rand(1, 1, 16, 16, requires_grad=True)
    high, low = layer((x_h, x_l))
    j = 8  # low pixel j sits over high pixels 2j, 2j + 1

    def high_blocks(pixels):
        return {(r // 2, c // 2) for r, c in pixels}

    # h2h: output pixel (2j, 2j) reads input pixels 2j + dilation * {-1, 0, 1}.
    h2h = _blocks_read(high, (2 * j, 2 * j), x_h)
    offsets = {2 * j + dilation * o for o in (-1, 0, 1)}
    assert h2h == {(r, c) for r in offsets for c in offsets}
    h2h_blocks = high_blocks(h2h)
    h2h_span = max(r for r, _ in h2h) - min(r for r, _ in h2h)
    # Every low path touches exactly the same 2x2 blocks of input pixels as h2h.
    l2h = _blocks_read(high, (2 * j, 2 * j), x_l)        # low input pixels are blocks
    h2l = high_blocks(_blocks_read(low, (j, j), x_h))    # through the pooling
    l2l = _blocks_read(low, (j, j), x_l)
    assert l2h == h2h_blocks
    assert h2l == h2h_blocks
    assert l2l == h2h_blocks
    # Spans of the taps, in input pixels: low pixels are two input pixels apart.
    assert 2 * (max(r for r, _ in l2l) - min(r for r, _ in l2l)) == h2h_span == 2 * dilation


def test_undilated_low_paths_see_twice_as_far():
    """At dilation 1 the low paths keep the paper's wider view (3 low pixels = 6 input pixels)."""
    layer = OctConv2d(2, 2, 3, padding=1, alpha=0.5)
    x_h = torch.rand(1, 1, 32, 32, requires_grad=True)
    x_l = torch.rand(1, 1, 16, 16, requires_grad=True)
    with torch.no_grad():
        for _, conv in layer.path_convs():
            conv.weight.fill_(1.0)
    high, low = layer((x_h, x_l))
    h2h = _blocks_read(high, (16, 16), x_h)
    l2l = _blocks_read(low, (8, 8), x_l)
    assert max(r for r, _ in h2h) - min(r for r, _ in h2h) == 2
    assert 2 * (max(r for r, _ in l2l) - min(r for r, _ in l2l)) == 4


# -- 8. weight transfer ---------------------------------------------------------------------------

@pytest.mark.parametrize("conv", [
    nn.Conv2d(3, 5, 3, padding=1),
    nn.Conv2d(3, 5, 3, stride=2, padding=1),
    nn.Conv2d(4, 6, 3, padding=2, dilation=2),
    nn.Conv2d(8, 12, 3, padding=1, groups=4),
    nn.Conv2d(8, 8, 5, stride=2, padding=4, dilation=2, groups=8),
    nn.Conv2d(4, 6, 1, bias=False),
    nn.Conv2d(4, 6, 4, stride=3, padding=0),
    nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"),
], ids=lambda c: repr(c))
def test_from_conv_alpha_zero_is_exactly_the_conv(conv):
    layer = OctConv2d.from_conv(conv, alpha=(0, 0))
    x = torch.rand(2, conv.in_channels, 13, 11)
    assert torch.equal(layer(x), conv(x))
    assert sum(p.numel() for p in layer.parameters()) == sum(p.numel() for p in conv.parameters())


def _octave_of(x, split):
    return x if split.n_low == 0 else OctSplit(split)(x)


def _plain_of(y, split):
    return y if split.n_low == 0 else OctMerge(split)(y)


@pytest.mark.parametrize("groups, cin, cout", [(1, 6, 10), (2, 8, 12), (4, 16, 32), (8, 8, 8)])
@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.75, (0.0, 0.5), (0.5, 0.0), (0.25, 0.5), (0.5, 0.25)])
@pytest.mark.parametrize("size", [(8, 12), (7, 9)])
def test_block_constant_oracle_for_1x1_convs(groups, cin, cout, alpha, size):
    conv = nn.Conv2d(cin, cout, 1, groups=groups)
    if refused(cin, cout, groups, alpha):
        with pytest.raises(ValueError):
            OctConv2d.from_conv(conv, alpha=alpha)
        return
    layer = OctConv2d.from_conv(conv, alpha=alpha)
    in_split = ChannelSplit.trailing(cin, layer.low_in)
    out_split = ChannelSplit.trailing(cout, layer.low_out)
    x = block_constant(2, cin, *size)
    out = _plain_of(layer(_octave_of(x, in_split)), out_split)
    torch.testing.assert_close(out, conv(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size", [(8, 8), (9, 7)])
def test_block_constant_oracle_with_interleaved_splits(size):
    conv = nn.Conv2d(10, 8, 1)
    in_split = ChannelSplit.concat([ChannelSplit.trailing(4, 1), ChannelSplit.trailing(6, 3)])
    out_split = ChannelSplit.concat([ChannelSplit.trailing(3, 1), ChannelSplit.trailing(5, 2)])
    assert not in_split.is_trailing and not out_split.is_trailing
    layer = OctConv2d.from_conv(conv, in_split=in_split, out_split=out_split)
    assert (layer.low_in, layer.low_out) == (4, 3)
    x = block_constant(2, 10, *size)
    out = OctMerge(out_split)(layer(OctSplit(in_split)(x)))
    torch.testing.assert_close(out, conv(x), atol=1e-5, rtol=1e-5)


def test_from_conv_keeps_training_mode_and_dtype():
    conv = nn.Conv2d(4, 4, 3, padding=1).double().eval()
    layer = OctConv2d.from_conv(conv, alpha=0.5)
    assert not layer.training
    assert all(p.dtype == torch.float64 for p in layer.parameters())


def test_from_conv_refuses_interleaved_split_for_grouped_conv():
    conv = nn.Conv2d(8, 8, 1, groups=2)
    split = ChannelSplit.concat([ChannelSplit.trailing(4, 2), ChannelSplit.trailing(4, 2)])
    with pytest.raises(ValueError, match="low channels last"):
        OctConv2d.from_conv(conv, in_split=split, out_split=ChannelSplit.trailing(8, 4))


# -- 9. cost: the paper's Table 1 ----------------------------------------------------------------

def _flops(module, x):
    with FlopCounterMode(display=False) as counter:
        module(x)
    return counter.get_total_flops()


@pytest.mark.parametrize("alpha, table_percent", [
    (Fraction(1, 8), 82), (Fraction(1, 4), 67), (Fraction(1, 2), 44), (Fraction(3, 4), 30)])
def test_macs_match_table_one(alpha, table_percent):
    channels, size = 16, 16
    layer = OctConv2d(channels, channels, 3, padding=1, alpha=float(alpha))
    assert layer.low_in == layer.low_out == alpha * channels
    plain = nn.Conv2d(channels, channels, 3, padding=1)
    plain_flops = _flops(plain, torch.rand(1, channels, size, size))
    assert plain_flops == 2 * channels * channels * 9 * size * size  # FLOPs = 2 x MACs
    oct_flops = _flops(layer, octave_input(channels, layer.low_in, size, size))
    expected = (1 - alpha) ** 2 + alpha * (1 - alpha) / 2 + alpha ** 2 / 4
    assert Fraction(oct_flops, plain_flops) == expected
    assert round(100 * expected) == table_percent


def test_macs_at_half_are_0_4375():
    layer = OctConv2d(8, 8, 3, padding=1, alpha=0.5)
    plain = nn.Conv2d(8, 8, 3, padding=1)
    ratio = _flops(layer, octave_input(8, 4, 32, 32)) / _flops(plain, torch.rand(1, 8, 32, 32))
    assert ratio == 0.4375


# -- 11. training ---------------------------------------------------------------------------------

def test_backward_reaches_every_parameter():
    model = nn.Sequential(
        OctConv2d(3, 8, 3, padding=1, alpha=(0.0, 0.5), bias=False),
        OctBatchNorm2d(8, alpha=0.5),
        Branchwise(nn.ReLU()),
        OctConv2d(8, 16, 3, stride=2, padding=1, alpha=0.5, bias=False),
        OctBatchNorm2d(16, alpha=0.5),
        Branchwise(nn.ReLU()),
        OctConv2d(16, 16, 3, padding=1, groups=4, alpha=0.5, bias=False),
        OctBatchNorm2d(16, alpha=0.5),
        Branchwise(nn.ReLU()),
        OctConv2d(16, 4, 3, padding=1, alpha=(0.5, 0.0)),
    )
    model.train()
    x = torch.rand(4, 3, 15, 15)
    target = torch.rand(4, 4, 8, 8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for _ in range(3):
        optimizer.zero_grad()
        loss = F.mse_loss(model(x), target)
        loss.backward()
        losses.append(loss.item())
        for name, parameter in model.named_parameters():
            assert parameter.grad is not None, name
            assert torch.isfinite(parameter.grad).all(), name
            assert parameter.grad.abs().sum() > 0, name
        optimizer.step()
    assert losses[-1] < losses[0]


# -- the Quick start demo -------------------------------------------------------------------------

def test_demo_prints_shape_and_multiply_accumulates(capsys):
    from octify import demo

    demo.main()
    printed = capsys.readouterr().out
    assert "output shape: (1, 1, 224, 224)" in printed
    assert "multiply-accumulates, OctConv2d stack" in printed
    octave = nn.Sequential(*(OctConv2d(**layer) for layer in demo.LAYERS))
    plain = nn.Sequential(*(nn.Conv2d(**{k: v for k, v in layer.items() if k != "alpha"})
                            for layer in demo.LAYERS))
    x = torch.rand(1, 3, 224, 224)
    assert demo.macs(plain, x) == sum(c.in_channels * c.out_channels * c.kernel_size[0] ** 2 * 224 * 224
                                      for c in plain)
    assert demo.macs(octave, x) < demo.macs(plain, x)


# -- grouped layers split within each group ---------------------------------------------------------

def per_group_split(channels, groups, low_per_group):
    """The last ``low_per_group`` channels of every group low."""
    width = channels // groups
    return ChannelSplit(tuple(c % width >= width - low_per_group for c in range(channels)))


@pytest.mark.parametrize("cin, cout, groups, lows, stride, dilation", [
    (16, 32, 4, (2, 4), 1, 1), (16, 32, 4, (2, 2), 2, 1), (16, 16, 2, (0, 4), 1, 2), (12, 12, 3, (2, 0), 2, 1),
])
@pytest.mark.parametrize("size", [(12, 12), (9, 13)])
def test_a_layer_split_within_groups_is_the_octave_convolution_of_its_dense_weight(cin, cout, groups, lows, stride,
                                                                                    dilation, size):
    """Reordered so that each branch's channels come first, the layer is the paper's octave convolution of the
    grouped weight written out densely (block diagonal): every group's high and low channels mix."""
    conv = nn.Conv2d(cin, cout, 3, stride, dilation, dilation, groups)
    in_split, out_split = per_group_split(cin, groups, lows[0]), per_group_split(cout, groups, lows[1])
    layer = OctConv2d.from_conv(conv, in_split=in_split, out_split=out_split)
    assert layer.within_groups and [path.groups for path in layer.paths] == [groups] * len(layer.paths)
    order_in = list(in_split.high_index + in_split.low_index)
    order_out = list(out_split.high_index + out_split.low_index)
    dense = nn.Conv2d(cin, cout, 3, stride, dilation, dilation)
    with torch.no_grad():
        dense.weight.copy_(dense_weight(conv)[order_out][:, order_in])
        dense.bias.copy_(conv.bias[order_out])
    x_h, x_l = as_pair(octave_input(cin, layer.low_in, *size))
    high, low = as_pair(layer(x_h if x_l is None else (x_h, x_l)))
    ref_high, ref_low = reference_octconv(dense, x_h, x_l, layer.low_in, layer.low_out)
    torch.testing.assert_close(high, ref_high, atol=1e-5, rtol=1e-5)
    if layer.low_out:
        torch.testing.assert_close(low, ref_low, atol=1e-5, rtol=1e-5)
    assert sum(p.numel() for p in layer.parameters()) == sum(p.numel() for p in conv.parameters())


def test_splitting_within_groups_costs_a_dense_layers_share_of_macs():
    """At alpha 0.5 the four paths cost 7/16 of the grouped convolution (whole-group splits: 10/16)."""
    conv = nn.Conv2d(32, 32, 3, padding=1, groups=4)
    split = per_group_split(32, 4, 4)
    layer = OctConv2d.from_conv(conv, in_split=split, out_split=split)
    x = (torch.randn(1, 16, 16, 16), torch.randn(1, 16, 8, 8))
    with FlopCounterMode(display=False) as counter:
        layer(x)
    assert counter.get_total_flops() // 2 == 16 * 16 * 32 * 8 * 9 * 7 // 16
    whole = OctConv2d.from_conv(conv, alpha=0.5)
    with FlopCounterMode(display=False) as counter:
        whole(x)
    assert counter.get_total_flops() // 2 == 16 * 16 * 32 * 8 * 9 * 10 // 16


def test_groups_split_unlike_each_other_are_refused():
    conv = nn.Conv2d(8, 8, 3, padding=1, groups=2)
    uneven = ChannelSplit((False, False, False, True, False, False, True, True))
    with pytest.raises(ValueError, match="the same channels low in every group"):
        OctConv2d.from_conv(conv, in_split=uneven, out_split=uneven)
