"""Recovering a trained network after conversion: BatchNorm calibration and distillation from the original."""
from .agreement import Agreement, agreement
from .calibration import calibrate
from .distillation import DistillResult, distill
from .loss import DistillationLoss

__all__ = ["Agreement", "DistillResult", "DistillationLoss", "agreement", "calibrate", "distill"]
