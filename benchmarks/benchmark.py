"""Wall-clock latency of octave conversions against their original models, on this machine.

    python benchmarks/benchmark.py                 # the full table (about ten minutes on 2 cores)
    python benchmarks/benchmark.py --quick         # resnet50 at alpha 0.5 only
    python benchmarks/benchmark.py --processes 3   # each model in 3 fresh processes, medians
    python benchmarks/benchmark.py --quick --compile  # both models through torch.compile (inductor)
    python benchmarks/benchmark.py --quick --device cuda  # on a GPU: channels-last, float16 autocast

For every model and alpha: the original (torchvision, ``weights=None``) and
``octify.convert(original, alpha).module``, both passed through ``octify.for_inference``
(eval mode, BatchNorm folded, channels-last, octave layers fused, residual adds and ReLUs
joined to the pass before them; the original is traced to a graph first so that the same
graph passes apply to it), run alternately in one
process on a 224x224 input; each latency is the median over ``--repeats`` rounds (and over
``--processes`` fresh processes) and the table shows converted / original. Also: one training step (forward, backward, SGD step)
of the unfused modules in train mode, the same way; and the peak bytes of live tensors
during one inference pass (measured at the dispatcher) next to the cost report's estimate.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

# One OpenMP thread per core for the whole run: unpinned, the two threads of a 2-core machine
# sometimes share a core for a whole process, which slows small kernels by up to a fifth.
# Set before torch loads its OpenMP runtime; the CPUs are remembered for child processes,
# which would otherwise inherit this process's pinned main thread.
CPUS = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
os.environ.setdefault("OMP_PROC_BIND", "close")
os.environ.setdefault("OMP_PLACES", "threads")

import torch  # noqa: E402
import torchvision  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from memory import peak_activation_bytes  # noqa: E402
from timing import cpu_busy_fraction, median_latencies, wait_until_idle  # noqa: E402

import octify  # noqa: E402

MODELS = ("resnet50", "resnet18", "mobilenet_v2", "densenet121", "regnet_y_800mf")
ALPHAS = (0.25, 0.5, 0.75)
BATCHES = (1, 8)
TRAIN_BATCH = 8
DTYPES = {"float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}  # autocast dtypes
MiB = 2 ** 20
ROW_PREFIX = "ROW "


@dataclass
class Row:
    """One model at one alpha: latency ratios (converted / original) and memory."""

    model: str
    alpha: float
    mac_ratio: float
    latency: Dict[int, tuple] = field(default_factory=dict)  # batch -> (original s, converted s)
    train: Optional[tuple] = None  # (original s, converted s)
    memory: Optional[tuple] = None  # (original measured, converted measured, converted estimated) bytes


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = _parse(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} cores, "
          f"input {args.size}x{args.size}, median of {args.repeats} alternating rounds"
          f"{f', torch.compile ({args.compile} wrapper)' if args.compile else ''}", flush=True)
    if not args.json:
        _warn_if_busy()
    rows = []
    for name in args.models:
        original = getattr(torchvision.models, name)(weights=None).eval() if args.processes == 1 else None
        for alpha in args.alphas:
            if original is None:
                row = measure_in_processes(name, alpha, args)
            else:
                converted = octify.convert(original, alpha, input_shape=(1, 3, args.size, args.size)).module
                row = measure(name, alpha, original, converted, args)
            rows.append(row)
            print(f"{ROW_PREFIX}{json.dumps(dataclasses.asdict(row))}" if args.json else _line(row), flush=True)
    if not args.json:
        print()
        print(markdown_table(rows, args))


def measure_in_processes(name: str, alpha: float, args: argparse.Namespace) -> Row:
    """:func:`measure` in ``args.processes`` fresh processes; each latency is the median over them.

    Run-to-run differences between processes (memory placement) can exceed those between
    rounds in one process, so a single process can be unlucky for one of the two models.
    """
    command = [sys.executable, os.path.abspath(__file__), *args.argv, "--models", name, "--alphas", str(alpha),
               "--repeats", str(args.repeats), "--train-repeats", str(args.train_repeats), "--json"]
    rows = [_run_child(command) for _ in range(args.processes)]
    merged = rows[0]
    for batch in merged.latency:
        merged.latency[batch] = tuple(statistics.median(row.latency[batch][i] for row in rows) for i in (0, 1))
    if merged.train:
        merged.train = tuple(statistics.median(row.train[i] for row in rows) for i in (0, 1))
    return merged


def _run_child(command: List[str]) -> Row:
    output = subprocess.run(command, check=True, capture_output=True, text=True, preexec_fn=_use_all_cpus).stdout
    fields = json.loads(next(line for line in output.splitlines() if line.startswith(ROW_PREFIX))[len(ROW_PREFIX):])
    fields["latency"] = {int(batch): tuple(times) for batch, times in fields["latency"].items()}
    for key in ("train", "memory"):
        fields[key] = tuple(fields[key]) if fields[key] is not None else None
    return Row(**fields)


def _use_all_cpus() -> None:
    if CPUS is not None:
        os.sched_setaffinity(0, CPUS)


def measure(name: str, alpha: float, original: nn.Module, converted: nn.Module, args: argparse.Namespace) -> Row:
    """Every measurement for one (model, alpha)."""
    dtype = DTYPES[args.dtype]
    fast_original, fast_converted = (octify.for_inference(module, device=args.device, dtype=dtype)
                                     for module in (original, converted))
    sample = torch.randn(1, 3, args.size, args.size)
    if dtype is None:
        with torch.no_grad():
            _check_same(fast_converted(sample.to(args.device)).cpu(), converted.eval()(sample), f"{name} alpha={alpha}")
    runners = (fast_original, fast_converted)
    if args.compile:
        from torch._inductor import config as inductor_config
        inductor_config.freezing = True  # weights as constants: prepacked, folded into fused kernels
        inductor_config.cpp_wrapper = args.compile == "cpp"  # no Python between kernels
        runners = tuple(torch.compile(module) for module in runners)
    row = Row(name, alpha, _mac_ratio(original, converted, sample))
    for batch in args.batches:
        wait_until_idle(args.wait_idle)
        x = torch.randn(batch, 3, args.size, args.size, device=args.device).contiguous(
            memory_format=torch.channels_last)
        with torch.inference_mode():
            times = median_latencies({"original": lambda: _synchronized(runners[0], x, args.device),
                                      "converted": lambda: _synchronized(runners[1], x, args.device)}, args.repeats)
        row.latency[batch] = (times["original"], times["converted"])
    if args.train and alpha in args.train_alphas:
        wait_until_idle(args.wait_idle)
        row.train = _training_step_times(original, converted, args)
    if args.memory:
        estimate = octify.cost(fast_converted, example_inputs=sample).peak_activation_bytes
        row.memory = (peak_activation_bytes(fast_original, sample), peak_activation_bytes(fast_converted, sample),
                      estimate)
    return row


def _synchronized(module: nn.Module, x: torch.Tensor, device: str) -> object:
    """One call, waited for on a GPU (its kernels run asynchronously)."""
    result = module(x)
    if device == "cuda":
        torch.cuda.synchronize()
    return result


def _training_step_times(original: nn.Module, converted: nn.Module, args: argparse.Namespace) -> tuple:
    """Median seconds of forward + backward + SGD step at the training batch, unfused, train mode."""
    x = torch.randn(TRAIN_BATCH, 3, args.size, args.size)
    labels = torch.randint(0, 1000, (TRAIN_BATCH,))
    steps = {}
    for key, module in (("original", original), ("converted", converted)):
        model = copy.deepcopy(module).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        steps[key] = _training_step(model, optimizer, x, labels)
    times = median_latencies(steps, args.train_repeats, warmup=1)
    return times["original"], times["converted"]


def _training_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, labels: torch.Tensor):
    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), labels).backward()
        optimizer.step()
    return step


def _mac_ratio(original: nn.Module, converted: nn.Module, sample: torch.Tensor) -> float:
    counts = []
    for module in (original, converted):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(sample)
        counts.append(counter.get_total_flops())
    return counts[1] / counts[0]


def _check_same(fast: torch.Tensor, reference: torch.Tensor, what: str) -> None:
    error = (fast - reference).abs().max().item()
    scale = reference.abs().max().item()
    if error > 1e-4 * max(scale, 1.0):
        raise AssertionError(f"{what}: for_inference changed the outputs (max error {error:g}, scale {scale:g})")


def _line(row: Row) -> str:
    parts = [f"{row.model} alpha={row.alpha:g}: MACs x{row.mac_ratio:.3f}"]
    for batch, (base, conv) in row.latency.items():
        parts.append(f"batch {batch}: {base * 1e3:.1f} -> {conv * 1e3:.1f} ms (x{conv / base:.3f})")
    if row.train:
        parts.append(f"train step: {row.train[0] * 1e3:.0f} -> {row.train[1] * 1e3:.0f} ms "
                     f"(x{row.train[1] / row.train[0]:.3f})")
    return "; ".join(parts)


def _warn_if_busy() -> None:
    """Other processes on the cores distort the ratios (the octave model runs more, smaller kernels)."""
    busy = cpu_busy_fraction()
    if busy is not None and busy > 0.1:
        print(f"warning: the CPUs were {busy:.0%} busy before starting; other processes are using the cores "
              "and the ratios will be noisy", flush=True)


def markdown_table(rows: List[Row], args: argparse.Namespace) -> str:
    """The results as a markdown table: ratios converted / original, milliseconds in brackets."""
    header = ["model", "alpha", "MACs"] + [f"latency, batch {b}" for b in args.batches]
    if args.train:
        header.append(f"train step, batch {TRAIN_BATCH}")
    if args.memory:
        header += ["peak memory, batch 1 (measured)", "estimated"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.model, f"{row.alpha:g}", f"{row.mac_ratio:.2f}"]
        cells += [f"**{conv / base:.2f}** ({base * 1e3:.0f} → {conv * 1e3:.0f} ms)"
                  for base, conv in (row.latency[b] for b in args.batches)]
        if args.train:
            cells.append(f"**{row.train[1] / row.train[0]:.2f}** ({row.train[0] * 1e3:.0f} → "
                         f"{row.train[1] * 1e3:.0f} ms)" if row.train else "")
        if args.memory:
            original, converted, estimate = row.memory
            cells.append(f"{converted / original:.2f} ({original / MiB:.1f} → {converted / MiB:.1f} MiB)")
            cells.append(f"{estimate / MiB:.1f} MiB")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--alphas", nargs="+", type=float, default=list(ALPHAS))
    parser.add_argument("--batches", nargs="+", type=int, default=list(BATCHES))
    parser.add_argument("--repeats", type=int, default=15, help="alternating rounds per latency")
    parser.add_argument("--train-repeats", type=int, default=7, help="alternating rounds per training step")
    parser.add_argument("--train-alphas", nargs="+", type=float, default=[0.5],
                        help="alphas at which a training step is timed")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--no-train", dest="train", action="store_false", help="skip the training step")
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip the memory columns")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                        help="before each measurement, wait up to this long for the CPUs to be idle")
    parser.add_argument("--compile", nargs="?", const="python", choices=("python", "cpp"),
                        help="torch.compile both optimized modules before timing (inductor with frozen weights, "
                             "its wrapper code in Python or, with 'cpp', in C++; minutes per model)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where to run; the training step and memory columns are measured on cpu in float32 only")
    parser.add_argument("--dtype", choices=tuple(DTYPES), help="autocast dtype (default: float16 on cuda, "
                                                               "float32 (no autocast) on cpu)")
    parser.add_argument("--processes", type=int, default=1,
                        help="repeat each model's measurements in this many fresh processes (medians)")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # one JSON row per line
    parser.add_argument("--quick", action="store_true", help="resnet50 at alpha 0.5, fewer rounds")
    args = parser.parse_args(argv)
    args.argv = _options_for_children(sys.argv[1:] if argv is None else list(argv))
    if args.quick:
        args.models, args.alphas, args.repeats, args.train_repeats = ["resnet50"], [0.5], 7, 3
    if args.dtype is None:
        args.dtype = "float16" if args.device == "cuda" else "float32"
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch finds no CUDA device here")
    args.train = args.train and args.device == "cpu"  # the training step and memory are measured on the CPU only
    args.memory = args.memory and args.device == "cpu" and args.dtype == "float32"
    return args


def _options_for_children(argv: List[str]) -> List[str]:
    """The command-line options without those a child process gets its own values for."""
    options, skipping = [], False
    for item in argv:
        if item.startswith("--"):
            skipping = item in ("--models", "--alphas", "--processes", "--quick")
        if not skipping:
            options.append(item)
    return options


if __name__ == "__main__":
    main()
