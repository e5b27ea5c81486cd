"""Micro-benchmarks on hand-built stacks: one layer, and a ResNet-50-like bottleneck stack.

    python benchmarks/stacks.py [--batch 8] [--alpha 0.5] [--threads N]

Each row compares, in one process with alternating runs (medians), a plain ``nn.Conv2d``
version against the octave reference (``OctConv2d`` as written, eval mode) and against
``octify.for_inference`` of it (BatchNorm folded, paths fused, channels-last). Ratios are
octave / plain; the plain side gets ``for_inference`` too.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Tuple

import torch
from torch import fx, nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import median_latencies  # noqa: E402

import octify  # noqa: E402
from octify import Branchwise, OctBatchNorm2d, OctConv2d  # noqa: E402
from octify.capture import OctifyTracer  # noqa: E402

LAYERS = [  # (in, out, kernel, stride, size): ResNet-50 shapes
    (256, 64, 1, 1, 56), (64, 64, 3, 1, 56), (64, 256, 1, 1, 56), (128, 128, 3, 2, 56),
    (512, 128, 1, 1, 28), (128, 128, 3, 1, 28), (256, 256, 3, 1, 14), (256, 1024, 1, 1, 14),
]


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 with BatchNorm and ReLU, plus the identity; octave when ``alpha > 0``."""

    def __init__(self, channels: int, width: int, alpha: float) -> None:
        super().__init__()
        octave = alpha > 0
        conv = (lambda i, o, k: OctConv2d(i, o, k, padding=k // 2, alpha=alpha, bias=False)) if octave else (
            lambda i, o, k: nn.Conv2d(i, o, k, padding=k // 2, bias=False))
        norm = (lambda c: OctBatchNorm2d(c, alpha)) if octave else nn.BatchNorm2d
        self.octave = octave
        self.conv1, self.bn1 = conv(channels, width, 1), norm(width)
        self.conv2, self.bn2 = conv(width, width, 3), norm(width)
        self.conv3, self.bn3 = conv(width, channels, 1), norm(channels)
        self.relu = Branchwise(nn.ReLU(inplace=True)) if octave else nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(octify.ops.add(y, x) if self.octave else y + x)


def bottleneck_stack(alpha: float, blocks: int = 4, channels: int = 512, width: int = 128) -> fx.GraphModule:
    stack = nn.Sequential(*[Bottleneck(channels, width, alpha) for _ in range(blocks)]).eval()
    return fx.GraphModule(stack, OctifyTracer().trace(stack))


def feature_map(batch: int, channels: int, size: int) -> torch.Tensor:
    """A channels-last map, as every layer inside an optimized network receives."""
    return torch.randn(batch, channels, size, size).contiguous(memory_format=torch.channels_last)


def octave_input(channels: int, alpha: float, batch: int, size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    low = octify.layers.low_channel_count(channels, alpha)
    return feature_map(batch, channels - low, size), feature_map(batch, low, (size + 1) // 2)


def compare(plain: nn.Module, octave: nn.Module, plain_input, octave_input_, repeats: int) -> Dict[str, float]:
    """Median seconds of the plain module, the octave reference and the optimized octave module."""
    fast_plain, fast_octave = octify.for_inference(plain), octify.for_inference(octave)
    with torch.inference_mode():
        return median_latencies({"plain": lambda: fast_plain(plain_input),
                                 "octave reference": lambda: octave.eval()(octave_input_),
                                 "octave optimized": lambda: fast_octave(octave_input_)}, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows: List[str] = ["| layer | plain ms | octave reference | octave optimized |", "|---|---|---|---|"]
    for cin, cout, kernel, stride, size in LAYERS:
        plain = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False).eval()
        octave = OctConv2d(cin, cout, kernel, stride, kernel // 2, alpha=args.alpha, bias=False).eval()
        times = compare(plain, octave, feature_map(args.batch, cin, size),
                        octave_input(cin, args.alpha, args.batch, size), args.repeats)
        rows.append(_row(f"{cin}->{cout}, {kernel}x{kernel}, stride {stride}, {size}x{size}", times))
    times = compare(bottleneck_stack(0.0), bottleneck_stack(args.alpha), feature_map(args.batch, 512, 28),
                    octave_input(512, args.alpha, args.batch, 28), max(3, args.repeats // 3))
    rows.append(_row("4 bottlenecks 512-128-512, 28x28", times))
    print(f"batch {args.batch}, alpha {args.alpha}, {args.threads} threads; ratios octave / plain")
    print("\n".join(rows))


def _row(name: str, times: Dict[str, float]) -> str:
    base = times["plain"]
    return (f"| {name} | {base * 1e3:.2f} | {times['octave reference'] / base:.2f} | "
            f"{times['octave optimized'] / base:.2f} |")


if __name__ == "__main__":
    main()
