"""Rewrite: emit the octave graph and transfer the weights."""
from .rewriter import rewrite

__all__ = ["rewrite"]
