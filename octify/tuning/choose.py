"""Choosing one alpha per group from measured costs (no torch here: plain numbers in, alphas out).

The estimate of a schedule is the original's latency (the sum of its operations' times, measured
as the groups' are) and MACs minus, per group, what its chosen alpha saves against alpha 0. The candidates are the schedules on the frontier between
latency and MACs (none other is both faster and smaller); a target picks one of them:

* ``fastest``: each group at its fastest alpha; a group whose octave forms are not faster than its
  plain form stays plain;
* ``macs``: the lowest estimated latency among those within the MAC ratio;
* ``latency``: the fewest MACs among those within the latency ratio.

Only candidates estimated no slower than the original count: when a target needs a slower model,
never-slower wins and the target is reported missed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

MACS, LATENCY, FASTEST = "macs", "latency", "fastest"
FRONTIER_POINTS = 4000
SLOWER = "fewer MACs would need a model estimated slower than the original, and never slower wins"


@dataclass(frozen=True)
class Target:
    """What to tune for: ``kind`` is ``"macs"`` or ``"latency"`` (``ratio`` of the original's) or ``"fastest"``."""

    kind: str
    ratio: Optional[float] = None

    @classmethod
    def from_options(cls, target_macs: Optional[float] = None, target_latency: Optional[float] = None,
                     fastest: bool = False) -> "Target":
        """The one target given; ValueError when there is none, several, or a ratio outside (0, 1]."""
        given = [name for name, value in (("target_macs", target_macs), ("target_latency", target_latency),
                                          ("fastest", fastest or None)) if value is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of target_macs, target_latency or fastest=True, got "
                             f"{', '.join(given) or 'none'}")
        if fastest:
            return cls(FASTEST)
        kind, ratio = (MACS, target_macs) if target_macs is not None else (LATENCY, target_latency)
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
            raise ValueError(f"target_{kind} is a ratio of the original's {kind.replace('macs', 'MACs')}, in (0, 1], "
                             f"such as 0.5; got {ratio!r}")
        return cls(kind, float(ratio))

    def __str__(self) -> str:
        return "fastest" if self.kind == FASTEST else f"target_{self.kind} {self.ratio:g}"


@dataclass(frozen=True)
class GroupCosts:
    """One group's measured seconds (``latency``, absent when not measured) and MACs per alpha; alpha 0 is its
    original form."""

    name: str
    macs: Mapping[float, int]
    latency: Optional[Mapping[float, float]] = None

    @property
    def alphas(self) -> List[float]:
        return sorted(self.macs)


@dataclass(frozen=True)
class Estimate:
    """A schedule (group -> alpha) with its estimated latency (seconds; None unmeasured) and MACs."""

    alphas: Dict[str, float]
    latency: Optional[float]
    macs: int


def estimate(groups: Sequence[GroupCosts], alphas: Mapping[str, float], base_latency: Optional[float],
             base_macs: int) -> Estimate:
    """The original's totals less what each group's alpha saves against its alpha 0."""
    macs = base_macs - sum(g.macs[0.0] - g.macs[alphas[g.name]] for g in groups)
    latency = None if base_latency is None else \
        base_latency - sum(g.latency[0.0] - g.latency[alphas[g.name]] for g in groups)
    return Estimate(dict(alphas), latency, macs)


def frontier(groups: Sequence[GroupCosts], resolution: int = FRONTIER_POINTS) -> List[Dict[str, float]]:
    """The schedules no other beats on both estimated seconds and MACs, fewest MACs first (then more MACs, less
    time). Built group by group, dropping what another point beats; points closer than ``1 / resolution`` of the
    groups' MACs keep only the one with fewer MACs, so the list stays short (and errs towards fewer MACs)."""
    step = sum(max(g.macs.values()) for g in groups) / resolution
    levels: List[List[Tuple[int, float, int, float]]] = []  # per group: (macs, seconds, parent index, alpha)
    points: List[Tuple[int, float]] = [(0, 0.0)]
    for group in groups:
        merged = sorted(((macs + group.macs[a], seconds + group.latency[a], parent, a)
                         for parent, (macs, seconds) in enumerate(points) for a in group.alphas),
                        key=lambda p: (p[0], p[1], p[3]))
        kept: List[Tuple[int, float, int, float]] = []
        for point in merged:
            if kept and (point[1] >= kept[-1][1] or point[0] - kept[-1][0] < step):
                continue  # beaten by a point with no more MACs, or too close to it
            kept.append(point)
        levels.append(kept)
        points = [(macs, seconds) for macs, seconds, _, _ in kept]
    schedules = []
    for last in range(len(points)):
        alphas: Dict[str, float] = {}
        position = last
        for group, level in zip(reversed(groups), reversed(levels)):
            _, _, position, alphas[group.name] = level[position]
        schedules.append({g.name: alphas[g.name] for g in groups})
    return schedules


def fastest_alphas(groups: Sequence[GroupCosts]) -> Dict[str, float]:
    """Each group's fastest alpha; of equally fast ones the lowest, so a form that does not pay stays plain."""
    return {g.name: min(g.alphas, key=lambda a, g=g: (g.latency[a], a)) for g in groups}


def choose(groups: Sequence[GroupCosts], target: Target, base_latency: float,
           base_macs: int) -> Tuple[Estimate, Optional[str]]:
    """The schedule ``target`` asks for, and why the target is missed (None when met), from measured costs."""
    fastest = estimate(groups, fastest_alphas(groups), base_latency, base_macs)
    candidates = [fastest] + [estimate(groups, alphas, base_latency, base_macs) for alphas in frontier(groups)]
    never_slower = [c for c in candidates if c.latency <= base_latency]  # the fastest always is
    if target.kind == FASTEST:
        return fastest, None
    if target.kind == MACS:
        limit = target.ratio * base_macs
        meeting = [c for c in never_slower if c.macs <= limit]
        if meeting:
            return min(meeting, key=lambda c: (c.latency, c.macs)), None
        closest = min(never_slower, key=lambda c: (c.macs, c.latency))
        return closest, missed_macs(target.ratio, closest.macs / base_macs, SLOWER)
    limit = target.ratio * base_latency
    meeting = [c for c in never_slower if c.latency <= limit]
    if meeting:
        return min(meeting, key=lambda c: (c.macs, c.latency)), None
    return fastest, (f"target_latency {target.ratio:g} missed: the fastest schedule found is estimated at "
                     f"{fastest.latency / base_latency:.3f} of the original's latency "
                     f"({fastest.latency / base_latency - target.ratio:.3f} over)")


def missed_macs(target: float, reached: float, why: str) -> str:
    return f"target_macs {target:g} missed: {reached:.3f} of the original's MACs ({reached - target:.3f} over); {why}"


def choose_by_macs(groups: Sequence[GroupCosts], target: float, base_macs: int) -> Tuple[Estimate, Optional[str]]:
    """Without measurement: the fewest octave groups that reach the MAC ratio ``target``. Groups that can save the
    most MACs go first, each at its largest alpha; the last one takes the smallest alpha that still reaches it."""
    alphas = {g.name: 0.0 for g in groups}
    limit = target * base_macs
    current = estimate(groups, alphas, None, base_macs)
    for group in sorted(groups, key=lambda g: (min(g.macs.values()) - g.macs[0.0], g.name)):
        if current.macs <= limit:
            break
        for alpha in group.alphas[1:]:
            trial = estimate(groups, {**alphas, group.name: alpha}, None, base_macs)
            if trial.macs <= limit or alpha == group.alphas[-1]:
                alphas[group.name], current = alpha, trial
                break
    if current.macs <= limit:
        return current, None
    return current, missed_macs(target, current.macs / base_macs, "the other convolutions cannot be octave")
