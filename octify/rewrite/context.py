"""The state of one rewrite: the new graph, its modules, and conversions inserted on edges.

Rules emit nodes through :class:`RewriteContext`. Each original node maps to one new node
and to the representation it was emitted in (a :class:`ChannelSplit` for octave, None for
plain). Asking for an argument in another representation inserts a split or a merge, once
per tensor however many users it has, with the reason recorded as a note.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from torch import fx, nn

from ..layers import ChannelSplit, OctMerge, OctSplit
from ..notes import Note
from ..plan.planner import Plan
from ..rules.registry import describe

Split = Optional[ChannelSplit]
OCTAVE_SPLIT = "octave_split"  # node.meta key: the ChannelSplit of a node that produces an octave tensor


class RewriteContext:
    def __init__(self, original: fx.GraphModule, plan: Plan) -> None:
        self.original, self.plan = original, plan
        self.old_modules = dict(original.named_modules())
        self.graph = fx.Graph()
        self.modules: Dict[str, Any] = {}
        self.env: Dict[fx.Node, fx.Node] = {}
        self.rep: Dict[fx.Node, Split] = {}
        self.notes: List[Note] = []
        self._conversions: Dict[Tuple[fx.Node, Split], fx.Node] = {}
        self._shared: Dict[Any, str] = {}

    # -- modules ---------------------------------------------------------------------------
    def module(self, node: fx.Node) -> nn.Module:
        return self.old_modules[node.target]

    def add_module(self, name: str, module: Any) -> str:
        """Register ``module`` (or a tensor, for get_attr) under ``name``, made unique if taken."""
        unique, counter = name, 1
        while unique in self.modules and self.modules[unique] is not module:
            unique, counter = f"{name}_{counter}", counter + 1
        self.modules[unique] = module
        return unique

    def shared_module(self, key: Any, make: Any, name: str) -> str:
        """One module for every call site with the same ``key``, made by ``make()`` the first time."""
        if key not in self._shared:
            self._shared[key] = self.add_module(name, make())
        return self._shared[key]

    # -- emitting --------------------------------------------------------------------------
    def emit(self, node: fx.Node, op: str, target: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any],
             split: Split) -> fx.Node:
        """Emit ``node``'s replacement, named like it, producing representation ``split``."""
        new = self.graph.create_node(op, target, args, kwargs, name=node.name)
        new.meta = {key: value for key, value in node.meta.items() if key != "val"}  # shapes change
        if split is not None:
            new.meta[OCTAVE_SPLIT] = split  # read by distillation to compare an octave map with the original's
        self.env[node], self.rep[node] = new, split
        return new

    def copy(self, node: fx.Node) -> fx.Node:
        """Emit ``node`` unchanged, every argument as a plain tensor."""
        args, kwargs = self.values((node.args, node.kwargs), None, node)
        target = node.target
        if node.op == "call_module":
            target = self.add_module(node.target, self.module(node))
        elif node.op == "get_attr":
            target = self.add_module(node.target, _resolve(self.original, node.target))
        return self.emit(node, node.op, target, args, kwargs, None)

    # -- arguments ---------------------------------------------------------------------------
    def values(self, structure: Any, want: Split, consumer: fx.Node) -> Any:
        """Map the original nodes inside ``structure`` to new ones, each in representation ``want``."""
        return fx.node.map_arg(structure, lambda n: self.value(n, want, consumer))

    def value(self, node: fx.Node, want: Split, consumer: fx.Node) -> fx.Node:
        """The new node for ``node`` in representation ``want``, converting on the edge if needed."""
        new, have = self.env[node], self.rep.get(node)
        if have == want:
            return new
        if have is not None:
            reason = self.plan.boundary_reasons.get(consumer, "its input stays plain")
            new = self._convert((node, None), new, OctMerge(have), f"{describe(consumer)} needs a plain "
                                f"tensor: {reason}")
            if want is None:
                return new
        return self._convert((node, want), new, OctSplit(want),
                             f"{node.name} is plain and enters the octave region at {describe(consumer)}")

    def is_split(self, new_node: fx.Node) -> bool:
        """True when ``new_node`` is a split inserted by this rewrite (its high branch is a view)."""
        return new_node.op == "call_module" and isinstance(self.modules.get(new_node.target), OctSplit)

    def _convert(self, key: Tuple[fx.Node, Split], source: fx.Node, module: nn.Module, reason: str) -> fx.Node:
        if key not in self._conversions:
            kind = "merge" if isinstance(module, OctMerge) else "split"
            name = self.add_module(f"{kind}_{key[0].name}", module)
            self._conversions[key] = self.graph.call_module(name, (source,))
            self.notes.append(Note(name, kind, reason))
        return self._conversions[key]


def _resolve(root: nn.Module, target: str) -> Any:
    value: Any = root
    for part in target.split("."):
        value = getattr(value, part)
    return value
