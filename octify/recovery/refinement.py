"""Block-wise refinement: each block of a converted network trained alone, in network order, to compute the
original block's output.

:func:`reconstruct` fits each octave convolution by least squares, a linear fit layer by layer. ``refine``
then fits what that cannot reach, one block at a time: the layers of a block together, through their
BatchNorms and activations, from the inputs the block receives in the converted network (earlier blocks
already refined) to the original block's output (its low-frequency channels 2x2 averaged, all the octave
form can hold). A local objective on every pixel of every block output asks much less data than training
the whole network on its final outputs, as post-training compression tools found.

A block is a child of an ``nn.Sequential`` or ``nn.ModuleList`` of the original (a residual block, a stage's
unit) that holds an octave convolution; an octave convolution in no such block is a block of its own, named
by the innermost module of the original that made it.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, fx, nn

from ..capture import capture
from ..capture.capture import eval_mode
from ..devices import device_of
from ..layers import ChannelSplit, OctSplit
from ..layers.checks import describe_value
from ..layers.octconv import OctaveConvBase
from ..rewrite.context import OCTAVE_SPLIT
from .data import Data, batches
from .features import container_children, module_outputs, modules_of
from .progress import Progress
from .stepping import Stepper

CONTAINERS = (nn.Sequential, nn.ModuleList)  # their children are the blocks
STEPS = 200  # refine's default optimizer steps per block
LEARNING_RATE = 1e-3  # refine's default
EXACT = 1e-10  # a block output this close to the original's (relative squared error) is left as it is


@dataclass
class Refinement:
    """What :func:`refine` did: per block, the relative squared error of its output against the original block's
    on the data, before and after (``blocks``); the blocks it left as they were, with the reason (``skipped``);
    the wall time."""

    blocks: Dict[str, Tuple[float, float]] = field(default_factory=dict)
    skipped: Dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def __repr__(self) -> str:
        before = sum(b for b, _ in self.blocks.values()) / max(len(self.blocks), 1)
        after = sum(a for _, a in self.blocks.values()) / max(len(self.blocks), 1)
        return (f"Refinement({len(self.blocks)} blocks, mean relative error {before:.4f} -> {after:.4f}, "
                f"{len(self.skipped)} skipped, {self.seconds:.1f} s)")


@dataclass
class _Block:
    """A block: its name in the original and its nodes in the converted graph (a run of consecutive nodes, the
    last one its output, which is octave with ``split`` or plain when ``split`` is None)."""

    name: str
    nodes: List[fx.Node]
    split: Optional[ChannelSplit]


def refine(converted: fx.GraphModule, original: nn.Module, data: Data, *, steps: int = STEPS,
           lr: float = LEARNING_RATE, progress: bool = True) -> Refinement:
    """Train ``converted``'s blocks one at a time, in place and in network order, to reproduce the outputs of
    ``original``'s modules of the same names on ``data`` (as for :func:`octify.calibrate`: a tensor of inputs,
    or an iterable of tensors or ``(input, ...)`` tuples). Best after :func:`octify.reconstruct`.

    Each block takes ``steps`` Adam steps over the data's batches (the learning rate falls from ``lr`` to 0 on
    a cosine) on the relative squared error of its output; everything outside it is frozen, and BatchNorm
    statistics are kept (eval mode; the networks' modes are restored after). A block whose error on the data
    did not fall keeps its weights. ``steps=0`` trains nothing and measures each block's error, for example on
    held-out data after a refinement (``before`` and ``after`` are then equal). ``original`` is never modified.
    Both networks run once over ``data`` on ``converted``'s device, pausing before each block: the data and the
    feature maps live at that point are held in memory.

    Raises ValueError when ``converted`` is not a GraphModule, has no octave convolution, or the arguments are
    out of range.
    """
    if not isinstance(converted, fx.GraphModule):
        raise ValueError(f"refine needs the converted GraphModule (octify.convert(...).module), got "
                         f"{type(converted).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a whole number, 0 or more, got {steps!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    device = device_of(converted)
    inputs = [batch.input for batch in batches(data, device=device)]
    if not inputs:
        raise ValueError("refine: data gave no batch")
    teacher = original if device_of(original) == device else copy.deepcopy(original).to(device)
    start = time.monotonic()
    with eval_mode(converted), eval_mode(teacher):
        reference = capture(copy.deepcopy(teacher), inputs[:1]).module
        blocks = _blocks(converted, teacher)
        if not blocks:
            raise ValueError("refine: the converted model has no octave convolution (alpha 0 everywhere, or not a "
                             "network from octify.convert)")
        result = Refinement()
        targets = module_outputs(reference.graph)
        mine = [Stepper(converted, batch) for batch in inputs]
        theirs = [Stepper(reference, batch) for batch in inputs]
        bar = Progress(len(blocks) * steps, "refining", progress and steps > 0)
        try:
            for block in blocks:
                outcome = _refine_block(converted, block, targets.get(block.name), mine, theirs, steps, lr, bar)
                if isinstance(outcome, str):
                    result.skipped[block.name] = outcome
                else:
                    result.blocks[block.name] = outcome
        finally:
            bar.close()
    result.seconds = time.monotonic() - start
    return result


def _blocks(converted: fx.GraphModule, original: nn.Module) -> List[_Block]:
    """The blocks holding octave convolutions, in graph order: children of the original's containers, then for
    each octave convolution in none of them the innermost module of the original that made it."""
    nodes = list(converted.graph.nodes)
    position = {node: index for index, node in enumerate(nodes)}
    octave = [node for node in nodes if node.op == "call_module" and _is_octave(converted.get_submodule(node.target))]
    outputs = module_outputs(converted.graph)
    names = {name for name, _ in original.named_modules()}
    found: List[_Block] = []
    covered: set = set()

    def add(name: str) -> None:
        first = next(node for node in nodes if name in modules_of(node))
        run = nodes[position[first]:position[outputs[name]] + 1]
        if any(node in octave for node in run) and not covered.intersection(run):
            found.append(_Block(name, run, outputs[name].meta.get(OCTAVE_SPLIT)))
            covered.update(run)

    for name in container_children(original, CONTAINERS):
        if name in outputs:
            add(name)
    for node in octave:
        own = [path for path, _ in node.meta.get("nn_module_stack", {}).values() if path in names and path in outputs]
        if node not in covered and own:
            add(own[-1])
    return sorted(found, key=lambda block: position[block.nodes[0]])


def _is_octave(module: nn.Module) -> bool:
    return isinstance(module, OctaveConvBase) and not module.is_plain


def _refine_block(converted: fx.GraphModule, block: _Block, target: Optional[fx.Node], mine: List[Stepper],
                  theirs: List[Stepper], steps: int, lr: float, bar: Progress) -> Union[Tuple[float, float], str]:
    """Train one block: its relative squared error before and after, or why it was left as it was."""
    if target is None:
        return "the original computes no output for this module in a traced run"
    if theirs[0].nodes.index(target) < theirs[0].position:  # the steppers move in step: the first stands for all
        return "the original computes this module's output before an earlier block's"
    module, sources = _extract(converted, block)
    for stepper in mine:
        stepper.run_until(block.nodes[0])
    inputs = [[stepper.env[source] for source in sources] for stepper in mine]
    expected = [_octave(stepper.peek(target), block.split) for stepper in theirs]
    parameters = [p for p in module.parameters() if p.requires_grad]
    if not parameters:
        return "no trainable parameters"
    try:
        before = _mean_error(module, inputs, expected)
    except ValueError as error:
        return str(error)
    if before <= EXACT or not steps:
        return before, before
    kept = copy.deepcopy(module.state_dict())
    optimizer = torch.optim.Adam(parameters, lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    with torch.enable_grad():
        for step in range(steps):
            index = step % len(inputs)
            loss = relative_error(module(*inputs[index]), expected[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.update(loss.item())
    after = _mean_error(module, inputs, expected)
    if after >= before:
        module.load_state_dict(kept)
        after = before
    return before, after


def _extract(converted: fx.GraphModule, block: _Block) -> Tuple[fx.GraphModule, List[fx.Node]]:
    """The block as a GraphModule sharing ``converted``'s submodules, and the outside nodes it reads (its
    inputs, in order); attributes it reads (``get_attr``) are copied in, so their parameters train too."""
    graph, env = fx.Graph(), {}
    inside = set(block.nodes)
    sources: List[fx.Node] = []
    for node in block.nodes:
        for source in node.all_input_nodes:
            if source not in inside and source not in env:
                if source.op == "get_attr":
                    env[source] = graph.node_copy(source)
                else:
                    sources.append(source)
                    env[source] = graph.placeholder(f"input_{len(sources)}")
    for node in block.nodes:
        env[node] = graph.node_copy(node, env.__getitem__)
    graph.output(env[block.nodes[-1]])
    return fx.GraphModule(converted, graph), sources


def _octave(value: Any, split: Optional[ChannelSplit]) -> Any:
    """The original's map in the block output's form: split into (high, 2x2-averaged low) when octave."""
    if split is None or not isinstance(value, Tensor):
        return value
    with torch.no_grad():
        return OctSplit(split).to(value.device)(value)


def relative_error(value: Any, target: Any) -> Tensor:
    """Squared error over the target's square, summed over the branches of an octave map (0 = exact)."""
    values = value if isinstance(value, tuple) else (value,)
    targets = target if isinstance(target, tuple) else (target,)
    if len(values) != len(targets) or not all(isinstance(v, Tensor) and isinstance(t, Tensor) and v.shape == t.shape
                                              for v, t in zip(values, targets)):
        raise ValueError(f"its output ({describe_value(value)}) does not match the original's "
                         f"({describe_value(target)})")
    error = sum((v.float() - t.float()).square().sum() for v, t in zip(values, targets))
    energy = sum(t.float().square().sum() for t in targets)
    return error / energy.clamp_min(1e-12)


def _mean_error(module: nn.Module, inputs: Sequence[List[Tensor]], expected: Sequence[Any]) -> float:
    with torch.no_grad():
        errors = [float(relative_error(module(*batch), target)) for batch, target in zip(inputs, expected)]
    return sum(errors) / len(errors)

