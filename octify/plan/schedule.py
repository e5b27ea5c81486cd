"""Which alpha each convolution gets: one number, or glob patterns over module names.

``{"layer4.*": 0, "*": 0.5}``: patterns are shell-style globs (``fnmatch``) matched against
the convolution's qualified module name; the first matching pattern wins (dict order);
a convolution no pattern matches stays plain. A pattern that matches no convolution
gives a warning, since it is most likely a typo.
"""
from __future__ import annotations

import warnings
from fnmatch import fnmatchcase
from typing import Dict, Iterable, Mapping, Optional, Tuple, Union

from ..layers.channels import check_alpha

ScheduleLike = Union[float, int, Mapping[str, float], "Schedule"]


class Schedule:
    """An ordered list of ``(pattern, alpha)``; see the module docstring for the rules."""

    def __init__(self, alpha: ScheduleLike) -> None:
        self.from_patterns = isinstance(alpha, Mapping) or getattr(alpha, "from_patterns", False)
        if isinstance(alpha, Schedule):
            self.rules: Tuple[Tuple[str, float], ...] = alpha.rules
        elif isinstance(alpha, Mapping):
            rules = []
            for pattern, value in alpha.items():
                if not isinstance(pattern, str) or not pattern:
                    raise ValueError(f"schedule patterns must be non-empty strings, got {pattern!r}")
                rules.append((pattern, check_alpha(value, f"alpha for pattern {pattern!r}")))
            self.rules = tuple(rules)
        else:
            self.rules = (("*", check_alpha(alpha)),)

    def lookup(self, name: str) -> Tuple[float, Optional[str]]:
        """``(alpha, pattern)`` for the module ``name``; ``(0.0, None)`` when nothing matches."""
        for pattern, alpha in self.rules:
            if fnmatchcase(name, pattern):
                return alpha, pattern
        return 0.0, None

    def warn_unused(self, names: Iterable[str]) -> None:
        """Warn about patterns that match none of ``names`` (the model's convolutions)."""
        names = list(names)
        if not self.from_patterns:
            return
        for pattern, _ in self.rules:
            if not any(fnmatchcase(name, pattern) for name in names):
                warnings.warn(f"schedule pattern {pattern!r} matches no convolution of the model",
                              UserWarning, stacklevel=3)

    def to_dict(self) -> Dict[str, float]:
        return dict(self.rules)

    def __repr__(self) -> str:
        return f"Schedule({self.to_dict()})"
