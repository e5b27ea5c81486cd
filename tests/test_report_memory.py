"""Feature-map memory: the paper's Table 1 for one layer, and the peak on small hand-computed graphs.

Every test input is 1 x C x 10 x 10 float32, so one channel is 400 bytes.
"""
import pytest
import torch
from torch import nn

from octify import OctConv2d
from octify.report import cost

CHANNEL = 400  # bytes of one 10 x 10 float32 channel


def one_by_one(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1)


@pytest.mark.parametrize("alpha,table_1", [(0.125, 0.91), (0.25, 0.81), (0.5, 0.63), (0.75, 0.44), (0.875, 0.35)])
def test_octconv_feature_maps_follow_table_1(alpha, table_1):
    octave = nn.Sequential(OctConv2d(64, 64, 3, padding=1, alpha=alpha))
    plain = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1))
    low = round(64 * alpha)
    x = (torch.rand(1, 64 - low, 32, 32), torch.rand(1, low, 16, 16))
    plain_bytes = cost(plain, input_shape=(1, 64, 32, 32)).activation_bytes
    ratio = cost(octave, example_inputs=(x,)).activation_bytes / plain_bytes
    assert ratio == pytest.approx((1 - alpha) + alpha / 4)
    assert ratio == pytest.approx(table_1, abs=0.01)  # the table rounds to whole percent (34.4% -> 35%)


class Chain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = one_by_one(1, 2), one_by_one(2, 4), one_by_one(4, 1)

    def forward(self, x):
        return self.c(self.b(self.a(x)))


def test_chain_peak_is_the_largest_input_output_pair():
    result = cost(Chain(), input_shape=(1, 1, 10, 10))
    # live: at a, x + a = 3 channels; at b, a + b = 6; at c, b + c = 5
    assert result.peak_activation_bytes == 6 * CHANNEL and result.peak_at == "b"
    assert result.activation_bytes == (2 + 4 + 1) * CHANNEL


class Residual(nn.Module):
    def __init__(self, skip: bool) -> None:
        super().__init__()
        self.skip = skip
        self.a, self.b = one_by_one(1, 1), one_by_one(1, 1)

    def forward(self, x):
        y = self.b(self.a(x))
        return y + x if self.skip else y


@pytest.mark.parametrize("skip,peak", [(True, 3), (False, 2)])
def test_a_skip_connection_keeps_its_input_alive(skip, peak):
    result = cost(Residual(skip), input_shape=(1, 1, 10, 10))
    # with the skip, x lives until the addition: x + a + b at b; without it x dies after a
    assert result.peak_activation_bytes == peak * CHANNEL


class BranchConcat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = one_by_one(1, 2), one_by_one(1, 2), one_by_one(4, 1)

    def forward(self, x):
        return self.c(torch.cat([self.a(x), self.b(x)], dim=1))


def test_branches_and_concat_peak_at_the_concat():
    result = cost(BranchConcat(), input_shape=(1, 1, 10, 10))
    # at a: x + a = 3; at b: x + a + b = 5; at cat: a + b + cat = 8; at c: cat + c = 5
    assert result.peak_activation_bytes == 8 * CHANNEL and result.peak_at == "cat"


class InPlaceAndViews(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = one_by_one(1, 2)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.a(x)).flatten(1)


def test_in_place_results_and_views_share_their_source_memory():
    result = cost(InPlaceAndViews(), input_shape=(1, 1, 10, 10))
    rows = {row.name: row for row in result.layers}
    assert rows["a"].activation_bytes == 2 * CHANNEL
    assert rows["relu"].activation_bytes == 0 and rows["flatten"].activation_bytes == 0
    assert rows["flatten"].output_shapes == [(1, 200)]
    assert result.activation_bytes == 2 * CHANNEL
    assert result.peak_activation_bytes == 3 * CHANNEL  # the input and a's output, at a


def test_parameters_are_not_feature_maps():
    result = cost(nn.Sequential(one_by_one(1, 1)), input_shape=(1, 1, 10, 10))
    assert result.params == 2
    assert result.peak_activation_bytes == 2 * CHANNEL


class ValueGate(nn.Module):
    """Branches on a value: fake tensors cannot run it, so shapes are recorded by a real run."""

    def forward(self, x):
        return x * 2 if x.mean() > 0 else x * 3


class InPlaceThenGate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.relu, self.gate = one_by_one(1, 2), nn.ReLU(inplace=True), ValueGate()

    def forward(self, x):
        return self.gate(torch.flatten(self.relu(self.conv(x)), 1))


def test_views_and_in_place_results_share_memory_when_shapes_come_from_a_real_run():
    result = cost(InPlaceThenGate(), input_shape=(1, 1, 10, 10))
    assert "gate" in result.traced  # an automatic leaf: the shapes were recorded by running the model
    allocated = {layer.name: layer.activation_bytes for layer in result.layers}
    assert allocated["relu"] == 0 and allocated["flatten"] == 0
    assert result.activation_bytes == (2 + 2) * CHANNEL  # conv, and the gate's new tensor
