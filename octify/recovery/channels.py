"""Channel scores from data: how much of each channel's energy lies above the half-resolution band.

A channel's score on one feature map is ``|x - up(pool(x))|^2 / |x|^2`` summed over the data, ``pool``
and ``up`` being the octave layers' own 2x2 average pooling and nearest up-sampling: the relative
error the channel suffers when it is stored at half resolution. The planner makes the lowest-scoring
channels of each class low (``octify.convert(..., calibration_data=...)``).
"""
from __future__ import annotations

from typing import Any, Dict

import torch
from torch import Tensor, fx

from ..capture.capture import eval_mode
from ..capture.facts import is_feature_map
from ..layers.resample import downsample, upsample_to
from .data import Data, batches


class _ScoringInterpreter(fx.Interpreter):
    """Runs a captured graph and accumulates, per feature map, each channel's energy and its energy
    above the half-resolution band."""

    def __init__(self, module: fx.GraphModule) -> None:
        super().__init__(module)
        self.lost: Dict[str, Tensor] = {}
        self.energy: Dict[str, Tensor] = {}

    def run_node(self, node: fx.Node) -> Any:
        result = super().run_node(node)
        if is_feature_map(node) and isinstance(result, Tensor) and result.ndim == 4 and result.is_floating_point():
            x = result.detach().double()
            lost = (x - upsample_to(downsample(x), x.shape[-2:])).square().sum(dim=(0, 2, 3))
            energy = x.square().sum(dim=(0, 2, 3))
            self.lost[node.name] = self.lost.get(node.name, 0) + lost
            self.energy[node.name] = self.energy.get(node.name, 0) + energy
        return result


def channel_scores(module: fx.GraphModule, data: Data) -> Dict[str, Tensor]:
    """Per feature-map node name, one score per channel: its relative error at half resolution over ``data``
    (0 for a channel that is zero throughout). ``module``, a captured plain graph with shapes recorded, runs
    in eval mode without gradients; its train/eval flags are restored afterwards. ``data``: as for
    :func:`octify.calibrate` (a tensor of inputs, or an iterable of tensors or ``(input, ...)`` tuples)."""
    parameter = next(iter(module.parameters()), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    interpreter = _ScoringInterpreter(module)
    with eval_mode(module), torch.no_grad():
        for batch in batches(data, device=device):
            interpreter.run(batch.input)
    if not interpreter.energy:
        raise ValueError("calibration_data gave no batch: give a tensor of inputs or a non-empty iterable of batches")
    return {name: torch.where(energy > 0, interpreter.lost[name] / energy.clamp_min(1e-300), energy.new_zeros(()))
            .float().cpu() for name, energy in interpreter.energy.items()}
