"""Properties of random small CNNs.

* Every network converts (a ConversionError must name a reason; any other exception is a bug,
  and octify's own failures are :class:`octify.InternalError`), runs with the original's
  output shapes and finite values, and at alpha 0 computes exactly what the original does.
* Networks of 1x1 convolutions, per-pixel activations, adds, products and channel concats
  fed a 2x2-block-constant input give the original's output at any alpha (channel bookkeeping).
"""
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from torch import nn

import octify

ACTIVATIONS = [nn.ReLU, nn.SiLU, nn.Sigmoid, nn.Hardswish, nn.ReLU6, nn.GELU, nn.Tanh]


class SqueezeExcite(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(channels, 4, 1), nn.Conv2d(4, channels, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))


class RandomNet(nn.Module):
    """Interprets a list of steps over a pool of feature maps; ends with flatten + linear."""

    def __init__(self, steps, channels, size, head):
        super().__init__()
        self.steps, self.layers = [], nn.ModuleList()
        shapes = [(channels, *size)]
        for kind, picks in steps:
            source = len(shapes) - 1 - picks[0] % min(3, len(shapes))  # mostly recent maps: deep chains
            c, h, w = shapes[source]
            if kind == "conv":
                out, kernel, stride, same, dilation, group_pick = picks[1:]
                divisors = [g for g in range(1, min(c, out) + 1) if c % g == 0 and out % g == 0]
                groups = divisors[group_pick % len(divisors)]
                padding = dilation * (kernel - 1) // 2 if same else 0
                conv = nn.Conv2d(c, out, kernel, stride, padding, dilation, groups)
                oh = (h + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
                ow = (w + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
                if oh < 1 or ow < 1:
                    continue
                self._add(("module", source), conv)
                shapes.append((out, oh, ow))
            elif kind in ("bn", "act", "se"):
                layer = {"bn": lambda: nn.BatchNorm2d(c), "se": lambda: SqueezeExcite(c),
                         "act": lambda: ACTIVATIONS[picks[1] % len(ACTIVATIONS)]()}[kind]()
                self._add(("module", source), layer)
                shapes.append((c, h, w))
            elif kind == "pool":
                pool = [nn.MaxPool2d(3, 2, 1), nn.AvgPool2d(2, 2), nn.MaxPool2d(2, 2, ceil_mode=True)][picks[1] % 3]
                if h < 2 or w < 2:
                    continue
                self._add(("module", source), pool)
                shapes.append((c, *pool(torch.empty(1, 1, h, w, device="meta")).shape[-2:]))
            elif kind in ("add", "mul", "cat"):
                other = picks[1] % len(shapes)
                if kind == "cat" and shapes[other][1:] == (h, w):
                    self.steps.append(("cat", source, other))
                    shapes.append((c + shapes[other][0], h, w))
                elif kind != "cat" and shapes[other] == (c, h, w):
                    self.steps.append((kind, source, other))
                    shapes.append((c, h, w))
        c, h, w = shapes[-1]
        self.head = nn.Linear(c * h * w, head)

    def _add(self, step, layer):
        self.steps.append(step + (len(self.layers),))
        self.layers.append(layer)

    def forward(self, x):
        pool = [x]
        for step in self.steps:
            if step[0] == "module":
                pool.append(self.layers[step[2]](pool[step[1]]))
            elif step[0] == "cat":
                pool.append(torch.cat([pool[step[1]], pool[step[2]]], dim=1))
            elif step[0] == "add":
                pool.append(pool[step[1]] + pool[step[2]])
            else:
                pool.append(pool[step[1]] * pool[step[2]])
        return self.head(torch.flatten(pool[-1], 1)), pool[-1]


picks = st.integers(0, 1000)
conv_step = st.tuples(st.just("conv"), st.tuples(picks, st.integers(4, 24), st.sampled_from([1, 3, 5]),
                                                   st.sampled_from([1, 1, 1, 2]), st.sampled_from([True, True, True, False]),
                                                   st.sampled_from([1, 1, 2]), picks))
other_step = st.tuples(st.sampled_from(["bn", "act", "se", "pool", "add", "mul", "cat"]), st.tuples(picks, picks))
networks = st.tuples(st.lists(st.one_of(conv_step, conv_step, conv_step, other_step), min_size=3, max_size=16),
                     st.integers(1, 6), st.tuples(st.integers(9, 40), st.integers(9, 40)))


def octave_layer_count(module):
    return sum(isinstance(m, octify.OctConv2d) and not m.is_plain for m in module.modules())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(networks, st.sampled_from([0.25, 0.5, 0.75]), st.sampled_from([1, 2, 4, 8]), st.sampled_from([False, False, True]))
def test_random_networks_convert_and_alpha_0_is_exact(network, alpha, min_size, plain_stem):
    steps, channels, size = network
    torch.manual_seed(0)
    model = RandomNet(steps, channels, size, head=3).eval()
    x = torch.randn(2, channels, *size)
    with torch.no_grad():
        expected = model(x)
    try:
        conversion = octify.convert(model, alpha, example_inputs=(x,), min_size=min_size, plain_stem=plain_stem)
    except octify.ConversionError as error:
        assert error.reason and str(error)
        event("ConversionError")
        return
    event("octave layers" if octave_layer_count(conversion.module) else "nothing converted")
    with torch.no_grad():
        produced = conversion.module.eval()(x)
        exact = octify.convert(model, 0, example_inputs=(x,), min_size=min_size, plain_stem=plain_stem).module.eval()(x)
    assert [t.shape for t in produced] == [t.shape for t in expected]
    assert all(torch.isfinite(t).all() for t in produced)
    for got, want in zip(exact, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


class PointwiseNet(nn.Module):
    """1x1 convolutions, per-pixel activations, add / mul / channel concat over a pool of maps."""

    def __init__(self, steps, channels):
        super().__init__()
        self.steps, self.layers = [], nn.ModuleList()
        widths = [channels]
        for kind, pick, other, out in steps:
            source = len(widths) - 1 - pick % min(3, len(widths))
            if kind == "conv":
                self.steps.append(("module", source, len(self.layers)))
                self.layers.append(nn.Conv2d(widths[source], out, 1))
                widths.append(out)
            elif kind == "act":
                self.steps.append(("module", source, len(self.layers)))
                self.layers.append(ACTIVATIONS[other % len(ACTIVATIONS)]())
                widths.append(widths[source])
            else:
                partner = other % len(widths)
                if kind == "cat":
                    self.steps.append(("cat", source, partner))
                    widths.append(widths[source] + widths[partner])
                elif widths[partner] == widths[source]:
                    self.steps.append((kind, source, partner))
                    widths.append(widths[source])

    def forward(self, x):
        pool = [x]
        for kind, first, second in self.steps:
            if kind == "module":
                pool.append(self.layers[second](pool[first]))
            elif kind == "cat":
                pool.append(torch.cat([pool[first], pool[second]], dim=1))
            elif kind == "add":
                pool.append(pool[first] + pool[second])
            else:
                pool.append(pool[first] * pool[second])
        return pool[-1]


pointwise_step = st.tuples(st.sampled_from(["conv", "conv", "act", "add", "mul", "cat"]), picks, picks,
                           st.integers(4, 16))
pointwise_networks = st.lists(pointwise_step, min_size=2, max_size=12).map(lambda s: [("conv", 0, 0, 8)] + s)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pointwise_networks, st.sampled_from([0.25, 0.5, 0.75]), st.integers(1, 5), st.sampled_from([8, 10, 16]))
def test_pointwise_networks_are_exact_on_block_constant_inputs(steps, alpha, channels, size):
    torch.manual_seed(0)
    model = PointwiseNet(steps, channels).eval()
    x = torch.randn(2, channels, size // 2, size // 2).repeat_interleave(2, 2).repeat_interleave(2, 3)
    conversion = octify.convert(model, alpha, example_inputs=(x,), plain_stem=False)
    event("octave layers" if octave_layer_count(conversion.module) else "nothing converted")
    with torch.no_grad():
        torch.testing.assert_close(conversion.module.eval()(x), model(x), rtol=1e-4, atol=1e-5)
