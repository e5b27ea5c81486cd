"""Explanations the conversion records for the report: why a layer stayed plain, why a split or merge sits where it does."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict


@dataclass(frozen=True)
class Note:
    """One recorded decision: ``name`` is the qualified module or node name it is about."""

    name: str
    kind: str  # "plain", "split", "merge", "capture", "schedule", "leaf"
    reason: str

    def to_dict(self) -> Dict[str, str]:
        return asdict(self)
