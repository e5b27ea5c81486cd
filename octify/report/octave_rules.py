"""Counting rules for octify's octave layers and the ``octify.ops`` functions of converted graphs.

``OctConv2d`` (and ``FunctionalOctConv2d``) counts its path convolutions, each at the size it
produces (see ``octify/layers/octconv.py``): h2h at the high output size, h2l and l2l at
the low output size, l2h at the low output size at stride 1 and the high output size at
strides 2 and 4. Pooling, padding, cropping and up-sampling inside the layer, splits,
merges and per-branch normalization cost no multiply-accumulates.
``OctConvTranspose2d`` counts like ``FlopCounterMode`` counts a transposed convolution:
per input pixel of each path (the output_padding and crops it uses do not change that).
Per-branch wrappers (``Branchwise``, ``ops.branchwise``) apply the wrapped operation's own
rule to each branch.
"""
from __future__ import annotations

import importlib
import math
from typing import Any, Callable, Optional, Tuple

import torch
from torch import Tensor

from .. import ops
from ..layers import (Branchwise, ChannelSplitter, OctBatchNorm2d, OctBatchNormFunction, OctChannelLayerNorm,
                      OctConvTranspose2d, OctGlobalAvgPool, OctGlobalMaxPool, OctGroupNormFunction, OctMerge,
                      OctPReLUFunction, OctSelect, OctSplit, PerBranch)
from ..layers.channels import half_size
from ..layers.checks import branch_of
from ..layers.octconv import OctaveConvBase
from .rules import OpCall, find_rule, register_rule, zero_macs


def _branches(value: Any) -> Tuple[Tensor, Optional[Tensor]]:
    """``(high, low)`` of an octave value, ``(tensor, None)`` of a plain one."""
    if isinstance(value, (tuple, list)):
        return value[0], value[1]
    return value, None


@register_rule(OctaveConvBase)
def octconv_macs(call: OpCall) -> int:
    layer: OctaveConvBase = call.target
    high_out, _ = _branches(call.output)
    batch = math.prod(high_out.shape[:-3])
    high_size = tuple(high_out.shape[-2:])
    total = 0
    for path in layer.paths:
        size = half_size(high_size) if layer.writes_low_resolution(path) else high_size
        total += (batch * path.out_channels * math.prod(size)
                  * path.in_channels // path.groups * math.prod(layer.kernel_size))
    return total


def _perbranch_of(target: Any, call: OpCall, first_arg: int) -> int:
    """``target``'s rule applied to each branch of ``call`` (arguments from ``first_arg`` on)."""
    rule = find_rule(target)
    if rule is None:
        return 0
    return sum(rule.macs(OpCall(target, tuple(branch_of(a, i) for a in call.args[first_arg:]),
                                {k: branch_of(v, i) for k, v in call.kwargs.items()}, call.output[i]))
               for i in (0, 1))


@register_rule(Branchwise)
def branchwise_module_macs(call: OpCall) -> int:
    return _perbranch_of(call.target.module, call, 0)


@register_rule(ops.branchwise)
def branchwise_function_macs(call: OpCall) -> int:
    return _perbranch_of(_named_function(call.args[0]), call, 1)


@register_rule(ops.branchwise_method)
def branchwise_method_macs(call: OpCall) -> int:
    return _perbranch_of(getattr(torch.Tensor, call.args[0], None), call, 1)


def _named_function(qualified_name: str) -> Callable[..., Any]:
    module_name, _, attribute = qualified_name.rpartition(".")
    return getattr(importlib.import_module(module_name), attribute)


@register_rule(PerBranch)
def per_branch_macs(call: OpCall) -> int:
    """Each branch's module by its own rule, on its branch."""
    total = 0
    for index, module in enumerate((call.target.high, call.target.low)):
        rule = find_rule(module)
        if rule is not None:
            total += rule.macs(OpCall(module, (branch_of(call.args[0], index),), {}, call.output[index]))
    return total


register_rule(OctBatchNorm2d, OctBatchNormFunction, OctGroupNormFunction, OctPReLUFunction, OctChannelLayerNorm)(zero_macs)
register_rule(OctSplit, remark="2x2 average pooling of the low channels (not in MACs)")(zero_macs)
register_rule(OctMerge, remark="nearest x2 up-sampling of the low branch (not in MACs)")(zero_macs)
register_rule(OctGlobalAvgPool, remark="global average pooling of both branches into one plain tensor "
                                       "(not in MACs)")(zero_macs)
register_rule(OctGlobalMaxPool, remark="global max pooling of both branches into one plain tensor")(zero_macs)
register_rule(ChannelSplitter, ops.split_channels,
              remark="per-channel tensor divided between the branches, no resampling")(zero_macs)


@register_rule(OctConvTranspose2d)
def octconv_transpose_macs(call: OpCall) -> int:
    """Each path scatters its input pixels: h2h from the high input, the others from the
    low resolution (the low input, or the high input pooled)."""
    layer: OctConvTranspose2d = call.target
    high_in, _ = _branches(call.args[0])
    batch = math.prod(high_in.shape[:-3])
    low_size = half_size(high_in.shape[-2:])
    total = 0
    for path, conv in layer.path_convs():
        size = high_in.shape[-2:] if path.name == "h2h" else low_size
        total += batch * conv.in_channels * math.prod(size) * math.prod(conv.weight.shape[1:])
    return total
register_rule(OctSelect, remark="channels picked from each branch (a slice, chunk or shuffle), no "
                                 "resampling unless all are low")(zero_macs)
