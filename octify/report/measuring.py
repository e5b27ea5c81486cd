"""Counting by measurement, for operations no counting rule covers and PyTorch does not define.

A leaf module of the user's or a third party's (``--leaf``, an untraceable submodule), or a
third-party function in the graph, runs once under ``FlopCounterMode`` on fake tensors of its
recorded input shapes: the counter sees every matrix product and convolution inside it, and
nothing is computed. Attention runs unfused (math kernel, no ``nn.MultiheadAttention`` fast
path) so that the counter sees it. Operations of PyTorch itself without a rule
(element-wise, pooling, normalization, reshaping) count 0 MACs, as in ``FlopCounterMode``.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import fx, nn
from torch._subclasses.fake_tensor import FakeTensorMode
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
    """The multiply-accumulates ``FlopCounterMode`` counts for ``call`` on fake inputs; None if it cannot run."""
    mode = FakeTensorMode(allow_non_fake_inputs=True)

    def fake(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return torch.empty(value.shape, dtype=value.dtype, device=value.device)
        return value

    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with mode:
            args, kwargs = tree_map(fake, (call.args, call.kwargs))
        with mode, FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH), torch.no_grad():
            call.target(*args, **kwargs)
    except Exception:  # not runnable on fake tensors: the caller lists it as not counted
        return None
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return counter.get_total_flops() // 2
