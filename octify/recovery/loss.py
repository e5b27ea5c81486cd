"""``DistillationLoss``: a converted network (student) against its original (teacher), for any training loop."""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten

from ..capture.capture import eval_mode
from ..layers import OctMerge, OctSplit
from .features import OutputHooks, graph_module_of, insert_taps, remove_taps, resolve

Features = Union[str, Sequence[str], None]


class DistillationLoss(nn.Module):
    """The distance from a converted network's outputs and feature maps to the original's on the same inputs.

    ``loss(inputs, labels=None)`` runs both networks (the teacher in eval mode, without gradients) and
    returns one scalar:

    - outputs: for classifier logits (``N, K`` tensors) the KL divergence of the softened probabilities,
      ``T**2 * KL(softmax(teacher / T) || softmax(student / T))``; for any other tensor (a map, a box) the
      squared error relative to the teacher's mean square; averaged over the output tensors;
    - features (times ``feature_weight``): at each named module of the original, the relative squared error
      of the student's map there. An octave map is merged (``OctMerge``: the low branch up-sampled) and
      compared with the teacher's map split and merged the same way, that is with its low-frequency channels
      averaged over 2x2 blocks: the detail the low branch cannot hold is not asked of it;
    - with ``labels`` (class indices) and ``label_weight > 0``: plus the cross-entropy of the first logits.

    ``student`` is a network from ``octify.convert`` (or one wrapped in ``DistributedDataParallel``: call the
    loss with the wrapped one and gradients are synchronised as usual). The loss puts identity taps
    (``FeatureTap``, no parameters) into the student's graph and forward hooks on the teacher; ``remove()``
    (or leaving a ``with`` block) takes them out. ``features``: module names of the original
    (``["layer1", "layer2"]``), ``"auto"`` (block outputs in the octave region: the children of each
    ``nn.Sequential``, at most 8, evenly spaced) or None (outputs only). The parts of the last call are in
    ``last`` (detached).
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, features: Features = "auto", *,
                 temperature: float = 1.0, feature_weight: float = 1.0, label_weight: float = 1.0) -> None:
        super().__init__()
        graph = graph_module_of(student)
        if graph is None:
            raise ValueError(f"the student must be a network from octify.convert (a torch.fx GraphModule), or one "
                             f"wrapped in DistributedDataParallel; got {type(student).__name__}")
        if not isinstance(teacher, nn.Module):
            raise ValueError(f"the teacher must be a torch.nn.Module, got {type(teacher).__name__}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        nodes = resolve(graph, teacher, features)
        self.features = list(nodes)
        self.temperature, self.feature_weight, self.label_weight = temperature, feature_weight, label_weight
        self._networks = (student, teacher)  # a tuple: not registered, so the loss holds no parameters
        self._taps = insert_taps(graph, nodes)
        self._teacher_features = OutputHooks(teacher, self.features)
        self._projections: Dict[str, Tuple[OctSplit, OctMerge]] = {
            name: (OctSplit(tap.split), OctMerge(tap.split)) for name, tap in self._taps.items() if tap.split}
        self.last: Dict[str, Tensor] = {}

    def forward(self, inputs: Union[Tensor, Sequence[Tensor]], labels: Optional[Tensor] = None) -> Tensor:
        student, teacher = self._networks
        inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
        with torch.no_grad(), eval_mode(teacher):
            expected = teacher(*inputs)
        targets = dict(self._teacher_features.values)
        produced = student(*inputs)
        self.last = {"output": self._output_loss(produced, expected)}
        total = self.last["output"]
        if self.features:
            self.last["features"] = torch.stack([self._feature_loss(name, targets[name])
                                                 for name in self.features]).mean()
            total = total + self.feature_weight * self.last["features"]
        if labels is not None and self.label_weight:
            logits = next((s for s in tree_flatten(produced)[0] if _is_logits(s)), None)
            if logits is None:
                raise ValueError("labels were given but the network returns no classifier logits (N, K)")
            self.last["labels"] = F.cross_entropy(logits.float(), labels)
            total = total + self.label_weight * self.last["labels"]
        self.last = {key: value.detach() for key, value in self.last.items()}
        for tap in self._taps.values():  # the maps are in the autograd graph now; keep no reference
            tap.value = None
        self._teacher_features.values.clear()
        return total

    def _output_loss(self, produced: Any, expected: Any) -> Tensor:
        ours, structure = tree_flatten(produced)
        theirs, expected_structure = tree_flatten(expected)
        if structure != expected_structure:
            raise ValueError("the student and the teacher return differently structured outputs")
        terms = [self._distance(s, t) for s, t in zip(ours, theirs) if isinstance(t, Tensor) and t.is_floating_point()]
        if not terms:
            raise ValueError("the teacher returns no floating-point tensor to distil")
        return torch.stack(terms).mean()

    def _distance(self, student: Tensor, teacher: Tensor) -> Tensor:
        if _is_logits(teacher):
            t = self.temperature
            return F.kl_div(F.log_softmax(student.float() / t, 1), F.log_softmax(teacher.float() / t, 1),
                            reduction="batchmean", log_target=True) * t * t
        return relative_squared_error(student, teacher)

    def _feature_loss(self, name: str, target: Tensor) -> Tensor:
        value = self._taps[name].value
        if name in self._projections:
            split, merge = (m.to(target.device) for m in self._projections[name])
            value, target = merge(value), merge(split(target))
        if not isinstance(value, Tensor) or not isinstance(target, Tensor):
            raise ValueError(f"feature {name!r} is not a feature map: its module returns a "
                             f"{type(target).__name__}; name a module that returns a tensor")
        return relative_squared_error(value, target)

    def remove(self) -> None:
        """Take the taps out of the student and the hooks off the teacher."""
        graph = graph_module_of(self._networks[0])
        remove_taps(graph, self._taps.values())
        self._teacher_features.remove()
        self._taps = {}

    def __enter__(self) -> "DistillationLoss":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def extra_repr(self) -> str:
        return f"features={self.features}, temperature={self.temperature}, feature_weight={self.feature_weight}"


def relative_squared_error(value: Tensor, target: Tensor) -> Tensor:
    """Mean squared error divided by the target's mean square (0 = exact, 1 = as far as predicting zeros)."""
    value, target = value.float(), target.float()
    if value.shape != target.shape:
        raise ValueError(f"cannot compare a map of shape {tuple(value.shape)} with the original's "
                         f"{tuple(target.shape)}")
    return F.mse_loss(value, target) / target.pow(2).mean().clamp_min(1e-12)


def _is_logits(value: Any) -> bool:
    return isinstance(value, Tensor) and value.is_floating_point() and value.ndim == 2 and value.shape[1] > 1
