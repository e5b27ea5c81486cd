"""Measured seconds on disk, so that tuning the same model in the same setting again measures nothing.

One JSON file per model structure and setting, in ``$OCTIFY_CACHE_DIR`` (default ``~/.cache/octify``),
mapping probe keys to seconds (``"layers"``: the layer probes measured; ``"structure"``: the groups
and their MACs, so that a second tuning converts only once). The file name hashes the model's
structure (its modules, their settings and the source of their ``forward``), the input size, the
conversion options, the device, dtype, batch size, mode, torch threads and the torch version.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Union

CACHE_ENV = "OCTIFY_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$OCTIFY_CACHE_DIR``, else ``$XDG_CACHE_HOME/octify``, else ``~/.cache/octify``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "octify"


def model_signature(model: Any) -> List[str]:
    """What identifies a model's structure: its module tree (types and settings) and each module class's forward."""
    parts = [repr(model)]
    for kind in sorted({type(module) for module in model.modules()}, key=lambda k: (k.__module__, k.__qualname__)):
        try:
            source = inspect.getsource(kind.forward)
        except (OSError, TypeError):
            source = ""
        parts.append(f"{kind.__module__}.{kind.__qualname__}\n{source}")
    return parts


def cache_key(parts: Iterable[str]) -> str:
    """A short stable hash of ``parts`` (the model structure and every setting that changes a timing)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:24]


class MeasurementCache:
    """JSON values (seconds) by key for one model and setting; ``folder=None`` keeps them in memory only."""

    def __init__(self, folder: Optional[Union[str, Path]], key: str) -> None:
        self.path = Path(folder) / f"latency-{key}.json" if folder is not None else None
        self.values: Dict[str, Any] = {}
        if self.path is not None and self.path.is_file():
            try:
                loaded = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                loaded = {}  # a damaged file is measured again and rewritten
            self.values = loaded if isinstance(loaded, dict) else {}

    def get(self, key: str) -> Any:
        return self.values.get(key)

    def update(self, values: Dict[str, Any]) -> None:
        """Add measurements and write the file (atomically: a reader never sees half of it)."""
        self.values.update(values)
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".latency-", suffix=".json")
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(self.values, file, indent=0, sort_keys=True)
        os.replace(temporary, self.path)
