"""``for_inference``: an eval-mode copy of any model, BatchNorm folded and octave layers fused.

Steps, each exact up to float32 rounding:

1. copy the model and put it in eval mode (the input is never modified);
2. find every convolution whose only consumer is a BatchNorm, directly or through an
   ``OctSplit``, and fold the BatchNorm into it (a model that is not a ``GraphModule`` is
   captured first as :func:`octify.convert` captures it, so the result is a ``GraphModule``);
3. swap every ``OctConv2d`` for :func:`fast_octconv` of it, and 1x1 convolutions for
   :class:`PointwiseConv2d` (a matrix product on small maps);
4. turn residual adds on fresh convolution outputs into in-place adds (octave or plain), and
   move residual adds and ReLUs after a fast octave layer into it (:mod:`.fusion`);
5. store 4-d weights channels-last, so convolutions run and produce channels-last maps, on ``device``;
6. freeze the parameters (``requires_grad=False``);
7. with ``dtype`` (``torch.float16`` or ``torch.bfloat16``), run under ``torch.autocast`` (:class:`Autocast`).

A model that cannot be captured still gets steps 1, 3, 5 and 6, with a warning that says so.
"""
from __future__ import annotations

import copy
import operator
import warnings
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import fx, nn

from .. import ops
from ..capture import FIXED_SHAPES, capture
from ..capture.tracer import OctifyTracer
from ..errors import ConversionError
from ..layers import OctBatchNorm2d, OctConv2d, OctSplit
from ..rewrite.guards import guard_input_shapes
from .autocast import Autocast, check_autocast_dtype
from .folding import can_fold, fold_conv_batchnorm, fold_conv_split_batchnorm, fold_octconv_batchnorm
from .fused import FusedOctConv2d, fast_octconv
from .fusion import fuse_epilogues
from .graph import is_module_call, module_call_counts
from .grouped import GroupedOctConv2d
from .inplace import add_into, octave_add_into
from .kernels import PointwiseConv2d

CONVOLUTIONS = (nn.Conv2d, OctConv2d)
BATCHNORMS = (nn.BatchNorm2d, OctBatchNorm2d)
FRESH_OUTPUTS = (nn.Conv2d, OctConv2d, FusedOctConv2d, GroupedOctConv2d, nn.BatchNorm2d, OctBatchNorm2d)


def for_inference(module: nn.Module, example_inputs: Optional[Sequence[torch.Tensor]] = None, *,
                  device: Optional[Union[str, torch.device]] = None, dtype: Optional[torch.dtype] = None) -> nn.Module:
    """An inference-ready copy of ``module`` (plain or converted); ``module`` itself is untouched.

    A module that is not a ``GraphModule`` is traced as :func:`octify.convert` traces it; pass
    ``example_inputs`` for models that trace only with their input's sizes fixed (the result
    then refuses other sizes, and a ``UserWarning`` says so). ``device``: where the copy lives
    (default: where ``module`` is); ``dtype``: ``torch.float16`` or ``torch.bfloat16`` to run it
    under ``torch.autocast`` (the result is then an :class:`Autocast` around the optimized module).
    """
    if dtype is not None:
        check_autocast_dtype(dtype)
    model = _captured(copy.deepcopy(module).eval(), example_inputs)
    if isinstance(model, fx.GraphModule):
        fold_batchnorms(model, model.graph)
    _replace_modules(model, _faster_module)
    if isinstance(model, fx.GraphModule):
        _drop_identity_calls(model)
        make_residual_adds_in_place(model)
        fuse_epilogues(model)
    model.to(device=device, memory_format=torch.channels_last)
    model.requires_grad_(False)
    return model if dtype is None else Autocast(model, dtype)


def _captured(model: nn.Module, example_inputs: Optional[Sequence[torch.Tensor]]) -> nn.Module:
    """``model`` as a GraphModule (symbolic trace, else capture on ``example_inputs``), or as it is, with a warning."""
    if isinstance(model, fx.GraphModule):
        return model
    try:
        return fx.GraphModule(model, OctifyTracer().trace(model), type(model).__name__)
    except Exception as error:
        reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
    if example_inputs is not None:
        try:
            captured = capture(model, tuple(example_inputs))
        except ConversionError as error:
            reason = error.reason
        else:
            if captured.method == FIXED_SHAPES:
                guard_input_shapes(captured.module, captured.example_inputs, captured.fixed_dims)
                warnings.warn(f"for_inference: {type(model).__name__} traces only with its input's sizes fixed at "
                              f"{', '.join(str(tuple(x.shape)) for x in captured.example_inputs)}; the result "
                              "refuses sizes its forward reads", UserWarning, stacklevel=3)
            return captured.module
    hint = "" if example_inputs is not None else "; pass example_inputs=(x,) to trace it with the input's sizes fixed"
    warnings.warn(f"for_inference: {type(model).__name__} cannot be traced ({reason}): BatchNorm folding, in-place "
                  f"residual adds and fused add + ReLU epilogues were skipped; only layers were swapped for faster "
                  f"ones{hint}", UserWarning, stacklevel=3)
    return model


def _faster_module(module: nn.Module) -> Optional[nn.Module]:
    """The faster equivalent of an octave or 1x1 convolution, None for any other module."""
    faster = fast_octconv(module) if isinstance(module, OctConv2d) else module
    if PointwiseConv2d.supports(faster):
        faster = PointwiseConv2d.from_conv(faster)
    return faster if faster is not module else None


def fold_batchnorms(model: nn.Module, graph: fx.Graph) -> List[Tuple[str, str]]:
    """Fold each BatchNorm that only follows a convolution (possibly through an ``OctSplit``) into it.

    ``graph`` is ``model``'s graph (names of ``call_module`` nodes are paths in ``model``).
    The folded convolution replaces the original and the BatchNorm becomes ``nn.Identity``.
    Returns the ``(convolution, batchnorm)`` names folded.
    """
    calls = module_call_counts(graph)
    folded = []
    for chain in _foldable_chains(model, graph):
        if any(calls[name] != 1 for name in chain):
            continue  # a module called twice cannot be changed for one of its calls
        conv_name, bn_name = chain[0], chain[-1]
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        if len(chain) == 3:
            new_conv = fold_conv_split_batchnorm(conv, model.get_submodule(chain[1]), bn)
        elif type(conv) is nn.Conv2d:
            new_conv = fold_conv_batchnorm(conv, bn)
        else:
            new_conv = fold_octconv_batchnorm(conv, bn)
        model.set_submodule(conv_name, new_conv)
        model.set_submodule(bn_name, nn.Identity())
        folded.append((conv_name, bn_name))
    return folded


def make_residual_adds_in_place(model: fx.GraphModule) -> int:
    """Rewrite ``a + b`` as ``a += b`` where ``a`` is a convolution or BatchNorm output used nowhere else.

    Works for plain adds (``operator.add``, ``torch.add``) and octave ones (``octify.ops.add``).
    Returns how many adds changed.
    """
    changed = 0
    for node in list(model.graph.nodes):
        if node.op != "call_function" or len(node.args) != 2 or node.kwargs:
            continue
        in_place = _IN_PLACE.get(node.target)
        if in_place is None:
            continue
        for position in (0, 1):  # addition commutes: the fresh operand takes the sum
            operand = node.args[position]
            if _is_fresh_output(model, operand) and len(operand.users) == 1:
                node.target, node.args = in_place, (operand, node.args[1 - position])
                changed += 1
                break
    if changed:
        model.recompile()
    return changed


_IN_PLACE = {operator.add: add_into, torch.add: add_into, ops.add: octave_add_into}


def _is_fresh_output(model: fx.GraphModule, node: object) -> bool:
    """True for the output of a convolution or BatchNorm module: a new tensor (or pair) of its own."""
    return (isinstance(node, fx.Node) and node.op == "call_module"
            and isinstance(model.get_submodule(node.target), FRESH_OUTPUTS))


def _foldable_chains(model: nn.Module, graph: fx.Graph) -> Iterator[Tuple[str, ...]]:
    """Names ``(conv, bn)`` or ``(conv, split, bn)`` of module calls that feed only each other."""
    for node in graph.nodes:
        if not (is_module_call(model, node, BATCHNORMS) and can_fold(model.get_submodule(node.target))):
            continue
        chain = [node]
        source = _only_input(node)
        if is_module_call(model, source, (OctSplit,)) and len(source.users) == 1:
            chain.insert(0, source)
            source = _only_input(source)
        if not (is_module_call(model, source, CONVOLUTIONS) and len(source.users) == 1):
            continue
        names = tuple(str(n.target) for n in [source] + chain)
        modules = [model.get_submodule(name) for name in names]
        if _matches(*modules):
            yield names


def _only_input(node: fx.Node) -> Optional[fx.Node]:
    return node.args[0] if len(node.args) == 1 and not node.kwargs else None


def _matches(conv: nn.Module, *rest: nn.Module) -> bool:
    """Whether the BatchNorm (after an optional split) has the convolution's output channels."""
    bn = rest[-1]
    if len(rest) == 2:
        split = rest[0].split
        return (type(conv) is nn.Conv2d and isinstance(bn, OctBatchNorm2d) and split.channels == conv.out_channels
                and (bn.bn_h.num_features, bn.bn_l.num_features) == (split.n_high, split.n_low))
    if type(conv) is nn.Conv2d:
        return type(bn) is nn.BatchNorm2d and bn.num_features == conv.out_channels
    if isinstance(bn, OctBatchNorm2d):
        return (bn.bn_h.num_features, bn.bn_l.num_features) == (conv.high_out, conv.low_out)
    return conv.low_out == 0 and bn.num_features == conv.out_channels


def _replace_modules(model: nn.Module, replacement) -> None:
    """Replace each submodule ``m`` for which ``replacement(m)`` is not None (outermost first)."""
    for name, child in list(model.named_children()):
        new = replacement(child)
        if new is not None:
            setattr(model, name, new)
        else:
            _replace_modules(child, replacement)


def _drop_identity_calls(model: fx.GraphModule) -> None:
    """Remove calls of ``nn.Identity`` submodules (left by folding) from the graph."""
    for node in list(model.graph.nodes):
        if node.op == "call_module" and type(model.get_submodule(node.target)) is nn.Identity:
            node.replace_all_uses_with(node.args[0])
            model.graph.erase_node(node)
    model.delete_all_unused_submodules()
    model.recompile()
