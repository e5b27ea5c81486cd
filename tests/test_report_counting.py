"""MACs from shapes (octify.cost) against FlopCounterMode run on the actual modules."""
import warnings

import pytest
import torch
import torchvision
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from octify import Branchwise, ChannelSplit, OctBatchNorm2d, OctConv2d, OctMerge, OctSplit
from octify.report import cost
from octify.report.torch_rules import einsum_macs


def measured_macs(model: nn.Module, *inputs) -> int:
    """FlopCounterMode's count halved (it reports FLOPs = 2 x MACs). The math attention kernel
    and autograd enabled make it see attention as matrix products (its fused CPU kernels are not counted)."""
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        model(*inputs)
    return counter.get_total_flops() // 2


# Smallest practical input per model (ViT-B/32 accepts only 224).
TORCHVISION_MODELS = [("resnet18", 64), ("resnet50", 64), ("mobilenet_v2", 64), ("densenet121", 64),
                      ("efficientnet_b0", 64), ("regnet_y_400mf", 64), ("vgg11", 64), ("vit_b_32", 224),
                      ("swin_t", 64), ("squeezenet1_0", 64), ("googlenet", 64), ("shufflenet_v2_x0_5", 64)]


@pytest.mark.parametrize("name,size", TORCHVISION_MODELS)
def test_torchvision_macs_match_flop_counter(name, size):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # googlenet's weight-initialization notice
        model = getattr(torchvision.models, name)(weights=None).eval()
    x = torch.rand(1, 3, size, size)
    expected = measured_macs(model, x)
    assert cost(model, example_inputs=x).macs == pytest.approx(expected, rel=0.01)


def test_resnet50_is_4_09_gmacs():
    result = cost(torchvision.models.resnet50(weights=None))
    assert result.macs == pytest.approx(4.09e9, rel=0.01)
    assert result.flops == 2 * result.macs
    assert result.params == 25_557_032


class OctaveNet(nn.Module):
    """plain -> octave -> octave (strided, grouped) -> per-branch 1x1 conv -> plain -> split -> merge."""

    def __init__(self, stride: int, groups: int) -> None:
        super().__init__()
        self.first = OctConv2d(8, 16, 3, padding=1, alpha=(0.0, 0.5))
        self.bn = OctBatchNorm2d(16, 0.5)
        self.act = Branchwise(nn.ReLU())
        self.middle = OctConv2d(16, 16, 3, stride=stride, padding=1, groups=groups, alpha=0.5)
        self.mix = Branchwise(nn.Conv2d(8, 8, 1))
        self.last = OctConv2d(16, 12, 1, alpha=(0.5, 0.0))
        self.split = OctSplit(ChannelSplit.from_alpha(12, 0.25))
        self.merge = OctMerge(ChannelSplit.from_alpha(12, 0.25))

    def forward(self, x):
        y = self.mix(self.middle(self.act(self.bn(self.first(x)))))
        return self.merge(self.split(self.last(y)))


@pytest.mark.parametrize("size", [32, 33])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("groups", [1, 4, 16], ids=["dense", "grouped", "depthwise"])
def test_octave_layers_match_flop_counter(size, stride, groups):
    model = OctaveNet(stride, groups).eval()
    x = torch.rand(2, 8, size, size + 2)
    result = cost(model, example_inputs=x)
    assert result.macs == measured_macs(model, x)
    rows = {row.name: row for row in result.layers}
    assert (rows["middle"].alpha_in, rows["middle"].alpha_out) == (0.5, 0.5)
    assert (rows["last"].alpha_in, rows["last"].alpha_out) == (0.5, 0.0)
    assert rows["mix"].macs > 0 and rows["split"].macs == 0 and "pooling" in rows["split"].remark


@pytest.mark.parametrize("alpha,macs_ratio", [(0.125, 0.82), (0.25, 0.67), (0.5, 0.44), (0.75, 0.30)])
def test_octconv_macs_follow_table_1(alpha, macs_ratio):
    octave = nn.Sequential(OctConv2d(64, 64, 3, padding=1, alpha=alpha))
    plain = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1))
    low = round(64 * alpha)
    x = (torch.rand(1, 64 - low, 32, 32), torch.rand(1, low, 16, 16))
    ratio = cost(octave, example_inputs=(x,)).macs / cost(plain, input_shape=(1, 64, 32, 32)).macs
    assert ratio == pytest.approx((1 - alpha) ** 2 + alpha * (1 - alpha) / 2 + alpha ** 2 / 4)
    assert ratio == pytest.approx(macs_ratio, abs=0.01)  # the table rounds to whole percent


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(32, 4, kdim=24, vdim=16)
        self.proj = nn.Linear(32, 32)

    def forward(self, query, key, value):
        attended, _ = self.mha(query, key, value, need_weights=False)
        q = self.proj(attended).transpose(0, 1).reshape(2, 5, 4, 8).transpose(1, 2)
        scores = torch.nn.functional.scaled_dot_product_attention(q, q, q)
        mixed = torch.einsum("bhld,bhmd->bhlm", scores, q)
        return torch.bmm(mixed.flatten(0, 1), scores.flatten(0, 1)) @ q.flatten(0, 1).transpose(1, 2)


def test_attention_matmul_and_einsum_match_flop_counter():
    model = Attention()
    inputs = (torch.rand(5, 2, 32), torch.rand(7, 2, 24), torch.rand(7, 2, 16))
    assert cost(model, example_inputs=inputs).macs == measured_macs(model, *inputs)


@pytest.mark.parametrize("equation,shapes,expected", [
    ("ij,jk->ik", [(3, 4), (4, 5)], 3 * 4 * 5),
    ("...ij,...jk", [(2, 3, 4), (4, 5)], 2 * 3 * 4 * 5),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)], 2 * 3 * 4 + 2 * 4 * 5),
    ("ii->i", [(3, 3)], 0),
])
def test_einsum_macs(equation, shapes, expected):
    assert einsum_macs(equation, shapes) == expected
