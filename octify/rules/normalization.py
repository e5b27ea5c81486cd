"""Per-channel ops with per-channel parameters: normalizations and PReLU, run on each branch.

A per-channel parameter or statistic (BatchNorm's running mean, PReLU's weight...) is sliced
by the split, so each branch normalizes its own channels with their own parameters:

* ``F.batch_norm`` / ``F.instance_norm`` with their tensors from the graph (a module's
  parameters and buffers, as in timm's ``BatchNormAct2d``, or computed values): sliced when
  the graph runs; running statistics a training call updates are written back
  (:class:`~octify.layers.OctBatchNormFunction`). ``nn.InstanceNorm2d`` gets one sliced copy per branch.
* Group normalization (``nn.GroupNorm``, ``F.group_norm``): each group of ``C / G``
  consecutive channels must lie wholly in one branch; a branch of ``n`` channels then has
  ``n / (C / G)`` groups. A split that cuts a group keeps the op plain, with a note.
* PReLU (``nn.PReLU``, ``F.prelu``): one weight for all channels applies to both branches,
  one per channel is sliced.
* Layer normalization normalizes each position over all its channels, so it mixes the
  branches: a boundary, with that reason.
* timm's ``BatchNormAct2d`` / ``FrozenBatchNormAct2d`` (BatchNorm, dropout, activation) are
  leaves, one sliced copy per branch: traced through, their ``if self.training`` would be
  fixed to the mode the model was converted in. timm's ``DropPath`` is a leaf for the same
  reason and becomes an :class:`~octify.layers.OctStochasticDepth` (one draw for both branches).
"""
from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.node import _get_qualified_name

from .. import ops
from ..capture.facts import bound_arguments, channels, feature_shape, value_of
from ..layers import (Branchwise, ChannelSplit, OctBatchNormFunction, OctGroupNormFunction, OctPReLUFunction,
                      OctStochasticDepth, PerBranch)
from ..notes import Note
from .branchwise import emit_replacement
from .registry import BOUNDARY, PER_BRANCH, Rule, register, when_octave

if TYPE_CHECKING:
    from ..rewrite.context import RewriteContext

NORM_FUNCTIONS = {F.batch_norm: "batch_norm", F.instance_norm: "instance_norm"}  # same parameters, in order
GROUP_NORM_SIGNATURE = inspect.signature(F.group_norm)
PRELU_SIGNATURE = inspect.Signature.from_callable(lambda input, weight: 0)
CHANNEL_MIXING = ("normalizes each position over all its channels (and the map), so high and low channels mix; "
                  "it needs a plain tensor")


def _check_channel_tensors(node: fx.Node, arguments: Optional[Dict[str, Any]], names: tuple) -> Optional[str]:
    """The call binds, its input is a feature map, and each of ``names`` is None or a vector of its channels."""
    if arguments is None:
        return "its arguments do not match the function's signature"
    if feature_shape(arguments["input"]) is None or feature_shape(node) != feature_shape(arguments["input"]):
        return "not a feature map in and a feature map of the same shape out"
    count = channels(arguments["input"])
    for name in names:
        value = arguments[name]
        tensor = value_of(value)
        if value is None:
            continue
        if not isinstance(value, fx.Node) or not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != (count,):
            shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(value).__name__
            return f"its {name} ({shape}) is not one value per channel of its {count}-channel input"
    return None


def check_norm_function(node: fx.Node, modules: Dict[str, nn.Module]) -> Optional[str]:
    return _check_channel_tensors(node, bound_arguments(inspect.signature(node.target), node),
                                  ("running_mean", "running_var", "weight", "bias"))


@when_octave
def rewrite_norm_function(node: fx.Node, ctx: "RewriteContext") -> None:
    split = ctx.plan.layout(node)
    arguments = bound_arguments(inspect.signature(node.target), node)
    function = NORM_FUNCTIONS[node.target]
    name = ctx.shared_module((function, split), lambda: OctBatchNormFunction(split, function), function)
    rest = ctx.values(tuple(arguments.values())[1:], None, node)
    ctx.emit(node, "call_module", name, (ctx.value(arguments["input"], split, node), *rest), {}, split)


def group_cut(split: ChannelSplit, groups: int) -> Optional[str]:
    """Why ``split`` cuts one of ``groups`` groups of consecutive channels between the branches (None if not)."""
    size = split.channels // groups
    low = set(split.low_index)
    for group in range(groups):
        members = {channel in low for channel in range(group * size, (group + 1) * size)}
        if len(members) > 1:
            return (f"its {groups} groups of {size} channels do not each lie in one branch: {split.n_low} of "
                    f"{split.channels} channels are low, and group {group} (channels {group * size}-"
                    f"{(group + 1) * size - 1}) is cut")
    return None


def _keep_plain(node: fx.Node, ctx: "RewriteContext", reason: str) -> None:
    """Emit ``node`` on the merged tensor although the plan made it octave, noting why."""
    ctx.plan.boundary_reasons[node] = reason
    ctx.notes.append(Note(node.name, "plain", reason))
    ctx.copy(node)


def check_group_norm_function(node: fx.Node, modules: Dict[str, nn.Module]) -> Optional[str]:
    arguments = bound_arguments(GROUP_NORM_SIGNATURE, node)
    reason = _check_channel_tensors(node, arguments, ("weight", "bias"))
    if reason is None and not isinstance(arguments["num_groups"], int):
        return "its number of groups is computed in the graph"
    return reason


@when_octave
def rewrite_group_norm_function(node: fx.Node, ctx: "RewriteContext") -> None:
    split = ctx.plan.layout(node)
    arguments = bound_arguments(GROUP_NORM_SIGNATURE, node)
    groups = arguments["num_groups"]
    cut = group_cut(split, groups)
    if cut:
        _keep_plain(node, ctx, f"group_norm: {cut}")
        return
    size = split.channels // groups
    name = ctx.shared_module(("group_norm", split, groups),
                             lambda: OctGroupNormFunction(split, split.n_high // size, split.n_low // size), "group_norm")
    rest = ctx.values((arguments["weight"], arguments["bias"], arguments["eps"]), None, node)
    ctx.emit(node, "call_module", name, (ctx.value(arguments["input"], split, node), *rest), {}, split)


@when_octave
def rewrite_group_norm(node: fx.Node, ctx: "RewriteContext") -> None:
    split = ctx.plan.layout(node)
    norm: nn.GroupNorm = ctx.module(node)
    cut = group_cut(split, norm.num_groups)
    if cut:
        _keep_plain(node, ctx, f"{node.target}: {cut}")
        return
    size = norm.num_channels // norm.num_groups
    emit_replacement(node, ctx, PerBranch.sliced(norm, split, lambda n: nn.GroupNorm(
        n // size, n, norm.eps, norm.affine)))


@when_octave
def rewrite_instance_norm(node: fx.Node, ctx: "RewriteContext") -> None:
    split = ctx.plan.layout(node)
    norm: nn.InstanceNorm2d = ctx.module(node)
    emit_replacement(node, ctx, PerBranch.sliced(norm, split, lambda n: nn.InstanceNorm2d(
        n, norm.eps, norm.momentum, norm.affine, norm.track_running_stats)))


def check_feature_map(node: fx.Node, modules: Dict[str, nn.Module]) -> Optional[str]:
    return None if feature_shape(node.args[0] if node.args else None) is not None else "not applied to a 4-d feature map"


@when_octave
def rewrite_prelu(node: fx.Node, ctx: "RewriteContext") -> None:
    split = ctx.plan.layout(node)
    prelu: nn.PReLU = ctx.module(node)
    if prelu.num_parameters == 1:
        module = Branchwise(prelu)
    else:
        module = PerBranch.sliced(prelu, split, lambda n: nn.PReLU(n))
    emit_replacement(node, ctx, module)


def check_prelu_function(node: fx.Node, modules: Dict[str, nn.Module]) -> Optional[str]:
    arguments = bound_arguments(PRELU_SIGNATURE, node)
    if arguments is not None and isinstance(value_of(arguments["weight"]), torch.Tensor) and \
            value_of(arguments["weight"]).numel() == 1:
        return _check_channel_tensors(node, arguments, ())
    return _check_channel_tensors(node, arguments, ("weight",))


@when_octave
def rewrite_prelu_function(node: fx.Node, ctx: "RewriteContext") -> None:
    split = ctx.plan.layout(node)
    arguments = bound_arguments(PRELU_SIGNATURE, node)
    source, weight = ctx.value(arguments["input"], split, node), ctx.value(arguments["weight"], None, node)
    if value_of(arguments["weight"]).numel() == 1:
        ctx.emit(node, "call_function", ops.branchwise, (_get_qualified_name(node.target), source, weight), {}, split)
        return
    name = ctx.shared_module(("prelu", split), lambda: OctPReLUFunction(split), "prelu")
    ctx.emit(node, "call_module", name, (source, weight), {}, split)


def channel_mixing(node: fx.Node, modules: Dict[str, nn.Module]) -> str:
    return f"{'LayerNorm' if node.op == 'call_module' else 'layer_norm'} {CHANNEL_MIXING}"


def copy_plain(node: fx.Node, ctx: "RewriteContext") -> None:
    ctx.copy(node)


register(Rule(PER_BRANCH, rewrite_norm_function, check_norm_function), *NORM_FUNCTIONS)
register(Rule(PER_BRANCH, rewrite_group_norm_function, check_group_norm_function), F.group_norm)
register(Rule(PER_BRANCH, rewrite_group_norm, check_feature_map), nn.GroupNorm)
register(Rule(PER_BRANCH, rewrite_instance_norm, check_feature_map), nn.InstanceNorm2d)
register(Rule(PER_BRANCH, rewrite_prelu, check_feature_map), nn.PReLU)
register(Rule(PER_BRANCH, rewrite_prelu_function, check_prelu_function), F.prelu, torch.prelu)
register(Rule(BOUNDARY, copy_plain, channel_mixing), nn.LayerNorm, F.layer_norm)


@when_octave
def rewrite_norm_act(node: fx.Node, ctx: "RewriteContext") -> None:
    split = ctx.plan.layout(node)
    emit_replacement(node, ctx, PerBranch.copied(ctx.module(node), split))


def check_drop_path(node: fx.Node, modules: Dict[str, nn.Module]) -> Optional[str]:
    if not getattr(modules[node.target], "scale_by_keep", True):
        return "drop path without rescaling (scale_by_keep=False) has no octave rule"
    return check_feature_map(node, modules)


@when_octave
def rewrite_drop_path(node: fx.Node, ctx: "RewriteContext") -> None:
    drop = ctx.module(node)
    emit_replacement(node, ctx, OctStochasticDepth(drop.drop_prob, "row").train(drop.training))


def _register_timm() -> None:
    try:
        from timm.layers import BatchNormAct2d, DropPath, FrozenBatchNormAct2d
    except ImportError:  # timm is optional
        return
    register(Rule(PER_BRANCH, rewrite_norm_act, check_feature_map), BatchNormAct2d, FrozenBatchNormAct2d)
    register(Rule(PER_BRANCH, rewrite_drop_path, check_drop_path), DropPath)


_register_timm()
