"""The one exception type for "this model cannot be converted"."""
from __future__ import annotations

from typing import Optional


class ConversionError(Exception):
    """A model, module or graph node that octify cannot convert, and why.

    ``where`` names the node or module (qualified name); ``reason`` says what was wrong
    and, where there is one, what to do about it.
    """

    def __init__(self, reason: str, where: Optional[str] = None) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"{where}: {reason}" if where else reason)
