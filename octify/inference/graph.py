"""Small queries on a torch.fx graph shared by the inference passes."""
from __future__ import annotations

from typing import Dict, Optional, Tuple

from torch import fx, nn


def is_module_call(model: nn.Module, node: object, kinds: Tuple[type, ...]) -> bool:
    """Whether ``node`` calls a submodule of ``model`` that is an instance of ``kinds``."""
    return (isinstance(node, fx.Node) and node.op == "call_module"
            and isinstance(model.get_submodule(node.target), kinds))


def module_call_counts(graph: fx.Graph) -> Dict[str, int]:
    """How many times the graph calls each submodule, by qualified name."""
    counts: Dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            counts[str(node.target)] = counts.get(str(node.target), 0) + 1
    return counts


def only_user(node: fx.Node) -> Optional[fx.Node]:
    """The one node that uses ``node``'s value, or None if there are none or several."""
    return next(iter(node.users)) if len(node.users) == 1 else None
