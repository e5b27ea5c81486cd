"""Per-layer output reconstruction: least squares on each octave convolution's path weights.

Layer by layer, in network order, each :class:`~octify.layers.OctConv2d` of the converted
network is fitted so that its outputs, computed from the inputs it actually receives in the
converted network (earlier layers already fitted), match the original layer's outputs in the
original network: the high branch the original's high channels, the low branch the original's
low channels 2x2 average-pooled. Every path into one output branch is fitted jointly (the
low-resolution paths' kernels are thereby adapted to half resolution), with a small ridge term
that pulls towards the current weights (directions the data does not determine keep them).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from ..capture import capture
from ..capture.capture import eval_mode
from ..errors import InternalError
from ..layers.functional_octconv import FunctionalOctConv2d
from ..layers.octconv import OctConv2d, Path
from ..layers.resample import downsample, upsample_to
from .data import Data, batches
from .stepping import Stepper


SAMPLES_PER_WEIGHT = 4  # with fewer output pixels per unknown weight, the fit follows the data, not the network


@dataclass
class Reconstruction:
    """What :func:`reconstruct` did: per fitted layer, the relative squared error of its output against the
    original layer's on the data, before and after (``layers``), and the octave layers it left as they were,
    with the reason (``skipped``)."""

    layers: Dict[str, Tuple[float, float]] = field(default_factory=dict)
    skipped: Dict[str, str] = field(default_factory=dict)


@dataclass
class _Block:
    """Paths fitted together: those writing one output branch (``groups == 1``) or one grouped path."""

    paths: List[Path]
    convs: List[nn.Conv2d]
    channels: Tuple[int, ...]  # the original layer's output channels this block writes, in order
    low: bool
    groups: int
    bias: Optional[nn.Conv2d]
    gram: Optional[Tensor] = None
    cross: Optional[Tensor] = None
    energy: float = 0.0
    samples: int = 0


def reconstruct(converted: fx.GraphModule, original: nn.Module, data: Data, *,
                ridge: float = 1e-5) -> Reconstruction:
    """Fit ``converted``'s octave convolutions, in place and in network order, to the outputs of ``original``'s
    convolutions of the same names on ``data`` (as for :func:`octify.calibrate`: a tensor of inputs, or an
    iterable of tensors or ``(input, ...)`` tuples).

    ``converted`` is a converted GraphModule (``octify.convert(...).module``, trained or not). ``ridge`` weighs
    the pull towards the current weights, relative to the mean feature energy. Both networks run once over
    ``data``, in eval mode (their train/eval flags are restored; ``original`` is not modified), pausing before
    each octave layer: the data and the feature maps live at that point are held in memory. Layers at alpha 0,
    shared layers, layers whose original is not an ``nn.Conv2d`` of the same shape, layers with string
    padding, functional octave convolutions and layers with fewer than ``SAMPLES_PER_WEIGHT`` output pixels in
    the data per weight of an output channel are left as they are, listed in the result's ``skipped``.
    Raises ValueError when ``converted`` is not a GraphModule or has no octave convolution to fit.
    """
    if not isinstance(converted, fx.GraphModule):
        raise ValueError(f"reconstruct needs the converted GraphModule (octify.convert(...).module), got "
                         f"{type(converted).__name__}")
    parameter = next(iter(original.parameters()), None)
    inputs = [batch.input for batch in batches(data, device=parameter.device if parameter is not None else None)]
    if not inputs:
        raise ValueError("reconstruct: data gave no batch")
    with eval_mode(converted), eval_mode(original):
        reference = capture(copy.deepcopy(original), inputs[:1]).module
        layers, result = _layers(converted, reference)
        if not layers:
            raise ValueError("reconstruct: the converted model has no octave convolution with a matching nn.Conv2d "
                             "in the original" + "".join(f"; {k}: {v}" for k, v in result.skipped.items()))
        mine = [Stepper(converted, batch) for batch in inputs]
        theirs = [Stepper(reference, batch) for batch in inputs]
        for node, target in layers:
            layer, name = converted.get_submodule(str(node.target)), str(node.target)
            fit = _fit_layer(layer, node, target, mine, theirs, ridge)
            if isinstance(fit, str):
                result.skipped[name] = fit
            else:
                result.layers[name] = fit
    return result


def _layers(converted: fx.GraphModule,
            reference: fx.GraphModule) -> Tuple[List[Tuple[fx.Node, fx.Node]], Reconstruction]:
    """The octave layers to fit, each with its original convolution's node, in graph order; the skipped ones."""
    result = Reconstruction()

    def calls(graph: fx.GraphModule) -> Dict[str, List[fx.Node]]:
        found: Dict[str, List[fx.Node]] = {}
        for node in graph.graph.nodes:
            if node.op == "call_module":
                found.setdefault(str(node.target), []).append(node)
        return found

    mine, theirs = calls(converted), calls(reference)
    layers = []
    for name, nodes in mine.items():
        layer = converted.get_submodule(name)
        if isinstance(layer, FunctionalOctConv2d):
            result.skipped[name] = "a convolution by F.conv2d (FunctionalOctConv2d), whose weight the graph passes in"
        if type(layer) is not OctConv2d or layer.is_plain:
            continue
        target = reference.get_submodule(name) if len(theirs.get(name, ())) == 1 else None
        reason = _unfit_reason(layer, target, len(nodes))
        if reason:
            result.skipped[name] = reason
        else:
            layers.append((nodes[0], theirs[name][0]))
    return layers, result


def _unfit_reason(layer: OctConv2d, target: Optional[nn.Module], calls: int) -> Optional[str]:
    if calls > 1:
        return f"called {calls} times in the graph"
    if type(target) is not nn.Conv2d or target.weight.shape != (layer.out_channels, layer.in_channels // layer.groups,
                                                                 *layer.kernel_size):
        return "the original has no nn.Conv2d of this name and shape"
    if any(isinstance(conv.padding, str) for _, conv in layer.path_convs()):
        return "string padding"
    return None


def _blocks(layer: OctConv2d) -> List[_Block]:
    _, out_split = layer.original_splits
    pairs = list(layer.path_convs())
    if layer.groups == 1 or layer.within_groups:  # the paths into a branch sum: fitted jointly, group by group
        blocks = []
        for low in (False, True):
            members = [(p, c) for p, c in pairs if p.dst_low == low]
            if members:
                owner = next((c for p, c in members if c.bias is not None), None)
                blocks.append(_Block([p for p, _ in members], [c for _, c in members], out_split.branch_index(low),
                                     low, layer.groups, owner))
        return blocks
    return [_Block([p], [c], out_split.branch_index(p.dst_low)[slice(*p.out_range)], p.dst_low, p.groups,
                   c if c.bias is not None else None) for p, c in pairs]


def _fit_layer(layer: OctConv2d, node: fx.Node, target: fx.Node, mine: List[Stepper], theirs: List[Stepper],
               ridge: float) -> Union[Tuple[float, float], str]:
    """Fit ``layer``: its relative squared error before and after, or why it was left as it was."""
    blocks = _blocks(layer)
    watched = [conv for block in blocks for conv in block.convs]
    for converted, reference in zip(mine, theirs):
        sources: Dict[nn.Module, Tensor] = {}
        handles = [conv.register_forward_hook(lambda module, args, _: sources.__setitem__(module, args[0]))
                   for conv in watched]
        try:
            converted.peek(node)
        finally:
            for handle in handles:
                handle.remove()
        expected = reference.peek(target)
        high_size = expected.shape[-2:]
        for block in blocks:
            for n in range(expected.shape[0]):  # one sample at a time: im2col columns are large
                _accumulate(block, [_features(sources[conv][n:n + 1], conv, path, high_size)
                                    for path, conv in zip(block.paths, block.convs)], expected[n:n + 1])
    unknowns, samples = max(block.gram.shape[-1] for block in blocks), min(block.samples for block in blocks)
    if samples < SAMPLES_PER_WEIGHT * unknowns:
        return (f"{samples} output pixels in the data for {unknowns} weights per output channel: too few to fit "
                f"(it takes {SAMPLES_PER_WEIGHT} per weight; give more or larger inputs)")
    before = after = energy = 0.0
    for block in blocks:
        current = _weights(block)
        before += _residual(block, current)
        scale = block.gram.diagonal(dim1=1, dim2=2).mean(dim=1).clamp_min(1e-12)[:, None, None]
        eye = torch.eye(block.gram.shape[-1], dtype=block.gram.dtype, device=block.gram.device)
        solution = torch.linalg.solve(block.gram + ridge * scale * eye, block.cross + ridge * scale * current)
        after += _residual(block, solution)
        energy += block.energy
        _store(block, solution)
    return before / max(energy, 1e-300), after / max(energy, 1e-300)


def _accumulate(block: _Block, features: List[Tensor], reference: Tensor) -> None:
    """Add one sample's normal equations to ``block``'s."""
    x = torch.cat(features, dim=2)  # N, groups, D, H*W
    if block.bias is not None:
        x = torch.cat([x, x.new_ones(x.shape[0], x.shape[1], 1, x.shape[3])], dim=2)
    y = reference[:, list(block.channels)]
    if block.low:
        y = downsample(y)
    y = y.flatten(2).double().reshape(y.shape[0], block.groups, -1, x.shape[3])
    x = x.transpose(0, 1).transpose(1, 2).flatten(2)  # groups, D, N*H*W
    y = y.transpose(0, 1).transpose(1, 2).flatten(2)  # groups, C_g, N*H*W
    gram, cross = x @ x.transpose(1, 2), x @ y.transpose(1, 2)
    block.gram = gram if block.gram is None else block.gram + gram
    block.cross = cross if block.cross is None else block.cross + cross
    block.energy += float(y.square().sum())
    block.samples += x.shape[-1]


def _features(source: Tensor, conv: nn.Conv2d, path: Path, high_size: Sequence[int]) -> Tensor:
    """``conv``'s im2col columns on ``source`` at its output branch's size: N, groups, C_in/groups * k * k, H*W."""
    padding = conv.padding
    if conv.padding_mode != "zeros" and any(padding):
        source = F.pad(source, (padding[1], padding[1], padding[0], padding[0]), mode=conv.padding_mode)
        padding = (0, 0)
    columns = F.unfold(source.double(), conv.kernel_size, conv.dilation, padding, conv.stride)
    out_size = [(n + 2 * p - d * (k - 1) - 1) // s + 1 for n, p, d, k, s in
                zip(source.shape[-2:], padding, conv.dilation, conv.kernel_size, conv.stride)]
    columns = columns.reshape(columns.shape[0], -1, *out_size)
    if not path.dst_low and tuple(out_size) != tuple(high_size):
        columns = upsample_to(columns, high_size)
    if path.dst_low:
        low_size = [(n + 1) // 2 for n in high_size]
        if list(columns.shape[-2:]) != low_size:
            raise InternalError(f"path {path.name} gives {tuple(columns.shape[-2:])}, not the low size {low_size}",
                                "reconstruct")
    return columns.reshape(columns.shape[0], conv.groups, -1, columns.shape[-2] * columns.shape[-1])


def _weights(block: _Block) -> Tensor:
    """The block's current weights in the solution's layout: groups, D, C_g."""
    parts = [conv.weight.detach().double().reshape(block.groups, conv.out_channels // block.groups, -1)
             for conv in block.convs]
    weight = torch.cat(parts, dim=2)
    if block.bias is not None:
        weight = torch.cat([weight, block.bias.bias.detach().double().reshape(block.groups, -1, 1)], dim=2)
    return weight.transpose(1, 2)


def _residual(block: _Block, weight: Tensor) -> float:
    """Squared error of ``weight`` on the accumulated statistics."""
    quadratic = (weight * (block.gram @ weight)).sum()
    return float(block.energy - 2 * (weight * block.cross).sum() + quadratic)


def _store(block: _Block, solution: Tensor) -> None:
    weight = solution.transpose(1, 2)  # groups, C_g, D
    start = 0
    with torch.no_grad():
        for conv in block.convs:
            width = conv.weight[0].numel()
            conv.weight.copy_(weight[:, :, start:start + width].reshape(conv.weight.shape))
            start += width
        if block.bias is not None:
            block.bias.bias.copy_(weight[:, :, start].reshape(-1))
