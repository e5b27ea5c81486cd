"""Per-branch companions of OctConv2d, and the conversions between plain and octave tensors.

An octave tensor is a pair ``(high, low)``: ``high`` at full resolution, ``low`` at
``ceil(size / 2)``. A :class:`ChannelSplit` says which original channels each holds.
"""
from __future__ import annotations

import copy

from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..devices import device_of
from .channels import ChannelSplit
from .checks import octave_input, plain_input
from .checks import OctaveTensor
from .resample import downsample, upsample_to



class Branchwise(nn.Module):
    """Apply one stateless module (activation, pooling, dropout) to each branch."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: OctaveTensor) -> OctaveTensor:
        high, low = octave_input(x, f"Branchwise({type(self.module).__name__})")
        return self.module(high), self.module(low)


class OctBatchNorm2d(nn.Module):
    """BatchNorm2d over an octave tensor: one BatchNorm per branch, sized by the split."""

    def __init__(self, num_features: int, alpha: float = 0.5, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = True, track_running_stats: bool = True, *, split: ChannelSplit = None) -> None:
        super().__init__()
        split = split if split is not None else ChannelSplit.from_alpha(num_features, alpha)
        if split.channels != num_features:
            raise ValueError(f"split describes {split.channels} channels, BatchNorm has {num_features}")
        if split.n_low == 0 or split.n_high == 0:
            raise ValueError(f"OctBatchNorm2d needs channels in both branches, got {split!r}")
        self.split = split
        self.num_features = num_features
        self.bn_h = nn.BatchNorm2d(split.n_high, eps, momentum, affine, track_running_stats)
        self.bn_l = nn.BatchNorm2d(split.n_low, eps, momentum, affine, track_running_stats)

    @classmethod
    def from_bn(cls, bn: nn.BatchNorm2d, split: ChannelSplit) -> "OctBatchNorm2d":
        """Two BatchNorms holding ``bn``'s parameters and running statistics, sliced by ``split``."""
        layer = cls(bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                    track_running_stats=bn.track_running_stats, split=split)
        layer.to(device=device_of(bn))
        _copy_channels(bn, layer.bn_h, split.high_index)
        _copy_channels(bn, layer.bn_l, split.low_index)
        layer.train(bn.training)
        return layer

    def forward(self, x: OctaveTensor) -> OctaveTensor:
        high, low = octave_input(x, "OctBatchNorm2d", (self.split.n_high, self.split.n_low))
        return self.bn_h(high), self.bn_l(low)

    def extra_repr(self) -> str:
        return f"{self.num_features}, low={self.split.n_low}"


class PerBranch(nn.Module):
    """Two modules of one kind, ``high`` for the high branch and ``low`` for the low branch."""

    def __init__(self, high: nn.Module, low: nn.Module, split: Optional[ChannelSplit] = None) -> None:
        super().__init__()
        self.high, self.low = high, low
        self.split = split

    @classmethod
    def sliced(cls, module: nn.Module, split: ChannelSplit, make: Callable[[int], nn.Module]) -> "PerBranch":
        """``make(channels)`` for each branch, holding ``module``'s per-channel parameters and buffers sliced by ``split``.

        Every parameter and buffer of ``module`` must be per channel (first dimension = channels).
        """
        high, low = make(split.n_high), make(split.n_low)
        for part, index in ((high, split.high_index), (low, split.low_index)):
            part.to(device=device_of(module))
            _copy_channels(module, part, index)
            part.train(module.training)
        return cls(high, low, split)

    @classmethod
    def copied(cls, module: nn.Module, split: ChannelSplit) -> "PerBranch":
        """Two copies of ``module`` (submodules included) whose per-channel tensors are sliced by ``split``.

        A parameter or buffer is per channel when its first dimension has ``split.channels``
        entries; anything else (a step counter, a scalar) is copied whole.
        """
        return cls(*(_channel_copy(module, split.channels, index) for index in (split.high_index, split.low_index)),
                   split)

    def forward(self, x: OctaveTensor) -> OctaveTensor:
        high, low = octave_input(x, f"PerBranch({type(self.high).__name__})")
        return self.high(high), self.low(low)


class OctBatchNormFunction(nn.Module):
    """``F.batch_norm`` or ``F.instance_norm`` on each branch, the per-channel tensors passed in sliced by the split.

    Called like the function (``x, running_mean, running_var, weight, bias, flag, momentum, eps``; ``flag`` is
    ``training`` or ``use_input_stats``). When ``flag`` is set the function updates the running statistics of
    each branch; they are written back into the tensors passed, as the plain call would have updated them.
    """

    FUNCTIONS = {"batch_norm": F.batch_norm, "instance_norm": F.instance_norm}

    def __init__(self, split: ChannelSplit, function: str = "batch_norm") -> None:
        super().__init__()
        if function not in self.FUNCTIONS:
            raise ValueError(f"function must be one of {sorted(self.FUNCTIONS)}, got {function!r}")
        self.function = function
        self.channels = ChannelSplitter(split, channel_dim=0)

    def forward(self, x: OctaveTensor, running_mean: Optional[Tensor], running_var: Optional[Tensor],
                weight: Optional[Tensor] = None, bias: Optional[Tensor] = None, flag: bool = False,
                momentum: Optional[float] = 0.1, eps: float = 1e-5) -> OctaveTensor:
        function = self.FUNCTIONS[self.function]
        mean, var, w, b = (self._parts(t) for t in (running_mean, running_var, weight, bias))
        out = tuple(function(x[i], mean[i], var[i], w[i], b[i], flag, momentum, eps) for i in (0, 1))
        if flag:
            for full, parts in ((running_mean, mean), (running_var, var)):
                if full is not None:
                    self.channels.write_back(full, parts)
        return out

    def _parts(self, tensor: Optional[Tensor]) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        return (None, None) if tensor is None else self.channels.parts(tensor)

    def extra_repr(self) -> str:
        return f"{self.function}, {self.channels.split!r}"


class OctPReLUFunction(nn.Module):
    """``F.prelu`` on each branch with one weight per channel, sliced by the split."""

    def __init__(self, split: ChannelSplit) -> None:
        super().__init__()
        self.channels = ChannelSplitter(split, channel_dim=0)

    def forward(self, x: OctaveTensor, weight: Tensor) -> OctaveTensor:
        w = self.channels.parts(weight)
        return F.prelu(x[0], w[0]), F.prelu(x[1], w[1])

    def extra_repr(self) -> str:
        return repr(self.channels.split)


class OctGroupNormFunction(nn.Module):
    """``F.group_norm`` on each branch; every group of channels lies wholly in one branch.

    ``groups_high`` and ``groups_low`` are each branch's group counts; weight and bias are sliced by the split.
    """

    def __init__(self, split: ChannelSplit, groups_high: int, groups_low: int) -> None:
        super().__init__()
        self.groups = (groups_high, groups_low)
        self.channels = ChannelSplitter(split, channel_dim=0)

    def forward(self, x: OctaveTensor, weight: Optional[Tensor] = None, bias: Optional[Tensor] = None,
                eps: float = 1e-5) -> OctaveTensor:
        w = (None, None) if weight is None else self.channels.parts(weight)
        b = (None, None) if bias is None else self.channels.parts(bias)
        return tuple(F.group_norm(x[i], self.groups[i], w[i], b[i], eps) for i in (0, 1))

    def extra_repr(self) -> str:
        return f"groups={self.groups}, {self.channels.split!r}"


class OctSplit(nn.Module):
    """Plain tensor -> ``(high, low)``: pick each branch's channels, pool the low ones."""

    def __init__(self, split: ChannelSplit) -> None:
        super().__init__()
        if split.n_low == 0 or split.n_high == 0:
            raise ValueError(f"OctSplit needs channels in both branches, got {split!r}")
        self.split = split
        self.n_high = split.n_high
        _register_branch_indices(self, split)

    def forward(self, x: Tensor) -> OctaveTensor:
        plain_input(x, "OctSplit", self.split.channels)
        if self.split.is_trailing:
            return x[:, :self.n_high], downsample(x[:, self.n_high:])
        return x.index_select(1, self.high_index), downsample(x.index_select(1, self.low_index))

    def extra_repr(self) -> str:
        return repr(self.split)


class OctMerge(nn.Module):
    """``(high, low)`` -> plain tensor: up-sample low to the high size, restore channel order."""

    def __init__(self, split: ChannelSplit) -> None:
        super().__init__()
        if split.n_low == 0 or split.n_high == 0:
            raise ValueError(f"OctMerge needs channels in both branches, got {split!r}")
        self.split = split
        _register_inverse_order(self, split)

    def forward(self, x: OctaveTensor) -> Tensor:
        high, low = octave_input(x, "OctMerge", (self.split.n_high, self.split.n_low))
        merged = torch.cat([high, upsample_to(low, high.shape[-2:])], dim=1)
        if self.split.is_trailing:
            return merged
        return merged.index_select(1, self.inverse_order)

    def extra_repr(self) -> str:
        return repr(self.split)


def _register_branch_indices(module: nn.Module, split: ChannelSplit) -> None:
    """Index buffers for picking each branch's channels, unless slicing does (trailing split)."""
    if not split.is_trailing:
        module.register_buffer("high_index", torch.tensor(split.high_index), persistent=False)
        module.register_buffer("low_index", torch.tensor(split.low_index), persistent=False)


def _register_inverse_order(module: nn.Module, split: ChannelSplit) -> None:
    """An index buffer restoring original channel order after ``cat([high, low])``, unless trailing."""
    if not split.is_trailing:
        module.register_buffer("inverse_order", torch.tensor(split.inverse_order), persistent=False)


def _copy_channels(source: nn.Module, target: nn.Module, index: Tuple[int, ...]) -> None:
    """``target``'s own parameters and buffers := ``source``'s, channels ``index`` (``num_batches_tracked`` whole)."""
    positions = torch.tensor(index, dtype=torch.long, device=device_of(source))
    with torch.no_grad():
        for name, value in list(source.named_parameters(recurse=False)) + list(source.named_buffers(recurse=False)):
            if name == "num_batches_tracked":
                target.num_batches_tracked.copy_(value)
            else:
                getattr(target, name).copy_(value.index_select(0, positions))


def _channel_copy(module: nn.Module, channels: int, index: Tuple[int, ...]) -> nn.Module:
    clone = copy.deepcopy(module)
    positions = torch.tensor(index, dtype=torch.long, device=device_of(module))
    for part in clone.modules():
        for store in (part._parameters, part._buffers):
            for name, value in store.items():
                if value is not None and value.ndim and value.shape[0] == channels:
                    picked = value.detach().index_select(0, positions)
                    store[name] = nn.Parameter(picked, value.requires_grad) if isinstance(value, nn.Parameter) else picked
        if getattr(part, "num_features", None) == channels:
            part.num_features = len(index)
    return clone


class ChannelSplitter(nn.Module):
    """A per-channel tensor (``[N, C, 1, 1]``, ``[C, 1, 1]``...) -> its high and low channels, no pooling.

    Used to scale or shift an octave tensor by a per-channel vector (squeeze-and-excitation).
    """

    def __init__(self, split: ChannelSplit, channel_dim: int = 1) -> None:
        super().__init__()
        self.split = split
        self.channel_dim = channel_dim
        self.n_high = split.n_high
        _register_branch_indices(self, split)

    def forward(self, x: Tensor) -> OctaveTensor:
        return self.parts(x)

    def parts(self, x: Tensor) -> OctaveTensor:
        """``forward`` without module hooks: slices of a parameter inside another layer's forward."""
        dim = self.channel_dim
        if self.split.is_trailing:
            return x.narrow(dim, 0, self.n_high), x.narrow(dim, self.n_high, x.shape[dim] - self.n_high)
        return x.index_select(dim, self.high_index), x.index_select(dim, self.low_index)

    def write_back(self, x: Tensor, parts: OctaveTensor) -> None:
        """Copy ``parts``, updated in place since :meth:`parts` gave them, back into ``x``'s channels.

        A trailing split's parts are views of ``x``, which is then up to date already.
        """
        if not self.split.is_trailing:
            with torch.no_grad():
                x.index_copy_(self.channel_dim, self.high_index, parts[0])
                x.index_copy_(self.channel_dim, self.low_index, parts[1])

    def extra_repr(self) -> str:
        return f"{self.split!r}, channel_dim={self.channel_dim}"


class OctGlobalPool(nn.Module):
    """Global pooling of an octave tensor to a plain ``[N, C, 1, 1]`` (or ``[N, C]``), equal to pooling the
    merged tensor; channels come back in their original order. Subclasses pool each branch (:meth:`pool`)."""

    def __init__(self, split: ChannelSplit, keepdim: bool = True) -> None:
        super().__init__()
        self.split = split
        self.keepdim = keepdim
        _register_inverse_order(self, split)

    def pool(self, high: Tensor, low: Tensor) -> Tuple[Tensor, Tensor]:
        raise NotImplementedError

    def forward(self, x: OctaveTensor) -> Tensor:
        high, low = octave_input(x, type(self).__name__, (self.split.n_high, self.split.n_low))
        pooled = torch.cat(self.pool(high, low), 1)
        if self.split.is_trailing:
            return pooled
        return pooled.index_select(1, self.inverse_order)

    def extra_repr(self) -> str:
        return f"{self.split!r}, keepdim={self.keepdim}"


class OctGlobalAvgPool(OctGlobalPool):
    """Global average pooling of an octave tensor: at odd sizes the low branch is weighted as its
    up-sampled, cropped copy would be."""

    def pool(self, high: Tensor, low: Tensor) -> Tuple[Tensor, Tensor]:
        size = high.shape[-2:]
        if size[0] % 2 or size[1] % 2:
            low = upsample_to(low, size)
        return high.mean((2, 3), keepdim=self.keepdim), low.mean((2, 3), keepdim=self.keepdim)


class OctStochasticDepth(nn.Module):
    """Stochastic depth over an octave tensor: one random draw per sample for both branches."""

    def __init__(self, p: float, mode: str) -> None:
        super().__init__()
        if mode not in ("row", "batch"):
            raise ValueError(f"mode must be 'row' or 'batch', got {mode!r}")
        self.p, self.mode = p, mode

    def forward(self, x: OctaveTensor) -> OctaveTensor:
        high, low = octave_input(x, "OctStochasticDepth")
        if not self.training or self.p == 0.0:
            return high, low
        survival = 1.0 - self.p
        shape = [high.shape[0]] + [1] * (high.ndim - 1) if self.mode == "row" else [1] * high.ndim
        noise = torch.empty(shape, dtype=high.dtype, device=high.device).bernoulli_(survival)
        if survival > 0.0:
            noise.div_(survival)
        return high * noise, low * noise

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode}"
