"""``OctConvTranspose2d``: octave transposed convolution (up-sampling decoders) with exact sizes.

Paths (``x_h``/``x_l`` in, ``y_h``/``y_l`` out; ``pool`` and ``up`` as in ``OctConv2d``):

* ``y_h = h2h(x_h) + up(l2h(x_l))``
* ``y_l = l2l(x_l) + h2l(pool(x_h))``

Every path is the original transposed convolution (same kernel, stride and padding). The
high output has the size ``nn.ConvTranspose2d`` gives for ``x_h``; the low output is always
``ceil(high / 2)``. The three paths that read a low-resolution input (``x_l``, or ``x_h``
pooled) are brought to that low size by one rule: the ``output_padding`` that reaches it
when one does (``output_padding < stride``, as ``nn.ConvTranspose2d(output_size=...)`` picks
it), then a crop of the bottom rows and right columns when the output is larger. ``l2h``
is then up-sampled to the high size. At stride 2 the low branch is up-sampled by the same
factor as the high branch; at stride 1 this is ``OctConv2d``'s stride-1 structure.

Supported: stride 1 with size-preserving padding (``2 * padding == kernel_size - 1``),
stride 2 with any padding and ``output_padding`` whose low size can be reached at every
input size (kernel 2 / padding 0, kernel 4 / padding 1, kernel 3 / padding 1 with or without
``output_padding=1``...), dilation 1. Groups as in ``OctConv2d``: the split falls on group
boundaries, each group wholly high or wholly low on each side, paths into one branch side by
side (a depthwise layer has only h2h and l2l). Each output channel's bias lives in exactly one
path, so the parameter count equals a plain ``nn.ConvTranspose2d``'s. With
``alpha == (0, 0)`` the layer is exactly the plain transposed convolution, any geometry.
"""
from __future__ import annotations

from typing import Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .channels import AlphaLike, ChannelSplit, as_split, half_size, parse_alpha
from .checks import octave_input, plain_input
from .octconv import OctaveConvBase, OctaveTensor, Path, _pair
from .resample import downsample, upsample_to

IntPair = Union[int, Tuple[int, int]]
SIZE_CHECK_LIMIT = 16  # the size rule repeats with period 2 in the input size


def transposed_output_size(size: int, kernel: int, stride: int, padding: int, output_padding: int = 0,
                           dilation: int = 1) -> int:
    """``nn.ConvTranspose2d``'s output size along one dimension."""
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


def transposed_geometry_problem(kernel_size: IntPair, stride: IntPair, padding: IntPair, output_padding: IntPair,
                                dilation: IntPair) -> Optional[str]:
    """Why a transposed convolution with this geometry cannot have octave paths, or None if it can."""
    kernel_size, stride, padding = _pair(kernel_size), _pair(stride), _pair(padding)
    output_padding, dilation = _pair(output_padding), _pair(dilation)
    if dilation != (1, 1):
        return f"supports dilation 1, got {dilation}"
    if stride[0] != stride[1] or stride[0] not in (1, 2):
        return f"supports stride 1 or 2, got {stride}"
    if stride[0] == 1:
        if any(2 * p != k - 1 for p, k in zip(padding, kernel_size)):
            return (f"at stride 1 needs size-preserving padding, 2 * padding == kernel_size - 1; got "
                    f"kernel_size={kernel_size}, padding={padding}")
        return None
    for kernel, pad, extra in zip(kernel_size, padding, output_padding):
        for size in range(1, SIZE_CHECK_LIMIT):
            high = transposed_output_size(size, kernel, 2, pad, extra)
            reached = transposed_output_size((size + 1) // 2, kernel, 2, pad, 1)
            if high >= 1 and reached < (high + 1) // 2:
                return (f"(kernel {kernel}, stride 2, padding {pad}, output_padding {extra}) cannot bring the "
                        f"low branch to half the high output for {size}-pixel inputs")
    return None


class OctConvTranspose2d(nn.Module):
    """Octave transposed convolution; arguments mirror ``nn.ConvTranspose2d``, plus ``alpha``.

    ``alpha`` is a float or ``(alpha_in, alpha_out)``, each in [0, 1). Input: a tensor when
    ``alpha_in == 0``, else ``(high, low)``; output likewise for ``alpha_out``. Channel splits
    follow ``OctConv2d``'s convention (``round_half_up(alpha * channels)`` low, the last ones).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair, stride: IntPair = 1,
                 padding: IntPair = 0, output_padding: IntPair = 0, groups: int = 1, bias: bool = True,
                 dilation: IntPair = 1, alpha: AlphaLike = 0.5, *,
                 device: Optional[Union[str, torch.device]] = None, dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        alpha_in, alpha_out = parse_alpha(alpha)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.within_groups = False  # grouped layers split in whole groups
        self.kernel_size, self.stride, self.padding = _pair(kernel_size), _pair(stride), _pair(padding)
        self.output_padding, self.dilation = _pair(output_padding), _pair(dilation)
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} "
                             f"and out_channels={out_channels}")
        in_unit, out_unit = (1, 1) if groups == 1 else (in_channels // groups, out_channels // groups)
        self.low_in = as_split(in_channels, alpha_in, in_unit).n_low
        self.low_out = as_split(out_channels, alpha_out, out_unit).n_low
        self.high_in, self.high_out = in_channels - self.low_in, out_channels - self.low_out
        # OctConv2d's checks, messages and path plan: the channel bookkeeping is the same.
        OctaveConvBase._check_split(self, alpha_in, in_channels, self.low_in, "in")
        OctaveConvBase._check_split(self, alpha_out, out_channels, self.low_out, "out")
        self.is_plain = self.low_in == 0 and self.low_out == 0
        if self.is_plain:
            self.paths: List[Path] = [Path("h2h", False, False, (0, in_channels), (0, out_channels), groups)]
            self.h2h = nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride, padding, output_padding,
                                          groups, bias, dilation, **factory)
            return
        problem = transposed_geometry_problem(self.kernel_size, self.stride, self.padding, self.output_padding,
                                              self.dilation)
        if problem:
            raise ValueError(f"OctConvTranspose2d {problem}")
        if groups == in_channels == out_channels and self.low_in != self.low_out:
            raise ValueError(f"depthwise OctConvTranspose2d (groups={groups}) needs alpha_in == alpha_out; "
                             f"got {self.low_in} and {self.low_out} low channels")
        self.paths = OctaveConvBase._plan_paths(self, in_unit, out_unit)
        owners = OctaveConvBase._bias_owners(self) if bias else set()
        for path in self.paths:
            # Only h2h keeps the original output_padding; the low paths choose theirs per call.
            extra = self.output_padding if path.name == "h2h" else 0
            setattr(self, path.name, nn.ConvTranspose2d(
                path.in_range[1] - path.in_range[0], path.out_range[1] - path.out_range[0], self.kernel_size,
                self.stride, self.padding, extra, path.groups, path.name in owners, 1, **factory))

    @classmethod
    def from_conv(cls, conv: nn.ConvTranspose2d, alpha: AlphaLike = 0.5, *,
                  in_split: Optional[ChannelSplit] = None,
                  out_split: Optional[ChannelSplit] = None) -> "OctConvTranspose2d":
        """An OctConvTranspose2d holding ``conv``'s weights, sliced into the paths.

        ``in_split`` / ``out_split`` say which original channels are low (any assignment);
        by default they follow ``alpha``. With ``alpha=0`` the result computes exactly ``conv``.
        Grouped layers need their low channels last, in whole groups (as ``OctConv2d``).
        """
        groups = conv.groups
        in_unit, out_unit = (1, 1) if groups == 1 else (conv.in_channels // groups, conv.out_channels // groups)
        alpha_in, alpha_out = parse_alpha(alpha)
        in_split = as_split(conv.in_channels, in_split if in_split is not None else alpha_in, in_unit)
        out_split = as_split(conv.out_channels, out_split if out_split is not None else alpha_out, out_unit)
        depthwise_same = groups == conv.in_channels == conv.out_channels and in_split.low == out_split.low
        if groups > 1 and not depthwise_same and not (in_split.is_trailing and out_split.is_trailing):
            raise ValueError(f"grouped transposed conv (groups={groups}) needs its low channels last on both sides")
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.output_padding, conv.groups, conv.bias is not None, conv.dilation,
                    alpha=(in_split.alpha, out_split.alpha), device="meta")  # every weight is copied below
        layer = layer.to_empty(device=conv.weight.device).to(dtype=conv.weight.dtype)
        device = conv.weight.device
        with torch.no_grad():
            if layer.is_plain:
                layer.h2h.load_state_dict(conv.state_dict())
                return layer.train(conv.training)
            for path, target in layer.path_convs():
                # The weight is (in_channels, out_channels / groups, kh, kw): rows are input channels.
                rows = torch.tensor(in_split.branch_index(path.src_low)[slice(*path.in_range)], dtype=torch.long,
                                    device=device)
                cols = torch.tensor(out_split.branch_index(path.dst_low)[slice(*path.out_range)], dtype=torch.long,
                                    device=device)
                weight = conv.weight.index_select(0, rows)
                target.weight.copy_(weight.index_select(1, cols) if groups == 1 else weight)
                if target.bias is not None:
                    target.bias.copy_(conv.bias.index_select(0, cols))
        return layer.train(conv.training)

    def _path_geometry(self, name: str) -> Tuple[Tuple[int, int], Tuple[int, int]]:
        """(dilation, padding) of a path, for the shared path plan: every path has the layer's."""
        return self.dilation, self.padding

    # -- introspection ------------------------------------------------------------------------
    alpha_in = OctaveConvBase.alpha_in
    alpha_out = OctaveConvBase.alpha_out

    def path_convs(self) -> Iterator[Tuple[Path, nn.ConvTranspose2d]]:
        """Each path with its transposed convolution, in h2h, h2l, l2h, l2l order."""
        for path in self.paths:
            yield path, getattr(self, path.name)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, output_padding={self.output_padding}, "
                f"alpha=({self.alpha_in:g}, {self.alpha_out:g}), "
                f"low=({self.low_in}, {self.low_out}), paths={[p.name for p in self.paths]}")

    # -- forward --------------------------------------------------------------------------
    def forward(self, x: Union[Tensor, OctaveTensor]) -> Union[Tensor, OctaveTensor]:
        if self.is_plain:
            return self.h2h(x)
        if self.low_in:
            high, low = octave_input(x, "OctConvTranspose2d", (self.high_in, self.low_in))
        else:
            high, low = plain_input(x, "OctConvTranspose2d (alpha_in=0)", self.in_channels), None
        outputs: dict = {False: [], True: []}
        high_size = low_size = None
        for path, conv in self.path_convs():  # h2h first: it sets the sizes
            source = low if path.src_low else high
            source = downsample(source) if path.name == "h2l" else source
            start, stop = path.in_range
            if start or stop != source.shape[1]:
                source = source[:, start:stop]
            if path.name == "h2h":
                y = conv(source)
                high_size, low_size = y.shape[-2:], half_size(y.shape[-2:])
            else:
                y = self._to_size(conv, source, low_size)
                if path.name == "l2h":
                    y = upsample_to(y, high_size)
            outputs[path.dst_low].append(y)
        high_out = self._combine(outputs[False])
        return (high_out, self._combine(outputs[True])) if self.low_out else high_out

    def _combine(self, parts: List[Tensor]) -> Tensor:
        """Paths into one branch: summed, or side by side when grouped (each writes its own groups)."""
        if len(parts) == 1:
            return parts[0]
        return torch.cat(parts, dim=1) if self.groups > 1 else parts[0] + parts[1]

    def _to_size(self, conv: nn.ConvTranspose2d, x: Tensor, size: Sequence[int]) -> Tensor:
        """``conv(x)`` at ``size``: the output_padding that reaches it, then a bottom/right crop."""
        natural = [transposed_output_size(n, k, s, p) for n, k, s, p in
                   zip(x.shape[-2:], self.kernel_size, self.stride, self.padding)]
        extra = tuple(max(0, target - n) for target, n in zip(size, natural))
        y = F.conv_transpose2d(x, conv.weight, conv.bias, self.stride, self.padding, extra, conv.groups)
        if tuple(y.shape[-2:]) != tuple(size):
            y = y[..., :size[0], :size[1]]
        return y

