"""Plan: which tensors are octave, with which channel split, and the alpha schedule."""
from .planner import AlphaGroup, Plan, make_plan
from .schedule import Schedule

__all__ = ["AlphaGroup", "Plan", "Schedule", "make_plan"]
