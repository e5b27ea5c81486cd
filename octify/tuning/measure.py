"""Measuring: the networks a tuning compares, run as the user will run them, and per-layer timing in place.

Every network goes through :func:`octify.for_inference` (BatchNorm folded, octave layers fused,
channels-last) on the setting's device, under autocast when a half dtype is asked for, and in
``"compile"`` mode through ``torch.compile`` (inductor, frozen weights) for whole-network timing.
Per-layer times come from one eager run of each candidate network that records every operation's
inputs; each operation is then timed again on them (the same-process, alternating, median discipline of
:class:`~octify.tuning.timing.MedianTimer`). Each operation belongs to the group of the convolution
it is (with what was fused into it) or follows (an operation takes the group of its first input's),
else to :data:`UNGROUPED`.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import fx, nn

from ..inference import for_inference
from ..inference.autocast import Autocast, check_autocast_dtype
from ..plan import AlphaGroup

EAGER, COMPILE = "eager", "compile"
MODES = (EAGER, COMPILE)
DEVICES = ("cpu", "cuda")
Call = Tuple[Callable[..., Any], tuple, dict]
UNGROUPED = ""  # the group of operations in no group (the stem, small maps, the classifier)


@dataclass(frozen=True)
class Setting:
    """Where and how latency is measured: batch size, device, autocast dtype (None: float32) and mode."""

    batch_size: int = 1
    device: str = "cpu"
    dtype: Optional[torch.dtype] = None
    mode: str = EAGER

    def __post_init__(self) -> None:
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' asked for, but torch finds no CUDA device here; use device='cpu'")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.dtype is not None:
            check_autocast_dtype(self.dtype)

    def describe(self) -> str:
        dtype = "float32" if self.dtype is None else f"autocast {str(self.dtype).replace('torch.', '')}"
        return f"batch {self.batch_size}, {self.device}, {dtype}, {self.mode}"

    def cache_parts(self) -> List[str]:
        return [self.describe(), torch.__version__, str(torch.get_num_threads())]


def runner(module: nn.Module, setting: Setting) -> Tuple[nn.Module, Callable[[Sequence[torch.Tensor]], Any]]:
    """The module optimized for the setting, and a function that runs it once on inputs (inference mode,
    synchronized on CUDA so that a timer sees the work)."""
    fast = for_inference(module, device=setting.device, dtype=setting.dtype)
    compiled = _compiled(fast) if setting.mode == COMPILE else fast

    def run(inputs: Sequence[torch.Tensor]) -> Any:
        with torch.inference_mode():
            result = compiled(*inputs)
        _synchronize(setting)
        return result
    return fast, run


def _compiled(module: nn.Module) -> Callable[..., Any]:
    return torch.compile(module, options={"freezing": True})  # weights as constants: prepacked, fused


def _synchronize(setting: Setting) -> None:
    if setting.device == "cuda":
        torch.cuda.synchronize()


def batch_inputs(example_inputs: Sequence[torch.Tensor], setting: Setting) -> Tuple[torch.Tensor, ...]:
    """Random inputs shaped like the examples with the setting's batch size, channels-last, on its device."""
    batch = []
    for x in example_inputs:
        shaped = torch.randn((setting.batch_size, *x.shape[1:]), dtype=x.dtype, device=setting.device)
        batch.append(shaped.contiguous(memory_format=torch.channels_last) if shaped.dim() == 4 else shaped)
    return tuple(batch)


def layer_groups(groups: Iterable[AlphaGroup]) -> Dict[str, str]:
    """Convolution name -> the group it writes (or, when its own output is plain, reads)."""
    owner: Dict[str, str] = {}
    for group in groups:
        for name in group.writers + group.readers:
            owner.setdefault(name, group.name)
    return owner


def recorded_layers(fast: nn.Module, inputs: Sequence[torch.Tensor], owner: Dict[str, str],
                    convolutions: Iterable[str], setting: Setting) -> Dict[str, Dict[str, Callable[[], Any]]]:
    """Group (:data:`UNGROUPED` for the rest) -> {layer: a function that runs that operation once on its recorded
    inputs}, from one run of ``fast`` (``for_inference``'s result). ``convolutions``: every convolution's name, so
    that one in no group (the stem) does not pass a group on to what follows it."""
    graph_module = fast.module if isinstance(fast, Autocast) else fast
    if not isinstance(graph_module, fx.GraphModule):
        return {}
    attributed = _attribute(graph_module, owner, set(convolutions))
    recorder = _Recorder(graph_module, attributed)
    with torch.inference_mode(), _autocast(setting):
        recorder.run(*inputs)
    _synchronize(setting)
    layers: Dict[str, Dict[str, Callable[[], Any]]] = {}
    for node, (group, layer) in attributed.items():
        if node in recorder.calls:
            layers.setdefault(group, {})[layer] = _replay(recorder.calls[node], setting)
    return layers


def _attribute(module: fx.GraphModule, owner: Dict[str, str], convolutions: set) -> Dict[fx.Node, Tuple[str, str]]:
    """Node -> (group, layer name): convolutions by name, other operations from their first input in a group, the rest
    :data:`UNGROUPED`."""
    attributed: Dict[fx.Node, Tuple[str, str]] = {}
    for node in module.graph.nodes:
        if node.op in ("placeholder", "get_attr", "output"):
            continue
        name = str(node.target) if node.op == "call_module" else node.name
        if node.op == "call_module" and (name in owner or name in convolutions):
            attributed[node] = (owner.get(name, UNGROUPED), name)
            continue
        source = next((arg for arg in node.all_input_nodes if attributed.get(arg, (UNGROUPED,))[0] != UNGROUPED),
                      None)
        attributed[node] = (attributed[source][0] if source is not None else UNGROUPED, name)
    return attributed


class _Recorder(fx.Interpreter):
    """Runs the graph and keeps, for each wanted node, the function and the argument values it was called with."""

    def __init__(self, module: fx.GraphModule, wanted: Dict[fx.Node, Any]) -> None:
        super().__init__(module)
        self.wanted = wanted
        self.calls: Dict[fx.Node, Call] = {}

    def run_node(self, node: fx.Node) -> Any:
        if node in self.wanted:
            args, kwargs = self.fetch_args_kwargs_from_env(node)
            if node.op == "call_module":
                function: Callable[..., Any] = self.fetch_attr(node.target)
            elif node.op == "call_method":
                function = getattr(type(args[0]), node.target)
            else:
                function = node.target
            self.calls[node] = (function, args, kwargs)
        return super().run_node(node)


def _replay(call: Call, setting: Setting) -> Callable[[], Any]:
    function, args, kwargs = call

    def run() -> Any:
        with torch.inference_mode(), _autocast(setting):
            result = function(*args, **kwargs)
        _synchronize(setting)
        return result
    return run


def _autocast(setting: Setting) -> contextlib.AbstractContextManager:
    return torch.autocast(setting.device, dtype=setting.dtype) if setting.dtype is not None \
        else contextlib.nullcontext()
