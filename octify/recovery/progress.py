"""A progress bar on stderr: tqdm when it is installed, else one line rewritten in place."""
from __future__ import annotations

import sys
import time
from typing import Any, Optional, TextIO


class Progress:
    """``update(loss)`` once per step; ``close()`` at the end. Shows nothing when ``enabled`` is False."""

    def __init__(self, total: int, description: str, enabled: bool = True, stream: Optional[TextIO] = None) -> None:
        self.total, self.description, self.enabled = total, description, enabled
        self.stream = stream or sys.stderr
        self.done, self.start, self._shown = 0, time.monotonic(), 0.0
        self._bar: Any = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self._bar = tqdm(total=total, desc=description, file=self.stream, leave=False)

    def update(self, loss: float) -> None:
        self.done += 1
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
            self._bar.update()
            return
        now = time.monotonic()
        if now - self._shown >= 0.5 or self.done == self.total:
            self._shown = now
            self.stream.write(f"\r{self.description}: {self.done}/{self.total} steps, loss {loss:.4g}, "
                              f"{now - self.start:.0f} s")
            self.stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled and self.done:
            self.stream.write("\n")
            self.stream.flush()
