"""Recovering a trained network after conversion: BatchNorm calibration and distillation from the original."""
from .calibration import calibrate

__all__ = ["calibrate"]
