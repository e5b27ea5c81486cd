"""Refinement against steps: top-1 agreement, time, and each block's error on training and held-out images.

A trained classifier (see ``fidelity_data.py``) is converted with data-chosen channels and strided high paths,
reconstructed once (``octify.reconstruct``), then refined from that reconstruction with each step count in
turn (``octify.refine``). For each count it prints the agreement with the original on the held-out
photographs, the refinement's wall time, and the mean relative squared error of the block outputs against the
original's: on the training crops the refinement saw, and on the held-out images (``refine(..., steps=0)``
measures without training). The first is what the octave form reaches on the data; the gap to the second is
what more distinct images could still recover. Top-1 agreement is also given on the held-out images the
original is confident about (top-1 probability above one half): a disagreement elsewhere can be a near tie of
two classes.

    python benchmarks/refinement_curve.py --alphas 0.25,0.5 --steps 50,100,200,400
    python benchmarks/refinement_curve.py --tiny
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fidelity  # noqa: E402
import fidelity_data  # noqa: E402

import octify  # noqa: E402


def mean_block_error(refinement: octify.Refinement) -> float:
    """The mean over blocks of their output's relative squared error after the refinement."""
    return sum(after for _, after in refinement.blocks.values()) / len(refinement.blocks)


def curve(name: str, alpha: float, size: int, calibration: torch.Tensor, held_out: torch.Tensor,
          steps: List[int], ridge: float) -> List[Dict[str, object]]:
    """One row for the reconstruction (0 steps) and one per step count, each refined from the reconstruction."""
    original = fidelity_data.NETWORKS[name][0]()
    reference = fidelity.outputs(original, held_out)
    confident = reference.softmax(-1).amax(-1) > 0.5
    conversion = octify.convert(original, alpha, input_shape=(1, 3, size, size), calibration_data=calibration,
                                strided_high=True)
    reconstructed = copy.deepcopy(conversion.module)
    octify.reconstruct(reconstructed, original, calibration, ridge=ridge)
    rows = []
    for count in [0, *steps]:
        module, start = copy.deepcopy(reconstructed), time.perf_counter()
        trained = octify.refine(module, original, calibration, steps=count, progress=False)  # 0 steps: measures
        seconds = round(time.perf_counter() - start, 1) if count else 0.0
        result = fidelity.outputs(module.eval(), held_out)
        row = {"network": name, "alpha": alpha, "steps": count, "seconds": seconds,
               **fidelity.agreement("classifier", reference, result),
               "top1_confident": fidelity.agreement("classifier", reference[confident], result[confident])["top1"],
               "train_error": mean_block_error(trained),
               "held_out_error": mean_block_error(octify.refine(module, original, held_out, steps=0, progress=False))}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def markdown(rows: List[Dict[str, object]]) -> str:
    lines = ["| network | alpha | refine steps per block | refinement seconds | top-1 agreement | where confident | "
             "mean TV | block error, training crops | block error, held-out |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {row['network']} | {row['alpha']:g} | {row['steps'] or 'reconstructed'} | {row['seconds']} | "
              f"{100 * row['top1']:.1f}% | {100 * row['top1_confident']:.1f}% | {row['tv']:.3f} | "
              f"{row['train_error']:.3f} | {row['held_out_error']:.3f} |" for row in rows]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    classifiers = [name for name, (_, kind) in fidelity_data.NETWORKS.items() if kind == "classifier"]
    parser.add_argument("--network", default="mobilenet_v2", choices=classifiers)
    parser.add_argument("--alphas", default="0.25,0.5")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--calibration-images", type=int, default=256, help="training crops (at most 2,000)")
    parser.add_argument("--steps", default="50,100,200,400", help="refinement steps per block, comma-separated")
    parser.add_argument("--ridge", type=float, default=1e-2, help="reconstruction's pull towards the current weights")
    parser.add_argument("--tiny", action="store_true",
                        help="CI: 128x128, alpha 0.25, 8 crops, 8 held-out, 1 and 2 steps")
    args = parser.parse_args(argv)
    held_out_count = 0
    if args.tiny:
        args.alphas, args.size, args.calibration_images, args.steps, held_out_count = "0.25", 128, 8, "1,2", 8
    if not 0 < args.calibration_images <= 2000:
        parser.error("--calibration-images: 1 to 2,000")
    steps = [int(count) for count in args.steps.split(",")]
    if any(count < 1 for count in steps):
        parser.error("--steps: positive step counts")
    torch.manual_seed(0)
    held_out_images, sources = fidelity_data.photographs()
    calibration = fidelity_data.training_set(sources, args.size, args.calibration_images)
    held_out = fidelity_data.evaluation_set(held_out_images, args.size)
    held_out = held_out[:held_out_count] if held_out_count else held_out
    rows = [row for alpha in args.alphas.split(",")
            for row in curve(args.network, float(alpha), args.size, calibration, held_out, steps, args.ridge)]
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
