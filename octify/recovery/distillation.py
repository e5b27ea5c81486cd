"""``distill``: fine-tune a converted network with its original as the teacher, on unlabelled inputs."""
from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass, field
from typing import List, Union

import torch
from torch import nn

from .calibration import batch_norms, calibrate
from .data import Data, endless
from ..devices import device_of
from .loss import DistillationLoss, Features
from .progress import Progress

OPTIMIZERS = ("adamw", "sgd")
LEARNING_RATE = 1e-3  # distill's default


@dataclass
class DistillResult:
    """What :func:`distill` did: the loss at each step, the features it matched, and how long it took."""

    losses: List[float] = field(default_factory=list)
    features: List[str] = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"

    def __repr__(self) -> str:
        trend = f", loss {self.losses[0]:.4g} -> {self.losses[-1]:.4g}" if self.losses else ""
        return f"DistillResult({len(self.losses)} steps{trend}, {len(self.features)} features, " \
               f"{self.seconds:.1f} s on {self.device})"


def distill(converted: nn.Module, original: nn.Module, data: Data, steps: int = 200, *, lr: float = LEARNING_RATE,
            features: Features = "auto", device: Union[str, torch.device, None] = None, progress: bool = True,
            temperature: float = 1.0, feature_weight: float = 1.0, label_weight: float = 1.0,
            optimizer: str = "adamw", weight_decay: float = 0.0, train_batch_norm: bool = True,
            calibration_batches: int = 0) -> DistillResult:
    """Train ``converted`` (in place) to compute what ``original`` computes, on ``data``.

    Each step runs both networks on one batch and takes an optimizer step on :class:`DistillationLoss`
    (outputs, feature maps at ``features``, and class labels when the batches carry them). With
    ``calibration_batches``, the BatchNorm statistics are first re-estimated (:func:`calibrate`) on that
    many batches: only worth it when the data comes from the distribution the original's statistics
    describe; by default the student starts from the original's. The student trains in eval mode (dropout
    and drop path off) except its BatchNorms, which normalize with each batch's statistics and update their
    running ones, unless ``train_batch_norm`` is False (frozen); its modes are restored after. The learning
    rate follows a cosine from ``lr`` to 0. On CUDA the forward passes run in bfloat16 autocast.
    ``original`` is never modified (it is copied when it lives on another device).

    Args:
        converted: a network from ``octify.convert``; trained in place and moved to ``device``.
        data: a tensor ``(N, C, H, W)`` (batches of 32, shuffled after each pass), or an iterable of tensors or
            ``(input, labels, ...)`` tuples that can be read more than once (a list, a ``DataLoader``).
        steps: optimizer steps; the data is read again when it runs out.
        features: module names of the original whose outputs are matched, ``"auto"`` or None
            (see :class:`DistillationLoss`).
        optimizer: ``"adamw"`` or ``"sgd"`` (momentum 0.9, Nesterov).
        progress: a progress bar on stderr (tqdm if installed).
    Returns:
        a :class:`DistillResult`: the loss at each step and the wall time.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    device = torch.device(device) if device is not None else device_of(converted)
    converted.to(device)
    teacher = original if device_of(original) == device else copy.deepcopy(original).to(device)
    if calibration_batches and batch_norms(converted):
        calibrate(converted, data, batches=calibration_batches, inplace=True)
    loss_function = DistillationLoss(converted, teacher, features, temperature=temperature,
                                     feature_weight=feature_weight, label_weight=label_weight)
    parameters = [p for p in converted.parameters() if p.requires_grad]
    step = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay) if optimizer == "adamw" else \
        torch.optim.SGD(parameters, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(step, steps)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    result = DistillResult(features=list(loss_function.features), device=str(device))
    bar = Progress(steps, "distilling", progress)
    modes = {m: m.training for m in converted.modules()}
    start = time.monotonic()
    try:
        converted.eval()
        for norm in batch_norms(converted) if train_batch_norm else ():
            norm.train()
        for _, batch in zip(range(steps), endless(data, device)):
            with autocast:
                loss = loss_function(batch.input, batch.labels)
            step.zero_grad(set_to_none=True)
            loss.backward()
            step.step()
            schedule.step()
            result.losses.append(loss.item())
            bar.update(result.losses[-1])
    finally:
        result.seconds = time.monotonic() - start
        bar.close()
        loss_function.remove()
        for module, training in modes.items():
            module.training = training
    return result
