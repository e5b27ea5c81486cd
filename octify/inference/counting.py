"""The cost report's counting rule for the fast octave layers (same MACs as the OctConv2d they replace)."""
from __future__ import annotations

import math

from ..report import OpCall, register_rule
from .fused import FusedOctConv2d
from .grouped import GroupedOctConv2d


@register_rule(FusedOctConv2d, GroupedOctConv2d, remark="octave paths as two or three convolutions")
def fast_octconv_macs(call: OpCall) -> int:
    """Each convolution's outputs times its (input channels / groups x kernel) products, at the size it runs at."""
    layer = call.target
    high = call.output[0] if isinstance(call.output, (tuple, list)) else call.output
    batch, (height, width) = math.prod(high.shape[:-3]), high.shape[-2:]
    pixels = {False: height * width, True: ((height + 1) // 2) * ((width + 1) // 2)}
    return sum(batch * pixels[low] * math.prod(weight.shape) for weight, low in layer.convolutions())
