"""Shape facts about graph nodes, read from ``node.meta["val"]`` (set by the capture stage)."""
from __future__ import annotations

from typing import Any, Iterator, List, Optional, Tuple

import torch
from torch import fx


def value_of(node: Any) -> Any:
    return node.meta.get("val") if isinstance(node, fx.Node) else None


def feature_shape(node: Any) -> Optional[torch.Size]:
    """The shape of a 4-d floating-point tensor value (a feature map ``N, C, H, W``), else None."""
    value = value_of(node)
    if isinstance(value, torch.Tensor) and value.ndim == 4 and value.is_floating_point():
        return value.shape
    return None


def is_feature_map(node: Any) -> bool:
    return feature_shape(node) is not None


def spatial(node: fx.Node) -> Tuple[int, int]:
    shape = feature_shape(node)
    return int(shape[2]), int(shape[3])


def channels(node: fx.Node) -> int:
    return int(feature_shape(node)[1])


def node_args(node: fx.Node) -> List[fx.Node]:
    """Every node among ``node``'s arguments, nested ones included, in order, once each."""
    found: List[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n) if n not in found else None)
    return found


def feature_args(node: fx.Node) -> Iterator[fx.Node]:
    return (n for n in node_args(node) if is_feature_map(n))


def is_per_channel(node: Any, channel_count: int) -> bool:
    """A tensor that broadcasts over space and matches ``channel_count`` channels (``[N, C, 1, 1]``, ``[C, 1, 1]``)."""
    value = value_of(node)
    if not isinstance(value, torch.Tensor) or value.ndim not in (3, 4):
        return False
    return int(value.shape[-3]) == channel_count and tuple(value.shape[-2:]) == (1, 1)


def broadcasts_to_both(value: Any) -> bool:
    """A number, or a tensor with one channel and 1x1 space: applies to both branches unchanged."""
    if isinstance(value, fx.Node):
        value = value_of(value)
    if not isinstance(value, torch.Tensor):
        return isinstance(value, (int, float, bool))
    return value.ndim == 0 or (value.ndim <= 4 and all(int(s) == 1 for s in value.shape[-3:]))
