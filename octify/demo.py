"""A three-layer OctConv2d stack on a 224x224 input, with its cost next to plain convolutions.

Run with ``python -m octify.demo``.
"""
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from octify import OctConv2d

LAYERS = [dict(in_channels=3, out_channels=10, kernel_size=3, padding=1, alpha=(0.0, 0.5)),
          dict(in_channels=10, out_channels=20, kernel_size=7, padding=3, alpha=(0.5, 0.8)),
          dict(in_channels=20, out_channels=1, kernel_size=3, padding=1, alpha=(0.8, 0.0))]


def macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass (FlopCounterMode counts 2 FLOPs per MAC)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() // 2


def main() -> None:
    torch.manual_seed(0)
    x = torch.rand(1, 3, 224, 224)
    octave = nn.Sequential(*(OctConv2d(**layer) for layer in LAYERS))
    plain = nn.Sequential(*(nn.Conv2d(**{k: v for k, v in layer.items() if k != "alpha"}) for layer in LAYERS))
    with torch.no_grad():
        print(f"output shape: {tuple(octave(x).shape)}")
    octave_macs, plain_macs = macs(octave, x), macs(plain, x)
    print(f"multiply-accumulates, OctConv2d stack: {octave_macs:,}")
    print(f"multiply-accumulates, plain Conv2d stack: {plain_macs:,}")
    print(f"ratio: {octave_macs / plain_macs:.1%}")


if __name__ == "__main__":
    main()
