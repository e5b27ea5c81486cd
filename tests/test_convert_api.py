"""The convert() contract: schedules, defaults, capture fallbacks, clear errors, and the input model untouched."""
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import octify
from octify.layers import OctConv2d, OctMerge, OctSplit


def octave_names(module):
    """Convolutions with an octave output."""
    return {name for name, m in module.named_modules() if isinstance(m, OctConv2d) and m.alpha_out > 0}


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


def test_defaults_follow_the_paper():
    conversion = octify.convert(torchvision.models.resnet50(weights=None), 0.5)
    module = conversion.module
    assert type(module.get_submodule("conv1")) is nn.Conv2d  # the stem stays plain
    for name in ("layer1.0.conv1", "layer1.0.downsample.0"):  # the first octave layers read a plain map
        layer = module.get_submodule(name)
        assert (layer.alpha_in, layer.alpha_out) == (0.0, 0.5)
    for name, layer in module.named_modules():  # the 7x7 stage is plain
        if name.startswith("layer4") and isinstance(layer, OctConv2d):
            assert layer.alpha_out == 0.0, name
    for name in ("layer4.0.conv1", "layer4.0.downsample.0"):  # ... and is entered from octave maps
        layer = module.get_submodule(name)
        assert (layer.alpha_in, layer.alpha_out) == (0.5, 0.0)
    reasons = {note.name: note.reason for note in conversion.notes if note.kind == "plain"}
    assert "stem" in reasons["conv1"] and "7x7" in reasons["layer4.1.conv1"]


def test_stem_output_joining_a_residual_stream_is_split(resnet18):
    conversion = octify.convert(resnet18, 0.5)
    assert type(conversion.module.get_submodule("conv1")) is nn.Conv2d
    assert conversion.module.get_submodule("layer1.0.conv2").alpha_out == 0.5
    assert any(note.kind == "split" and note.name == "split_conv1" for note in conversion.notes)


def test_a_convolution_scheduled_plain_keeps_a_plain_output(resnet18):
    conversion = octify.convert(resnet18, {"layer1.0.conv2": 0, "*": 0.5})
    layer = conversion.module.get_submodule("layer1.0.conv2")
    assert isinstance(layer, OctConv2d) and layer.alpha_out == 0.0
    assert conversion.module.get_submodule("layer1.1.conv2").alpha_out == 0.5


def test_differing_alphas_joined_by_an_add_are_explained(resnet18):
    conversion = octify.convert(resnet18, {"layer1.1.conv2": 0.25, "*": 0.5})
    assert conversion.module.get_submodule("layer1.1.conv2").alpha_out == 0.5
    notes = [note for note in conversion.notes if note.kind == "schedule"]
    assert notes and notes[0].name == "layer1.1.conv2" and "gives way" in notes[0].reason


def test_pattern_schedule_first_match_wins(resnet18):
    conversion = octify.convert(resnet18, {"layer3.*": 0, "layer2.*": 0.25, "*": 0.5})
    module = conversion.module
    assert module.get_submodule("layer2.1.conv1").alpha_out == 0.25
    assert module.get_submodule("layer1.1.conv1").alpha_out == 0.5
    assert not any(name.startswith("layer3") for name in octave_names(module))
    reasons = {note.name: note.reason for note in conversion.notes}
    assert "layer3.*" in reasons["layer3.1.conv1"]


def test_unmatched_pattern_warns(resnet18):
    with pytest.warns(UserWarning, match="layer9"):
        octify.convert(resnet18, {"layer9.*": 0.5, "*": 0.5})


@pytest.mark.parametrize("alpha", [-0.1, 1.0, 1.5, math.nan, "half", None, True, {"*": 2}])
def test_bad_alpha_is_a_clear_value_error(resnet18, alpha):
    with pytest.raises(ValueError, match="alpha"):
        octify.convert(resnet18, alpha)


@pytest.mark.parametrize("shape", [(1, 3, 0, 10), "1,3,224,224", (1.5, 3, 8, 8)])
def test_bad_input_shape_is_a_clear_value_error(resnet18, shape):
    with pytest.raises(ValueError, match="input_shape"):
        octify.convert(resnet18, 0.5, input_shape=shape)


def test_input_shape_the_model_rejects_is_a_conversion_error(resnet18):
    with pytest.raises(octify.ConversionError, match=r"rejects an input of shape \(1, 5, 64, 64\)"):
        octify.convert(resnet18, 0.5, input_shape=(1, 5, 64, 64))


class LinearAfterFlatten(nn.Module):
    """Accepts 64x64 inputs only: the most common first mistake is converting it at 224x224."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 64 * 64, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.conv(x), 1))


def test_a_rejected_input_size_prints_nothing_but_the_error(capfd):
    with pytest.raises(octify.ConversionError, match=r"rejects an input of shape \(1, 3, 224, 224\).*mat1 and mat2"):
        octify.convert(LinearAfterFlatten(), 0.5)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_the_input_model_is_never_modified(resnet18):
    model = torchvision.models.resnet18(weights=None).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    octify.convert(model, 0.5, input_shape=(2, 3, 64, 64))
    assert model.training and all(m.training for m in model.modules())
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert type(model.conv1) is nn.Conv2d and not model._forward_hooks


class ValueBranching(nn.Module):
    """Its forward branches on a tensor value: fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        return self.conv(x) if x.mean() > -100 else x


class HasUntraceablePart(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 8, 3, padding=1))
        self.gate = ValueBranching()
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        if x.shape[-1] % 8:  # size-dependent padding, as segmentation models do
            x = F.pad(x, (0, 8 - x.shape[-1] % 8, 0, 8 - x.shape[-2] % 8))
        return self.head(self.gate(self.body(self.stem(x))))


def test_untraceable_parts_are_captured_anyway_and_reported():
    model = HasUntraceablePart().eval()
    x = torch.randn(1, 3, 30, 30)
    conversion = octify.convert(model, 0.5, example_inputs=(x,))
    assert "fixed shapes" in conversion.capture_method and "gate" in conversion.capture_method
    assert any(note.kind == "leaf" and note.name == "gate" for note in conversion.notes)
    assert "body.0" in octave_names(conversion.module)
    with torch.no_grad():
        assert conversion.module.eval()(x).shape == model(x).shape


def test_root_that_cannot_be_traced_names_it_and_suggests_leaf_modules():
    with pytest.raises(octify.ConversionError, match="ValueBranching.*leaf_modules"):
        octify.convert(ValueBranching(), 0.5, input_shape=(1, 8, 16, 16))


def test_untraceable_submodule_without_auto_leaf_is_an_error_naming_it():
    with pytest.raises(octify.ConversionError, match="gate.*leaf_modules"):
        octify.convert(HasUntraceablePart(), 0.5, input_shape=(1, 3, 32, 32), auto_leaf=False)


def test_user_leaf_modules_stay_as_they_are():
    model = HasUntraceablePart().eval()
    conversion = octify.convert(model, 0.5, input_shape=(1, 3, 32, 32), leaf_modules=["body"])
    assert not any(name.startswith("body") for name in octave_names(conversion.module))
    assert type(conversion.module.get_submodule("body")) is nn.Sequential


def test_conversions_are_inserted_once_per_tensor():
    class TwoConsumers(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1)

        def forward(self, x):
            y = self.b(self.a(x))
            return y.flatten(1).sum(1), y.mean((2, 3)) + y.amax((2, 3))

    conversion = octify.convert(TwoConsumers(), 0.5, input_shape=(1, 3, 16, 16), plain_stem=False)
    merges = [m for m in conversion.module.modules() if isinstance(m, OctMerge)]
    assert len(merges) == 1
    kinds = {note.kind for note in conversion.notes}
    assert "merge" in kinds


def test_plain_input_entering_an_octave_region_is_split_once():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            y = self.b(torch.relu(self.a(x))) + x
            return self.b(y) + x

    conversion = octify.convert(Residual(), 0.5, input_shape=(1, 8, 16, 16), plain_stem=False)
    splits = [m for m in conversion.module.modules() if isinstance(m, OctSplit)]
    assert len(splits) == 1
    assert any(note.kind == "split" and "enters the octave region" in note.reason for note in conversion.notes)


def test_code_reads_naturally(resnet18):
    code = octify.convert(resnet18, 0.5).module.code
    assert "self.layer1" in code and "octify_ops_add(" in code


def test_converted_model_explains_little_change():
    model = torchvision.models.vit_b_32(weights=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        conversion = octify.convert(model, 0.5)
    assert not octave_names(conversion.module)
    assert "conv_proj" in conversion.explain()


@pytest.mark.parametrize("alpha, paper_gmacs", [(0.125, 3.6), (0.25, 3.1), (0.5, 2.4), (0.75, 1.9)])
def test_resnet50_reproduces_the_papers_table_2(alpha, paper_gmacs):
    report = octify.convert(torchvision.models.resnet50(weights=None), alpha).report
    assert report.original.macs == pytest.approx(4.09e9, rel=0.005)
    assert report.converted.macs / 1e9 == pytest.approx(paper_gmacs, rel=0.03)
    if alpha == 0.5:  # the published hand-converted Oct-ResNet-50
        assert report.converted.macs / 1e9 == pytest.approx(2.367, rel=0.001)
