"""Op rules, one registry (see :mod:`octify.rules.registry`); importing this package registers them all."""
from . import branchwise, concat, convolution, elementwise, normalization, pooling, reduction  # noqa: F401  (registration)
from .registry import RULES, Rule, find_rule, register

__all__ = ["RULES", "Rule", "find_rule", "register"]
