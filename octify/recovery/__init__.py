"""Recovering a trained network after conversion: BatchNorm calibration and distillation from the original."""
from .calibration import calibrate
from .distillation import DistillResult, distill
from .loss import DistillationLoss

__all__ = ["DistillResult", "DistillationLoss", "calibrate", "distill"]
