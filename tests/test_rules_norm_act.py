"""Per-channel normalizations and activations from torch, torchvision and timm run on each branch."""
import pytest
import timm
import torch
import torch.nn.functional as F
from timm.layers import BatchNormAct2d, DropPath, FrozenBatchNormAct2d, GroupNormAct, LayerNorm2d
from timm.layers.activations import GELUTanh, HardSigmoid, HardSwish, Mish, PReLU, Swish
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.ops import FrozenBatchNorm2d

import octify
from octify.layers import (ChannelSplit, OctBatchNorm2d, OctBatchNormFunction, OctConv2d, OctGroupNormFunction,
                           OctPReLUFunction, PerBranch)
from tests.octave_helpers import assert_same
from tests.test_convert_oracles import block_constant


def randomize(model):
    """Non-trivial per-channel parameters and statistics everywhere (not the initial ones and zeros)."""
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if tensor.is_floating_point():
                if "var" in name:
                    tensor.uniform_(0.5, 2.0)
                else:
                    tensor.uniform_(-0.5, 1.0)
    return model


class NormNet(nn.Module):
    """1x1 convs around two per-channel layers: one after a concat (channels split in any order), one after a conv."""

    def __init__(self, make, channels=16):
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 1)
        self.a, self.b = nn.Conv2d(channels, channels // 2, 1), nn.Conv2d(channels, channels // 2, 1)
        self.norm1 = make(channels)
        self.mid = nn.Conv2d(channels, channels, 1)
        self.norm2 = make(channels)
        self.head = nn.Conv2d(channels, 4, 1)

    def forward(self, x):
        x = self.stem(x)
        x = self.norm1(torch.cat([self.a(x), self.b(x)], 1))
        return self.head(self.norm2(self.mid(x)))


class FunctionalBatchNorm(nn.Module):
    """F.batch_norm with weight and bias computed in the graph."""

    def __init__(self, channels):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)
        self.scale = nn.Parameter(torch.ones(channels))

    def forward(self, x):
        n = self.norm
        return F.batch_norm(x, n.running_mean, n.running_var, n.weight * self.scale, n.bias + 1, False, 0.1, n.eps)


class ElementwiseActs(nn.Module):
    """timm's activation modules and pointwise torch functions in a row."""

    def __init__(self, channels):
        super().__init__()
        self.acts = nn.Sequential(Swish(), Mish(), HardSwish(), HardSigmoid(), GELUTanh(), nn.Softplus(), nn.SELU())

    def forward(self, x):
        return torch.clamp(self.acts(x), -1, 3).pow(2) + x.clamp(min=0).sqrt()


NORMS = {
    "timm BatchNormAct2d": lambda c: BatchNormAct2d(c, act_layer="silu", drop_layer=lambda: nn.Dropout(0.0)),
    "timm BatchNormAct2d PReLU": lambda c: BatchNormAct2d(c, act_layer=lambda inplace=False: nn.PReLU(c)),
    "functional batch_norm, computed weight": FunctionalBatchNorm,
    "timm GroupNormAct": lambda c: GroupNormAct(c, 4, act_layer="gelu"),
    "nn.GroupNorm": lambda c: nn.GroupNorm(8, c),
    "nn.InstanceNorm2d": lambda c: nn.InstanceNorm2d(c, affine=True),
    "torchvision FrozenBatchNorm2d": FrozenBatchNorm2d,
    "timm FrozenBatchNormAct2d": lambda c: FrozenBatchNormAct2d(c, act_layer="hard_swish"),
    "nn.PReLU per channel": lambda c: nn.PReLU(c),
    "timm PReLU per channel": lambda c: PReLU(c),
    "timm activations": ElementwiseActs,
}
OCTAVE_PARTS = (PerBranch, OctBatchNormFunction, OctGroupNormFunction, OctPReLUFunction, OctBatchNorm2d)


def convert(model, x, alpha=0.5):
    return octify.convert(model, alpha, example_inputs=(x,), plain_stem=False, min_size=2)


@pytest.mark.parametrize("kind", NORMS)
def test_each_kind_runs_per_branch_exactly_at_alpha_zero_and_on_block_constant_maps(kind):
    """Alpha 0 is the original exactly; per-pixel ops and statistics over 2x2-constant maps are the same on the
    half-size low branch, so such an input is reproduced at alpha 0.5 too."""
    model = randomize(NormNet(NORMS[kind])).eval()
    x = torch.randn(2, 3, 13, 10)
    with torch.no_grad():
        assert torch.equal(convert(model, x, 0.0).module(x), model(x))
    x = block_constant(3, 16, 12)
    conversion = convert(model, x)
    assert not [note for note in conversion.notes if note.kind in ("merge", "split")], conversion.explain()
    octave = [name for name, m in conversion.module.named_modules() if isinstance(m, OctConv2d) and m.low_out]
    assert set(octave) == {"stem", "a", "b", "mid"}, conversion.explain()
    with torch.no_grad():
        torch.testing.assert_close(conversion.module(x), model(x), rtol=1e-4, atol=1e-5)


def test_batch_norm_act_in_training_updates_every_channels_running_mean():
    model = randomize(NormNet(NORMS["timm BatchNormAct2d"])).train()
    x = block_constant(3, 16, 12)
    octave = convert(model, x).module
    torch.testing.assert_close(octave(x), model(x), rtol=1e-4, atol=1e-5)
    for name in ("norm1", "norm2"):  # norm1 after a concat: its low channels are not the last ones
        torch.testing.assert_close(octave.get_submodule(name).running_mean, model.get_submodule(name).running_mean,
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("split", [ChannelSplit.trailing(6, 2), ChannelSplit.concat(
    [ChannelSplit.trailing(3, 1), ChannelSplit.trailing(3, 1)])], ids=["trailing", "concat"])
def test_functional_batch_norm_on_each_branch_writes_running_statistics_back(split):
    high, low = torch.randn(2, split.n_high, 6, 6), torch.randn(2, split.n_low, 3, 3)
    mean, var, weight, bias = torch.randn(6), torch.rand(6) + 0.5, torch.randn(6), torch.randn(6)
    ref_mean, ref_var = mean.clone(), var.clone()
    out = OctBatchNormFunction(split)((high, low), mean, var, weight, bias, True, 0.1, 1e-5)
    for branch, index, result in ((high, split.high_index, out[0]), (low, split.low_index, out[1])):
        index = list(index)
        branch_mean, branch_var = ref_mean[index].clone(), ref_var[index].clone()
        expected = F.batch_norm(branch, branch_mean, branch_var, weight[index], bias[index], True, 0.1, 1e-5)
        torch.testing.assert_close(result, expected)
        torch.testing.assert_close(mean[index], branch_mean)
        torch.testing.assert_close(var[index], branch_var)
    assert not torch.equal(mean, ref_mean)


def test_group_norm_and_prelu_slice_per_channel_parameters():
    split = ChannelSplit.concat([ChannelSplit.trailing(4, 2), ChannelSplit.trailing(4, 2)])  # low: 2, 3, 6, 7
    high, low = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 3, 3)
    weight, bias = torch.randn(8), torch.randn(8)
    h, l = list(split.high_index), list(split.low_index)
    out = OctGroupNormFunction(split, 2, 2)((high, low), weight, bias, 1e-5)
    assert_same(out, (F.group_norm(high, 2, weight[h], bias[h]), F.group_norm(low, 2, weight[l], bias[l])))
    out = OctPReLUFunction(split)((high, low), weight)
    assert_same(out, (F.prelu(high, weight[h]), F.prelu(low, weight[l])))
    norm = randomize(nn.GroupNorm(4, 8))
    pair = PerBranch.sliced(norm, split, lambda n: nn.GroupNorm(n // 2, n))
    assert_same(pair((high, low)), (F.group_norm(high, 2, norm.weight[h], norm.bias[h]),
                                    F.group_norm(low, 2, norm.weight[l], norm.bias[l])))


def test_group_norm_whose_groups_the_split_cuts_stays_plain_and_says_why():
    model = randomize(NormNet(lambda c: nn.GroupNorm(3, c), channels=12)).eval()
    x = block_constant(3, 16, 16)
    conversion = convert(model, x)  # 6 of 12 channels low: group 1 (channels 4-7) is cut
    assert "3 groups of 4 channels do not each lie in one branch: 6 of 12 channels are low" in conversion.explain()
    assert type(conversion.module.get_submodule("norm2")) is nn.GroupNorm
    with torch.no_grad():
        torch.testing.assert_close(conversion.module(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("norm, reason", [(lambda c: nn.LayerNorm([c, 8, 8]), "LayerNorm normalizes each position "
                                           "over all its channels"), (LayerNorm2d, ".permute() has no octave rule")])
def test_layer_norms_mix_channels_and_end_the_octave_region(norm, reason):
    model = NormNet(norm).eval()
    conversion = convert(model, torch.randn(1, 3, 8, 8))
    assert reason in conversion.explain()
    assert not any(isinstance(m, OCTAVE_PARTS) for m in conversion.module.modules())


class ScaledBatchNorm(nn.BatchNorm2d):
    """A BatchNorm that computes more than BatchNorm: its rule must not apply."""

    def forward(self, x):
        return super().forward(x) * 2


class NamedBatchNorm(nn.BatchNorm2d):
    """Adds a method, changes nothing BatchNorm computes: BatchNorm's rule applies."""

    def describe(self):
        return "named"


def test_a_subclass_gets_its_base_rule_only_if_it_computes_the_same():
    model = randomize(NormNet(ScaledBatchNorm)).eval()
    model.norm2 = randomize(NamedBatchNorm(16)).eval()
    x = block_constant(3, 8, 8)
    conversion = octify.convert(model, 0.5, example_inputs=(x,), plain_stem=False, min_size=2,
                                leaf_modules=[ScaledBatchNorm, NamedBatchNorm])
    assert type(conversion.module.norm1) is ScaledBatchNorm
    assert type(conversion.module.norm2) is OctBatchNorm2d
    assert "ScaledBatchNorm redefines forward of BatchNorm2d" in conversion.explain()
    with torch.no_grad():
        torch.testing.assert_close(conversion.module(x), model(x), rtol=1e-5, atol=1e-5)


def test_a_forward_replaced_on_the_instance_keeps_the_module_plain():
    model = randomize(NormNet(nn.BatchNorm2d)).eval()
    model.norm1.forward = lambda x: nn.BatchNorm2d.forward(model.norm1, x) + 1
    x = block_constant(3, 8, 8)
    conversion = convert(model, x)
    assert "has its forward replaced on the instance" in conversion.explain()
    assert type(conversion.module.norm2) is OctBatchNorm2d
    with torch.no_grad():
        torch.testing.assert_close(conversion.module(x), model(x), rtol=1e-5, atol=1e-5)


def test_pointwise_function_with_a_per_pixel_tensor_argument_is_a_boundary():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.gate, self.head = nn.Conv2d(3, 8, 1), nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 1)

        def forward(self, x):
            y = self.conv(x)
            return self.head(y) + y.clamp(min=self.gate(x))

    conversion = convert(Net(), torch.randn(1, 3, 8, 8))
    assert "does not apply alike to both branches" in conversion.explain()


def test_drop_path_in_training_draws_one_mask_for_both_branches():
    model = randomize(NormNet(lambda c: nn.Sequential(BatchNormAct2d(c), DropPath(0.5)))).train()
    x = block_constant(3, 8, 8, batch=8)
    conversion = convert(model, x)
    assert not [note for note in conversion.notes if note.kind == "merge" and "norm" in note.name]
    torch.manual_seed(1)
    expected = model(x)
    torch.manual_seed(1)
    torch.testing.assert_close(conversion.module(x), expected, rtol=1e-4, atol=1e-5)


def macs(module, x):
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(x)
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("name", ["efficientnet_b0", "regnety_002"])
def test_timm_models_save_a_quarter_of_their_macs(name):
    """Two families built of timm's ConvNormAct (BatchNormAct2d), SiLU / ReLU and squeeze-excitation."""
    model = timm.create_model(name, pretrained=False).eval()
    x = torch.randn(1, 3, 64, 64)
    conversion = octify.convert(model, 0.5, example_inputs=(x,), min_size=2)
    before, after = macs(model, x), macs(conversion.module, x)
    assert (conversion.report.original.macs, conversion.report.converted.macs) == (before, after)
    assert after / before <= 0.75


def test_timm_model_at_alpha_zero_is_the_original_exactly():
    model = timm.create_model("mobilenetv3_small_050", pretrained=False).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(octify.convert(model, 0.0, example_inputs=(x,)).module(x), model(x))


class RepBlockNet(nn.Module):
    """RepVGG-style blocks: each conv's normalized output re-joins the block input; then flatten and a classifier."""

    def __init__(self, channels=16):
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 1)
        self.k3 = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in range(2))
        self.k1 = nn.ModuleList(nn.Conv2d(channels, channels, 1) for _ in range(2))
        self.bn = nn.ModuleList(BatchNormAct2d(channels, apply_act=False) for _ in range(6))
        self.head = nn.Linear(channels * 64, 4)

    def forward(self, x):
        x = self.stem(x)
        for i in range(2):
            x = torch.relu(self.bn[3 * i](self.k3[i](x)) + self.bn[3 * i + 1](self.k1[i](x)) + self.bn[3 * i + 2](x))
        return self.head(x.flatten(1))


def test_a_class_whose_convolutions_rejoin_it_is_octave_even_if_only_a_classifier_follows():
    model = randomize(RepBlockNet()).eval()
    x = torch.randn(2, 3, 8, 8)
    conversion = convert(model, x)
    octave = {name for name, m in conversion.module.named_modules() if isinstance(m, OctConv2d) and m.low_out}
    assert octave == {"stem", "k3.0", "k3.1", "k1.0", "k1.1"}, conversion.explain()
    assert macs(conversion.module, x) < 0.6 * macs(model, x)
