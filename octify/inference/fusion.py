"""Graph pass: residual adds and ReLUs after a convolution join the convolution's last pass.

* ``relu(octave_conv(x) + r)`` and ``relu(octave_conv(x))`` become one call of the fast
  octave layer (:class:`FusedOctConv2d`, :class:`GroupedOctConv2d`) with ``r`` as its
  second argument and its ``relu`` flag set: the layer adds ``r`` into its fresh output
  and the ReLU rides on its last in-place add (see :mod:`.epilogue`).
* ``relu(a + b)`` on an in-place add (plain or octave, see :mod:`.inplace`) becomes one
  add-and-ReLU pass.

Only calls whose result has no other use change, so the values the graph computes stay the same.
"""
from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from .. import ops
from ..layers import Branchwise
from .fused import FusedOctConv2d
from .graph import is_module_call, module_call_counts, only_user
from .grouped import GroupedOctConv2d
from .inplace import add_into, add_relu_into, octave_add_into, octave_add_relu_into

EPILOGUE_LAYERS = (FusedOctConv2d, GroupedOctConv2d)
RESIDUAL_ADDS = (octave_add_into, add_into, ops.add, operator.add, torch.add)
RELU_FUNCTIONS = (F.relu, torch.relu, torch.relu_)
RELU_NAMES = ("torch.nn.functional.relu", "torch.relu", "torch.relu_")
ADD_RELU = {add_into: add_relu_into, octave_add_into: octave_add_relu_into}


def fuse_epilogues(model: fx.GraphModule) -> int:
    """Apply both rewrites to ``model`` in place; returns how many adds and ReLUs were removed."""
    removed = _into_octave_layers(model) + _into_adds(model)
    if removed:
        model.recompile()
    return removed


def _into_octave_layers(model: fx.GraphModule) -> int:
    calls = module_call_counts(model.graph)
    removed = 0
    for node in list(model.graph.nodes):
        if not (is_module_call(model, node, EPILOGUE_LAYERS) and calls[node.target] == 1 and len(node.args) == 1
                and not node.kwargs):
            continue
        user = only_user(node)
        if user is not None and _is_residual_add(user, node):
            residual = user.args[1] if user.args[0] is node else user.args[0]
            with model.graph.inserting_before(user):
                fused = model.graph.call_module(node.target, (node.args[0], residual))
            user.replace_all_uses_with(fused)
            model.graph.erase_node(user)
            model.graph.erase_node(node)
            node, user, removed = fused, only_user(fused), removed + 1
        if user is not None and _is_relu(model, user):
            model.get_submodule(node.target).relu = True
            user.replace_all_uses_with(node)
            model.graph.erase_node(user)
            removed += 1
    return removed


def _into_adds(model: fx.GraphModule) -> int:
    removed = 0
    for node in list(model.graph.nodes):
        if node.op == "call_function" and node.target in ADD_RELU:
            user = only_user(node)
            if user is not None and _is_relu(model, user):
                node.target = ADD_RELU[node.target]
                user.replace_all_uses_with(node)
                model.graph.erase_node(user)
                removed += 1
    return removed


def _is_residual_add(node: fx.Node, operand: fx.Node) -> bool:
    """``operand + other`` (either order), two positional arguments, ``other`` not ``operand`` itself."""
    return (node.op == "call_function" and node.target in RESIDUAL_ADDS and len(node.args) == 2
            and not node.kwargs and list(node.args).count(operand) == 1
            and isinstance(node.args[1] if node.args[0] is operand else node.args[0], fx.Node))


def _is_relu(model: fx.GraphModule, node: fx.Node) -> bool:
    """A ReLU of one value, in any of the forms a plain or converted graph writes it."""
    if node.op == "call_module":
        module = model.get_submodule(node.target)
        module = module.module if isinstance(module, Branchwise) else module
        return type(module) is nn.ReLU
    extra = dict(node.kwargs)
    extra.pop("inplace", None)
    if extra:
        return False
    if node.op == "call_function" and node.target in RELU_FUNCTIONS:
        return len(node.args) == 1
    if node.op == "call_method":
        return node.target in ("relu", "relu_") and len(node.args) == 1
    if node.op == "call_function" and node.target is ops.branchwise:
        return len(node.args) == 2 and node.args[0] in RELU_NAMES
    if node.op == "call_function" and node.target is ops.branchwise_method:
        return len(node.args) == 2 and node.args[0] in ("relu", "relu_")
    return False
