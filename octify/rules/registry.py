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
* ``CHANNELS``: channel bookkeeping (split, chunk, slice, channel shuffle): the output's channels
  are some of one input's, as ``select`` says; its split is read off that input's. Steps whose
  values are not feature maps (a shuffle's 5-d views, a chunk's tuple) come in between.
* ``SHAPE``: reads the size of a tensor; answered without merging.
* ``BOUNDARY``: anything else: octave inputs are merged back to plain tensors first.

Lookup (:func:`find_rule`): the exact key first. A module whose class has no rule of its
own takes the rule of the nearest registered base class only if it computes what that base
computes: neither its class (up to that base) nor the instance replaces ``forward`` or any
other method the base has, and it carries no forward hooks. Otherwise it gets a rule whose
check says why (a boundary), never the base's rule. Functions and methods without a key
go through the registered fallbacks (:func:`register_fallback`).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from torch import fx, nn

if TYPE_CHECKING:
    from ..rewrite.context import RewriteContext

CONV, PER_BRANCH, ELEMENTWISE, CAT, GLOBAL_POOL, CHANNELS, SHAPE, BOUNDARY = (
    "conv", "per-branch", "element-wise", "concat", "global pool", "channels", "shape", "boundary")

Check = Callable[[fx.Node, Dict[str, nn.Module]], Optional[str]]
Select = Callable[[fx.Node], Optional[Tuple[fx.Node, Tuple[int, ...]]]]

# Methods a subclass may redefine without changing what a forward call computes.
CONSTRUCTION_METHODS = frozenset({"extra_repr", "reset_parameters", "reset_running_stats", "_load_from_state_dict"})
CALL_METHODS = frozenset({"__call__", "__getattr__", "__getattribute__"})


@dataclass(frozen=True)
class Rule:
    """``check`` returns why the rule does not apply to this particular node (then it is a boundary).

    ``select`` (``CHANNELS`` rules) gives, for a feature-map node, the feature map its channels
    come from and which of its channels each output channel is; None for the steps in between.
    """

    category: str
    rewrite: Callable[[fx.Node, "RewriteContext"], None]
    check: Optional[Check] = None
    select: Optional[Select] = None


RULES: Dict[Any, Rule] = {}
FALLBACKS: List[Tuple[Callable[[Any], bool], Rule]] = []


def register(rule: Rule, *keys: Any) -> None:
    """Use ``rule`` for each key: a module type, a function, or ``("method", name)``.

    A module type's rule also serves its subclasses that compute what it computes (see :func:`find_rule`).
    """
    for key in keys:
        RULES[key] = rule


def register_fallback(rule: Rule, accepts: Callable[[Any], bool]) -> None:
    """Use ``rule`` for every function or ``("method", name)`` key without a registered rule that ``accepts``."""
    FALLBACKS.append((accepts, rule))


def find_rule(node: fx.Node, modules: Dict[str, nn.Module]) -> Optional[Rule]:
    """The rule for ``node``, or None (a boundary)."""
    if node.op == "call_module":
        return _module_rule(modules[node.target])
    if node.op not in ("call_function", "call_method"):
        return None
    key = node.target if node.op == "call_function" else ("method", node.target)
    try:
        rule = RULES.get(key)
    except TypeError:  # an unhashable call target has no rule
        return None
    if rule is None:
        rule = next((fallback for accepts, fallback in FALLBACKS if accepts(key)), None)
    return rule


def _module_rule(module: nn.Module) -> Optional[Rule]:
    cls = type(module)
    base = next((klass for klass in cls.__mro__ if klass in RULES), None)
    if base is None:
        return None
    reason = _changed_computation(module, base)
    if reason is None:
        return RULES[base]
    why = f"{cls.__qualname__} {reason}, so {base.__module__}.{base.__qualname__}'s octave rule does not apply to it"
    return Rule(BOUNDARY, RULES[base].rewrite, lambda node, modules: why)


def _changed_computation(module: nn.Module, base: type) -> Optional[str]:
    """Why ``module`` may compute something else than ``base`` would (None if it cannot)."""
    if "forward" in vars(module):
        return "has its forward replaced on the instance"
    if module._forward_hooks or module._forward_pre_hooks:
        return "has forward hooks"
    for klass in type(module).__mro__:
        if klass is base:
            return None
        for name, value in vars(klass).items():
            dunder = name.startswith("__") and name.endswith("__") and name not in CALL_METHODS
            if dunder or name in CONSTRUCTION_METHODS or not (callable(value) or hasattr(value, "__get__")):
                continue
            if isinstance(value, property) or hasattr(base, name):
                return f"redefines {name} of {base.__qualname__}"
    return None


RewriteFunction = Callable[[fx.Node, "RewriteContext"], None]


def when_octave(rewrite: RewriteFunction) -> RewriteFunction:
    """Decorate a rewrite function that handles octave nodes: a node the plan keeps plain is copied as it is."""
    @functools.wraps(rewrite)
    def rewrite_if_octave(node: fx.Node, ctx: "RewriteContext") -> None:
        if ctx.plan.layout(node) is None:
            ctx.copy(node)
        else:
            rewrite(node, ctx)
    return rewrite_if_octave


def describe(node: fx.Node) -> str:
    """A short human name for what a node does: ``layer1.0.relu``, ``torch.flatten``, ``.view()``."""
    if node.op == "call_module":
        return str(node.target)
    if node.op == "call_method":
        return f".{node.target}()"
    if node.op == "call_function":
        return f"{getattr(node.target, '__module__', '') or ''}.{getattr(node.target, '__name__', node.target)}".lstrip(".")
    return node.op
