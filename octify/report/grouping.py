"""Group layer rows by module prefix, down to a depth (like ``FlopCounterMode(depth=...)``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, Iterable, List, Optional, Tuple

if TYPE_CHECKING:
    from .costs import LayerCost

Path = Tuple[str, ...]


@dataclass
class Entry:
    """One line of a grouped table: a module prefix and the rows under it (or one layer)."""

    path: Path
    rows: List["LayerCost"] = field(default_factory=list)

    @property
    def name(self) -> str:
        return ".".join(self.path)

    @property
    def is_layer(self) -> bool:
        """True when every row is this path itself (a layer, possibly called several times)."""
        return all(row.path == self.path for row in self.rows)

    @property
    def params(self) -> int:
        return sum(row.params for row in self.rows)

    @property
    def macs(self) -> int:
        return sum(row.macs for row in self.rows)

    @property
    def activation_bytes(self) -> int:
        return sum(row.activation_bytes for row in self.rows)

    @property
    def latency(self) -> Optional[float]:
        """Seconds of the rows that were timed; None when none was."""
        timed = [row.latency for row in self.rows if row.latency is not None]
        return sum(timed) if timed else None

    def op(self, module_types: Dict[str, str]) -> str:
        if not self.is_layer:
            return module_types.get(self.name, "")
        calls = f" x{len(self.rows)}" if len(self.rows) > 1 else ""
        return self.rows[0].op + calls


def group(rows: Iterable["LayerCost"], depth: Optional[int]) -> List[Entry]:
    """Entries for every prefix of at most ``depth`` parts (all levels for None), in order of first use."""
    entries: Dict[Path, Entry] = {}
    for row in rows:
        levels = len(row.path) if depth is None else min(depth, len(row.path))
        for level in range(1, levels + 1):
            prefix = row.path[:level]
            entries.setdefault(prefix, Entry(prefix)).rows.append(row)
    return list(entries.values())


def subtotals(rows: Iterable["LayerCost"]) -> Dict[Path, Entry]:
    """Every prefix of every row's path, with the rows under it: to look up another model's entries."""
    return {entry.path: entry for entry in group(rows, None)}
