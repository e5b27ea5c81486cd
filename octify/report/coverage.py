"""How much of the original's convolution work a conversion moved into octave layers, and why
the rest stayed plain.

* **Coverage** is the share of the original model's 2-d convolution MACs (rows of ``nn.Conv2d``,
  its subclasses and ``F.conv2d`` calls) whose layer runs in octave form after conversion: an
  ``OctConv2d`` with an octave input or output (``alpha_in`` or ``alpha_out`` > 0). Each
  convolution weighs by its original MACs, so coverage and the plain groups' shares add up
  to 1. Convolutions inside a measured leaf (see :mod:`octify.report.measuring`) have no row
  and are not part of it.
* **Plain groups**: every other convolution, grouped by the cause of its conversion note
  (:attr:`octify.notes.Note.group`), largest share first.
* **Possible savings**: the MACs the conversion would save if every convolution ran at its
  scheduled alpha ``a`` (an ``F.conv2d`` call: its module's) with octave input and output,
  which by the paper's per-layer formula
  costs ``(1 - a)^2 + a (1 - a) / 2 + a^2 / 4`` of the plain layer (0.4375 at a = 0.5).
  A conversion that saves less than a tenth of that warns (:func:`shortfall_warning`), unless
  even that is under 1% of the model's MACs (a transformer with one patch convolution).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional

from ..layers import FunctionalOctConv2d
from ..notes import Note
from .costs import LayerCost, ModelCost

SHORTFALL = 0.1  # warn below this fraction of the possible savings
NEGLIGIBLE = 0.01  # possible savings under this fraction of the model's MACs: nothing worth a warning
NO_REASON = "no reason recorded"

FIXES = {  # text in a cause -> what the user can do about it
    "small maps (< min_size)": "if the model runs on larger images, pass that input_shape=... (--input-shape); "
                               "or a smaller min_size (--min-size)",
    "alpha 0 by schedule": "give these convolutions an alpha in the schedule",
    "inside leaf": "use leaf_modules (--leaf) less",
    "no octave rule": "an octave rule for it in octify.rules (one registry entry) would convert these",
    "alpha leaves a branch empty": "use a larger alpha",
}


class SavingsWarning(UserWarning):
    """A conversion that saves much less than its alphas could: the report's coverage says why."""


@dataclass(frozen=True)
class ReasonGroup:
    """Plain convolutions sharing one cause, with their original MACs and share of all convolution MACs."""

    cause: str
    layers: List[str]
    macs: int
    share: float

    @property
    def fix(self) -> str:
        return next((fix for text, fix in FIXES.items() if text in self.cause), "")


@dataclass(frozen=True)
class Coverage:
    """Coverage of a conversion (see the module docstring); ``share`` is None for a model without convolutions."""

    convolution_macs: int
    octave_macs: int
    plain: List[ReasonGroup] = field(default_factory=list)

    @property
    def share(self) -> Optional[float]:
        return self.octave_macs / self.convolution_macs if self.convolution_macs else None

    def to_dict(self) -> Dict[str, Any]:
        return {"convolution_macs": self.convolution_macs, "octave_macs": self.octave_macs, "share": self.share,
                "plain": [asdict(group) for group in self.plain]}


def is_convolution(layer: LayerCost) -> bool:
    """A 2-d convolution row: ``nn.Conv2d``, its subclasses and ``OctConv2d`` (they carry alphas), ``F.conv2d``."""
    return layer.alpha_in is not None or layer.op == "conv2d"


def conv_name(layer: LayerCost) -> str:
    """The name notes and schedules use: an ``F.conv2d`` call (``FunctionalOctConv2d`` once converted)
    goes by the module whose forward made it."""
    functional = layer.alpha_in is None or layer.op == FunctionalOctConv2d.__name__
    return (layer.scope or layer.name) if functional else layer.name


def is_octave(layer: LayerCost) -> bool:
    return bool(layer.alpha_in or layer.alpha_out)


def coverage(original: ModelCost, converted: ModelCost, notes: Iterable[Note]) -> Coverage:
    """Coverage of ``converted`` over ``original``'s convolutions, plain ones grouped by their notes' causes."""
    octave_names = {conv_name(layer) for layer in converted.layers if is_convolution(layer) and is_octave(layer)}
    causes: Dict[str, str] = {}
    for note in notes:
        if note.kind == "plain":
            causes.setdefault(note.name, note.group)
    total = octave = 0
    groups: Dict[str, List[LayerCost]] = {}
    for layer in original.layers:
        if not is_convolution(layer):
            continue
        total += layer.macs
        if conv_name(layer) in octave_names:
            octave += layer.macs
        else:
            groups.setdefault(causes.get(conv_name(layer), NO_REASON), []).append(layer)
    plain = [ReasonGroup(cause, list(dict.fromkeys(conv_name(l) for l in layers)), sum(l.macs for l in layers),
                         sum(l.macs for l in layers) / total if total else 0.0)
             for cause, layers in groups.items()]
    return Coverage(total, octave, sorted(plain, key=lambda group: -group.macs))


def octave_cost_factor(alpha: float) -> float:
    """MACs of an octave convolution with alpha in and out over the plain one's (the paper's formula)."""
    return (1 - alpha) ** 2 + alpha * (1 - alpha) / 2 + alpha ** 2 / 4


def possible_savings(original: ModelCost, alphas: Mapping[str, float]) -> int:
    """MACs saved if every convolution of ``original`` were octave at its alpha in ``alphas`` (0 if absent)."""
    return round(sum(layer.macs * (1 - octave_cost_factor(alphas.get(conv_name(layer), 0.0)))
                     for layer in original.layers if is_convolution(layer)))


def shortfall_warning(saved: int, possible: int, original_macs: int, cover: Coverage, top: int = 3) -> Optional[str]:
    """The warning's text when ``saved`` is less than a tenth of ``possible``, else None."""
    if possible < NEGLIGIBLE * original_macs or saved >= SHORTFALL * possible:
        return None
    reasons = []
    for group in cover.plain[:top]:
        fix = f" ({group.fix})" if group.fix else ""
        reasons.append(f"{group.cause}: {group.share:.0%} of the convolution MACs, {len(group.layers)} "
                       f"convolution{'s' if len(group.layers) != 1 else ''}{fix}")
    share = "no" if cover.share is None else f"{cover.share:.0%} of the"
    return (f"the conversion saves {saved / original_macs:.1%} of the MACs, less than a tenth of the "
            f"{possible / original_macs:.1%} its alphas could save if every convolution were octave; "
            f"{share} convolution MACs run in octave layers. Plain: " + "; ".join(reasons)
            + ". The report's coverage lists every plain convolution and why.")
