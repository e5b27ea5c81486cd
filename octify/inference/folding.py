"""Batch normalization folded into the convolution before it (inference statistics).

In eval mode ``bn(y) = scale * y + shift`` per channel, with ``scale = weight / sqrt(var + eps)``
and ``shift = bias - mean * scale``; a convolution followed by it is the same convolution
with each output channel's weights multiplied by ``scale`` and its bias ``bias * scale + shift``.
An ``OctConv2d`` folds branch-wise: ``bn_h`` into the paths writing the high output, ``bn_l``
into those writing the low output; each output channel's bias stays in exactly one path.
A plain convolution whose output is split into octave branches before an ``OctBatchNorm2d``
folds it too (channel by channel, through the split).
"""
from __future__ import annotations

import copy
from typing import Dict, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from ..layers import OctBatchNorm2d, OctConv2d, OctSplit

AnyBatchNorm = Union[nn.BatchNorm2d, OctBatchNorm2d]


def can_fold(bn: nn.Module) -> bool:
    """True for a BatchNorm whose eval-mode output uses running statistics (so it is affine)."""
    if isinstance(bn, OctBatchNorm2d):
        return can_fold(bn.bn_h) and can_fold(bn.bn_l)
    return type(bn) is nn.BatchNorm2d and bn.track_running_stats and bn.running_mean is not None


def batchnorm_affine(bn: nn.BatchNorm2d) -> Tuple[Tensor, Tensor]:
    """``(scale, shift)`` with ``bn(y) == scale * y + shift`` per channel, in eval mode."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale.detach(), shift.detach()


def fold_conv_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A copy of ``conv`` that computes ``bn(conv(x))`` in eval mode."""
    folded = copy.deepcopy(conv)
    folded.weight, folded.bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var,
                                                      bn.eps, bn.weight, bn.bias)
    return folded


def fold_conv_split_batchnorm(conv: nn.Conv2d, split: OctSplit, bn: OctBatchNorm2d) -> nn.Conv2d:
    """A copy of ``conv`` with ``bn(split(conv(x))) == split(folded(x))`` in eval mode.

    A per-channel affine map commutes with picking channels and with 2x2 average pooling,
    so the branch BatchNorms fold into the rows of the channels they normalize.
    """
    if (bn.bn_h.num_features, bn.bn_l.num_features) != (split.split.n_high, split.split.n_low):
        raise ValueError(f"OctBatchNorm2d branches do not match {split.split!r}")
    (scale_h, shift_h), (scale_l, shift_l) = batchnorm_affine(bn.bn_h), batchnorm_affine(bn.bn_l)
    branch_scale, branch_shift = torch.cat([scale_h, scale_l]), torch.cat([shift_h, shift_l])
    channels = torch.tensor(split.split.high_index + split.split.low_index, device=branch_scale.device)
    scale, shift = torch.empty_like(branch_scale), torch.empty_like(branch_shift)
    scale[channels], shift[channels] = branch_scale, branch_shift  # back to the original channel order
    folded = copy.deepcopy(conv)
    _scale_rows(folded, scale.to(conv.weight.device), shift.to(conv.weight.device), owns_bias=True)
    return folded


def fold_octconv_batchnorm(conv: OctConv2d, bn: AnyBatchNorm) -> OctConv2d:
    """A copy of ``conv`` that computes ``bn(conv(x))`` in eval mode, branch by branch.

    ``bn`` is an ``OctBatchNorm2d`` for an octave output, a ``BatchNorm2d`` for a plain one.
    """
    branches = _branch_affines(conv, bn)
    folded = copy.deepcopy(conv)
    owners = _bias_owners(folded)
    for path, path_conv in folded.path_convs():
        scale, shift = branches[path.dst_low]
        rows = slice(*path.out_range)
        _scale_rows(path_conv, scale[rows], shift[rows], owns_bias=path.name in owners)
    return folded


def _branch_affines(conv: OctConv2d, bn: AnyBatchNorm) -> Dict[bool, Tuple[Tensor, Tensor]]:
    """``{is_low: (scale, shift)}`` for each output branch of ``conv``."""
    if isinstance(bn, OctBatchNorm2d):
        sizes = (bn.bn_h.num_features, bn.bn_l.num_features)
        if sizes != (conv.high_out, conv.low_out):
            raise ValueError(f"OctBatchNorm2d branches {sizes} do not match the convolution's outputs "
                             f"{(conv.high_out, conv.low_out)}")
        return {False: batchnorm_affine(bn.bn_h), True: batchnorm_affine(bn.bn_l)}
    if conv.low_out or bn.num_features != conv.out_channels:
        raise ValueError(f"a BatchNorm2d of {bn.num_features} channels cannot follow {conv!r}")
    return {False: batchnorm_affine(bn)}


def _bias_owners(conv: OctConv2d) -> set:
    """Names of the paths that hold each output channel's bias (exactly one per channel).

    Grouped paths write disjoint channels, so each holds its own. Dense paths (and those of a layer split
    within its groups) add up: the
    one that already has a bias keeps it, otherwise the same-frequency path takes it.
    """
    names = [path.name for path in conv.paths]
    if conv.groups > 1 and not conv.within_groups:
        return set(names)
    owners = set()
    for writers in (("h2h", "l2h"), ("l2l", "h2l")):
        present = [name for name in writers if name in names]
        if present:
            with_bias = [name for name in present if getattr(conv, name).bias is not None]
            owners.add((with_bias or present)[0])
    return owners


def _scale_rows(conv: nn.Conv2d, scale: Tensor, shift: Tensor, owns_bias: bool) -> None:
    """In place: output channel ``c`` of ``conv`` times ``scale[c]``, plus ``shift[c]`` if it owns the bias."""
    with torch.no_grad():
        weight = conv.weight * scale.reshape(-1, *([1] * (conv.weight.dim() - 1)))
        conv.weight = nn.Parameter(weight.to(conv.weight.dtype), conv.weight.requires_grad)
        if owns_bias:
            bias = shift if conv.bias is None else conv.bias * scale + shift
            conv.bias = nn.Parameter(bias.to(conv.weight.dtype), conv.weight.requires_grad)
        elif conv.bias is not None:
            conv.bias = nn.Parameter(conv.bias * scale, conv.weight.requires_grad)
