"""Plan stage: decide, over the whole graph, which feature maps are octave and how they split.

1. Each node gets its rule's category (or ``BOUNDARY`` when no rule applies to it).
2. Feature maps that must share one channel split are joined (union-find): the input and
   output of a per-branch op or a depthwise conv, and same-shape operands of add/mul/sub.
3. Each group of joined tensors (a "class") is decided once, in graph order:
   a concat output takes the concatenation of its inputs' splits; otherwise the first
   convolution producing into the class brings the schedule's alpha, unless a default
   keeps the class plain (stem, small maps, nothing downstream that can use two branches).
4. Each convolution reads its input class's split and writes its output class's split.

The planner only reads shapes; it never looks at tensor values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from torch import fx

from ..layers.channels import ChannelSplit, low_channel_count
from ..notes import Note
from ..rules import registry
from ..rules.concat import parts_and_dim
from ..rules.registry import BOUNDARY, CAT, CONV, ELEMENTWISE, PER_BRANCH, SHAPE, GLOBAL_POOL
from .facts import ConvFacts, channels, conv_facts, conv_name, feature_args, feature_shape, is_feature_map, spatial
from .schedule import Schedule

Split = Optional[ChannelSplit]


@dataclass
class Plan:
    """The decisions: a split (or None for plain) per feature-map node, per-conv splits, and notes."""

    categories: Dict[fx.Node, str]
    layouts: Dict[fx.Node, Split]
    conv_splits: Dict[fx.Node, Tuple[Split, Split]]
    boundary_reasons: Dict[fx.Node, str]
    notes: List[Note] = field(default_factory=list)

    def layout(self, node: object) -> Split:
        return self.layouts.get(node) if isinstance(node, fx.Node) else None


class _UnionFind:
    def __init__(self) -> None:
        self.parent: Dict[fx.Node, fx.Node] = {}

    def find(self, node: fx.Node) -> fx.Node:
        self.parent.setdefault(node, node)
        while self.parent[node] is not node:
            self.parent[node] = self.parent[self.parent[node]]
            node = self.parent[node]
        return node

    def union(self, a: fx.Node, b: fx.Node) -> None:
        self.parent[self.find(a)] = self.find(b)


def is_depthwise(conv: ConvFacts) -> bool:
    return conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels


def _is_grouped(conv: ConvFacts) -> bool:
    """Grouped but not depthwise: its splits must fall on group boundaries."""
    return conv.groups > 1 and not is_depthwise(conv)


class Planner:
    """Builds a :class:`Plan` for a captured GraphModule (see the module docstring)."""

    def __init__(self, module: fx.GraphModule, schedule: Schedule, min_size: int = 8,
                 plain_stem: bool = True) -> None:
        self.module, self.schedule = module, schedule
        self.min_size, self.plain_stem = min_size, plain_stem
        self.modules = dict(module.named_modules())
        self.nodes = list(module.graph.nodes)
        self.index = {node: i for i, node in enumerate(self.nodes)}
        self.categories: Dict[fx.Node, str] = {}
        self.boundary_reasons: Dict[fx.Node, str] = {}
        self.notes: List[Note] = []
        self.classes = _UnionFind()

    def _conv(self, node: fx.Node) -> ConvFacts:
        return conv_facts(node, self.modules)

    # -- 1. categories ---------------------------------------------------------------------
    def _categorize(self) -> None:
        for node in self.nodes:
            rule = registry.find_rule(node, self.modules)
            reason = rule.check(node, self.modules) if rule and rule.check else None
            if rule is None or reason:
                self.categories[node] = BOUNDARY
                self.boundary_reasons[node] = reason or f"{registry.describe(node)} has no octave rule"
                if rule is not None and rule.category == CONV:
                    self.notes.append(Note(conv_name(node), "plain", reason))
            else:
                self.categories[node] = rule.category

    # -- 2. joins --------------------------------------------------------------------------
    def _join(self) -> None:
        for node in self.nodes:
            if not is_feature_map(node):
                continue
            self.classes.find(node)
            category = self.categories[node]
            inputs = list(feature_args(node))
            if category == PER_BRANCH and inputs and channels(inputs[0]) == channels(node):
                self.classes.union(node, inputs[0])
            elif category == ELEMENTWISE:
                for arg in inputs:
                    if feature_shape(arg) == feature_shape(node):
                        self.classes.union(node, arg)
            elif category == CONV and is_depthwise(self._conv(node)):
                self.classes.union(node, inputs[0])

    # -- 3. class decisions ------------------------------------------------------------------
    def _decide(self) -> Tuple[Dict[fx.Node, Split], Dict[fx.Node, str]]:
        members: Dict[fx.Node, List[fx.Node]] = {}
        for node in self.nodes:
            if is_feature_map(node):
                members.setdefault(self.classes.find(node), []).append(node)
        layouts: Dict[fx.Node, Split] = {}
        reasons: Dict[fx.Node, str] = {}
        for root, group in members.items():  # insertion order = graph order of first member
            split, reason = self._decide_class(group, layouts)
            for node in group:
                layouts[node] = split
            if reason:
                reasons[root] = reason
        return layouts, reasons

    def _decide_class(self, group: List[fx.Node], layouts: Dict[fx.Node, Split]) -> Tuple[Split, str]:
        smallest = min(group, key=lambda n: min(spatial(n)))
        if min(spatial(smallest)) < self.min_size:
            height, width = spatial(smallest)
            return None, (f"maps of {height}x{width} ({smallest.name}) are smaller than min_size={self.min_size}; "
                          "the paper keeps such stages plain")
        concats = [n for n in group if self.categories[n] == CAT]
        if concats:
            return self._concat_split(concats, layouts)
        producers = [n for n in group if self.categories[n] == CONV
                     and not is_depthwise(self._conv(n))]
        if not producers:
            return None, ""
        willing = [n for n in producers if not self._plain_output_reason(n)]
        if not willing:
            return None, self._plain_output_reason(producers[0])
        first = willing[0]
        alpha, _ = self.schedule.lookup(conv_name(first))
        useless = self._why_not_useful(group)
        if useless:
            return None, useless
        count = channels(first)
        unit = self._group_unit(group)
        n_low = low_channel_count(count, alpha, unit)
        if n_low == 0 or n_low >= count:
            grouping = f" in whole groups of {unit}" if unit > 1 else ""
            return None, f"alpha {alpha:g} of {count} channels{grouping} leaves a branch empty"
        for other in willing[1:]:
            other_alpha, pattern = self.schedule.lookup(conv_name(other))
            if other_alpha != alpha:
                self.notes.append(Note(conv_name(other), "schedule",
                                       f"alpha {other_alpha:g} (pattern {pattern!r}) gives way to {alpha:g}: its output "
                                       f"is added to that of {conv_name(first)}, and both must split alike"))
        return ChannelSplit.trailing(count, n_low), ""

    def _plain_output_reason(self, conv_node: fx.Node) -> str:
        """Why the schedule or the defaults keep this convolution's own output plain ('' if they do not)."""
        alpha, pattern = self.schedule.lookup(conv_name(conv_node))
        if alpha == 0:
            return f"alpha 0 ({f'pattern {pattern!r}' if pattern else 'no schedule pattern matches it'})"
        source = next(iter(feature_args(conv_node)), None)
        if self.plain_stem and source is not None and source.op == "placeholder":
            return "stem: the first convolution on the network input keeps a plain output (plain_stem)"
        return ""

    def _concat_split(self, concats: List[fx.Node], layouts: Dict[fx.Node, Split]) -> Tuple[Split, str]:
        derived = set()
        for node in concats:
            parts = [ChannelSplit.trailing(channels(p), 0) if layouts.get(p) is None else layouts[p]
                     for p in parts_and_dim(node)[0]]
            derived.add(ChannelSplit.concat(parts))
        if len(derived) > 1:
            return None, "concats joined by an add disagree on which channels are low"
        split = derived.pop()
        return (split, "") if split.n_low else (None, "")

    def _external_consumers(self, group: List[fx.Node]) -> List[fx.Node]:
        inside = set(group)
        return [user for node in group for user in node.users if user not in inside]

    def _why_not_useful(self, group: List[fx.Node]) -> str:
        """Why two branches would be wasted here: every consumer needs a plain tensor."""
        inside = set(group)
        rejoining = [n for n in group if self.categories[n] == CONV and not is_depthwise(self._conv(n))
                     and any(arg in inside for arg in feature_args(n))]  # a conv whose output re-joins its input
        consumers = [u for u in self._external_consumers(group) + rejoining if self.categories.get(u) != SHAPE]
        useful = [u for u in consumers if self._uses_octave(u)]
        if useful:
            return ""
        if not consumers:
            return "nothing reads this output"
        names = ", ".join(sorted({registry.describe(u) for u in consumers})[:3])
        return f"its output only feeds {names}, which need a plain tensor"

    def _uses_octave(self, consumer: fx.Node) -> bool:
        category = self.categories.get(consumer)
        if category in (CAT, GLOBAL_POOL):
            return True
        return category == CONV and min(spatial(consumer)) >= self.min_size

    def _group_unit(self, group: List[fx.Node]) -> int:
        """Channels per split step: whole groups of the grouped convs that write or read the class."""
        unit = 1
        for node in group:
            if self.categories[node] == CONV and _is_grouped(conv := self._conv(node)):
                unit = math.lcm(unit, conv.out_channels // conv.groups)
            for user in node.users:
                if self.categories.get(user) == CONV and _is_grouped(conv := self._conv(user)):
                    unit = math.lcm(unit, conv.in_channels // conv.groups)
        return unit

    # -- 4. per-conv splits ------------------------------------------------------------------
    def _conv_splits(self, layouts: Dict[fx.Node, Split], reasons: Dict[fx.Node, str]) -> Dict[fx.Node, Tuple[Split, Split]]:
        result = {}
        for node in self.nodes:
            if self.categories[node] != CONV:
                continue
            conv = self._conv(node)
            source = next(iter(feature_args(node)))
            in_split, out_split = layouts.get(source), layouts.get(node)
            own_reason = "" if is_depthwise(conv) else self._plain_output_reason(node)
            if own_reason:
                out_split = None
            if in_split is not None and conv.groups > 1 and not is_depthwise(conv) and not (
                    in_split.is_trailing and in_split.n_low % (conv.in_channels // conv.groups) == 0):
                in_split = None
                self.notes.append(Note(conv_name(node), "plain input",
                                       f"groups={conv.groups} need the low channels last in whole groups"))
            result[node] = (in_split, out_split)
            if out_split is None:
                reason = own_reason or reasons.get(self.classes.find(node), "")
                self.notes.append(Note(conv_name(node), "plain", reason or "its output joins a plain tensor"))
        return result

    def plan(self) -> Plan:
        self._categorize()
        self._join()
        layouts, reasons = self._decide()
        conv_splits = self._conv_splits(layouts, reasons)
        return Plan(self.categories, layouts, conv_splits, self.boundary_reasons, self.notes)


def make_plan(module: fx.GraphModule, schedule: Schedule, min_size: int = 8, plain_stem: bool = True) -> Plan:
    """Plan the conversion of a captured GraphModule (nodes must carry ``meta["val"]``)."""
    return Planner(module, schedule, min_size, plain_stem).plan()
