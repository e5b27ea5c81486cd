"""torchvision's classification models, and the segmentation families, convert and run.

One model per family runs by default; ``OCTIFY_ALL_MODELS=1`` runs all 80 classifiers (about
45 minutes on 2 cores). For each model: alpha 0 reproduces it exactly; alpha 0.25 / 0.5 / 0.75 convert, run in eval
mode at 224x224 and at an odd size the model accepts, keep output structure and shapes,
and train (forward and backward, at a small size the model accepts); a model with
convertible convolutions costs fewer multiply-accumulates than before, and the report's
counts of both models equal FlopCounterMode's (FLOPs / 2) exactly. At alpha 0.5,
``octify.for_inference`` of the converted model gives its outputs to float32 rounding. A model where no
convolution converts gives the alpha 0 graph at every alpha, so that graph runs once.
"""
import gc
import os
import warnings
from collections.abc import Mapping

import pytest
import torch
import torchvision
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from torch.utils._pytree import tree_flatten

import octify
from octify.layers import OctConv2d

CLASSIFICATION = torchvision.models.list_models(module=torchvision.models)
FAMILY_SAMPLE = [  # one model per torchvision family (its model module), plus the paper's ResNet-50
    "alexnet", "convnext_tiny", "densenet121", "efficientnet_b0", "efficientnet_v2_s", "googlenet", "inception_v3",
    "maxvit_t", "mnasnet0_5", "mobilenet_v2", "mobilenet_v3_small", "regnet_x_400mf", "regnet_y_400mf", "resnet18",
    "resnet50", "resnext50_32x4d", "shufflenet_v2_x1_0", "squeezenet1_1", "swin_t", "swin_v2_t", "vgg11_bn",
    "vit_b_32",
]
MODELS = CLASSIFICATION if os.environ.get("OCTIFY_ALL_MODELS") else FAMILY_SAMPLE
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
    """The output's structure with shapes for tensors (an OrderedDict compares as the dict fx returns)."""
    if isinstance(output, Mapping):
        return {key: shapes(value) for key, value in output.items()}
    if isinstance(output, (tuple, list)):
        return [shapes(value) for value in output]
    return tuple(output.shape)


def fake_shapes(model, x):
    """The output shapes ``model`` gives for ``x``, computed on fake tensors (no compute); None if it rejects ``x``."""
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    try:
        with mode, torch.no_grad():
            return shapes(model(mode.from_tensor(x)))
    except Exception:  # fixed-size models (ViT, MaxViT, ...)
        return None


def small_input(model):
    """A batch of 2 at the smallest of a few sizes the model accepts; fixed-size models get one 224x224 image."""
    for size in ((64, 64), (128, 128)):
        if fake_shapes(model, torch.empty(2, 3, *size)) is not None:
            return torch.randn(2, 3, *size)
    return torch.randn(1, 3, *SIZE)


def run_counting_macs(module, x):
    """The output, and the multiply-accumulates FlopCounterMode measures (FLOPs / 2).

    Attention runs unfused: FlopCounterMode does not see inside the fused kernels. No grad
    rather than inference mode: FlopCounterMode's module tracker hooks parameters passed to a
    submodule (octave norm functions take theirs as arguments), which inference mode forbids.
    """
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH), torch.no_grad():
            output = module(x)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return output, counter.get_total_flops() // 2


def octave_layers(module):
    return [m for m in module.modules() if isinstance(m, OctConv2d) and not m.is_plain]


def test_coverage_list_is_complete():
    assert len(CLASSIFICATION) == 80
    assert set(FAMILY_SAMPLE) <= set(CLASSIFICATION)
    families = {torchvision.models.get_model_builder(name).__module__ for name in CLASSIFICATION}
    assert families == {torchvision.models.get_model_builder(name).__module__ for name in FAMILY_SAMPLE}


@pytest.mark.parametrize("name", MODELS + SEGMENTATION)
def test_model_converts_and_runs(name):
    torch.manual_seed(0)
    model = build(name).eval()
    x, odd_x = torch.randn(1, 3, *SIZE), torch.randn(1, 3, *ODD_SIZE)
    reference, measured_macs = run_counting_macs(model, x)
    odd_shapes = fake_shapes(model, odd_x)
    train_x = small_input(model)

    plain = octify.convert(model, 0.0, example_inputs=(x,)).module.eval()
    with torch.inference_mode():
        torch.testing.assert_close(plain(x), reference, rtol=1e-5, atol=1e-5)
    _train_step(plain, train_x)
    plain_code = plain.code
    del plain  # the largest models hold gigabytes of weights: keep one conversion alive at a time

    for alpha in ALPHAS:
        conversion = octify.convert(model, alpha, example_inputs=(x,))
        converted, costs = conversion.module.eval(), conversion.report
        assert costs.original.macs == measured_macs
        if not octave_layers(converted):  # nothing converts: the alpha 0 graph, already run
            assert converted.code == plain_code
            assert costs.converted.macs == costs.original.macs
            assert conversion.notes, "a model left plain must say why"
        else:
            assert costs.converted.macs < costs.original.macs, conversion.explain()
            output, converted_macs = run_counting_macs(converted, x)
            assert costs.converted.macs == converted_macs
            assert shapes(output) == shapes(reference)
            with torch.inference_mode():
                if odd_shapes is not None:
                    assert shapes(converted(odd_x)) == odd_shapes
            if alpha == 0.5:
                _check_for_inference(converted, x, output)
            _train_step(converted, train_x)
        del conversion, converted
        gc.collect()


def _check_for_inference(module, x, expected):
    """The optimized copy (BatchNorm folded, fused octave layers, epilogues) computes the same outputs."""
    fast = octify.for_inference(module)
    with torch.inference_mode():
        actual = fast(x)
    del fast
    assert shapes(actual) == shapes(expected)
    for got, want in zip(tree_flatten(actual)[0], tree_flatten(expected)[0]):
        scale = max(1.0, want.abs().max().item())
        torch.testing.assert_close(got, want, rtol=0, atol=1e-4 * scale)


def _train_step(module, x):
    module.train()
    outputs = tree_flatten(module(x))[0]
    loss = sum((leaf * torch.randn_like(leaf)).sum() for leaf in outputs)
    loss.backward()
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    assert grads, "no parameter received a gradient"
    assert all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    module.zero_grad(set_to_none=True)
