"""Which feature maps are too small to split: the ``min_size`` setting and its automatic choice.

The paper keeps its networks' last stage (7x7 at a 224 input) plain: ``min_size=8`` keeps every map
under 8 pixels plain. In the paper's networks the convolutions writing those maps hold at most about a
quarter of the convolution MACs (ResNet-50: 17%, MobileNetV2: 26%, the largest). Networks designed for
small maps (ShuffleNetV2, RegNetX-400MF, EfficientNet, MNASNet, the efficient hybrids) run 29% to two
thirds of their work there, and keeping it plain forfeits most of what the conversion could save.
``min_size="auto"`` (the default) therefore keeps the paper's 8 unless those convolutions hold more
than ``SMALL_MAP_SHARE`` of the MACs, just above MobileNetV2's share; then only maps under 4 pixels
(whose low branch would be a pixel or two) stay plain, and a note says so.
"""
from __future__ import annotations

from typing import Iterable, Optional, Tuple, Union

from ..notes import Note

AUTO = "auto"
PAPER_MIN_SIZE = 8
SMALL_MIN_SIZE = 4
SMALL_MAP_SHARE = 0.27
MinSize = Union[int, str]


def check_min_size(min_size: object) -> MinSize:
    """``min_size`` itself when it is ``"auto"`` or a positive int; a ValueError saying what to pass otherwise."""
    if min_size == AUTO or (isinstance(min_size, int) and not isinstance(min_size, bool) and min_size >= 1):
        return min_size  # type: ignore[return-value]
    raise ValueError(f"min_size must be a positive number of pixels (maps smaller than it stay plain; the paper's "
                     f"rule is 8) or 'auto', got {min_size!r}")


def small_map_share(convolutions: Iterable[Tuple[int, int]]) -> float:
    """The share of MACs of ``(macs, smaller output side)`` convolutions whose output is under the paper's 8 pixels."""
    total = small = 0
    for macs, side in convolutions:
        total += macs
        small += macs if side < PAPER_MIN_SIZE else 0
    return small / total if total else 0.0


def resolve_min_size(min_size: MinSize, convolutions: Iterable[Tuple[int, int]]) -> Tuple[int, Optional[Note]]:
    """The size in pixels ``min_size`` means for a model with these ``(macs, smaller output side)`` convolutions,
    and a note when ``"auto"`` lowered it below the paper's."""
    if min_size != AUTO:
        return int(min_size), None
    share = small_map_share(convolutions)
    if share <= SMALL_MAP_SHARE:
        return PAPER_MIN_SIZE, None
    return SMALL_MIN_SIZE, Note("min_size", "schedule", (
        f"maps under {PAPER_MIN_SIZE} pixels hold {share:.0%} of the convolution MACs (more than "
        f"{SMALL_MAP_SHARE:.0%}), so min_size 'auto' keeps only maps under {SMALL_MIN_SIZE} pixels plain; "
        f"pass min_size={PAPER_MIN_SIZE} (--min-size {PAPER_MIN_SIZE}) to keep them plain as the paper does"))
