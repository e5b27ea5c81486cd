"""Capture: trace a model with torch.fx and record the shape of every value."""
from .capture import FIXED_SHAPES, SYMBOLIC, Captured, capture, check_model_accepts, propagate_shapes
from .leaves import resolve_leaf_modules
from .tracer import FixedShapeTracer, OctifyTracer

__all__ = ["FIXED_SHAPES", "SYMBOLIC", "Captured", "FixedShapeTracer", "OctifyTracer", "capture",
           "check_model_accepts", "propagate_shapes", "resolve_leaf_modules"]
