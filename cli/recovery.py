"""``--calibrate``, ``--reconstruct``, ``--refine-steps`` and ``--distill-steps``: recover the converted model's
agreement with the original, measured on inputs held out from all of them (and from ``--choose-channels``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

import octify
from octify.recovery import agreement
from octify.recovery.distillation import LEARNING_RATE

from .console import Console

HELD_OUT_SHARE = 5  # one input in five is held out to measure agreement


@dataclass(frozen=True)
class HeldOut:
    """The inputs to learn from and those held out to measure agreement."""

    train: torch.Tensor
    test: torch.Tensor


def hold_out(data: torch.Tensor) -> HeldOut:
    """One input in ``HELD_OUT_SHARE`` (at least one), picked at random with a fixed seed, is held out."""
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    held = max(1, len(data) // HELD_OUT_SHARE)
    return HeldOut(data[order[held:]], data[order[:held]])


def recover(original: nn.Module, converted: nn.Module, data: HeldOut, distill_steps: int, reconstruct: bool,
            console: Console, distill_lr: Optional[float] = None,
            refine_steps: int = 0) -> Tuple[Dict[str, Any], List[str]]:
    """Calibrate ``converted`` in place on ``data.train``, then fit its layers if ``reconstruct``, then train its
    blocks ``refine_steps`` steps each (:func:`octify.refine`) if given, then distil it
    ``distill_steps`` steps at ``distill_lr`` (None: ``octify.distill``'s default); returns the record for
    report.json and the lines to print, with agreement on ``data.test`` after each step."""
    train, test = data.train, data.test
    record: Dict[str, Any] = {"inputs": len(train), "held_out": len(test)}
    with console.step("measuring agreement"):
        before = agreement(original, converted, test)
    record["metric"], record["converted"] = before.metric, before.value
    with console.step("calibrating"):
        octify.calibrate(converted, train, inplace=True)
        calibrated = agreement(original, converted, test)
    record["calibrated"] = calibrated.value
    lines = [f"calibrated on {len(train)} inputs; {before.metric} with the original on {len(test)} held-out inputs: "
             f"{_percent(before.value)} converted, {_percent(calibrated.value)} calibrated"]
    if reconstruct:
        with console.step("reconstructing"):
            fitted = octify.reconstruct(converted, original, train)
            reconstructed = agreement(original, converted, test)
        record.update(reconstructed=reconstructed.value, reconstructed_layers=len(fitted.layers),
                      reconstruction_skipped=dict(fitted.skipped))
        lines.append(f"reconstructed {len(fitted.layers)} layers ({len(fitted.skipped)} left as they were); "
                     f"{reconstructed.metric}: {_percent(reconstructed.value)}")
    if refine_steps:
        refined = octify.refine(converted, original, train, steps=refine_steps, progress=console.shows_progress)
        after = agreement(original, converted, test)
        record.update(refined=after.value, refine_steps=refine_steps, refined_blocks=len(refined.blocks),
                      refine_seconds=refined.seconds, refinement_skipped=dict(refined.skipped))
        lines.append(f"refined {len(refined.blocks)} blocks, {refine_steps} steps each, in {refined.seconds:.1f} s "
                     f"({len(refined.skipped)} left as they were); {after.metric}: {_percent(after.value)}")
    if distill_steps:
        lr = distill_lr if distill_lr is not None else LEARNING_RATE
        result = octify.distill(converted, original, train, distill_steps, lr=lr, progress=console.shows_progress)
        distilled = agreement(original, converted, test)
        record.update(distilled=distilled.value, distill_steps=distill_steps, distill_lr=lr,
                      distill_seconds=result.seconds,
                      distill_losses=[result.losses[0], result.losses[-1]], features=result.features)
        lines.append(f"distilled {distill_steps} steps at lr {lr:g} in {result.seconds:.1f} s (loss "
                     f"{result.losses[0]:.4g} -> {result.losses[-1]:.4g}); {distilled.metric}: "
                     f"{_percent(distilled.value)}")
    return record, lines


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"
