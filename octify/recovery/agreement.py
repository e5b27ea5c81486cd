"""How closely a converted network follows its original on given inputs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten

from ..capture.capture import eval_mode
from .data import Data, batches
from ..devices import device_of


@dataclass(frozen=True)
class Agreement:
    """``metric`` is ``"top-1 agreement"`` (the share of inputs whose predicted class is the original's; first
    output of shape ``N, K``) or ``"relative error"`` (``||converted - original|| / ||original||`` over every
    floating-point output); ``inputs`` is how many inputs were compared."""

    metric: str
    value: float
    inputs: int

    def __str__(self) -> str:
        return f"{self.metric} {100 * self.value:.1f}%"

    def to_dict(self) -> dict:
        return {"metric": self.metric, "value": self.value, "inputs": self.inputs}


def agreement(original: nn.Module, converted: nn.Module, data: Data) -> Agreement:
    """Both networks in eval mode on ``data`` (the forms ``calibrate`` takes), compared as :class:`Agreement` says."""
    same = inputs = 0
    squared_error = squared_norm = 0.0
    classifier = None
    with torch.no_grad(), eval_mode(original), eval_mode(converted):
        for batch in batches(data, None, device_of(converted)):
            expected, produced = _floats(original(batch.input.to(device_of(original)))), _floats(converted(batch.input))
            if classifier is None:
                classifier = expected[0].ndim == 2 and expected[0].shape[1] > 1
            if classifier:
                same += (produced[0].argmax(1) == expected[0].to(produced[0].device).argmax(1)).sum().item()
            for ours, theirs in zip(produced, expected):
                theirs = theirs.to(ours.device).float()
                squared_error += (ours.float() - theirs).pow(2).sum().item()
                squared_norm += theirs.pow(2).sum().item()
            inputs += len(batch.input)
    if not inputs:
        raise ValueError("the data gave no batch to compare with")
    if classifier:
        return Agreement("top-1 agreement", same / inputs, inputs)
    return Agreement("relative error", (squared_error / max(squared_norm, 1e-30)) ** 0.5, inputs)


def _floats(output: object) -> List[Tensor]:
    tensors = [t for t in tree_flatten(output)[0] if isinstance(t, Tensor) and t.is_floating_point()]
    if not tensors:
        raise ValueError("the network returns no floating-point tensor to compare")
    return tensors
