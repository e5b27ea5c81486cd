"""``for_inference`` on a device and under autocast (half-precision convolutions)."""
import pytest
import torch
import torchvision

import octify
from octify.inference import Autocast

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def converted():
    return octify.convert(torchvision.models.resnet18(weights=None), 0.5, input_shape=(1, 3, 64, 64)).module


def test_bfloat16_autocast_wraps_the_optimized_graph_and_keeps_the_outputs(converted):
    x = torch.randn(2, 3, 64, 64)
    fast = octify.for_inference(converted, dtype=torch.bfloat16)
    assert isinstance(fast, Autocast) and isinstance(fast.module, torch.fx.GraphModule)
    with torch.inference_mode():
        reference, half = octify.for_inference(converted)(x), fast(x)
    assert half.dtype == torch.bfloat16 and half.shape == reference.shape
    assert (half.float() - reference).abs().max() <= 0.05 * reference.abs().max()  # bfloat16 keeps 8 bits


def test_only_half_dtypes_autocast(converted):
    with pytest.raises(ValueError, match="dtype must be torch.float16 or torch.bfloat16"):
        octify.for_inference(converted, dtype=torch.float64)


@needs_cuda
def test_on_cuda_in_float16_channels_last(converted):
    x = torch.randn(2, 3, 64, 64)
    fast = octify.for_inference(converted, device="cuda", dtype=torch.float16)
    assert all(p.device.type == "cuda" for p in fast.parameters())
    with torch.inference_mode():
        half = fast(x.cuda().contiguous(memory_format=torch.channels_last))
        reference = octify.for_inference(converted)(x)
    assert half.dtype == torch.float16
    assert (half.float().cpu() - reference).abs().max() <= 0.01 * reference.abs().max()


@needs_cuda
def test_tuning_measures_on_cuda(tmp_path):
    conversion = octify.tune(torchvision.models.resnet18(weights=None), fastest=True, device="cuda",
                             dtype=torch.float16, input_shape=(1, 3, 64, 64), cache_dir=tmp_path,
                             timer=octify.tuning.MedianTimer(repeats=3, warmup=1))
    assert conversion.report.latency.setting == "batch 1, cuda, autocast float16, eager"
    assert conversion.tuning.measured_ratio <= 1
