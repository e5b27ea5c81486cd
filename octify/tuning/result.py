"""What a tuning decided and measured, and the schedule file that reproduces it."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from ..plan import AlphaGroup
from .choose import GroupCosts, Target

MS = 1e3
OTHERS = "every other convolution: plain at every candidate alpha by the defaults (stem, small maps, plain consumers)"


@dataclass
class Tuning:
    """The outcome of :func:`octify.tune`.

    ``schedule``: convolution name -> alpha, every convolution of every group, then ``"*"``: ``others`` for
    the rest (what ``convert(alpha=...)`` and ``--schedule`` take back); ``reasons``: the measured reason for each group's alpha, by group name;
    ``costs``: the measured table; ``estimated_ratio`` / ``measured_ratio``: converted / original latency,
    from the per-layer times and end to end (None without measurement); ``macs_ratio``: of the result;
    ``missed``: why the target was not met (None when it was); ``corrections``: what the end-to-end
    check changed, ``dropped``: the groups it made plain.
    """

    target: Target
    setting: str
    groups: List[AlphaGroup]
    alphas: Dict[str, float]  # group name -> alpha
    costs: List[GroupCosts]
    macs_ratio: float
    others: float  # the largest candidate alpha: the convolutions in no group stay plain at it by the defaults
    estimated_ratio: Optional[float] = None
    measured_ratio: Optional[float] = None
    missed: Optional[str] = None
    corrections: List[str] = field(default_factory=list)
    dropped: List[str] = field(default_factory=list)  # groups the end-to-end check made plain

    @property
    def schedule(self) -> Dict[str, float]:
        return schedule_names(self.groups, self.alphas, self.others)

    @property
    def reasons(self) -> Dict[str, str]:
        return {costs.name: reason(costs, self.alphas[costs.name])
                + ("; made plain: the network measured slower end to end" if costs.name in self.dropped else "")
                for costs in self.costs}

    def schedule_toml(self) -> str:
        """The schedule as TOML: one line per convolution, its alpha, and a comment with the reason."""
        lines = [f"# octify schedule: {self.target}, {self.setting}",
                 "# one line per convolution: \"name\" = alpha  # why (times per operation, measured in place);",
                 "# read back with `octify MODEL --schedule FILE` or octify.convert(model, alpha={...})"]
        reasons = self.reasons
        for group in self.groups:
            for index, writer in enumerate(group.writers):
                why = reasons[group.name] if index == 0 else f"shares one channel split with {group.name}"
                lines.append(f"{json.dumps(escape_glob(writer))} = {self.alphas[group.name]:g}  # {why}")
        lines.append(f'"*" = {self.others:g}  # {OTHERS}')
        return "\n".join(lines) + "\n"

    def write_schedule(self, path: Union[str, Path]) -> Path:
        """Write :meth:`schedule_toml` (``.toml``) or the plain mapping (``.json``) to ``path``."""
        path = Path(path)
        if path.suffix.lower() == ".json":
            text = json.dumps(self.schedule, indent=2) + "\n"
        elif path.suffix.lower() == ".toml":
            text = self.schedule_toml()
        else:
            raise ValueError(f"schedule file {path}: expected a .toml or .json name")
        path.write_text(text, encoding="utf-8")
        return path


def reason(costs: GroupCosts, alpha: float) -> str:
    """Why a group has ``alpha``, in its measured numbers."""
    macs = ", ".join(f"{a:g}: {costs.macs[a] / 1e6:.3g} M" for a in costs.alphas)
    if costs.latency is None:
        return f"MACs by alpha {macs}"
    times = ", ".join(f"{a:g}: {costs.latency[a] * MS:.3g}" for a in costs.alphas)
    best = min(costs.alphas, key=lambda a: (costs.latency[a], a))
    pays = "plain is fastest" if best == 0 else f"fastest at {best:g}"
    return f"ms by alpha {times} ({pays}); MACs {macs}"


def escape_glob(name: str) -> str:
    """A module name as a schedule pattern that matches only it (``*``, ``?`` and ``[`` bracketed)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def schedule_names(groups: Sequence[AlphaGroup], alphas: Dict[str, float], others: float) -> Dict[str, float]:
    """Pattern -> alpha: each group's writers by name, then ``"*"`` for the rest (the mapping ``convert`` takes).
    The rest stays plain at any alpha (else they would form a group), and the pattern keeps the report's reason
    for each (stem, small maps...) rather than "alpha 0"."""
    names = {escape_glob(writer): alphas[group.name] for group in groups for writer in group.writers}
    return {**names, "*": others}
