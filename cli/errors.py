"""Errors the command reports as one line on stderr, with their exit status."""
from __future__ import annotations


class CommandError(Exception):
    """Running failed: the model's code, the conversion, a check, an export or writing (exit status 1)."""

    exit_code = 1


class UsageError(CommandError):
    """The command line, or something it names, is wrong (exit status 2)."""

    exit_code = 2


def describe(error: BaseException) -> str:
    """``TypeName: first line of the message``."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
