"""Capture stage: trace a model into a GraphModule and record every value's shape.

Order of attempts, each reported in :class:`Captured`:

1. symbolic tracing (torch.fx) with the given leaf modules;
2. if that fails, tracing with the example input's shapes fixed (sizes become constants);
3. if that fails too inside a submodule, that submodule becomes a leaf (left as it is) and
   tracing starts again, so only the smallest untraceable parts stay unconverted.
"""
from __future__ import annotations

import logging
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, Iterator, List, Sequence, Tuple

import torch
from torch import fx, nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.passes.fake_tensor_prop import FakeTensorProp
from torch.utils._pytree import tree_map

from ..errors import ConversionError
from .leaves import resolve_leaf_modules
from .tracer import FixedShapeTracer, LeafSpec, OctifyTracer, trace

SYMBOLIC, FIXED_SHAPES = "symbolic", "fixed shapes"


@dataclass
class Captured:
    """A traced model whose nodes carry ``meta["val"]`` (fake tensors with real shapes)."""

    module: fx.GraphModule
    method: str
    example_inputs: Tuple[torch.Tensor, ...]
    auto_leaves: Dict[str, str] = field(default_factory=dict)
    fixed_dims: Tuple[Tuple[int, ...], ...] = ()
    """With fixed-shape tracing: for each input, the dimensions whose traced sizes the graph depends on."""
    mode_dependence: str = ""
    """A line of the traced code that differs in the other train/eval mode ('' when none does)."""

    def describe(self) -> str:
        text = f"captured by {self.method} tracing"
        if self.method == FIXED_SHAPES:
            shapes = ", ".join(str(tuple(x.shape)) for x in self.example_inputs)
            text += f" (valid for inputs of shape {shapes})"
        for name, why in self.auto_leaves.items():
            text += f"; {name or 'the model'} left as it is ({why})"
        return text


def capture(model: nn.Module, example_inputs: Sequence[torch.Tensor], leaf_modules: Iterable[LeafSpec] = (),
            auto_leaf: bool = True, max_auto_leaves: int = 64) -> Captured:
    """Trace ``model`` on ``example_inputs`` (see module docstring); ConversionError if impossible,
    ValueError for a ``leaf_modules`` entry that names nothing in the model (see :func:`resolve_leaf_modules`).

    The model may be run (in eval mode, without gradients): pass a copy you own.
    """
    example_inputs = tuple(example_inputs)
    leaf_modules = resolve_leaf_modules(model, leaf_modules)
    auto_leaves: Dict[str, str] = {}
    input_checked = False
    while True:
        leaves = leaf_modules + list(auto_leaves)
        fixed_dims: Tuple[Tuple[int, ...], ...] = ()
        mode_dependence = ""
        try:
            module, method = trace(model, OctifyTracer(leaves)), SYMBOLIC
            mode_dependence = _mode_dependence(model, module, leaves)
        except Exception as symbolic_error:
            if not input_checked:  # tell "rejects this input" apart from "cannot be traced"
                check_model_accepts(model, example_inputs)
                input_checked = True
            try:
                with eval_mode(model):
                    tracer = FixedShapeTracer(example_inputs, leaves)
                    module, method = trace(model, tracer), FIXED_SHAPES
                fixed_dims = tracer.fixed_dims()
            except Exception as error:
                where = getattr(error, "octify_module", "")
                reason = _first_line(symbolic_error)
                if not where or where in auto_leaves or not auto_leaf or len(auto_leaves) >= max_auto_leaves:
                    raise ConversionError(
                        f"torch.fx cannot trace it ({reason}); pass its name or type in leaf_modules "
                        f"(--leaf on the command line) to keep it as it is",
                        where=where or type(model).__name__) from error
                auto_leaves[where] = f"not traceable: {reason}"
                continue
        module.graph.eliminate_dead_code(is_impure_node=_is_impure)
        module.recompile()
        propagate_shapes(module, example_inputs)
        return Captured(module, method, example_inputs, auto_leaves, fixed_dims, mode_dependence)


def _mode_dependence(model: nn.Module, traced: fx.GraphModule, leaves: Sequence[LeafSpec]) -> str:
    """The first line of traced code that changes when the model is traced in the other mode ('' if none).

    A ``forward`` that reads ``self.training`` (outside leaf modules) is traced with the
    current mode's choice fixed: the graph then ignores ``.train()`` / ``.eval()``.
    """
    modes = {m: m.training for m in model.modules()}
    model.train(not model.training)
    try:
        other = trace(model, OctifyTracer(leaves))
    except Exception:  # traces in one mode only: the other mode's graph cannot be compared
        return ""
    finally:
        for m, training in modes.items():
            m.training = training
    ours, theirs = (re.sub(r"_tensor_constant\d+", "_tensor_constant", code).splitlines()  # numbered per trace
                    for code in (traced.code, other.code))
    return next((line.strip() for line, twin in zip(ours, theirs) if line != twin), "") or (
        "" if len(ours) == len(theirs) else "the graphs differ in length")


def _is_impure(node: fx.Node) -> bool:
    """fx's purity, and in-place tensor methods (``x.div_(p)``, ``counter.add_(1)``): their effect is what counts."""
    return node.is_impure() or (node.op == "call_method" and str(node.target).endswith("_"))


def check_model_accepts(model: nn.Module, example_inputs: Tuple[torch.Tensor, ...]) -> None:
    """Run the model once (fake tensors, else real ones in eval mode); ConversionError if it rejects the input."""
    def fake_run(fakes: List[object], mode: FakeTensorMode) -> None:
        with mode:
            model(*fakes)

    _fake_else_real(model, example_inputs, fake_run, lambda: model(*example_inputs))


def propagate_shapes(module: fx.GraphModule, example_inputs: Sequence[torch.Tensor]) -> None:
    """Store a tensor with the real shape and dtype (fake or meta, no data) in each node's ``meta["val"]``.

    Fake tensors first; modules whose forward depends on data values run for real, in eval mode.
    """
    _fake_else_real(module, example_inputs, lambda fakes, mode: FakeTensorProp(module, mode).propagate(*fakes),
                    lambda: _MetaRecorder(module).run(*example_inputs))


def _fake_else_real(module: nn.Module, example_inputs: Sequence[torch.Tensor],
                    fake_run: Callable[[List[object], FakeTensorMode], object], real_run: Callable[[], object]) -> None:
    """``fake_run`` on fake copies of the inputs; if that fails, ``real_run`` in eval mode; ConversionError if both fail."""
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    fakes = [mode.from_tensor(x) if isinstance(x, torch.Tensor) else x for x in example_inputs]
    try:
        with torch.no_grad(), _quiet_fake_tensor_log():
            fake_run(fakes, mode)
        return
    except Exception:
        pass
    try:
        with eval_mode(module), torch.no_grad():
            real_run()
    except Exception as error:
        raise _rejection(example_inputs, error) from error


class _MetaRecorder(fx.Interpreter):
    """Runs the graph for real and keeps only each value's shape, as meta tensors.

    Values that share storage (views, in-place results) get meta tensors that share storage
    too, so that memory is counted as on the fake-tensor path. The real storages are held
    until the run ends, so that a freed one's address is never taken for another's.
    """

    def __init__(self, module: fx.GraphModule) -> None:
        super().__init__(module)
        self._meta_storages: Dict[int, Tuple[torch.UntypedStorage, torch.UntypedStorage]] = {}

    def run_node(self, node: fx.Node) -> object:
        result = super().run_node(node)
        node.meta["val"] = tree_map(lambda v: self._meta(v) if isinstance(v, torch.Tensor) else v, result)
        return result

    def _meta(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key not in self._meta_storages:
            meta_storage = torch.empty(storage.nbytes(), dtype=torch.uint8, device="meta").untyped_storage()
            self._meta_storages[key] = (storage, meta_storage)
        meta_storage = self._meta_storages[key][1]
        return torch.empty(0, dtype=tensor.dtype, device="meta").set_(
            meta_storage, tensor.storage_offset(), tensor.shape, tensor.stride())


@contextmanager
def _quiet_fake_tensor_log() -> Iterator[None]:
    """Fake tensors log a traceback for every op that fails on them; a failure here is reported as an error."""
    logger = logging.getLogger(FakeTensorMode.__module__)
    disabled = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = disabled


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the duration (no running-statistics updates), then each module's own mode back."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, training in modes.items():
            m.training = training


def _rejection(example_inputs: Sequence[torch.Tensor], error: Exception) -> ConversionError:
    shapes = ", ".join(str(tuple(x.shape)) for x in example_inputs if isinstance(x, torch.Tensor))
    return ConversionError(f"the model rejects an input of shape {shapes} ({_first_line(error)}); "
                           "pass the input shape it expects (input_shape=... / --input-shape)")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"
