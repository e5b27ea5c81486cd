"""How a feature map's channels are divided between the high and the low branch.

The one convention used everywhere in octify: a fraction ``alpha`` of ``C`` channels
gives ``round_half_up(alpha * C)`` low channels, rounded to whole groups where a
grouped convolution needs it. By default the low channels are the *last* ones; a
:class:`ChannelSplit` can also describe any other assignment (a channel concat of two
octave tensors interleaves them), always keeping each branch in original channel order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from numbers import Real
from typing import Iterable, Optional, Sequence, Tuple, Union

AlphaLike = Union[float, Tuple[float, float]]


def check_alpha(value: object, what: str = "alpha") -> float:
    """Return ``value`` as a float in [0, 1), or raise ValueError saying what is wrong."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{what} must be a number in [0, 1), got {value!r} ({type(value).__name__})")
    number = float(value)
    if math.isnan(number) or not 0.0 <= number < 1.0:
        raise ValueError(f"{what} must be in [0, 1), got {value!r}: 0 keeps the layer plain, "
                         "0.5 puts half of the channels at half resolution")
    return number


def parse_alpha(alpha: object) -> Tuple[float, float]:
    """Accept ``a`` or ``(a_in, a_out)`` and return ``(a_in, a_out)``, validated."""
    if isinstance(alpha, (tuple, list)):
        if len(alpha) != 2:
            raise ValueError(f"alpha must be a number or a pair (alpha_in, alpha_out), got {alpha!r}")
        return check_alpha(alpha[0], "alpha_in"), check_alpha(alpha[1], "alpha_out")
    value = check_alpha(alpha)
    return value, value


def low_channel_count(channels: int, alpha: float, unit: int = 1) -> int:
    """Low channels for ``alpha`` of ``channels``: ``unit * round_half_up(alpha * channels / unit)``.

    ``unit`` is the granularity (a group's width for grouped convolutions).
    """
    if channels % unit:
        raise ValueError(f"{channels} channels do not divide into units of {unit}")
    # Exact arithmetic on the decimal that ``alpha`` prints as: in floats 0.29 * 50 is
    # 14.499999999999998, which would round down instead of half up.
    exact = Fraction(repr(float(alpha))) * channels / unit
    return unit * math.floor(exact + Fraction(1, 2))


@dataclass(frozen=True)
class ChannelSplit:
    """Which of a tensor's channels are low-frequency (``low[c]`` is True)."""

    low: Tuple[bool, ...]

    @classmethod
    def trailing(cls, channels: int, n_low: int) -> "ChannelSplit":
        """The last ``n_low`` of ``channels`` are low."""
        if not 0 <= n_low <= channels:
            raise ValueError(f"cannot make {n_low} of {channels} channels low")
        return cls((False,) * (channels - n_low) + (True,) * n_low)

    @classmethod
    def from_alpha(cls, channels: int, alpha: float, unit: int = 1) -> "ChannelSplit":
        """The documented convention: the last ``low_channel_count(...)`` channels are low."""
        return cls.trailing(channels, low_channel_count(channels, alpha, unit))

    @classmethod
    def concat(cls, parts: Iterable["ChannelSplit"]) -> "ChannelSplit":
        """The split of a channel concat: each part's channels in order."""
        return cls(tuple(flag for part in parts for flag in part.low))

    @property
    def channels(self) -> int:
        return len(self.low)

    @property
    def n_low(self) -> int:
        return sum(self.low)

    @property
    def n_high(self) -> int:
        return self.channels - self.n_low

    @property
    def alpha(self) -> float:
        return self.n_low / self.channels if self.channels else 0.0

    @property
    def is_trailing(self) -> bool:
        """True when the low channels are exactly the last ones (slicing suffices)."""
        return self == ChannelSplit.trailing(self.channels, self.n_low)

    @property
    def high_index(self) -> Tuple[int, ...]:
        return tuple(c for c, is_low in enumerate(self.low) if not is_low)

    @property
    def low_index(self) -> Tuple[int, ...]:
        return tuple(c for c, is_low in enumerate(self.low) if is_low)

    @property
    def inverse_order(self) -> Tuple[int, ...]:
        """Where each original channel sits in ``high`` followed by ``low``."""
        order = self.high_index + self.low_index
        inverse = [0] * len(order)
        for position, channel in enumerate(order):
            inverse[channel] = position
        return tuple(inverse)

    def branch_index(self, low: bool) -> Tuple[int, ...]:
        return self.low_index if low else self.high_index

    def __repr__(self) -> str:
        layout = "trailing" if self.is_trailing else "interleaved"
        return f"ChannelSplit(channels={self.channels}, low={self.n_low}, {layout})"


def as_split(channels: int, alpha_or_split: Union[float, ChannelSplit], unit: int = 1) -> ChannelSplit:
    """A ChannelSplit for ``channels``, from an alpha or an explicit split (checked)."""
    if isinstance(alpha_or_split, ChannelSplit):
        if alpha_or_split.channels != channels:
            raise ValueError(f"split describes {alpha_or_split.channels} channels, layer has {channels}")
        return alpha_or_split
    return ChannelSplit.from_alpha(channels, alpha_or_split, unit)


def group_pattern(split: ChannelSplit, groups: int) -> Optional[Tuple[bool, ...]]:
    """Which channels of a group are low, when every one of ``groups`` equal groups has the same; else None."""
    width = split.channels // groups
    patterns = {split.low[start:start + width] for start in range(0, split.channels, width)}
    return patterns.pop() if len(patterns) == 1 else None


def half_size(size: Sequence[int]) -> Tuple[int, ...]:
    """Spatial size of the low branch for a high branch of ``size``: ceil(s / 2) per dim."""
    return tuple((s + 1) // 2 for s in size)
