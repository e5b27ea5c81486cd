"""``--verify``: run the original and the converted model on one random input and compare."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Sequence, Tuple

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from octify.export import eval_mode

from .errors import CommandError


@dataclass
class Comparison:
    shapes: List[Tuple[int, ...]]  # of the output tensors, the same for both models
    max_abs_difference: float
    max_abs_output: float  # the original's largest absolute output value: the scale of the difference

    @property
    def relative_difference(self) -> float:
        """``max_abs_difference`` as a fraction of ``max_abs_output``."""
        return self.max_abs_difference / self.max_abs_output


def compare_outputs(original: nn.Module, converted: nn.Module, example_inputs: Sequence[torch.Tensor]) -> Comparison:
    """Both models in eval mode on ``example_inputs``; CommandError unless outputs have the same structure and
    shapes."""
    with torch.no_grad(), eval_mode(original), eval_mode(converted):
        expected, expected_structure = tree_flatten(original(*example_inputs))
        produced, produced_structure = tree_flatten(converted(*example_inputs))
    if expected_structure != produced_structure or _signature(expected) != _signature(produced):
        raise CommandError(f"verification failed: the converted model returns {_signature(produced)}, "
                           f"the original {_signature(expected)}")
    tensors = [(a, b) for a, b in zip(expected, produced) if isinstance(a, torch.Tensor)]
    difference = max(((a.float() - b.float()).abs().max().item() for a, b in tensors if a.numel()), default=0.0)
    magnitude = max((a.float().abs().max().item() for a, _ in tensors if a.numel()), default=0.0)
    return Comparison([tuple(a.shape) for a, _ in tensors], difference, magnitude)


def _signature(leaves: List[Any]) -> List[Any]:
    """Each output tensor's shape; other outputs as they are."""
    return [tuple(leaf.shape) if isinstance(leaf, torch.Tensor) else leaf for leaf in leaves]
