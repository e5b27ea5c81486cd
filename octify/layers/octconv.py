"""``OctConv2d``: octave convolution with exact sizes, one bias per branch and real groups.

Paths (``x_h``/``x_l`` in, ``y_h``/``y_l`` out; ``pool`` is 2x2 ceil-mode average pooling,
``up`` is nearest x2 cropped to the exact high size):

* stride 1: ``y_h = h2h(x_h) + up(l2h(x_l))``, ``y_l = l2l(x_l) + h2l(pool(x_h))``
* stride 2: the high input is pooled first (``p = pool(x_h)``), no strided convolution:
  ``y_h = h2h(p) + l2h(x_l)``, ``y_l = l2l(pool(x_l)) + h2l(pool(p))``
* stride 4: as stride 2 with one more pooling on every path (``l2h`` reads ``pool(x_l)``).
* ``strided_high=True`` (stride 2 or 4): ``h2h`` is the original strided convolution on ``x_h``
  instead of a stride-1 convolution on the pooled ``x_h``, with the original's padding, so
  that the high output is exactly the original's high channels for a high-only input.

Every path convolution has stride 1 (but a ``strided_high`` h2h). The high output has the size ``nn.Conv2d`` gives
(``padding="same"`` at stride ``s``: TensorFlow's SAME, ``ceil(H / s)``), the low output
``ceil(high_out / 2)``, at any input size. Paths at low resolution (h2l, l2l, l2h) use
dilation ``max(1, dilation // 2)``: for an even dilation this keeps their receptive field
in input pixels equal to the high path's (at dilation 1 the low paths see twice as far,
as in the paper).

Padding rule, the same for every path and dimension: a path whose source has ``n`` pixels
and whose output must have ``t`` needs ``T = t - n + path_dilation * (kernel - 1)`` pixels
of padding in all. The start gets the original's start padding ``p`` carried to the
path's grid, ``floor(p / r + (kernel - 1) * (path_dilation - dilation / r) / 2)`` for a
source at ``1 / r`` of the input's resolution (so that output pixels stay centred where the
original's are: ``p`` itself for h2h at stride 1, ``path_dilation * (kernel - 1) / 2`` when
the original keeps sizes); with ``"same"`` it gets ``T // 2``, as PyTorch and TensorFlow
place it. The end gets the rest; a negative amount crops. When the original padding keeps
sizes (``2 * padding == dilation * (kernel - 1)``, or ``"same"`` at stride 1) ``T`` does not
depend on the input size and each path convolution pads by itself, in the layer's
``padding_mode``. Otherwise (valid or partial padding, TensorFlow SAME at stride 2, stride
4) each path pads or crops its source at run time (``pads_at_run_time``), in the layer's
``padding_mode``; at stride 1 the h2h path is then exactly the original convolution.

Groups: with ``groups == 1`` the four paths are dense. With ``groups > 1`` the split falls
on group boundaries and each group is wholly high or wholly low on each side, so a path
is a grouped convolution over the groups that go from its source to its destination
branch (a depthwise layer has only h2h and l2l). With ``within_groups=True`` each group
splits its own channels instead (the same count low in every group, the last of each
group by default): the four paths are then convolutions with the same ``groups``, each
group's high and low channels mixing as a dense layer's do (a quarter fewer MACs than
whole-group splits at alpha 0.5). Each output channel's bias lives in exactly one path,
so the parameter count equals a plain ``nn.Conv2d``'s.

With ``alpha == (0, 0)`` the layer is exactly the plain convolution (strided if asked).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, FrozenSet, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .channels import AlphaLike, ChannelSplit, as_split, group_pattern, half_size, low_channel_count, parse_alpha
from .checks import octave_input, plain_input
from .checks import OctaveTensor
from .resample import downsample, upsample_to

PATH_NAMES = ("h2h", "h2l", "l2h", "l2l")
POOLINGS_PER_STRIDE = {1: 0, 2: 1, 4: 2}
PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}
IntPair = Union[int, Tuple[int, int]]
Padding = Union[str, Tuple[int, int]]


def _pair(value: Union[int, Sequence[int]]) -> Tuple[int, int]:
    if isinstance(value, int):
        return value, value
    first, second = value
    return int(first), int(second)


def _padding(padding: Union[IntPair, str]) -> Padding:
    """``"same"`` or a pair of ints (``"valid"`` is ``(0, 0)``)."""
    if padding == "valid":
        return 0, 0
    return padding if isinstance(padding, str) else _pair(padding)


def keeps_size(kernel_size: IntPair, stride: IntPair, padding: Union[IntPair, str], dilation: IntPair) -> bool:
    """Whether the padding keeps sizes at stride 1, so that every path can pad by itself."""
    padding = _padding(padding)
    if padding == "same":
        return _pair(stride) == (1, 1)
    return all(2 * p == d * (k - 1) for p, d, k in zip(padding, _pair(dilation), _pair(kernel_size)))


def geometry_problem(kernel_size: IntPair, stride: IntPair, padding: Union[IntPair, str],
                     dilation: IntPair) -> Optional[str]:
    """Why a convolution with this geometry cannot have octave paths, or None if it can."""
    stride = _pair(stride)
    if stride[0] != stride[1] or stride[0] not in POOLINGS_PER_STRIDE:
        return f"supports stride 1, 2 or 4, the same in both directions; got {stride}"
    if isinstance(padding, str) and padding not in ("same", "valid"):
        return f"needs padding 'same', 'valid' or numbers; got {padding!r}"
    if not isinstance(padding, str) and min(_pair(padding)) < 0:
        return f"needs non-negative padding; got {padding}"
    return None


def conv_output_size(size: Sequence[int], kernel_size: Tuple[int, int], stride: Tuple[int, int],
                     padding: Padding, dilation: Tuple[int, int]) -> Tuple[int, int]:
    """(H, W) of a convolution's output, as ``nn.Conv2d`` gives it; ``"same"`` is ``ceil(size / stride)``."""
    if padding == "same":
        return tuple(-(-int(n) // s) for n, s in zip(size, stride))
    return tuple((int(n) + 2 * p - d * (k - 1) - 1) // s + 1
                 for n, k, s, p, d in zip(size, kernel_size, stride, padding, dilation))


def _pad_or_crop(x: Tensor, amounts: Sequence[int], padding_mode: str) -> Tensor:
    """``F.pad`` order (left, right, top, bottom); negative amounts crop."""
    left, right, top, bottom = (max(-a, 0) for a in amounts)
    if left or right or top or bottom:
        x = x[..., top:x.shape[-2] - bottom, left:x.shape[-1] - right]
    grow = [max(a, 0) for a in amounts]
    return F.pad(x, grow, mode=PAD_MODES[padding_mode]) if any(grow) else x


@dataclass(frozen=True)
class Path:
    """One frequency path: which branch it reads and writes, which channels of each, its geometry.

    ``padding`` is what the path convolution pads by itself ((0, 0) when the layer pads at run time).
    """

    name: str
    src_low: bool
    dst_low: bool
    in_range: Tuple[int, int]
    out_range: Tuple[int, int]
    groups: int
    dilation: Tuple[int, int] = (1, 1)
    padding: Padding = (0, 0)
    stride: Tuple[int, int] = (1, 1)

    @property
    def in_channels(self) -> int:
        return self.in_range[1] - self.in_range[0]

    @property
    def out_channels(self) -> int:
        return self.out_range[1] - self.out_range[0]


def path_weight_index(path: Path, in_split: ChannelSplit, out_split: ChannelSplit, groups: int,
                      within_groups: bool = False) -> Tuple[Tuple[int, ...], Optional[Tuple[int, ...]]]:
    """The rows (output channels) and, for dense or ``within_groups`` layers, columns (input channels, within
    a group for the latter) of a conv weight that ``path`` holds."""
    rows = out_split.branch_index(path.dst_low)[slice(*path.out_range)]
    if within_groups:
        pattern = group_pattern(in_split, groups)
        return rows, tuple(c for c, is_low in enumerate(pattern) if is_low == path.src_low)
    cols = in_split.branch_index(path.src_low) if groups == 1 else None
    return rows, cols


def splits_within_groups(groups: int, in_split: ChannelSplit, out_split: ChannelSplit) -> bool:
    """Whether a grouped layer with these splits needs each group split on its own (``within_groups``): its
    splits do not fall on group boundaries, and every group has the same pattern on each side."""
    if groups == 1 or groups == in_split.channels == out_split.channels:
        return False
    whole = all(split.is_trailing and split.n_low % (split.channels // groups) == 0 for split in (in_split, out_split))
    return not whole and all(group_pattern(split, groups) is not None for split in (in_split, out_split))


def check_grouped_splits(groups: int, in_channels: int, out_channels: int, in_split: ChannelSplit,
                         out_split: ChannelSplit) -> None:
    """Grouped convolutions take their low channels last in whole groups, or the same ones in every group
    (a depthwise one any matching split)."""
    depthwise_same = groups == in_channels == out_channels and in_split.low == out_split.low
    if groups > 1 and not depthwise_same and not (in_split.is_trailing and out_split.is_trailing) \
            and not splits_within_groups(groups, in_split, out_split):
        raise ValueError(f"grouped conv (groups={groups}) needs its low channels last in whole groups, or the same "
                         "channels low in every group, on both sides")


class OctaveConvBase(nn.Module):
    """Splits, paths, sizes and the forward of an octave convolution; subclasses say where weights live.

    Subclasses call ``_octave_forward(x, convolve)``, ``convolve(path, source)`` being the
    path's stride-1 convolution of a source already pooled, sliced and sized.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair, stride: IntPair = 1,
                 padding: Union[IntPair, str] = 0, dilation: IntPair = 1, groups: int = 1, bias: bool = True,
                 alpha: AlphaLike = 0.5, padding_mode: str = "zeros", *,
                 in_split: Optional[ChannelSplit] = None, out_split: Optional[ChannelSplit] = None,
                 strided_high: bool = False, within_groups: bool = False) -> None:
        super().__init__()
        alpha_in, alpha_out = parse_alpha(alpha)
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} "
                             f"and out_channels={out_channels}")
        if padding_mode not in PAD_MODES:
            raise ValueError(f"padding_mode must be one of {sorted(PAD_MODES)}, got {padding_mode!r}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.dilation = _pair(kernel_size), _pair(dilation)
        self.stride = _pair(stride)
        self.padding = _padding(padding)
        self.padding_mode = padding_mode
        self.strided_high = strided_high and self.stride != (1, 1)
        if within_groups and (groups == 1 or groups == in_channels == out_channels):
            raise ValueError(f"within_groups needs groups of several channels, got groups={groups} for "
                             f"{in_channels} -> {out_channels} channels")
        self.within_groups = within_groups
        in_unit, out_unit = (1, 1) if groups == 1 else (in_channels // groups, out_channels // groups)
        requested_in = in_split.alpha if in_split is not None else alpha_in
        requested_out = out_split.alpha if out_split is not None else alpha_out
        if within_groups:  # one group's count, in every group
            self.low_in = in_split.n_low if in_split is not None else groups * low_channel_count(in_unit, alpha_in)
            self.low_out = (out_split.n_low if out_split is not None
                            else groups * low_channel_count(out_unit, alpha_out))
        else:
            self.low_in = as_split(in_channels, in_split if in_split is not None else alpha_in, in_unit).n_low
            self.low_out = as_split(out_channels, out_split if out_split is not None else alpha_out, out_unit).n_low
        self.high_in, self.high_out = in_channels - self.low_in, out_channels - self.low_out
        self._check_split(requested_in, in_channels, self.low_in, "in")
        self._check_split(requested_out, out_channels, self.low_out, "out")
        self.is_plain = self.low_in == 0 and self.low_out == 0
        if self.is_plain:
            if self.padding == "same" and self.stride != (1, 1):
                raise ValueError(f"padding='same' at stride {self.stride} (TensorFlow SAME) needs octave "
                                 "channels; a plain layer is an nn.Conv2d, which has no such padding")
            self.pads_at_run_time = False
            self.paths: List[Path] = [Path("h2h", False, False, (0, in_channels), (0, out_channels), groups,
                                           self.dilation, self.padding)]
        else:
            self._check_geometry()
            if self.strided_high and isinstance(self.padding, str):
                raise ValueError("strided_high needs numeric padding; padding='same' at a stride pads at run time")
            self.pads_at_run_time = not keeps_size(self.kernel_size, self.stride, self.padding, self.dilation)
            self.paths = self._plan_paths(in_unit, out_unit)
        self.bias_paths: FrozenSet[str] = self._bias_owners() if bias else frozenset()
        # Which channels of the plain layer each branch holds (``from_conv`` records any other assignment).
        self.original_splits: Tuple[ChannelSplit, ChannelSplit] = (
            ChannelSplit.trailing(in_channels, self.low_in), ChannelSplit.trailing(out_channels, self.low_out))

    # -- construction helpers -------------------------------------------------------------
    def _check_split(self, alpha: float, channels: int, n_low: int, side: str) -> None:
        if n_low == channels:
            raise ValueError(f"alpha_{side}={alpha:g} makes all {channels} {side}put channels low; "
                             "at least one must stay high")
        if alpha > 0 and n_low == 0:
            unit = "" if self.groups == 1 else f" in whole groups of {channels // self.groups}"
            raise ValueError(f"alpha_{side}={alpha:g} of {channels} {side}put channels rounds to 0 low "
                             f"channels{unit}; use alpha_{side}=0 or more channels")
        if self.within_groups and n_low % self.groups:
            raise ValueError(f"groups={self.groups}, within_groups: {n_low} low of {channels} {side}put channels "
                             "is not the same count in every group")
        if self.groups > 1 and not self.within_groups and n_low % (channels // self.groups):
            raise ValueError(f"groups={self.groups}: {n_low} low of {channels} {side}put channels is not "
                             f"a whole number of groups of {channels // self.groups}")

    def _check_geometry(self) -> None:
        problem = geometry_problem(self.kernel_size, self.stride, self.padding, self.dilation)
        if problem:
            raise ValueError(f"OctConv2d {problem}")
        if self.groups == self.in_channels == self.out_channels and self.low_in != self.low_out:
            raise ValueError(f"depthwise OctConv2d (groups={self.groups}) needs alpha_in == alpha_out; "
                             f"got {self.low_in} and {self.low_out} low channels")

    def _path_geometry(self, name: str) -> Tuple[Tuple[int, int], Padding, Tuple[int, int]]:
        """(dilation, own padding, stride) of a path convolution."""
        if name == "h2h" and self.strided_high:
            return self.dilation, self.padding, self.stride
        dilation = tuple(max(1, d // 2) for d in self.dilation) if name != "h2h" else self.dilation
        if self.pads_at_run_time:
            return dilation, (0, 0), (1, 1)
        if isinstance(self.padding, str):
            return dilation, "same", (1, 1)
        return dilation, tuple(d * (k - 1) // 2 for d, k in zip(dilation, self.kernel_size)), (1, 1)

    def _plan_paths(self, in_unit: int, out_unit: int) -> List[Path]:
        if self.groups == 1 or self.within_groups:
            sizes_in = {False: self.high_in, True: self.low_in}
            sizes_out = {False: self.high_out, True: self.low_out}
            return [Path(name, src, dst, (0, sizes_in[src]), (0, sizes_out[dst]), self.groups,
                         *self._path_geometry(name))
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
                              ((first - out_offset) * out_unit, (last - out_offset) * out_unit), last - first,
                              *self._path_geometry(name)))
        return paths

    def _bias_owners(self) -> FrozenSet[str]:
        """Each output channel's bias in exactly one path: same-frequency paths first."""
        names = {path.name for path in self.paths}
        if self.groups > 1 and not self.within_groups:
            return frozenset(names)
        owners = {"h2h"}
        if self.low_out:
            owners.add("l2l" if "l2l" in names else "h2l")
        return frozenset(owners)

    # -- introspection ------------------------------------------------------------------------
    @property
    def alpha_in(self) -> float:
        return self.low_in / self.in_channels

    @property
    def alpha_out(self) -> float:
        return self.low_out / self.out_channels

    def output_size(self, high_size: Sequence[int]) -> Tuple[int, int]:
        """The high output's (H, W) for a high input of ``high_size`` (the low output is half, rounded up)."""
        return conv_output_size(high_size, self.kernel_size, self.stride, self.padding, self.dilation)

    def writes_low_resolution(self, path: Path) -> bool:
        """Whether ``path``'s convolution produces the low output's size (else the high output's)."""
        return path.dst_low or (path.name == "l2h" and self.stride == (1, 1))

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, groups={self.groups}, "
                f"alpha=({self.alpha_in:g}, {self.alpha_out:g}), "
                f"low=({self.low_in}, {self.low_out}){', within_groups' if self.within_groups else ''}, "
                f"paths={[p.name for p in self.paths]}")

    # -- forward --------------------------------------------------------------------------
    def _octave_forward(self, x: Union[Tensor, OctaveTensor],
                        convolve: Callable[[Path, Tensor], Tensor]) -> Union[Tensor, OctaveTensor]:
        if self.low_in:
            high, low = octave_input(x, "OctConv2d", (self.high_in, self.low_in))
        else:
            high, low = plain_input(x, "OctConv2d (alpha_in=0)", self.in_channels), None
        high_size = self.output_size(high.shape[-2:])
        if min(high_size) < 1:
            raise ValueError(f"OctConv2d: an input of {tuple(high.shape[-2:])} is too small for "
                             f"kernel_size={self.kernel_size}, padding={self.padding}")
        sizes = {False: high_size, True: half_size(high_size)}
        pooled: Dict[Tuple[bool, int], Tensor] = {(False, 0): high, (True, 0): low}
        outputs: Dict[bool, List[Tensor]] = {False: [], True: []}
        for path in self.paths:
            source = self._pooled(pooled, path.src_low, self._poolings(path))
            start, stop = path.in_range
            if start or stop != source.shape[1]:
                source = source[:, start:stop]
            if self.pads_at_run_time and path.stride == (1, 1):
                source = self._fit(source, path, sizes[self.writes_low_resolution(path)])
            outputs[path.dst_low].append(convolve(path, source))
        high_out = self._combine(outputs[False], high_size)
        if not self.low_out:
            return high_out
        return high_out, self._combine(outputs[True], None)

    def _poolings(self, path: Path) -> int:
        """How many times ``path`` halves its source before convolving."""
        levels = POOLINGS_PER_STRIDE[self.stride[0]]
        if path.stride != (1, 1):
            return 0
        return {"h2h": levels, "h2l": levels + 1, "l2h": max(levels - 1, 0), "l2l": levels}[path.name]

    @staticmethod
    def _pooled(cache: Dict[Tuple[bool, int], Tensor], low: bool, times: int) -> Tensor:
        for level in range(1, times + 1):
            if (low, level) not in cache:
                cache[(low, level)] = downsample(cache[(low, level - 1)])
        return cache[(low, times)]

    def _fit(self, source: Tensor, path: Path, target: Sequence[int]) -> Tensor:
        """Pad or crop ``source`` so that ``path``'s convolution yields ``target`` (the rule above)."""
        amounts: List[int] = []
        for dim in (1, 0):  # F.pad order: width first
            path_dilation = path.dilation[dim]
            total = int(target[dim]) - source.shape[-2 + dim] + path_dilation * (self.kernel_size[dim] - 1)
            if isinstance(self.padding, str):
                start = total // 2
            else:  # floor(p / r + (k - 1) * (path_dilation - d / r) / 2), r = 2 ** halvings
                halvings = self._poolings(path) + path.src_low
                start = ((2 * self.padding[dim] + (self.kernel_size[dim] - 1)
                          * (path_dilation * 2 ** halvings - self.dilation[dim])) // 2 ** (halvings + 1))
            amounts += [start, total - start]
        return _pad_or_crop(source, amounts, self.padding_mode)

    def _combine(self, parts: List[Tensor], high_size: Optional[Sequence[int]]) -> Tensor:
        if high_size is not None:
            parts = [parts[0]] + [upsample_to(p, high_size) if tuple(p.shape[-2:]) != tuple(high_size) else p
                                  for p in parts[1:]]
        if len(parts) == 1:
            return parts[0]
        if self.groups > 1 and not self.within_groups:
            return torch.cat(parts, dim=1)
        return parts[0] + parts[1]


class OctConv2d(OctaveConvBase):
    """Octave convolution, a drop-in for ``octconv.OctConv2d`` (0.2.0).

    Args mirror ``nn.Conv2d``; ``alpha`` is the fraction of low-frequency channels, a
    float or ``(alpha_in, alpha_out)``, each in [0, 1). Input: a tensor when
    ``alpha_in == 0``, else ``(high, low)``; output likewise for ``alpha_out``.
    Low channel counts are ``round_half_up(alpha * channels)``, in whole groups when
    ``groups > 1``. Any padding, strides 1, 2 and 4 (see the module docstring for sizes).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair, stride: IntPair = 1,
                 padding: Union[IntPair, str] = 0, dilation: IntPair = 1, groups: int = 1, bias: bool = True,
                 alpha: AlphaLike = 0.5, padding_mode: str = "zeros", *,
                 in_split: Optional[ChannelSplit] = None, out_split: Optional[ChannelSplit] = None,
                 strided_high: bool = False, within_groups: bool = False,
                 device: Optional[Union[str, torch.device]] = None, dtype: Optional[torch.dtype] = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, alpha,
                         padding_mode, in_split=in_split, out_split=out_split, strided_high=strided_high,
                         within_groups=within_groups)
        factory = {"device": device, "dtype": dtype}
        if self.is_plain:
            self.h2h = nn.Conv2d(in_channels, out_channels, kernel_size, stride, self.padding, dilation,
                                 groups, bias, padding_mode, **factory)
            return
        for path in self.paths:
            path_mode = "zeros" if self.pads_at_run_time and path.stride == (1, 1) else padding_mode
            conv = nn.Conv2d(path.in_channels, path.out_channels, self.kernel_size, path.stride, path.padding,
                             path.dilation, path.groups, path.name in self.bias_paths, path_mode, **factory)
            setattr(self, path.name, conv)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, alpha: AlphaLike = 0.5, *, in_split: Optional[ChannelSplit] = None,
                  out_split: Optional[ChannelSplit] = None,
                  padding: Union[IntPair, str, None] = None, strided_high: bool = False) -> "OctConv2d":
        """An OctConv2d holding ``conv``'s weights, sliced into the paths.

        ``in_split`` / ``out_split`` say which original channels are low (any assignment
        for ``groups == 1`` or matching depthwise splits; for other grouped convolutions the
        last channels in whole groups, or the same channels of every group, which makes a
        ``within_groups`` layer); by default
        they follow ``alpha``. ``padding`` replaces ``conv.padding`` for a convolution that
        pads by other means (``"same"`` for one that pads as TensorFlow's SAME at run time).
        ``strided_high`` keeps the original strided convolution as the h2h path of a strided
        layer (see the module docstring). With ``alpha=0`` the result computes exactly ``conv``.
        Cross-frequency paths start from the same weights as the original channels they
        connect, so that a block-constant input gives the original output.
        """
        groups = conv.groups
        in_unit, out_unit = (1, 1) if groups == 1 else (conv.in_channels // groups, conv.out_channels // groups)
        alpha_in, alpha_out = parse_alpha(alpha)
        explicit_in, explicit_out = in_split is not None, out_split is not None
        in_split = as_split(conv.in_channels, in_split if explicit_in else alpha_in, in_unit)
        out_split = as_split(conv.out_channels, out_split if explicit_out else alpha_out, out_unit)
        check_grouped_splits(groups, conv.in_channels, conv.out_channels, in_split, out_split)
        within_groups = splits_within_groups(groups, in_split, out_split)
        # Splits made from alpha go in as alpha, so that errors quote the alpha asked for.
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                    conv.padding if padding is None else padding,
                    conv.dilation, groups, conv.bias is not None, alpha=(alpha_in, alpha_out),
                    padding_mode=conv.padding_mode,
                    in_split=ChannelSplit.trailing(conv.in_channels, in_split.n_low) if explicit_in else None,
                    out_split=ChannelSplit.trailing(conv.out_channels, out_split.n_low) if explicit_out else None,
                    strided_high=strided_high, within_groups=within_groups,
                    device="meta")  # no random initialisation: every weight is copied below
        layer = layer.to_empty(device=conv.weight.device).to(dtype=conv.weight.dtype)
        with torch.no_grad():
            for path, target in layer.path_convs():
                rows, cols = path_weight_index(path, in_split, out_split, groups, within_groups)
                rows_index = torch.tensor(rows, dtype=torch.long, device=conv.weight.device)
                weight = conv.weight.index_select(0, rows_index)
                if cols is not None:
                    weight = weight.index_select(1, torch.tensor(cols, dtype=torch.long, device=conv.weight.device))
                target.weight.copy_(weight)
                if target.bias is not None:
                    target.bias.copy_(conv.bias.index_select(0, rows_index))
        layer.original_splits = (in_split, out_split)
        layer.train(conv.training)
        return layer

    def path_convs(self) -> Iterator[Tuple[Path, nn.Conv2d]]:
        """Each path with its convolution, in h2h, h2l, l2h, l2l order."""
        for path in self.paths:
            yield path, getattr(self, path.name)

    def forward(self, x: Union[Tensor, OctaveTensor]) -> Union[Tensor, OctaveTensor]:
        if self.is_plain:
            return self.h2h(x)
        return self._octave_forward(x, lambda path, source: getattr(self, path.name)(source))
