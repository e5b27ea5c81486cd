"""Explanations the conversion records for the report: why a layer stayed plain, why a split or merge sits where it does."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict


@dataclass(frozen=True)
class Note:
    """One recorded decision: ``name`` is the qualified module or node name it is about.

    ``cause`` is the kind of reason, shared by every note with the same cause ("stem",
    "small maps (< min_size)", "inside leaf layer4" ...): the report groups plain
    convolutions by it. A note without one is grouped by its reason.
    """

    name: str
    kind: str  # "plain", "split", "merge", "capture", "schedule", "leaf"
    reason: str
    cause: str = ""

    @property
    def group(self) -> str:
        """The cause, or the reason itself where none was recorded."""
        return self.cause or self.reason

    def to_dict(self) -> Dict[str, str]:
        return asdict(self)
