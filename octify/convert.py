"""``octify.convert``: the pipeline capture -> plan -> rewrite -> report."""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import fx, nn

from . import rules  # noqa: F401  (registers the op rules)
from .capture import FIXED_SHAPES, Captured, capture
from .capture.facts import conv_name
from .capture.tracer import LeafSpec
from .leaf_networks import convert_leaf_children
from .notes import Note
from .ops import accepted_shape
from .plan import AlphaGroup, Schedule, make_plan
from .plan.min_size import MinSize, check_min_size
from .plan.schedule import ScheduleLike
from .recovery.channels import channel_scores
from .recovery.data import Data
from .report import Report, build_report
from .report.coverage import SavingsWarning
from .report.formatting import count, percent
from .rewrite import guard_input_shapes, rewrite
from .rules.channels_last import channels_first
from .rules.registry import CONV, find_rule
from .verify import check_same_outputs

if TYPE_CHECKING:
    from .tuning import Tuning


@dataclass(repr=False)
class Conversion:
    """The result of :func:`convert`: the octave ``module``, its cost ``report``, and the recorded ``notes``;
    ``groups``: the convolutions that share one alpha (see :class:`octify.plan.AlphaGroup`); ``tuning``: how
    :func:`octify.tune` chose the schedule (None for ``convert``)."""

    module: fx.GraphModule
    report: Report
    notes: List[Note] = field(default_factory=list)
    capture_method: str = ""
    example_inputs: Tuple[torch.Tensor, ...] = ()
    groups: List[AlphaGroup] = field(default_factory=list)
    tuning: Optional["Tuning"] = None

    def explain(self) -> str:
        """Every recorded decision, one per line."""
        return "\n".join(f"{note.kind:>11}  {note.name}: {note.reason}" for note in self.notes)

    def __repr__(self) -> str:
        before, after = self.report.original.macs, self.report.converted.macs
        return (f"Conversion({type(self.module).__name__}, MACs {count(before)} -> {count(after)}, coverage "
                f"{percent(self.report.coverage.share) or 'none'}, {len(self.notes)} notes, {self.capture_method})")


def convert(model: nn.Module, alpha: ScheduleLike = 0.5, *, input_shape: Sequence[int] = (1, 3, 224, 224),
            example_inputs: Optional[Sequence[torch.Tensor]] = None, leaf_modules: Iterable[LeafSpec] = (),
            min_size: MinSize = "auto", plain_stem: bool = True, auto_leaf: bool = True,
            calibration_data: Optional[Data] = None, strided_high: bool = False) -> Conversion:
    """Convert ``model`` into an octave network; the model itself is never modified.

    A conversion that saves less than a tenth of what its alphas could save (the report's
    ``possible_savings``) warns with a :class:`octify.report.coverage.SavingsWarning` naming the
    largest causes and what to do about them.

    Args:
        alpha: fraction of low-frequency channels: a number, or ``{glob pattern: alpha}`` over
            convolution names, first match wins (see :class:`octify.plan.Schedule`).
        input_shape: shape of the random example input used to trace and size the model,
            unless ``example_inputs`` are given.
        leaf_modules: module types or qualified names to keep as they are (not traced into).
        min_size: feature maps smaller than this many pixels (in either dimension) stay plain; the paper's
            rule is 8. ``"auto"``: 8, or 4 where convolutions writing maps under 8 pixels hold more than 27%
            of the convolution MACs, with a note (see :mod:`octify.plan.min_size`).
        plain_stem: the first convolution on the network input keeps a plain output.
        auto_leaf: make submodules that cannot be traced leaves automatically.
        calibration_data: inputs of the model (a tensor of inputs, or an iterable of batches, each a
            tensor or a tuple of the model's inputs); when given, each class of feature maps makes low
            the channels that lose the least at half resolution on this data, instead of the last
            ones (same counts; see :func:`octify.recovery.channels.channel_scores`). The choice is in
            the notes, kind ``"channels"``.
        strided_high: strided octave convolutions keep the original strided convolution on the high
            input as their high-to-high path, instead of the paper's average pooling then stride-1
            convolution (same MACs; see :class:`octify.OctConv2d`).
    Raises:
        ValueError: a bad ``alpha``, ``input_shape`` or ``min_size``.
        ConversionError: the model cannot be converted (names the module or node and why).
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    schedule = Schedule(alpha)
    check_min_size(min_size)
    leaf_modules = list(leaf_modules)
    inputs = tuple(example_inputs) if example_inputs is not None else (_random_input(model, input_shape),)
    working = copy.deepcopy(model)
    captured = capture(working, inputs, leaf_modules, auto_leaf=auto_leaf)
    prepared = channels_first(captured.module)
    scores = channel_scores(prepared, calibration_data) if calibration_data is not None else None
    plan = make_plan(prepared, schedule, min_size=min_size, plain_stem=plain_stem, channel_scores=scores,
                     strided_high=strided_high)
    modules = dict(prepared.named_modules())
    conv_names = [conv_name(n) for n in prepared.graph.nodes
                  if (rule := find_rule(n, modules)) is not None and rule.category == CONV]
    schedule.warn_unused(conv_names + [name for name, layer in model.named_modules() if isinstance(layer, nn.Conv2d)])
    module, edge_notes = rewrite(prepared, plan)
    notes = [Note(name or type(model).__name__, "leaf", why) for name, why in captured.auto_leaves.items()]
    if captured.mode_dependence:
        mode = "train" if model.training else "eval"
        notes.append(Note(type(model).__name__, "mode", (
            f"its forward reads self.training outside leaf modules, so the graph keeps {mode} mode's choices "
            f"whatever .train() / .eval() says later (first difference: `{captured.mode_dependence}`); convert the "
            f"model in the mode it will run in, or name the module in leaf_modules")))
        warnings.warn(notes[-1].reason, UserWarning, stacklevel=2)
    if captured.method == FIXED_SHAPES:
        guard_input_shapes(module, inputs, captured.fixed_dims)
        notes.append(_fixed_shape_note(type(model).__name__, inputs, captured.fixed_dims))
        warnings.warn(notes[-1].reason, UserWarning, stacklevel=2)
    inner_notes, inner = convert_leaf_children(
        captured.module, module, list(captured.auto_leaves), inputs,
        lambda child, name, call: convert(child, _child_schedule(schedule, child, name), example_inputs=call,
                                          leaf_modules=_child_leaves(leaf_modules, name), min_size=min_size,
                                          plain_stem=False, auto_leaf=auto_leaf))
    check_same_outputs(captured.module, module, inputs)
    notes += _leaf_notes(captured, leaf_modules, inner) + inner_notes + plan.notes + edge_notes
    alphas = {name: schedule.lookup(name)[0] for name in conv_names + [name for name, layer in model.named_modules()
                                                                        if isinstance(layer, nn.Conv2d)]}
    report = build_report(captured.module, module, inputs, notes, alphas=alphas)
    shortfall = report.shortfall()
    if shortfall:
        warnings.warn(shortfall, SavingsWarning, stacklevel=2)
    for node in module.graph.nodes:  # shapes were for checking and costing; the module is general
        node.meta.pop("val", None)
    return Conversion(module, report, notes, captured.describe(), inputs, plan.groups)


def _fixed_shape_note(name: str, inputs: Sequence[torch.Tensor], fixed_dims: Sequence[Tuple[int, ...]]) -> Note:
    accepted = ", ".join(accepted_shape(tuple(x.shape), dims) for x, dims in zip(inputs, fixed_dims)
                         if isinstance(x, torch.Tensor))
    return Note(name, "fixed shapes", f"traced with the example input's sizes fixed (its forward reads them): the "
                                      f"converted module accepts inputs of shape {accepted} only and refuses others; "
                                      f"convert again for another size")


def _child_schedule(schedule: Schedule, child: nn.Module, name: str) -> Dict[str, float]:
    """The alphas of ``child``'s convolutions, looked up by their names in the whole model."""
    return {inner: schedule.lookup(f"{name}.{inner}")[0] for inner, layer in child.named_modules()
            if isinstance(layer, nn.Conv2d)}


def _child_leaves(leaf_modules: Iterable[LeafSpec], name: str) -> List[LeafSpec]:
    """``leaf_modules`` as seen from the submodule ``name``: types as they are, names below it shortened."""
    return [spec if not isinstance(spec, str) else spec[len(name) + 1:] for spec in leaf_modules
            if not isinstance(spec, str) or spec.startswith(f"{name}.")]


def _leaf_notes(captured: Captured, leaf_modules: Iterable[LeafSpec], converted: Iterable[str] = ()) -> List[Note]:
    """A plain note for every convolution inside a leaf module that stays as it is (not in ``converted``)."""
    named = {spec for spec in leaf_modules if isinstance(spec, str)}
    notes: List[Note] = []
    leaves = dict.fromkeys(str(node.target) for node in captured.module.graph.nodes if node.op == "call_module")
    for name in leaves:
        leaf = captured.module.get_submodule(name)
        if isinstance(leaf, nn.Conv2d):
            continue
        if name in captured.auto_leaves:
            why, cause = captured.auto_leaves[name], f"inside leaf {name}"
        else:
            spec = name if name in named else type(leaf).__name__
            why, cause = f"{spec} is named in leaf_modules", f"inside leaf {spec}"
        notes += [Note(qualified, "plain", f"inside leaf {name or 'the model'} ({why}), kept as it is", cause)
                  for inner, layer in leaf.named_modules() if isinstance(layer, nn.Conv2d)
                  for qualified in [f"{name}.{inner}".lstrip(".")]
                  if not any(qualified.startswith(f"{done}.") for done in converted)]
    return notes


def _random_input(model: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
    if isinstance(input_shape, (str, bytes)) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in input_shape):
        raise ValueError(f"input_shape must be positive integers such as (1, 3, 224, 224), got {input_shape!r}")
    reference = next(iter(model.parameters()), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None and reference.is_floating_point() else torch.float32
    return torch.randn(tuple(input_shape), device=device, dtype=dtype)
