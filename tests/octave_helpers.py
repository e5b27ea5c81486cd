"""Helpers shared by the tests: random octave inputs, comparing octave outputs, counting MACs."""
import torch
from torch.utils.flop_counter import FlopCounterMode

TOLERANCE = dict(rtol=1e-5, atol=1e-5)


def octave_input(conv, batch, height, width):
    """A random input for ``conv``: a tensor, or ``(high, low)`` with the low branch at ceil-half size."""
    high = torch.randn(batch, conv.high_in, height, width)
    if not conv.low_in:
        return high
    return high, torch.randn(batch, conv.low_in, (height + 1) // 2, (width + 1) // 2)


def macs_by_flop_counter(module, *args):
    """The multiply-accumulates FlopCounterMode counts (FLOPs / 2) in one run of ``module`` on ``args``."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(*args)
    return counter.get_total_flops() // 2


def as_tuple(y):
    return y if isinstance(y, tuple) else (y,)


def assert_same(actual, expected):
    """Same branches, same shapes, equal to float32 rounding."""
    for a, e in zip(as_tuple(actual), as_tuple(expected), strict=True):
        assert a.shape == e.shape
        torch.testing.assert_close(a, e, **TOLERANCE)
