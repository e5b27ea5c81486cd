"""Counting by measurement, for operations no counting rule covers and PyTorch does not define.

A leaf module of the user's or a third party's (``--leaf``, an untraceable submodule), or a
third-party function in the graph, runs once under ``FlopCounterMode`` on fake tensors of its
recorded input shapes: the counter sees every matrix product and convolution inside it, and
nothing is computed. A leaf whose code branches on its input's values (data-dependent
control flow) cannot run on fake tensors; it runs once on a fixed random input of those
shapes instead. Code that leaves torch (numpy) stays uncounted: the counter would not see it. Attention runs unfused (math kernel, no ``nn.MultiheadAttention`` fast
path) so that the counter sees it. Operations of PyTorch itself without a rule
(element-wise, pooling, normalization, reshaping) count 0 MACs, as in ``FlopCounterMode``.
"""
from __future__ import annotations

import contextlib
from typing import Any, Optional

import torch
from torch import fx, nn
from torch._subclasses.fake_tensor import DataDependentOutputException, DynamicOutputShapeException, FakeTensorMode
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import FlopCounterMode

from .rules import OpCall

MEASURED = "measured: FlopCounterMode on fake tensors"
_BUILT_IN = {"torch", "octify", "operator", "_operator", "builtins", "math"}


def needs_measuring(node: fx.Node, module: Optional[nn.Module], params: int) -> bool:
    """True for a call no rule covers whose target is not PyTorch's or octify's own, or a leaf with parameters."""
    if node.op == "call_method":
        return False
    if module is not None:
        return bool(params) or not _built_in(type(module).__module__)
    return not _built_in(getattr(node.target, "__module__", None) or "")


def _built_in(module_name: str) -> bool:
    return module_name.partition(".")[0] in _BUILT_IN


def measured_macs(call: OpCall) -> Optional[int]:
    """The multiply-accumulates ``FlopCounterMode`` counts for ``call`` on fake inputs, or, for a call whose
    code branches on its inputs' values (fake tensors have none), on a fixed random input of the same shapes;
    None if it runs on neither (code outside torch, such as numpy, would go uncounted on a real run)."""
    parameter = next(call.target.parameters(), None) if isinstance(call.target, nn.Module) else None
    device = parameter.device if parameter is not None else torch.device("cpu")  # for shapes recorded on meta
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    with fake_mode:
        fakes = tree_map(lambda value: _like(value, torch.empty, device), (call.args, call.kwargs))
    try:
        return _count(call.target, *fakes, mode=fake_mode)
    except (DataDependentOutputException, DynamicOutputShapeException):
        randoms = tree_map(lambda value: _like(value, _random, device), (call.args, call.kwargs))
        try:
            return _count(call.target, *randoms)
        except Exception:  # listed as not counted
            return None
    except Exception:  # not runnable on fake tensors: the caller lists it as not counted
        return None


def _like(value: Any, make: Any, device: torch.device) -> Any:
    """A tensor like ``value`` made by ``make``, on ``device`` where ``value`` is on meta."""
    if isinstance(value, torch.Tensor):
        return make(value.shape, dtype=value.dtype, device=device if value.device.type == "meta" else value.device)
    return value


def _random(shape: torch.Size, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The same values on every call (an original and its conversion take the same branches)."""
    if dtype.is_floating_point or dtype.is_complex:
        return torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=dtype).to(device)
    return torch.zeros(shape, dtype=dtype, device=device)


def _count(target: Any, args: Any, kwargs: Any, mode: Any = None) -> int:
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with mode or contextlib.nullcontext(), FlopCounterMode(display=False) as counter, \
                sdpa_kernel(SDPBackend.MATH), torch.no_grad():
            target(*args, **kwargs)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return counter.get_total_flops() // 2
