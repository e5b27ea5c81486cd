"""Measured latency in a report: the whole networks, original and converted, as a tuning timed them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional


@dataclass(frozen=True)
class Latency:
    """Seconds per forward pass of the original and the converted network, timed alternately in one process
    (``setting``: batch size, device, dtype, mode); ``estimated``: the converted / original ratio the per-layer
    times predicted (None when the end-to-end check changed the schedule)."""

    setting: str
    original: float
    converted: float
    estimated: Optional[float] = None

    @property
    def ratio(self) -> float:
        return self.converted / self.original

    def to_dict(self) -> Dict[str, Any]:
        return {"setting": self.setting, "original_s": self.original, "converted_s": self.converted,
                "ratio": self.ratio, "estimated_ratio": self.estimated}
