"""Fidelity of trained networks after conversion: how closely the octave network agrees with the original.

For each network and alpha, on held-out photographs (see ``fidelity_data.py``), and with the wall
time of each step:

* ``fixed``: converted with the last alpha of each class's channels low (the default);
* ``data``: converted with ``calibration_data`` (the channels that lose least at half resolution go low);
* ``data+strided``: the same with ``strided_high=True`` (strided layers keep their strided high path);
* ``+ calibrated``: BatchNorm statistics re-estimated (``octify.calibrate``);
* ``+ reconstructed``: each octave layer fitted to the original's outputs (``octify.reconstruct``), from the
  conversion (not the calibrated copy);
* ``+ refined``: each block trained alone to the original block's output (``octify.refine``) after
  reconstruction (from the conversion where reconstruction has nothing to fit, or with ``--no-reconstruction``);
* ``+ distilled N``: N steps of ``octify.distill`` after that.

Classifiers: top-1 agreement with the original and mean total-variation distance of the softmax;
CRAFT: relative error of its score maps. Nothing is downloaded: ``pip install 'octify[fidelity]'``
(some packages with ``--no-deps``, see README). ``--tiny`` is the CI configuration (< 60 s).

    python benchmarks/fidelity.py                      # the full configuration
    python benchmarks/fidelity.py --tiny
    python benchmarks/fidelity.py --networks mobilenet_v2 --alphas 0.25 --size 160 --train-images 256
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fidelity_data  # noqa: E402

import octify  # noqa: E402
from octify import reconstruct  # noqa: E402


def outputs(model: nn.Module, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(batch) for batch in images.split(batch_size)])


def agreement(kind: str, reference: torch.Tensor, result: torch.Tensor) -> Dict[str, float]:
    """Classifiers: top-1 agreement and mean total-variation distance; score maps: relative error."""
    if kind == "classifier":
        p, q = reference.softmax(-1), result.softmax(-1)
        return {"top1": float((reference.argmax(-1) == result.argmax(-1)).float().mean()),
                "tv": float(0.5 * (p - q).abs().sum(-1).mean())}
    return {"relative_error": float((result - reference).norm() / reference.norm())}


CHOICES = {"fixed": (False, False), "data": (True, False), "data+strided": (True, True)}


def run_network(name: str, alphas: List[float], size: int, train: torch.Tensor, calibration: torch.Tensor,
                held_out: torch.Tensor, steps: List[int], choices: List[str],
                distillation: Optional[Dict[str, object]] = None, ridge: float = 1e-5,
                refine_steps: int = 0, reconstruction: bool = True) -> List[Dict[str, object]]:
    build, kind = fidelity_data.NETWORKS[name]
    original = build()
    reference = outputs(original, held_out)
    rows: List[Dict[str, object]] = []

    def record(alpha: float, stage: str, module: nn.Module, macs: float, seconds: float) -> None:
        row = {"network": name, "alpha": alpha, "stage": stage, "macs": round(macs, 3), "seconds": round(seconds, 1),
               **agreement(kind, reference, outputs(module.eval(), held_out))}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)

    for alpha in alphas:
        for channels in choices:
            chosen, strided = CHOICES[channels]
            start = time.perf_counter()
            conversion = octify.convert(original, alpha, input_shape=(1, 3, size, size),
                                        calibration_data=calibration if chosen else None, strided_high=strided)
            macs = conversion.report.converted.macs / conversion.report.original.macs
            record(alpha, channels, conversion.module, macs, time.perf_counter() - start)
            start = time.perf_counter()
            calibrated = octify.calibrate(conversion.module, calibration)  # a calibrated copy
            record(alpha, f"{channels} + calibrated", calibrated, macs, time.perf_counter() - start)
            start = time.perf_counter()
            module, stage = copy.deepcopy(conversion.module), channels
            if reconstruction:
                try:
                    skipped = reconstruct(module, original, calibration, ridge=ridge).skipped
                except ValueError as error:  # nothing it can fit: refinement and distillation start from the conversion
                    print(f"{name}: {str(error)[:300]}", file=sys.stderr)
                else:
                    if skipped:
                        print(f"{name}: reconstruction left {len(skipped)} layers: {sorted(set(skipped.values()))}",
                              file=sys.stderr)
                    stage += " + reconstructed"
                    record(alpha, stage, module, macs, time.perf_counter() - start)
            if refine_steps:
                start = time.perf_counter()
                refinement = octify.refine(module, original, calibration, steps=refine_steps, progress=False)
                print(f"{name}: {refinement}", file=sys.stderr)
                stage += " + refined"
                record(alpha, stage, module, macs, time.perf_counter() - start)
            done, start = 0, time.perf_counter()
            for total in steps:
                octify.distill(module, original, train, steps=total - done, progress=False, **(distillation or {}))
                done = total
                record(alpha, f"{stage} + distilled {total}", module, macs,
                       time.perf_counter() - start)
    return rows


def markdown(rows: List[Dict[str, object]]) -> str:
    lines = ["| network | alpha | MACs | stage | top-1 agreement | mean TV | score-map rel. error | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        top1 = f"{100 * row['top1']:.1f}%" if "top1" in row else ""
        tv = f"{row['tv']:.3f}" if "tv" in row else ""
        error = f"{100 * row['relative_error']:.1f}%" if "relative_error" in row else ""
        lines.append(f"| {row['network']} | {row['alpha']:g} | {row['macs']:.2f}x | {row['stage']} | {top1} | {tv} | "
                     f"{error} | {row['seconds']} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", default="mobilenet_v2,efficientnet_lite0,craft",
                        help="comma-separated, of " + ", ".join(fidelity_data.NETWORKS))
    parser.add_argument("--alphas", default="0.125,0.25,0.5")
    parser.add_argument("--size", type=int, default=224, help="input size (CRAFT: --craft-size)")
    parser.add_argument("--craft-size", type=int, default=256)
    parser.add_argument("--train-images", type=int, default=2000, help="crops for distillation (at most 2,000)")
    parser.add_argument("--calibration-images", type=int, default=256,
                        help="crops (the first of the training crops) for channel scores, calibration, reconstruction")
    parser.add_argument("--held-out", type=int, default=0, help="evaluate on the first N held-out crops (0: all)")
    parser.add_argument("--choices", default=",".join(CHOICES),
                        help="conversion choices, comma-separated, of: " + ", ".join(CHOICES))
    parser.add_argument("--steps", default="100,300,1000", help="cumulative distillation steps")
    parser.add_argument("--ridge", type=float, default=1e-5, help="reconstruction's pull towards the current weights")
    parser.add_argument("--no-reconstruction", action="store_true",
                        help="refine and distil from the conversion, without per-layer reconstruction")
    parser.add_argument("--refine-steps", type=int, default=200,
                        help="octify.refine's steps per block after reconstruction (0: no refinement)")
    parser.add_argument("--lr", type=float, default=1e-3, help="distillation learning rate")
    parser.add_argument("--freeze-batch-norm", action="store_true",
                        help="distil with the BatchNorm statistics frozen (train_batch_norm=False)")
    parser.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw", help="distillation optimizer")
    parser.add_argument("--outputs-only", action="store_true",
                        help="distil the outputs only, without matching feature maps (features=None)")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument("--tiny", action="store_true",
                        help="CI: MobileNetV2 at 128x128 (its last stage 4x4, plain as the 7x7 one is at 224), "
                             "alpha 0.25, fixed and data-chosen channels, 8 crops, 8 held-out, 2 refinement steps "
                             "per block, 1 distillation step")
    args = parser.parse_args(argv)
    if args.tiny:
        args.networks, args.alphas, args.size, args.steps, args.refine_steps = "mobilenet_v2", "0.25", 128, "1", 2
        args.train_images, args.calibration_images, args.held_out, args.choices = 8, 8, 8, "fixed,data"
    if args.train_images > 2000:
        parser.error("--train-images: at most 2,000")
    networks = [name.strip() for name in args.networks.split(",")]
    unknown = [name for name in networks if name not in fidelity_data.NETWORKS]
    if unknown:
        parser.error(f"unknown network {', '.join(unknown)}; choose from {', '.join(fidelity_data.NETWORKS)}")
    alphas = [float(a) for a in args.alphas.split(",")]
    choices = [choice.strip() for choice in args.choices.split(",")]
    if not set(choices) <= set(CHOICES):
        parser.error(f"--choices: choose from {', '.join(CHOICES)}")
    steps = [int(s) for s in args.steps.split(",") if s.strip()]
    torch.manual_seed(0)
    held_out_images, sources = fidelity_data.photographs()
    print(f"{len(held_out_images)} held-out photographs, {len(sources)} for crops", file=sys.stderr)
    rows: List[Dict[str, object]] = []
    for name in networks:
        size = args.craft_size if name == "craft" and not args.tiny else args.size
        train = fidelity_data.training_set(sources, size, args.train_images)
        held_out = fidelity_data.evaluation_set(held_out_images, size)
        held_out = held_out[:args.held_out] if args.held_out else held_out
        rows += run_network(name, alphas, size, train, train[:args.calibration_images], held_out, steps, choices,
                            {"lr": args.lr, "optimizer": args.optimizer, "train_batch_norm": not args.freeze_batch_norm,
                             **({"features": None} if args.outputs_only else {})}, args.ridge, args.refine_steps,
                            not args.no_reconstruction)
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
