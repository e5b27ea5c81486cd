"""Every torchvision classification model, and the segmentation families, convert and run.

For each model: alpha 0 reproduces it exactly; alpha 0.25 / 0.5 / 0.75 convert, run in eval
mode at 224x224 and at an odd size the model accepts, keep output structure and shapes,
train (forward and backward, batch 2 at a small size the model accepts); at alpha 0.5 a model with convertible convolutions costs
fewer multiply-accumulates than before.
"""
import warnings

import pytest
import torch
import torchvision
from torch.utils._pytree import tree_flatten

import octify
from octify.layers import OctConv2d

CLASSIFICATION = torchvision.models.list_models(module=torchvision.models)
SEGMENTATION = ["fcn_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"]
ALPHAS = (0.25, 0.5, 0.75)
SIZE, ODD_SIZE = (224, 224), (225, 199)


def build(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name in SEGMENTATION:
            return torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=5)
        return torchvision.models.get_model(name, weights=None)


def shapes(output):
    leaves, spec = tree_flatten(output)
    return spec, [tuple(leaf.shape) for leaf in leaves]


def small_input(model):
    """The smallest of a few sizes the model accepts, to keep training steps cheap."""
    for size in ((80, 80), (128, 128)):
        x = torch.randn(2, 3, *size)
        try:
            with torch.no_grad():
                model(x)
            return x
        except Exception:
            continue
    return torch.randn(2, 3, *SIZE)


def odd_input(model):
    x = torch.randn(1, 3, *ODD_SIZE)
    try:
        with torch.no_grad():
            return x, model(x)
    except Exception:  # fixed-size models (ViT, MaxViT, ...)
        return None, None


def test_coverage_list_is_complete():
    assert len(CLASSIFICATION) == 80


@pytest.mark.parametrize("name", CLASSIFICATION + SEGMENTATION)
def test_model_converts_and_runs(name):
    torch.manual_seed(0)
    model = build(name).eval()
    x = torch.randn(1, 3, *SIZE)
    with torch.no_grad():
        reference = model(x)
    odd_x, odd_reference = odd_input(model)
    train_x = small_input(model)

    plain = octify.convert(model, 0.0, example_inputs=(x,))
    with torch.no_grad():
        torch.testing.assert_close(plain.module.eval()(x), reference, rtol=1e-5, atol=1e-5)

    for alpha in ALPHAS:
        conversion = octify.convert(model, alpha, example_inputs=(x,))
        converted = conversion.module.eval()
        octave = [m for m in converted.modules() if isinstance(m, OctConv2d) and not m.is_plain]
        costs = conversion.report
        if octave:
            assert costs.converted.macs < costs.original.macs, conversion.explain()
        else:
            assert costs.converted.macs == costs.original.macs
            assert conversion.notes, "a model left plain must say why"
        with torch.no_grad():
            assert shapes(converted(x)) == shapes(reference)
            if odd_x is not None:
                assert shapes(converted(odd_x)) == shapes(odd_reference)
        _train_step(conversion.module, train_x)


def _train_step(module, x):
    module.train()
    outputs = tree_flatten(module(x))[0]
    loss = sum((leaf * torch.randn_like(leaf)).sum() for leaf in outputs)
    loss.backward()
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    assert grads, "no parameter received a gradient"
    assert all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
