"""Op rules, one registry (see :mod:`octify.rules.registry`); importing this package registers them all."""
from . import (branchwise, channels, channels_last, concat, convolution, elementwise,  # noqa: F401
               normalization, pooling, reduction, transposed)  # (registration)
from .registry import RULES, Rule, find_rule, register

__all__ = ["RULES", "Rule", "find_rule", "register"]
