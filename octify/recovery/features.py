"""Feature maps at named modules: the original's through forward hooks, a converted network's through taps.

A converted ``GraphModule`` keeps the original's module names: every node records the modules whose forward
made it (``node.meta["nn_module_stack"]``). The output of module ``NAME`` is the last node made inside
``NAME`` that a node outside it reads. A :class:`FeatureTap` inserted after that node records its value,
a tensor or an octave pair (whose split the rewrite recorded in ``node.meta["octave_split"]``).
"""
from __future__ import annotations

import difflib
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from torch import fx, nn
from torch.nn.parallel import DistributedDataParallel

from ..layers import ChannelSplit, OctSplit
from ..layers.octconv import OctaveConvBase
from ..rewrite.context import OCTAVE_SPLIT

MAX_AUTOMATIC_FEATURES = 8
TAP_PREFIX = "feature_tap"


class FeatureTap(nn.Module):
    """Identity that keeps the last value it saw (a tensor, or a ``(high, low)`` pair split by ``split``)."""

    def __init__(self, name: str, split: Optional[ChannelSplit]) -> None:
        super().__init__()
        self.name, self.split = name, split
        self.value: Any = None

    def forward(self, x: Any) -> Any:
        self.value = x
        return x

    def extra_repr(self) -> str:
        return f"{self.name!r}, {self.split!r}"


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside ``DistributedDataParallel`` (or ``module`` itself)."""
    return module.module if isinstance(module, DistributedDataParallel) else module


def module_outputs(graph: fx.Graph) -> Dict[str, fx.Node]:
    """For every module a node records being made in, the node that is its output (see the module docstring)."""
    inside: Dict[fx.Node, set] = {node: modules_of(node) for node in graph.nodes}
    outputs: Dict[str, fx.Node] = {}
    for node in graph.nodes:
        for name in inside[node]:
            if any(name not in inside[user] for user in node.users):
                outputs[name] = node
    return outputs


def modules_of(node: fx.Node) -> set:
    """The names of the modules whose forward made ``node``."""
    return {path for path, _ in node.meta.get("nn_module_stack", {}).values()}


def resolve(student: fx.GraphModule, teacher: nn.Module, names: Union[str, Sequence[str], None]) -> Dict[str, fx.Node]:
    """The student's output node for each feature name; ``"auto"`` picks them (see ``automatic``), None none.

    Raises ValueError for a name that the teacher or the student lacks, with suggestions.
    """
    if names is None:
        return {}
    if _octave(student) and not any(OCTAVE_SPLIT in node.meta for node in student.graph.nodes):
        raise ValueError("the converted network records no module names and splits (loaded from model.pt, or not "
                         "made by octify.convert): convert the original again, or pass features=None to compare "
                         "outputs only")
    outputs = module_outputs(student.graph)
    if isinstance(names, str) and names == "auto":
        names = automatic(teacher, outputs)
    elif isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"features must be 'auto', None or a list of module names such as ['layer1', 'layer2'], "
                         f"got {names!r}")
    teacher_names = dict(teacher.named_modules())
    resolved: Dict[str, fx.Node] = {}
    for name in names:
        if name not in teacher_names or not name:
            raise ValueError(f"feature {name!r} is not a module of the original{_suggest(name, teacher_names)}")
        if name not in outputs:
            raise ValueError(f"feature {name!r}: the converted network has no node made inside it (kept inside a "
                             f"leaf, or the student is not the original converted){_suggest(name, outputs)}")
        resolved[name] = outputs[name]
    return resolved


def _octave(module: nn.Module) -> bool:
    """Whether ``module`` makes octave tensors: it splits a plain tensor, or a convolution has low outputs."""
    return any(isinstance(m, OctSplit) or (isinstance(m, OctaveConvBase) and m.low_out) for m in module.modules())


def automatic(teacher: nn.Module, outputs: Dict[str, fx.Node]) -> List[str]:
    """Block outputs: the children of each ``nn.Sequential`` of the original (not those inside another such
    child, like a block's own layers) whose output in the converted network is an octave tensor; at most
    ``MAX_AUTOMATIC_FEATURES``, evenly spaced, the deepest included."""
    octave = sorted((name for name in container_children(teacher)
                     if name in outputs and OCTAVE_SPLIT in outputs[name].meta),
                    key=lambda name: _position(outputs[name]))
    if len(octave) <= MAX_AUTOMATIC_FEATURES:
        return octave
    step = len(octave) / MAX_AUTOMATIC_FEATURES
    return [octave[len(octave) - 1 - int(i * step)] for i in reversed(range(MAX_AUTOMATIC_FEATURES))]


def container_children(teacher: nn.Module, containers: Tuple[type, ...] = (nn.Sequential,)) -> List[str]:
    """The names of the children of each ``containers`` instance in ``teacher`` that lie inside no other such
    child (blocks, not a block's own layers)."""
    children = [f"{parent}.{child}".lstrip(".") for parent, module in teacher.named_modules()
                if isinstance(module, containers) for child, _ in module.named_children()]
    return [name for name in children if not any(name.startswith(other + ".") for other in children)]


def _position(node: fx.Node) -> int:
    return list(node.graph.nodes).index(node)


def _suggest(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, [c for c in candidates if c], n=3)
    return f"; did you mean {', '.join(map(repr, close))}?" if close else ""


def insert_taps(student: fx.GraphModule, nodes: Dict[str, fx.Node]) -> Dict[str, FeatureTap]:
    """A :class:`FeatureTap` after each node, named ``feature_tap_<i>``; the graph is recompiled."""
    taps: Dict[str, FeatureTap] = {}
    for index, (name, node) in enumerate(nodes.items()):
        tap = FeatureTap(name, node.meta.get(OCTAVE_SPLIT))
        target = f"{TAP_PREFIX}_{index}"
        while hasattr(student, target):
            target += "_"
        student.add_submodule(target, tap)
        with student.graph.inserting_after(node):
            student.graph.call_module(target, (node,))
        taps[name] = tap
    student.recompile()
    return taps


def remove_taps(student: fx.GraphModule, taps: Iterable[FeatureTap]) -> None:
    """Take the taps out of ``student`` again."""
    taps = set(taps)
    for node in list(student.graph.nodes):
        if node.op == "call_module" and student.get_submodule(node.target) in taps:
            student.graph.erase_node(node)
            student.delete_submodule(node.target)
    student.recompile()


class OutputHooks:
    """Forward hooks recording the last output of each named submodule of ``module`` in ``values``."""

    def __init__(self, module: nn.Module, names: Iterable[str]) -> None:
        self.values: Dict[str, Any] = {}
        self._handles = [module.get_submodule(name).register_forward_hook(
            lambda _, __, output, name=name: self.values.__setitem__(name, output)) for name in names]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def graph_module_of(student: nn.Module) -> Optional[fx.GraphModule]:
    """The GraphModule that ``student`` is or wraps (``DistributedDataParallel``), else None."""
    inner = unwrap(student)
    return inner if isinstance(inner, fx.GraphModule) else None
