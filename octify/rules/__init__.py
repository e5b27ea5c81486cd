"""Op rules, one registry (see :mod:`octify.rules.registry`); importing this package registers them all."""
from . import (branchwise, channels_last, concat, convolution, elementwise, normalization, pooling,  # noqa: F401
               reduction, transposed)  # (registration)
from .registry import RULES, Rule, find_rule, register

__all__ = ["RULES", "Rule", "find_rule", "register"]
