"""``leaf_modules``: one check, in the library, that every entry names something in the model."""
import re

import pytest
import torch
import torchvision
from torch import nn

import octify
from octify.layers import OctConv2d


def small_resnet():
    return torchvision.models.resnet18(weights=None, num_classes=10)


@pytest.mark.parametrize("spec, message", [
    ("nope", "leaf_modules 'nope': the model has no submodule or module class of that name"),
    ("layer4.O", "did you mean layer4.1 or layer4.0 or layer4?"),
    ("BasicBlok", "did you mean BasicBlock"),
    (3, "leaf_modules: expected submodule names or nn.Module classes, got 3"),
])
def test_a_leaf_that_names_nothing_is_refused_with_suggestions(spec, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        octify.convert(small_resnet(), input_shape=(1, 3, 64, 64), leaf_modules=[spec])


@pytest.mark.parametrize("spec", ["BasicBlock", "torchvision.models.resnet.BasicBlock"])
def test_a_class_by_name_or_dotted_path_keeps_every_instance(spec):
    module = octify.convert(small_resnet(), input_shape=(1, 3, 64, 64), leaf_modules=[spec]).module
    assert type(module.get_submodule("layer2.1")).__name__ == "BasicBlock"
    assert isinstance(module.conv1, nn.Conv2d) and not any(isinstance(m, OctConv2d) for m in module.modules())


def test_the_cost_report_checks_its_leaves_too():
    with pytest.raises(ValueError, match="leaf_modules 'layer9'"):
        octify.cost(small_resnet(), input_shape=(1, 3, 64, 64), leaf_modules=["layer9"])
    assert octify.cost(small_resnet(), example_inputs=(torch.randn(1, 3, 64, 64),), leaf_modules=["layer4"]).macs > 0
