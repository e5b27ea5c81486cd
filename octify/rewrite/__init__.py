"""Rewrite: emit the octave graph and transfer the weights."""
from .guards import guard_input_shapes
from .rewriter import rewrite

__all__ = ["guard_input_shapes", "rewrite"]
