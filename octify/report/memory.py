"""Feature-map memory of a graph: what each node allocates, and the peak of live feature maps.

Memory is counted per storage, so a view (``flatten``, a channel slice) or an in-place
result (``ReLU(inplace=True)``) shares its source's bytes and adds none. Parameters and
buffers are never feature maps. A storage is live from the node that creates it until
the last user of any value on it has run; the graph's inputs count from the start, its
outputs until the end. A leaf module is one step: its internal temporaries are not seen.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List

import torch
from torch import fx

CALL_OPS = ("call_module", "call_function", "call_method")


def tensors_in(value: Any) -> Iterator[torch.Tensor]:
    """Every tensor in a node's value (a tensor, or nested tuples / lists / dicts of them)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from tensors_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from tensors_in(item)


def tensor_bytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def _storage_id(tensor: torch.Tensor) -> int:
    # The address of the storage: shared by views and in-place results (fake and meta tensors too).
    return tensor.untyped_storage()._cdata


@dataclass
class _Allocation:
    nbytes: int
    producer: fx.Node
    first: int
    last: int


@dataclass
class FeatureMemory:
    """``allocated[node]``: bytes the node creates; ``peak``: most bytes live at once, reached at ``peak_node``."""

    allocated: Dict[fx.Node, int] = field(default_factory=dict)
    peak: int = 0
    peak_node: fx.Node = None

    @property
    def total(self) -> int:
        """Bytes created by all operations (the inputs excluded)."""
        return sum(nbytes for node, nbytes in self.allocated.items() if node.op in CALL_OPS)


def feature_memory(graph: fx.Graph) -> FeatureMemory:
    """Allocations and liveness over ``graph``'s execution order, from each node's ``meta["val"]``."""
    nodes: List[fx.Node] = list(graph.nodes)
    position = {node: index for index, node in enumerate(nodes)}
    parameters = {_storage_id(t) for node in nodes if node.op == "get_attr"
                  for t in tensors_in(node.meta.get("val"))}
    allocations: Dict[int, _Allocation] = {}
    for index, node in enumerate(nodes):
        if node.op not in CALL_OPS + ("placeholder",):
            continue
        last_use = max((position[user] for user in node.users), default=index)
        for tensor in tensors_in(node.meta.get("val")):
            storage = _storage_id(tensor)
            if storage in parameters:
                continue
            if storage not in allocations:
                allocations[storage] = _Allocation(tensor_bytes(tensor), node, index, last_use)
            allocations[storage].last = max(allocations[storage].last, last_use)
    memory = FeatureMemory({node: 0 for node in nodes})
    change = [0] * (len(nodes) + 1)
    for allocation in allocations.values():
        memory.allocated[allocation.producer] += allocation.nbytes
        change[allocation.first] += allocation.nbytes
        change[allocation.last + 1] -= allocation.nbytes
    live = 0
    for index, node in enumerate(nodes):
        live += change[index]
        if live > memory.peak:
            memory.peak, memory.peak_node = live, node
    return memory
