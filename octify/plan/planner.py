"""Plan stage: decide, over the whole graph, which feature maps are octave and how they split.

1. Each node gets its rule's category (or ``BOUNDARY`` when no rule applies to it).
2. Feature maps that must share one channel split are joined (union-find): the input and
   output of a per-branch op or a depthwise conv, and same-shape operands of add/mul/sub.
3. Each group of joined tensors (a "class") is decided once, in graph order:
   a concat output takes the concatenation of its inputs' splits, a channel split, slice or
   shuffle the input's split at the channels it picks (the inputs' classes are decided
   first); otherwise the first
   convolution producing into the class brings the schedule's alpha, unless a default
   keeps the class plain (stem, small maps, nothing downstream that can use two branches).
4. Each convolution reads its input class's split and writes its output class's split.

The planner only reads shapes; it never looks at tensor values. Given per-node channel
scores (``channel_scores``, computed from data elsewhere: lower means the channel loses less
at half resolution), a class that takes the schedule's alpha makes its lowest-scoring channels
low instead of the last ones, with the same counts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from torch import fx, nn

from ..capture.facts import ConvFacts, channels, conv_facts, conv_name, feature_args, feature_shape, is_feature_map, spatial
from ..layers.channels import ChannelSplit, group_pattern, low_channel_count
from ..layers.octconv import check_grouped_splits
from ..layers.select import selected_split
from ..notes import Note
from ..rules import registry
from ..rules.concat import parts_and_dim
from ..rules.pooling import is_resize
from ..rules.registry import BOUNDARY, CAT, CHANNELS, CONV, ELEMENTWISE, PER_BRANCH, SHAPE, GLOBAL_POOL
from .min_size import MinSize, resolve_min_size
from .schedule import Schedule

Split = Optional[ChannelSplit]
MAX_SELECTION_DEPTH = 8  # concats of selections followed back this many levels


@dataclass(frozen=True)
class _Why:
    """Why a class of feature maps stays plain: ``cause`` groups it in the report, ``says(conv)``
    words it for one convolution with that convolution's own numbers, and ``source`` is the
    convolution whose own setting decided (stem, alpha 0); None when the maps themselves did."""

    cause: str
    says: Callable[[fx.Node], str]
    source: Optional[fx.Node] = None


@dataclass(frozen=True)
class AlphaGroup:
    """Convolutions that share one alpha: those writing one class of feature maps that takes its split from
    the schedule (``writers``; the class takes the alpha of the first, ``name``), and those that only read it
    (``readers``: their own output stays plain for another reason, such as small maps)."""

    name: str
    writers: Tuple[str, ...]
    readers: Tuple[str, ...] = ()


@dataclass
class Plan:
    """The decisions: a split (or None for plain) per feature-map node, per-conv splits, and notes.

    ``groups`` lists the classes whose split comes from the schedule's alpha (see :class:`AlphaGroup`);
    ``strided_high``: strided octave convolutions keep the original strided convolution as their h2h path.
    """

    categories: Dict[fx.Node, str]
    layouts: Dict[fx.Node, Split]
    conv_splits: Dict[fx.Node, Tuple[Split, Split]]
    boundary_reasons: Dict[fx.Node, str]
    notes: List[Note] = field(default_factory=list)
    groups: List[AlphaGroup] = field(default_factory=list)
    strided_high: bool = False

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


def _fits_groups(conv: ConvFacts, in_split: ChannelSplit, out_split: Split) -> bool:
    out_split = out_split or ChannelSplit.trailing(conv.out_channels, 0)
    try:
        check_grouped_splits(conv.groups, conv.in_channels, conv.out_channels, in_split, out_split)
    except ValueError:
        return False
    return True


def _is_grouped(conv: ConvFacts) -> bool:
    """Grouped but not depthwise: its splits must fall on group boundaries."""
    return conv.groups > 1 and not is_depthwise(conv)


class Planner:
    """Builds a :class:`Plan` for a captured GraphModule (see the module docstring)."""

    def __init__(self, module: fx.GraphModule, schedule: Schedule, min_size: MinSize = "auto",
                 plain_stem: bool = True, channel_scores: Optional[Mapping[str, Sequence[float]]] = None,
                 strided_high: bool = False) -> None:
        self.module, self.schedule = module, schedule
        self.strided_high = strided_high
        self.channel_scores = dict(channel_scores or {})
        self.asked_min_size, self.plain_stem = min_size, plain_stem
        self.min_size = 0  # pixels, resolved once the convolutions are known
        self.modules = dict(module.named_modules())
        self.nodes = list(module.graph.nodes)
        self.index = {node: i for i, node in enumerate(self.nodes)}
        self.categories: Dict[fx.Node, str] = {}
        self.boundary_reasons: Dict[fx.Node, str] = {}
        self.notes: List[Note] = []
        self.classes = _UnionFind()
        self.selections: Dict[fx.Node, Tuple[fx.Node, Tuple[int, ...]]] = {}
        self.group_writers: Dict[fx.Node, Tuple[str, ...]] = {}  # class root -> convolutions writing it

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
                    self.notes.append(Note(conv_name(node), "plain", reason, reason.partition(":")[0]))
                elif node.op == "call_module" and isinstance(self.modules[node.target], nn.Conv2d):
                    kind = type(self.modules[node.target]).__name__
                    self.notes.append(Note(str(node.target), "plain", f"{kind} has no octave rule (only nn.Conv2d "
                                           "itself converts)", f"no octave rule: {kind}"))
            else:
                self.categories[node] = rule.category
                if rule.category == CHANNELS and is_feature_map(node):
                    self.selections[node] = rule.select(node)

    # -- 2. joins --------------------------------------------------------------------------
    def _join(self) -> None:
        for node in self.nodes:
            if not is_feature_map(node):
                continue
            self.classes.find(node)
            category = self.categories[node]
            inputs = list(feature_args(node))
            if category == PER_BRANCH and inputs and channels(inputs[0]) == channels(node) \
                    and not self._enlarges_a_small_map(inputs[0], node):
                self.classes.union(node, inputs[0])
            elif category == ELEMENTWISE:
                for arg in inputs:
                    if feature_shape(arg) == feature_shape(node):
                        self.classes.union(node, arg)
            elif category == CONV and is_depthwise(self._conv(node)):
                self.classes.union(node, inputs[0])

    def _enlarges_a_small_map(self, source: fx.Node, result: fx.Node) -> bool:
        """A resize from a map under ``min_size`` to one at least that large: the two may split apart
        (the small map stays plain, the large one is split after the resize), so that one small map
        does not keep every map added to its up-sampled copy plain (FPN, HRNet)."""
        return min(spatial(source)) < self.min_size <= min(spatial(result))

    # -- 3. class decisions ------------------------------------------------------------------
    def _decide(self) -> Tuple[Dict[fx.Node, Split], Dict[fx.Node, _Why]]:
        members: Dict[fx.Node, List[fx.Node]] = {}
        for node in self.nodes:
            if is_feature_map(node):
                members.setdefault(self.classes.find(node), []).append(node)
        layouts: Dict[fx.Node, Split] = {}
        reasons: Dict[fx.Node, _Why] = {}
        started = set()

        def decide(root: fx.Node) -> None:
            started.add(root)
            for source in (s for node in members[root] for s in self._derived_from(node)):
                if self.classes.find(source) not in started:  # a derived split needs its sources' first
                    decide(self.classes.find(source))
            split, reason = self._decide_class(members[root], layouts)
            for node in members[root]:
                layouts[node] = split
            if reason:
                reasons[root] = reason

        for root in members:  # insertion order = graph order of first member
            if root not in started:
                decide(root)
        return layouts, reasons

    def _derived_from(self, node: fx.Node) -> List[fx.Node]:
        """The feature maps whose splits ``node``'s split is derived from (a concat's parts, a selection's source)."""
        if self.categories[node] == CAT:
            return list(feature_args(node))
        if self.categories[node] == CHANNELS:
            return [self.selections[node][0]]
        return []

    def _decide_class(self, group: List[fx.Node], layouts: Dict[fx.Node, Split]) -> Tuple[Split, Optional[_Why]]:
        convolved = [n for n in group if self.categories[n] == CONV
                     or any(self.categories.get(user) == CONV for user in n.users)]
        smallest = min(convolved or group, key=lambda n: min(spatial(n)))  # a pooled map no conv reads is free
        if min(spatial(smallest)) < self.min_size:
            return None, _Why("small maps (< min_size)", lambda conv: self._small_maps(conv, smallest))
        derived = [n for n in group if self.categories[n] == CAT or self.categories[n] == CHANNELS
                   and self._selected_split(n, layouts) is not None]  # a plain pick leaves the class free
        if derived:
            return self._derived_split(derived, layouts)
        producers = [n for n in group if self.categories[n] == CONV
                     and not is_depthwise(self._conv(n))]
        if not producers:
            return None, None
        willing = [n for n in producers if not self._plain_output_reason(n)]
        if not willing:
            return None, self._plain_output_reason(producers[0])
        first = willing[0]
        alpha, _ = self.schedule.lookup(conv_name(first))
        useless = self._why_not_useful(group)
        if useless:
            return None, useless
        self.group_writers[self.classes.find(first)] = tuple(dict.fromkeys(  # its split follows the schedule
            conv_name(n) for n in [first] + [n for n in group if self.categories[n] == CONV and n is not first]))
        for other in willing[1:]:
            other_alpha, pattern = self.schedule.lookup(conv_name(other))
            if other_alpha != alpha:
                self.notes.append(Note(conv_name(other), "schedule",
                                       f"alpha {other_alpha:g} (pattern {pattern!r}) gives way to {alpha:g}: its output "
                                       f"is added to that of {conv_name(first)}, and both must split alike"))
        count = channels(first)
        unit = self._group_unit(group)
        if unit > 1:  # grouped convolutions: each group split on its own where every group can split alike
            within = self._alpha_split(group, count, alpha, 1, self._group_cuts(group))
            if within.n_low and within.n_high and self._every_group_alike(group, within):
                return within, None
        n_low = low_channel_count(count, alpha, unit)
        if n_low == 0 or n_low >= count:
            grouping = f" in whole groups of {unit}" if unit > 1 else ""
            return None, _Why("alpha leaves a branch empty",
                              lambda conv: f"alpha {alpha:g} of its {count} channels{grouping} leaves a branch empty")
        return self._alpha_split(group, count, alpha, unit, name=conv_name(first)), None

    def _alpha_split(self, group: List[fx.Node], count: int, alpha: float, unit: int,
                     cuts: Iterable[int] = (), name: Optional[str] = None) -> ChannelSplit:
        """The last ``alpha`` of the channels low, or of each part where the class is cut into channel ranges
        (``torch.split`` / ``chunk`` / slices, the groups in ``cuts``), so that every part keeps both branches.

        Ranges that selections pick through concats (a shuffle and chunk after ``cat``, and the next unit's,
        each one level deeper) are cut too, level by level, while every part still keeps both branches.
        With channel scores and a ``name`` to note the choice under, the lowest-scoring channels of each range
        instead of its last ones (not for grouped convolutions, which need their low channels last)."""
        split = self._trailing_split(group, count, alpha, unit, cuts)
        scores = self._class_scores(group, count) if unit == 1 and name is not None else None
        return split if scores is None else self._scored_split(split, scores, name)

    def _trailing_split(self, group: List[fx.Node], count: int, alpha: float, unit: int,
                        cuts: Iterable[int]) -> ChannelSplit:
        """:meth:`_alpha_split` with the last channels of each range low."""
        default = ChannelSplit.trailing(count, low_channel_count(count, alpha, unit))
        members = set(group)
        levels: Dict[int, set] = {}
        for source, index in self.selections.values():
            for depth, picked in self._picks_from(source, members, index):
                levels.setdefault(depth, set()).update(
                    {start for start in picked if start - 1 not in picked} | {end + 1 for end in picked
                                                                               if end + 1 not in picked})
        split = self._ranges_split({0, count, *cuts}, count, alpha)
        if split is None or unit > 1:
            return default
        chosen = {0, count, *cuts}
        for depth in sorted(levels):
            deeper = self._ranges_split(chosen | levels[depth], count, alpha)
            if deeper is None:
                break
            chosen, split = chosen | levels[depth], deeper
        return split

    @staticmethod
    def _ranges_split(cuts: set, count: int, alpha: float) -> Split:
        """The last ``alpha`` of each range between ``cuts`` low; None if a range would lack a branch."""
        bounds = sorted(cut for cut in cuts if 0 <= cut <= count)
        parts = [ChannelSplit.trailing(end - start, low_channel_count(end - start, alpha))
                 for start, end in zip(bounds, bounds[1:])]
        if any(not part.n_low or not part.n_high for part in parts):
            return None
        return ChannelSplit.concat(parts)

    def _scored_split(self, split: ChannelSplit, scores: List[float], name: str) -> ChannelSplit:
        """In each range of ``split`` (high channels, then low ones), the lowest-scoring channels low instead."""
        starts = [c for c in range(split.channels) if c == 0 or (split.low[c - 1] and not split.low[c])]
        ranges = [(start, end, sum(split.low[start:end])) for start, end in zip(starts, starts[1:] + [split.channels])]
        low = [False] * split.channels
        for start, end, n_low in ranges:
            for channel in sorted(range(start, end), key=lambda c: scores[c])[:n_low]:
                low[channel] = True
        chosen = ChannelSplit(tuple(low))
        self.notes.append(self._choice_note(name, chosen, scores, ranges))
        return chosen

    def _class_scores(self, group: List[fx.Node], count: int) -> Optional[List[float]]:
        """The mean channel scores of the class's feature maps that have them, or None if none has."""
        rows = [self.channel_scores[node.name] for node in group
                if node.name in self.channel_scores and len(self.channel_scores[node.name]) == count]
        if not rows:
            return None
        return [sum(float(row[c]) for row in rows) / len(rows) for c in range(count)]

    @staticmethod
    def _choice_note(name: str, split: ChannelSplit, scores: List[float],
                     ranges: List[Tuple[int, int, int]]) -> Note:
        def mean(index: Sequence[int]) -> float:
            return sum(scores[c] for c in index) / len(index)

        fixed = [c for start, end, n_low in ranges for c in range(end - n_low, end)]
        return Note(name, "channels", f"{split.n_low} of {split.channels} channels low, chosen from calibration "
                    f"data: mean loss at half resolution {mean(split.low_index):.3g} for the low channels, "
                    f"{mean(split.high_index):.3g} for the high ones ({mean(fixed):.3g} for the last ones, "
                    f"the default)")

    def _picks_from(self, source: fx.Node, members: set, index: Tuple[int, ...],
                    depth: int = 0) -> List[Tuple[int, set]]:
        """The channels of the class (``members``) that a selection of ``source`` at ``index`` picks, each with
        its depth: directly, or through channel concats whose parts are the class or selections of it (a shuffle
        after ``cat`` picks from each part; the next unit's shuffle picks from this one's, one level deeper)."""
        while source not in members and source in self.selections:  # a selection of a selection (chunk of a shuffle)
            source, inner = self.selections[source]
            index = tuple(inner[i] for i in index)
        if source in members:
            return [(depth, set(index))] if index else []
        if self.categories.get(source) != CAT or depth > MAX_SELECTION_DEPTH:
            return []
        picks, offset = [], 0
        for part in parts_and_dim(source)[0]:
            width = channels(part)
            inside = tuple(i - offset for i in index if offset <= i < offset + width)
            if inside:
                picks += self._picks_from(part, members, inside, depth + (part not in members))
            offset += width
        return picks

    def _small_maps(self, conv: fx.Node, smallest: fx.Node) -> str:
        (height, width), (least_h, least_w) = spatial(conv), spatial(smallest)
        where = (f"its output is {height}x{width}" if min(height, width) < self.min_size else
                 f"its {height}x{width} output shares one channel split with maps of {least_h}x{least_w} "
                 f"({registry.describe(smallest)})")
        return f"{where}, smaller than min_size={self.min_size}; the paper keeps such stages plain"

    def _plain_output_reason(self, conv_node: fx.Node) -> Optional[_Why]:
        """Why the schedule or the defaults keep this convolution's own output plain (None if they do not)."""
        alpha, pattern = self.schedule.lookup(conv_name(conv_node))
        if alpha == 0:
            matched = f"pattern {pattern!r}" if pattern else "no schedule pattern matches it"
            return _Why("alpha 0 by schedule", lambda conv: f"alpha 0 ({matched})", conv_node)
        source = next(iter(feature_args(conv_node)), None)
        if self.plain_stem and source is not None and source.op == "placeholder":
            return _Why("stem", lambda conv: f"stem: the first convolution on the network input (its output "
                                             f"{channels(conv)} channels, {'x'.join(map(str, spatial(conv)))}) "
                                             "keeps a plain output (plain_stem)", conv_node)
        return None

    def _plain_note(self, conv: fx.Node, why: Optional[_Why]) -> Note:
        """The note for a convolution with a plain output, in its own terms."""
        name = conv_name(conv)
        depthwise = is_depthwise(self._conv(conv))
        if why is None:
            source = next(iter(feature_args(conv)))
            if depthwise:
                return Note(name, "plain", f"depthwise: keeps the channel split of its input, "
                            f"{registry.describe(source)}, which no octave layer produces",
                            "depthwise on a plain input")
            return Note(name, "plain", "its output joins a plain tensor", "joins a plain tensor")
        if why.source is None or why.source is conv:
            return Note(name, "plain", why.says(conv), why.cause)
        if depthwise:
            return Note(name, "plain", f"depthwise: keeps the channel split of its input, the plain output of "
                        f"{conv_name(why.source)} ({why.says(why.source)})", f"depthwise after a plain layer ({why.cause})")
        return Note(name, "plain", f"its output shares one channel split with {conv_name(why.source)}'s, which stays "
                    f"plain ({why.says(why.source)})", f"joined to a plain layer ({why.cause})")

    def _derived_split(self, derived: List[fx.Node], layouts: Dict[fx.Node, Split]) -> Tuple[Split, Optional[_Why]]:
        """The split that concats, channel splits and shuffles in the class derive from their inputs'."""
        splits = {self._concat_split(node, layouts) if self.categories[node] == CAT
                  else self._selected_split(node, layouts) for node in derived}
        if len(splits) > 1:
            return None, _Why("channel concats, splits or shuffles disagree",
                              lambda conv: "channel concats, splits or shuffles joined by an add disagree on which "
                                           "channels are low")
        split = splits.pop()
        return (split, None) if split.n_low else (None, None)

    @staticmethod
    def _concat_split(node: fx.Node, layouts: Dict[fx.Node, Split]) -> ChannelSplit:
        return ChannelSplit.concat([ChannelSplit.trailing(channels(p), 0) if layouts.get(p) is None else layouts[p]
                                    for p in parts_and_dim(node)[0]])

    def _selected_split(self, node: fx.Node, layouts: Dict[fx.Node, Split]) -> Split:
        """The split of the channels ``node`` picks; None when they are all high or all low (a plain tensor)."""
        source, index = self.selections[node]
        if layouts.get(source) is None:
            return None
        split = selected_split(layouts[source], index)
        return split if split.n_low and split.n_high else None

    def _external_consumers(self, group: List[fx.Node]) -> List[fx.Node]:
        inside = set(group)
        return [user for node in group for user in node.users if user not in inside]

    def _why_not_useful(self, group: List[fx.Node]) -> Optional[_Why]:
        """Why two branches would be wasted here: nothing reads the class, or every consumer ends the octave
        region by convention: the model's output, a resize of a prediction, a convolution into a small map
        (the paper's last octave layer before a plain stage). Any other plain consumer (pooling, the
        classifier, an op without a rule) gets a merge on its edge; the convolutions still save MACs."""
        inside = set(group)
        rejoining = [n for n in group if self.categories[n] == CONV and not is_depthwise(self._conv(n))
                     and any(arg in inside for arg in feature_args(n))]  # a conv whose output re-joins its input
        consumers = [u for u in self._external_consumers(group) + rejoining if self.categories.get(u) != SHAPE]
        if not consumers:
            return _Why("output unused", lambda conv: "nothing reads its output")
        if any(self._uses_octave(u) or not self._ends_the_region(u) for u in consumers):
            return None
        names = ", ".join(sorted({self._kind(u) if u.op == "output" else registry.describe(u)
                                  for u in consumers})[:3])
        kinds = ", ".join(sorted({self._kind(u) for u in consumers}))
        return _Why(f"output feeds only plain consumers: {kinds}",
                    lambda conv: f"its output ({channels(conv)} channels, {'x'.join(map(str, spatial(conv)))}) "
                                 f"only feeds {names}, which need a plain tensor")

    def _ends_the_region(self, consumer: fx.Node) -> bool:
        return consumer.op == "output" or self.categories.get(consumer) == CONV or is_resize(consumer, self.modules)

    def _kind(self, node: fx.Node) -> str:
        """What a node is, without its name: ``Linear``, ``torch.flatten``, a small-map ``Conv2d``."""
        if node.op == "output":
            return "the model's output"
        if node.op != "call_module":
            return registry.describe(node)
        kind = type(self.modules[node.target]).__name__
        small = self.categories.get(node) == CONV and min(spatial(node)) < self.min_size
        return f"{kind} on small maps" if small else kind

    def _uses_octave(self, consumer: fx.Node) -> bool:
        category = self.categories.get(consumer)
        if category in (CAT, GLOBAL_POOL, CHANNELS):
            return True
        return category == CONV and min(spatial(consumer)) >= self.min_size

    def _grouped_convs(self, group: List[fx.Node]) -> List[Tuple[ConvFacts, bool]]:
        """The grouped (not depthwise) convolutions that write (False) or read (True) the class."""
        found = [(self._conv(node), False) for node in group if self.categories[node] == CONV]
        found += [(self._conv(user), True) for node in group for user in node.users
                  if self.categories.get(user) == CONV]
        return [(conv, reads) for conv, reads in found if _is_grouped(conv)]

    def _group_cuts(self, group: List[fx.Node]) -> List[int]:
        """Every group boundary of the class's grouped convolutions."""
        cuts = []
        for conv, reads in self._grouped_convs(group):
            channels_seen = conv.in_channels if reads else conv.out_channels
            cuts += range(channels_seen // conv.groups, channels_seen, channels_seen // conv.groups)
        return cuts

    def _every_group_alike(self, group: List[fx.Node], split: ChannelSplit) -> bool:
        """Every grouped convolution of the class sees the same low channels in each group (transposed ones
        split in whole groups only)."""
        transposed = any(isinstance(self.modules.get(conv.target), nn.ConvTranspose2d)
                         for node in group for conv in [node, *node.users]
                         if self.categories.get(conv) == CONV and conv.op == "call_module")
        return not transposed and all(group_pattern(split, conv.groups) is not None
                                      for conv, _ in self._grouped_convs(group))

    def _group_unit(self, group: List[fx.Node]) -> int:
        """Channels per split step: whole groups of the grouped convs that write or read the class."""
        return math.lcm(1, *((conv.in_channels if reads else conv.out_channels) // conv.groups
                             for conv, reads in self._grouped_convs(group)))

    # -- 4. per-conv splits ------------------------------------------------------------------
    def _conv_splits(self, layouts: Dict[fx.Node, Split], reasons: Dict[fx.Node, _Why],
                     readers: Dict[fx.Node, List[str]]) -> Dict[fx.Node, Tuple[Split, Split]]:
        """Each convolution's input and output split; ``readers`` collects, per class, the convolutions that
        read it and write a plain output."""
        result = {}
        for node in self.nodes:
            if self.categories[node] != CONV:
                continue
            conv = self._conv(node)
            source = next(iter(feature_args(node)))
            in_split, out_split = layouts.get(source), layouts.get(node)
            own_reason = None if is_depthwise(conv) else self._plain_output_reason(node)
            if own_reason:
                out_split = None
            if in_split is not None and _is_grouped(conv) and not _fits_groups(conv, in_split, out_split):
                in_split = None
                self.notes.append(Note(conv_name(node), "plain input",
                                       f"groups={conv.groups} need the low channels last in whole groups, or the "
                                       "same channels low in every group, on both sides"))
            result[node] = (in_split, out_split)
            if in_split is not None and out_split is None:
                readers.setdefault(self.classes.find(source), []).append(conv_name(node))
            if out_split is None:
                self.notes.append(self._plain_note(node, own_reason or reasons.get(self.classes.find(node))))
        return result

    def _resolve_min_size(self) -> None:
        convolutions = [(self._macs(node), min(spatial(node))) for node in self.nodes if self.categories[node] == CONV]
        self.min_size, note = resolve_min_size(self.asked_min_size, convolutions)
        if note:
            self.notes.append(note)

    def _macs(self, node: fx.Node) -> int:
        """A convolution's multiply-accumulates, from its shapes."""
        conv = self._conv(node)
        transposed = node.op == "call_module" and isinstance(self.modules[node.target], nn.ConvTranspose2d)
        height, width = spatial(next(iter(feature_args(node))) if transposed else node)
        return (height * width * conv.in_channels * conv.out_channels // conv.groups
                * conv.kernel_size[0] * conv.kernel_size[1])

    def plan(self) -> Plan:
        self._categorize()
        self._resolve_min_size()
        self._join()
        layouts, reasons = self._decide()
        readers: Dict[fx.Node, List[str]] = {}
        conv_splits = self._conv_splits(layouts, reasons, readers)
        groups = [AlphaGroup(writers[0], writers, tuple(readers.get(root, ())))
                  for root, writers in self.group_writers.items()]
        return Plan(self.categories, layouts, conv_splits, self.boundary_reasons, self.notes, groups,
                    self.strided_high)


def make_plan(module: fx.GraphModule, schedule: Schedule, min_size: MinSize = "auto", plain_stem: bool = True,
              channel_scores: Optional[Mapping[str, Sequence[float]]] = None, strided_high: bool = False) -> Plan:
    """Plan the conversion of a captured GraphModule (nodes must carry ``meta["val"]``).

    ``channel_scores`` maps node names to one score per channel (lower goes low first).
    """
    return Planner(module, schedule, min_size, plain_stem, channel_scores, strided_high).plan()
