"""Property: random small CNNs either convert and run with the original's output shapes, or raise ConversionError."""
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
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
conv_step = st.tuples(st.just("conv"), st.tuples(picks, st.integers(1, 24), st.sampled_from([1, 3, 5]),
                                                   st.sampled_from([1, 1, 2]), st.sampled_from([True, True, True, False]),
                                                   st.sampled_from([1, 1, 2]), picks))
other_step = st.tuples(st.sampled_from(["bn", "act", "se", "pool", "add", "mul", "cat"]), st.tuples(picks, picks))
networks = st.tuples(st.lists(st.one_of(conv_step, conv_step, conv_step, other_step), min_size=3, max_size=16),
                     st.integers(1, 6), st.tuples(st.integers(5, 40), st.integers(5, 40)))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(networks, st.sampled_from([0.25, 0.5, 0.75]), st.sampled_from([1, 2, 4, 8]), st.sampled_from([False, False, True]))
def test_random_networks_convert_or_fail_clearly(network, alpha, min_size, plain_stem):
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
        return
    with torch.no_grad():
        produced = conversion.module.eval()(x)
    assert [t.shape for t in produced] == [t.shape for t in expected]
    assert all(torch.isfinite(t).all() for t in produced)
