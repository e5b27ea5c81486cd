"""nn.ConvTranspose2d (exact type) becomes OctConvTranspose2d, weights sliced from the original."""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Optional

from torch import fx, nn

from ..capture.facts import feature_args, feature_shape
from ..layers import ChannelSplit, OctConvTranspose2d
from ..layers.octconv_transpose import transposed_geometry_problem
from .registry import CONV, Rule, register

if TYPE_CHECKING:
    from ..rewrite.context import RewriteContext


def check_transposed(node: fx.Node, modules: Dict[str, nn.Module]) -> Optional[str]:
    conv = modules[node.target]
    if len(node.args) > 1 or node.kwargs:
        return ("output_size= at call time has no octave rule; set output_padding on the layer instead "
                "to convert it")
    if feature_shape(next(iter(feature_args(node)), None)) is None or feature_shape(node) is None:
        return "not applied to a 4-d feature map"
    problem = transposed_geometry_problem(conv.kernel_size, conv.stride, conv.padding, conv.output_padding,
                                          conv.dilation)
    return f"octave paths need a different geometry: OctConvTranspose2d {problem}" if problem else None


def rewrite_transposed(node: fx.Node, ctx: "RewriteContext") -> None:
    in_split, out_split = ctx.plan.conv_splits[node]
    if in_split is None and out_split is None:
        ctx.copy(node)
        return
    conv = ctx.module(node)
    layer = OctConvTranspose2d.from_conv(conv, in_split=in_split or ChannelSplit.trailing(conv.in_channels, 0),
                                         out_split=out_split or ChannelSplit.trailing(conv.out_channels, 0))
    name = ctx.add_module(str(node.target), layer)
    ctx.emit(node, "call_module", name, (ctx.value(node.args[0], in_split, node),), {}, out_split)


register(Rule(CONV, rewrite_transposed, check_transposed), nn.ConvTranspose2d)
