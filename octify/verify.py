"""Checks that a converted module is called like the original and returns the same structure and shapes."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._pytree import tree_flatten

from .errors import ConversionError


def output_signature(module: nn.Module, inputs: Sequence[torch.Tensor]) -> Any:
    """The output's structure with each tensor replaced by its shape (computed on fake tensors)."""
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    fakes = [mode.from_tensor(x) if isinstance(x, torch.Tensor) else x for x in inputs]
    with mode, torch.no_grad():
        leaves, spec = tree_flatten(module(*fakes))
    return spec, [tuple(v.shape) if isinstance(v, torch.Tensor) else v for v in leaves]


def check_same_outputs(original: nn.Module, converted: nn.Module, inputs: Sequence[torch.Tensor]) -> None:
    """ConversionError unless ``converted`` returns what ``original`` returns, shape for shape."""
    try:
        expected = output_signature(original, inputs)
    except Exception:
        return  # the original cannot run on fake tensors (data-dependent code): nothing to compare here
    try:
        produced = output_signature(converted, inputs)
    except Exception as error:
        raise ConversionError(f"the converted module fails on the example input ({type(error).__name__}: "
                              f"{error})") from error
    if produced != expected:
        raise ConversionError(f"the converted module returns {produced[1]} instead of {expected[1]}")
