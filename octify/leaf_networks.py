"""Convolutions inside automatic leaves, converted as sub-networks of their own.

A submodule that torch.fx cannot trace (data-dependent control flow) becomes a leaf and runs
as it is. Its children usually trace: each child that holds a convolution and is called once,
with tensors only, is converted on its own, on the inputs it received while the model ran on
the example input, with plain inputs and outputs (its first convolution reads a plain map, so
it is not treated as a stem). A child that is a single convolution stays as it is: with a
plain input and output it has nothing to gain. The leaf's control flow stays; only its children change. A child
that cannot be converted, or would save nothing, stays as it is, with a note.
"""
from __future__ import annotations

import copy
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import fx, nn

from .errors import ConversionError
from .notes import Note

ConvertChild = Callable[[nn.Module, str, Tuple[torch.Tensor, ...]], Any]  # (child, qualified name, inputs)


def has_convolution(module: nn.Module) -> bool:
    return any(isinstance(layer, nn.Conv2d) for layer in module.modules())


def convert_leaf_children(plain: fx.GraphModule, converted: fx.GraphModule, leaves: Sequence[str],
                          inputs: Sequence[Any], convert_child: ConvertChild) -> Tuple[List[Note], List[str]]:
    """Replace, in ``converted``, each automatic leaf of ``leaves`` by a copy whose convertible children are
    converted (``convert_child`` returns a :class:`~octify.Conversion`); ``plain`` is the captured model
    the leaves come from. Returns the notes and the qualified names of the children converted."""
    children = {f"{leaf}.{name}": child for leaf in leaves if leaf
                for name, child in plain.get_submodule(leaf).named_children()
                if has_convolution(child) and not isinstance(child, nn.Conv2d)}  # a lone conv has nothing to pair
    calls = _record_calls(plain, inputs, children)
    notes: List[Note] = []
    done: List[str] = []
    for leaf in (leaf for leaf in leaves if leaf):
        original = plain.get_submodule(leaf)
        replacement = copy.copy(original)
        replacement._modules = dict(original._modules)
        for name, child in original.named_children():
            qualified = f"{leaf}.{name}"
            if qualified not in children:
                continue
            call = calls.get(qualified)
            if not isinstance(call, tuple):
                notes.append(Note(qualified, "leaf", f"inside leaf {leaf}, {call}, so it stays as it is"))
                continue
            conversion = _try(convert_child, child, qualified, call, notes)
            if conversion is None:
                continue
            replacement._modules[name] = conversion.module
            notes += [Note(f"{qualified}.{note.name}", note.kind, note.reason, note.cause) for note in conversion.notes]
            done.append(qualified)
        if replacement._modules != original._modules:
            for node in converted.graph.nodes:
                if node.op == "call_module" and converted.get_submodule(node.target) is original:
                    converted.set_submodule(node.target, replacement)
    return notes, done


def _try(convert_child: ConvertChild, child: nn.Module, name: str, call: Tuple[torch.Tensor, ...],
         notes: List[Note]) -> Optional[Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the child's own shortfall is the model's business, said by its notes
        try:
            conversion = convert_child(child, name, call)
        except ConversionError as error:
            notes.append(Note(name, "leaf", f"inside an untraceable leaf; converting it on its own failed: {error}"))
            return None
    if conversion.report.converted.macs >= conversion.report.original.macs:
        notes.append(Note(name, "leaf", "inside an untraceable leaf; converted on its own it saves nothing, "
                                        "so it stays as it is"))
        return None
    return conversion


def _record_calls(plain: fx.GraphModule, inputs: Sequence[Any],
                  children: Dict[str, nn.Module]) -> Dict[str, Union[Tuple[torch.Tensor, ...], str]]:
    """Each child's positional tensor inputs where it was called exactly once with tensors only, else why not."""
    seen: Dict[str, List[Optional[Tuple[torch.Tensor, ...]]]] = {name: [] for name in children}

    def recorder(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> None:
            tensors = not kwargs and args and all(isinstance(arg, torch.Tensor) for arg in args)
            seen[name].append(tuple(arg.detach().clone() for arg in args) if tensors else None)
        return hook

    if not children:
        return {}
    handles = [child.register_forward_pre_hook(recorder(name), with_kwargs=True) for name, child in children.items()]
    modes = {module: module.training for module in plain.modules()}
    try:
        with torch.no_grad():
            plain.eval()(*inputs)  # eval: running statistics stay as they are
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training
    return {name: "not called on the example input" if not calls else
            f"called {len(calls)} times" if len(calls) > 1 else
            "called with arguments other than tensors" if calls[0] is None else calls[0]
            for name, calls in seen.items()}
