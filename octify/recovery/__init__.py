"""Recovering a trained network after conversion: BatchNorm calibration, per-layer reconstruction,
block-wise refinement and distillation from the original; channel scores for choosing the low channels from data."""
from .agreement import Agreement, agreement
from .calibration import calibrate
from .channels import channel_scores
from .distillation import DistillResult, distill
from .loss import DistillationLoss
from .reconstruction import Reconstruction, reconstruct
from .refinement import Refinement, refine

__all__ = ["Agreement", "DistillResult", "DistillationLoss", "Reconstruction", "Refinement", "agreement",
           "calibrate", "channel_scores", "distill", "reconstruct", "refine"]
