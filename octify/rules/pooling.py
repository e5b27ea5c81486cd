"""Max and average pooling of feature maps, run on each branch."""
from __future__ import annotations

import inspect
from typing import Any, Dict, Optional, Tuple

import torch.nn.functional as F
from torch import fx, nn

from .branchwise import rewrite_branch_function, rewrite_branch_module
from .registry import PER_BRANCH, Rule, register

POOLS = (nn.MaxPool2d, nn.AvgPool2d)
POOL_FUNCTIONS = (F.max_pool2d, F.avg_pool2d)
POOL_SIGNATURES = {
    F.max_pool2d: inspect.Signature.from_callable(
        lambda input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False: 0),
    F.avg_pool2d: inspect.Signature.from_callable(
        lambda input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
        divisor_override=None: 0),
}
SIZE_CHECK_LIMIT = 1024


def _pool_output(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool) -> int:
    """PyTorch's pooling output size along one dimension."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _pool_geometry(node: fx.Node, modules: Dict[str, nn.Module]) -> Optional[Dict[str, Any]]:
    if node.op == "call_module":
        pool = modules[node.target]
        params = {"kernel_size": pool.kernel_size, "stride": pool.stride, "padding": pool.padding,
                  "dilation": getattr(pool, "dilation", 1), "ceil_mode": pool.ceil_mode}
        extra = getattr(pool, "return_indices", False) or getattr(pool, "divisor_override", None)
    else:
        signature = POOL_SIGNATURES[node.target]
        try:
            bound = signature.bind(*node.args, **node.kwargs)
        except TypeError:
            return None
        bound.apply_defaults()
        params = {k: bound.arguments.get(k, 1) for k in ("kernel_size", "stride", "padding", "dilation", "ceil_mode")}
        params["stride"] = params["stride"] or params["kernel_size"]
        extra = bound.arguments.get("return_indices") or bound.arguments.get("divisor_override")
    return None if extra else params


def check_pooling(node: fx.Node, modules: Dict[str, nn.Module]) -> Optional[str]:
    """Per-branch pooling must keep the low branch at ceil(half) of the high branch at every input size."""
    params = _pool_geometry(node, modules)
    if params is None:
        return "pooling with indices or a divisor override has no octave rule"
    per_dim = [tuple(_pair(params[k])[d] for k in ("kernel_size", "stride", "padding", "dilation")) + (
        bool(params["ceil_mode"]),) for d in (0, 1)]
    for kernel, stride, padding, dilation, ceil_mode in per_dim:
        for size in range(2, SIZE_CHECK_LIMIT):
            high = _pool_output(size, kernel, stride, padding, dilation, ceil_mode)
            low = _pool_output((size + 1) // 2, kernel, stride, padding, dilation, ceil_mode)
            if high > 0 and low != (high + 1) // 2:
                return (f"this pooling (kernel {kernel}, stride {stride}, padding {padding}) would leave the "
                        f"low branch off half the high size for {size}-pixel inputs")
    return None


def _pair(value: Any) -> Tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


register(Rule(PER_BRANCH, rewrite_branch_module, check_pooling), *POOLS)
register(Rule(PER_BRANCH, rewrite_branch_function, check_pooling), *POOL_FUNCTIONS)
