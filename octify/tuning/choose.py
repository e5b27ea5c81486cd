"""Choosing one alpha per group from measured costs (no torch here: plain numbers in, alphas out).

The estimate of a schedule is the original's latency (the sum of its operations' times, measured
as the groups' are) and MACs minus, per group, what its chosen alpha saves against alpha 0. The
candidates are, for each level of MACs, the schedule estimated fastest at it; a target picks one:

* ``fastest``: each group at its fastest alpha; a group whose octave forms are not faster than its
  plain form stays plain;
* ``macs``: the most MACs among those within the MAC ratio that are estimated as fast as the fastest
  of them: estimates closer than :data:`RESOLUTION` of the original's latency are not told apart
  (timings cannot resolve them), and of equally fast ones the one closest to the target changes
  the fewest layers;
* ``latency``: the fewest MACs among those within the latency ratio.

Only candidates estimated no slower than the original count: when a target needs a slower model,
never-slower wins and the target is reported missed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

MACS, LATENCY, FASTEST = "macs", "latency", "fastest"
MAC_LEVELS = 4000  # levels of MACs the candidates are kept at
RESOLUTION = 0.01  # estimated latencies closer than this fraction of the original's are equally fast
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


def fastest_by_macs(groups: Sequence[GroupCosts], resolution: int = MAC_LEVELS) -> List[Dict[str, float]]:
    """For each level of MACs (``1 / resolution`` of the groups' largest MACs wide), the schedule estimated fastest
    at it, fewest MACs first. Built group by group, keeping the fastest partial schedule per level; a schedule
    slower than one with fewer MACs stays (a MAC target may prefer it, being as fast within the resolution)."""
    step = max(1, sum(max(g.macs.values()) for g in groups) // resolution)
    levels: List[Dict[int, Tuple[int, float, int, float]]] = []  # per group: level -> (macs, seconds, parent, alpha)
    points: Dict[int, Tuple[int, float]] = {0: (0, 0.0)}
    for group in groups:
        kept: Dict[int, Tuple[int, float, int, float]] = {}
        for parent, (macs, seconds) in points.items():
            for alpha in group.alphas:
                point = (macs + group.macs[alpha], seconds + group.latency[alpha], parent, alpha)
                level = point[0] // step
                if level not in kept or (point[1], point[0]) < kept[level][1::-1]:  # faster, then fewer MACs
                    kept[level] = point
        levels.append(kept)
        points = {level: (macs, seconds) for level, (macs, seconds, _, _) in kept.items()}
    schedules = []
    for last in sorted(points):
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
    candidates = [fastest] + [estimate(groups, alphas, base_latency, base_macs) for alphas in fastest_by_macs(groups)]
    never_slower = [c for c in candidates if c.latency <= base_latency]  # the fastest always is
    if target.kind == FASTEST:
        return fastest, None
    if target.kind == MACS:
        limit = target.ratio * base_macs
        meeting = [c for c in never_slower if c.macs <= limit]
        if meeting:
            return most_macs_as_fast(meeting, RESOLUTION * base_latency), None
        closest = min(never_slower, key=lambda c: (c.macs, c.latency))
        return closest, missed_macs(target.ratio, closest.macs / base_macs, SLOWER)
    limit = target.ratio * base_latency
    meeting = [c for c in never_slower if c.latency <= limit]
    if meeting:
        return min(meeting, key=lambda c: (c.macs, c.latency)), None
    return fastest, (f"target_latency {target.ratio:g} missed: the fastest schedule found is estimated at "
                     f"{fastest.latency / base_latency:.3f} of the original's latency "
                     f"({fastest.latency / base_latency - target.ratio:.3f} over)")


def most_macs_as_fast(candidates: Sequence[Estimate], tolerance: float) -> Estimate:
    """Of the candidates estimated within ``tolerance`` seconds of the fastest, the one with the most MACs (then the
    fastest of those)."""
    fastest = min(c.latency for c in candidates)
    return max((c for c in candidates if c.latency <= fastest + tolerance), key=lambda c: (c.macs, -c.latency))


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
