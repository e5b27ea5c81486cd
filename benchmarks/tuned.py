"""Tuned conversions against their originals: ``octify.tune`` per model, batch size and target, on this machine.

    python benchmarks/tuned.py                       # the full table (long: every model, batch 1 and 8)
    python benchmarks/tuned.py --models resnet18 --batches 1 --targets fastest macs=0.5
    python benchmarks/tuned.py --device cuda         # on a GPU: channels-last, float16 autocast

For every model and batch size, each target (``fastest``, ``macs=R``, ``latency=R``) is tuned in turn;
the first one measures every layer group (and says how long tuning took), the others read those
measurements from the cache (a fresh folder per run unless ``--cache-dir``). Each row shows the
MAC ratio and the latency ratio tuned / original that the tuning measured end to end (both
through ``octify.for_inference``, alternately in one process, medians), with milliseconds, and
the tuning's own time.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from typing import List, Optional, Sequence, Tuple

os.environ.setdefault("OMP_PROC_BIND", "close")  # one OpenMP thread per core, as benchmark.py pins them
os.environ.setdefault("OMP_PLACES", "threads")

import torch  # noqa: E402
import torchvision  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import cpu_busy_fraction  # noqa: E402

import octify  # noqa: E402

MODELS = ("resnet18", "resnet50", "mobilenet_v2", "densenet121", "regnet_y_800mf", "efficientnet_b0")
TARGETS = ("fastest", "macs=0.5", "macs=0.6", "macs=0.7", "macs=0.8")
EXTRA = {("resnet50", 1): ("latency=0.7",), ("resnet50", 8): ("latency=0.6",)}
DTYPES = {"float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}


def parse_target(text: str) -> dict:
    """``fastest`` -> ``{"fastest": True}``; ``macs=0.5`` -> ``{"target_macs": 0.5}``; ``latency=0.7`` likewise."""
    if text == "fastest":
        return {"fastest": True}
    kind, _, value = text.partition("=")
    if kind not in ("macs", "latency") or not value:
        raise argparse.ArgumentTypeError(f"{text!r}: expected fastest, macs=RATIO or latency=RATIO")
    return {f"target_{kind}": float(value)}


def tune_row(name: str, batch: int, target: str, args: argparse.Namespace, cache: str) -> List[str]:
    model = getattr(torchvision.models, name)(weights=None).eval()
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", octify.tuning.TargetWarning)
        conversion = octify.tune(model, batch_size=batch, device=args.device, dtype=DTYPES[args.dtype],
                                 input_shape=(1, 3, args.size, args.size), cache_dir=cache,
                                 timer=octify.tuning.MedianTimer(args.repeats), **parse_target(target))
    seconds = time.perf_counter() - start
    tuning, latency = conversion.tuning, conversion.report.latency
    octave = sum(1 for alpha in tuning.alphas.values() if alpha)
    missed = "; missed" if any(issubclass(w.category, octify.tuning.TargetWarning) for w in caught) else ""
    return [name, str(batch), target, f"{tuning.macs_ratio:.2f}",
            f"**{latency.ratio:.2f}** ({latency.original * 1e3:.1f} → {latency.converted * 1e3:.1f} ms)",
            f"{octave}/{len(tuning.alphas)}{missed}", f"{seconds:.0f} s"]


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = _parse(argv)
    torch.set_num_threads(args.threads)
    busy = cpu_busy_fraction()
    print(f"torch {torch.__version__}, {args.threads} threads, {args.device} {args.dtype}, input {args.size}x{args.size}"
          f", median of {args.repeats} alternating rounds" + (f"; CPUs {busy:.0%} busy before starting" if busy else ""),
          flush=True)
    header = ["model", "batch", "target", "MACs", "latency, tuned / original", "octave groups", "tuning time"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    with tempfile.TemporaryDirectory() as fresh:
        cache = args.cache_dir or fresh
        for name in args.models:
            for batch in args.batches:
                targets: Tuple[str, ...] = tuple(args.targets) + (EXTRA.get((name, batch), ()) if args.extra else ())
                for target in targets:
                    row = tune_row(name, batch, target, args, cache)
                    print(" ".join(row), flush=True)
                    lines.append("| " + " | ".join(row) + " |")
    print()
    print("\n".join(lines))


def _parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), help="fastest, macs=RATIO, latency=RATIO")
    parser.add_argument("--no-extra", dest="extra", action="store_false",
                        help="skip ResNet-50's latency targets (0.7 at batch 1, 0.6 at batch 8)")
    parser.add_argument("--repeats", type=int, default=7, help="alternating rounds per measurement")
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=tuple(DTYPES), help="autocast dtype (default: float16 on cuda, float32 "
                                                               "on cpu)")
    parser.add_argument("--cache-dir", help="keep measurements here across runs (default: a fresh folder)")
    args = parser.parse_args(argv)
    for target in args.targets:
        parse_target(target)
    args.dtype = args.dtype or ("float16" if args.device == "cuda" else "float32")
    return args


if __name__ == "__main__":
    main()
