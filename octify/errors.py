"""Exception types: :class:`ConversionError` for "this model cannot be converted", :class:`InternalError` for a bug."""
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


class InternalError(RuntimeError):
    """octify failed where the model is fine: a bug in octify, never a property of the model.

    ``where`` names the graph node or stage; the original exception is the ``__cause__``.
    """

    def __init__(self, reason: str, where: Optional[str] = None) -> None:
        self.where = where
        self.reason = reason
        text = f"{where}: {reason}" if where else reason
        super().__init__(f"{text} (an internal error in octify, not a problem with the model; please report it "
                         "with the model's code)")
