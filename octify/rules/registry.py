"""The one registry of op rules, keyed by module type, function, or ``("method", name)``.

A rule says how the planner treats a node (its category) and how the rewriter emits
its octave form. Supporting a new op is one :func:`register` call (and a test).

Categories:

* ``CONV``: becomes an OctConv2d; its output split is decided by the schedule.
* ``PER_BRANCH``: runs on each branch; output split = input split (activations, BN, pooling, resizing).
* ``ELEMENTWISE``: add/sub/mul/div; same-shape feature maps must share one split, per-channel
  vectors are split by channel, scalars apply to both branches.
* ``CAT``: channel concat; the output split is the concatenation of the inputs' splits.
* ``GLOBAL_POOL``: global average or max pooling of an octave tensor to a plain vector.
* ``SHAPE``: reads the size of a tensor; answered without merging.
* ``BOUNDARY``: anything else: octave inputs are merged back to plain tensors first.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

from torch import fx, nn

if TYPE_CHECKING:
    from ..rewrite.context import RewriteContext

CONV, PER_BRANCH, ELEMENTWISE, CAT, GLOBAL_POOL, SHAPE, BOUNDARY = (
    "conv", "per-branch", "element-wise", "concat", "global pool", "shape", "boundary")

Check = Callable[[fx.Node, Dict[str, nn.Module]], Optional[str]]


@dataclass(frozen=True)
class Rule:
    """``check`` returns why the rule does not apply to this particular node (then it is a boundary)."""

    category: str
    rewrite: Callable[[fx.Node, "RewriteContext"], None]
    check: Optional[Check] = None


RULES: Dict[Any, Rule] = {}


def register(rule: Rule, *keys: Any) -> None:
    """Use ``rule`` for each key: a module type (exact), a function, or ``("method", name)``."""
    for key in keys:
        RULES[key] = rule


def rule_key(node: fx.Node, modules: Dict[str, nn.Module]) -> Any:
    if node.op == "call_module":
        return type(modules[node.target])
    if node.op == "call_function":
        return node.target
    if node.op == "call_method":
        return ("method", node.target)
    return None


def find_rule(node: fx.Node, modules: Dict[str, nn.Module]) -> Optional[Rule]:
    """The registered rule for ``node``, or None (a boundary)."""
    return RULES.get(rule_key(node, modules))


def describe(node: fx.Node) -> str:
    """A short human name for what a node does: ``layer1.0.relu``, ``torch.flatten``, ``.view()``."""
    if node.op == "call_module":
        return str(node.target)
    if node.op == "call_method":
        return f".{node.target}()"
    if node.op == "call_function":
        return f"{getattr(node.target, '__module__', '') or ''}.{getattr(node.target, '__name__', node.target)}".lstrip(".")
    return node.op
