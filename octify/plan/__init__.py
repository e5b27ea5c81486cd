"""Plan: which tensors are octave, with which channel split, and the alpha schedule."""
from .planner import Plan, make_plan
from .schedule import Schedule

__all__ = ["Plan", "Schedule", "make_plan"]
