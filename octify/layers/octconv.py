"""``OctConv2d``: octave convolution with exact sizes, one bias per branch and real groups.

Paths (``x_h``/``x_l`` in, ``y_h``/``y_l`` out; ``pool`` is 2x2 ceil-mode average pooling,
``up`` is nearest x2 cropped to the exact high size):

* stride 1: ``y_h = h2h(x_h) + up(l2h(x_l))``, ``y_l = l2l(x_l) + h2l(pool(x_h))``
* stride 2: the high input is pooled first (``p = pool(x_h)``), no strided convolution:
  ``y_h = h2h(p) + l2h(x_l)``, ``y_l = l2l(pool(x_l)) + h2l(pool(p))``

Every path convolution has stride 1 and "same" padding, so any input size works; the
low branch is always ``ceil(high / 2)``. Paths at low resolution (h2l, l2l, l2h) use
dilation ``max(1, dilation // 2)``: for an even dilation this keeps their receptive field
in input pixels equal to the high path's (at dilation 1 the low paths see twice as far,
as in the paper).

Groups: with ``groups == 1`` the four paths are dense. With ``groups > 1`` the split falls
on group boundaries and each group is wholly high or wholly low on each side, so a path
is a grouped convolution over the groups that go from its source to its destination
branch (a depthwise layer has only h2h and l2l). Each output channel's bias lives in
exactly one path, so the parameter count equals a plain ``nn.Conv2d``'s.

With ``alpha == (0, 0)`` the layer is exactly the plain convolution (strided if asked).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from .channels import AlphaLike, ChannelSplit, as_split, parse_alpha
from .checks import octave_input, plain_input
from .resample import downsample, upsample_to

OctaveTensor = Tuple[Tensor, Tensor]
PATH_NAMES = ("h2h", "h2l", "l2h", "l2l")


def _pair(value: Union[int, Tuple[int, ...]]) -> Tuple[int, int]:
    if isinstance(value, int):
        return value, value
    first, second = value
    return int(first), int(second)


def geometry_problem(kernel_size: Union[int, Tuple[int, int]], stride: Union[int, Tuple[int, int]],
                     padding: Union[int, Tuple[int, int], str], dilation: Union[int, Tuple[int, int]]) -> Optional[str]:
    """Why a convolution with this geometry cannot have octave paths, or None if it can."""
    kernel_size, stride, dilation = _pair(kernel_size), _pair(stride), _pair(dilation)
    if stride[0] != stride[1] or stride[0] not in (1, 2):
        return f"supports stride 1 or 2, got {stride}"
    if padding == "same" and stride[0] == 1:
        return None
    if isinstance(padding, str) or not all(
            2 * p == d * (k - 1) for p, d, k in zip(_pair(padding), dilation, kernel_size)):
        return (f"needs size-preserving padding, 2 * padding == dilation * (kernel_size - 1); got "
                f"kernel_size={kernel_size}, padding={padding}, dilation={dilation}")
    return None


@dataclass(frozen=True)
class Path:
    """One frequency path: which branch it reads and writes, and which channels of each."""

    name: str
    src_low: bool
    dst_low: bool
    in_range: Tuple[int, int]
    out_range: Tuple[int, int]
    groups: int


class OctConv2d(nn.Module):
    """Octave convolution, a drop-in for ``octconv.OctConv2d`` (0.2.0).

    Args mirror ``nn.Conv2d``; ``alpha`` is the fraction of low-frequency channels, a
    float or ``(alpha_in, alpha_out)``, each in [0, 1). Input: a tensor when
    ``alpha_in == 0``, else ``(high, low)``; output likewise for ``alpha_out``.
    Low channel counts are ``round_half_up(alpha * channels)``, in whole groups when
    ``groups > 1``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Union[int, Tuple[int, int]],
                 stride: Union[int, Tuple[int, int]] = 1, padding: Union[int, Tuple[int, int], str] = 0,
                 dilation: Union[int, Tuple[int, int]] = 1, groups: int = 1, bias: bool = True,
                 alpha: AlphaLike = 0.5, padding_mode: str = "zeros", *,
                 in_split: Optional[ChannelSplit] = None, out_split: Optional[ChannelSplit] = None,
                 device: Optional[Union[str, torch.device]] = None, dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        alpha_in, alpha_out = parse_alpha(alpha)
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} "
                             f"and out_channels={out_channels}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.dilation = _pair(kernel_size), _pair(dilation)
        self.stride = _pair(stride)
        self.padding = padding if isinstance(padding, str) else _pair(padding)
        self.padding_mode = padding_mode
        in_unit, out_unit = (1, 1) if groups == 1 else (in_channels // groups, out_channels // groups)
        requested_in = in_split.alpha if in_split is not None else alpha_in
        requested_out = out_split.alpha if out_split is not None else alpha_out
        self.low_in = as_split(in_channels, in_split if in_split is not None else alpha_in, in_unit).n_low
        self.low_out = as_split(out_channels, out_split if out_split is not None else alpha_out, out_unit).n_low
        self.high_in, self.high_out = in_channels - self.low_in, out_channels - self.low_out
        self._check_split(requested_in, in_channels, self.low_in, "in")
        self._check_split(requested_out, out_channels, self.low_out, "out")
        self.is_plain = self.low_in == 0 and self.low_out == 0
        if self.is_plain:
            self.paths: List[Path] = [Path("h2h", False, False, (0, in_channels), (0, out_channels), groups)]
            self.h2h = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation,
                                 groups, bias, padding_mode, **factory)
            return
        self._check_geometry()
        self.paths = self._plan_paths(in_unit, out_unit)
        with_bias = self._bias_owners() if bias else set()
        for path in self.paths:
            low_res = path.name != "h2h"
            dilation_here = tuple(max(1, d // 2) for d in self.dilation) if low_res else self.dilation
            conv = nn.Conv2d(path.in_range[1] - path.in_range[0], path.out_range[1] - path.out_range[0],
                             self.kernel_size, 1, self._path_padding(dilation_here), dilation_here,
                             path.groups, path.name in with_bias, padding_mode, **factory)
            setattr(self, path.name, conv)

    # -- construction helpers -------------------------------------------------------------
    def _check_split(self, alpha: float, channels: int, n_low: int, side: str) -> None:
        if n_low == channels:
            raise ValueError(f"alpha_{side}={alpha:g} makes all {channels} {side}put channels low; "
                             "at least one must stay high")
        if alpha > 0 and n_low == 0:
            unit = "" if self.groups == 1 else f" in whole groups of {channels // self.groups}"
            raise ValueError(f"alpha_{side}={alpha:g} of {channels} {side}put channels rounds to 0 low "
                             f"channels{unit}; use alpha_{side}=0 or more channels")
        if self.groups > 1 and n_low % (channels // self.groups):
            raise ValueError(f"groups={self.groups}: {n_low} low of {channels} {side}put channels is not "
                             f"a whole number of groups of {channels // self.groups}")

    def _check_geometry(self) -> None:
        problem = geometry_problem(self.kernel_size, self.stride, self.padding, self.dilation)
        if problem:
            raise ValueError(f"OctConv2d {problem}")
        if self.groups == self.in_channels == self.out_channels and self.low_in != self.low_out:
            raise ValueError(f"depthwise OctConv2d (groups={self.groups}) needs alpha_in == alpha_out; "
                             f"got {self.low_in} and {self.low_out} low channels")

    def _path_padding(self, dilation: Tuple[int, int]) -> Union[str, Tuple[int, int]]:
        if isinstance(self.padding, str):
            return "same"
        return tuple(d * (k - 1) // 2 for d, k in zip(dilation, self.kernel_size))

    def _plan_paths(self, in_unit: int, out_unit: int) -> List[Path]:
        if self.groups == 1:
            sizes_in = {False: self.high_in, True: self.low_in}
            sizes_out = {False: self.high_out, True: self.low_out}
            return [Path(name, src, dst, (0, sizes_in[src]), (0, sizes_out[dst]), 1)
                    for name, src, dst in zip(PATH_NAMES, (False, False, True, True), (False, True, False, True))
                    if sizes_in[src] and sizes_out[dst]]
        high_groups_in, high_groups_out = self.high_in // in_unit, self.high_out // out_unit
        spans = {"h2h": (0, min(high_groups_in, high_groups_out)),
                 "h2l": (high_groups_out, high_groups_in),
                 "l2h": (high_groups_in, high_groups_out),
                 "l2l": (max(high_groups_in, high_groups_out), self.groups)}
        paths = []
        for name, src, dst in zip(PATH_NAMES, (False, False, True, True), (False, True, False, True)):
            first, last = spans[name]
            if last <= first:
                continue
            in_offset = high_groups_in if src else 0
            out_offset = high_groups_out if dst else 0
            paths.append(Path(name, src, dst, ((first - in_offset) * in_unit, (last - in_offset) * in_unit),
                              ((first - out_offset) * out_unit, (last - out_offset) * out_unit), last - first))
        return paths

    def _bias_owners(self) -> set:
        """Each output channel's bias in exactly one path: same-frequency paths first."""
        if self.groups > 1:
            return {path.name for path in self.paths}
        names = {path.name for path in self.paths}
        owners = {"h2h"}
        if self.low_out:
            owners.add("l2l" if "l2l" in names else "h2l")
        return owners

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, alpha: AlphaLike = 0.5, *, in_split: Optional[ChannelSplit] = None,
                  out_split: Optional[ChannelSplit] = None) -> "OctConv2d":
        """An OctConv2d holding ``conv``'s weights, sliced into the paths.

        ``in_split`` / ``out_split`` say which original channels are low (any assignment
        for ``groups == 1`` or matching depthwise splits, trailing otherwise); by default
        they follow ``alpha``. With ``alpha=0`` the result computes exactly ``conv``.
        Cross-frequency paths start from the same weights as the original channels they
        connect, so that a block-constant input gives the original output.
        """
        groups = conv.groups
        in_unit, out_unit = (1, 1) if groups == 1 else (conv.in_channels // groups, conv.out_channels // groups)
        alpha_in, alpha_out = parse_alpha(alpha)
        explicit_in, explicit_out = in_split is not None, out_split is not None
        in_split = as_split(conv.in_channels, in_split if explicit_in else alpha_in, in_unit)
        out_split = as_split(conv.out_channels, out_split if explicit_out else alpha_out, out_unit)
        depthwise_same = groups == conv.in_channels == conv.out_channels and in_split.low == out_split.low
        if groups > 1 and not depthwise_same and not (in_split.is_trailing and out_split.is_trailing):
            raise ValueError(f"grouped conv (groups={groups}) needs its low channels last on both sides")
        # Splits made from alpha go in as alpha, so that errors quote the alpha asked for.
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, groups, conv.bias is not None, alpha=(alpha_in, alpha_out),
                    padding_mode=conv.padding_mode,
                    in_split=ChannelSplit.trailing(conv.in_channels, in_split.n_low) if explicit_in else None,
                    out_split=ChannelSplit.trailing(conv.out_channels, out_split.n_low) if explicit_out else None,
                    device="meta")  # no random initialisation: every weight is copied below
        layer = layer.to_empty(device=conv.weight.device).to(dtype=conv.weight.dtype)
        with torch.no_grad():
            for path, target in layer.path_convs():
                rows = torch.tensor(out_split.branch_index(path.dst_low)[slice(*path.out_range)],
                                    dtype=torch.long, device=conv.weight.device)
                weight = conv.weight.index_select(0, rows)
                if groups == 1:
                    cols = torch.tensor(in_split.branch_index(path.src_low), dtype=torch.long,
                                        device=conv.weight.device)
                    weight = weight.index_select(1, cols)
                target.weight.copy_(weight)
                if target.bias is not None:
                    target.bias.copy_(conv.bias.index_select(0, rows))
        layer.train(conv.training)
        return layer

    # -- introspection ------------------------------------------------------------------------
    @property
    def alpha_in(self) -> float:
        return self.low_in / self.in_channels

    @property
    def alpha_out(self) -> float:
        return self.low_out / self.out_channels

    def path_convs(self) -> Iterator[Tuple[Path, nn.Conv2d]]:
        """Each path with its convolution, in h2h, h2l, l2h, l2l order."""
        for path in self.paths:
            yield path, getattr(self, path.name)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, groups={self.groups}, "
                f"alpha=({self.alpha_in:g}, {self.alpha_out:g}), "
                f"low=({self.low_in}, {self.low_out}), paths={[p.name for p in self.paths]}")

    # -- forward --------------------------------------------------------------------------
    def forward(self, x: Union[Tensor, OctaveTensor]) -> Union[Tensor, OctaveTensor]:
        if self.is_plain:
            return self.h2h(x)
        if self.low_in:
            high, low = octave_input(x, "OctConv2d", (self.high_in, self.low_in))
        else:
            high, low = plain_input(x, "OctConv2d (alpha_in=0)", self.in_channels), None
        strided = self.stride[0] == 2
        high = downsample(high) if strided else high
        sources = {False: high, True: low}
        pooled = {}
        outputs: dict = {False: [], True: []}
        for path, conv in self.path_convs():
            source = sources[path.src_low]
            if path.name == "h2l" or (path.name == "l2l" and strided):
                if path.src_low not in pooled:
                    pooled[path.src_low] = downsample(source)
                source = pooled[path.src_low]
            start, stop = path.in_range
            if start or stop != source.shape[1]:
                source = source[:, start:stop]
            outputs[path.dst_low].append(conv(source))
        high_out = self._combine(outputs[False], high.shape[-2:])
        if not self.low_out:
            return high_out
        return high_out, self._combine(outputs[True], None)

    def _combine(self, parts: List[Tensor], high_size: Optional[torch.Size]) -> Tensor:
        if high_size is not None:
            parts = [parts[0]] + [upsample_to(p, high_size) if p.shape[-2:] != high_size else p
                                  for p in parts[1:]]
        if len(parts) == 1:
            return parts[0]
        if self.groups > 1:
            return torch.cat(parts, dim=1)
        return parts[0] + parts[1]
