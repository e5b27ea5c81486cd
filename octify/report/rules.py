"""The registry of counting rules: how many multiply-accumulates one operation performs.

Every rule computes its count from shapes alone (the graph's meta tensors and the
module's attributes); nothing is run. :data:`RULES` maps a key to a :class:`CountingRule`:

* an ``nn.Module`` subclass, for ``call_module`` nodes; the lookup follows the class's
  MRO, so a subclass uses its base's rule unless it registers its own;
* a function (``torch.matmul``, ``operator.matmul``, ``F.conv2d`` ...), for ``call_function``
  nodes;
* a ``torch.Tensor`` method (``torch.Tensor.matmul``), for ``call_method`` nodes.

An operation without a rule counts 0 MACs (element-wise ops, pooling, normalization,
resampling: the convention of ``FlopCounterMode`` and fvcore). Registering a new module
type is one decorator, for example for a fused layer::

    from octify.report import OpCall, register_rule

    @register_rule(FusedOctConv2d, remark="paths fused into one kernel")
    def fused_octconv_macs(call: OpCall) -> int:
        high = call.output[0]            # meta tensors: shapes, no data
        return ...                       # multiply-accumulates, not FLOPs

``call.target`` is the module instance (or the function), ``call.args`` / ``call.kwargs``
the call's arguments with every graph value replaced by its meta tensor (a tuple
``(high, low)`` for an octave value), ``call.output`` the output's meta value. A rule for
a module type that holds parameters also stops the report from listing it as uncounted.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple

from torch import nn

RuleKey = Any  # an nn.Module subclass, a function or a torch.Tensor method


@dataclass(frozen=True)
class OpCall:
    """One call of an operation, with meta tensors in place of graph values."""

    target: Any
    args: Tuple[Any, ...] = ()
    kwargs: Dict[str, Any] = field(default_factory=dict)
    output: Any = None

    def arg(self, position: int, name: str, default: Any = None) -> Any:
        """The argument passed at ``position`` or as keyword ``name``."""
        if position < len(self.args):
            return self.args[position]
        return self.kwargs.get(name, default)


@dataclass(frozen=True)
class CountingRule:
    """``macs(call)`` gives the multiply-accumulates; ``remark`` is shown next to the layer."""

    macs: Callable[[OpCall], int]
    remark: str = ""


RULES: Dict[RuleKey, CountingRule] = {}


def register_rule(*keys: RuleKey, remark: str = "") -> Callable[[Callable[[OpCall], int]], Callable[[OpCall], int]]:
    """Decorator: count ``keys`` (module types, functions, Tensor methods) with the decorated function."""
    def register(macs: Callable[[OpCall], int]) -> Callable[[OpCall], int]:
        for key in keys:
            RULES[key] = CountingRule(macs, remark)
        return macs
    return register


def find_rule(target: Any) -> Optional[CountingRule]:
    """The rule for a module instance (by its class's MRO), a function or a Tensor method."""
    if isinstance(target, nn.Module):
        for cls in type(target).__mro__:
            if cls in RULES:
                return RULES[cls]
        return None
    try:
        return RULES.get(target)
    except TypeError:  # an unhashable call target has no rule
        return None


def zero_macs(call: OpCall) -> int:
    """For operations that are known to perform no multiply-accumulates worth counting."""
    return 0
