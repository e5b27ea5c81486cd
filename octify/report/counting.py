"""``cost()``: trace a model, read every node's shapes, apply the counting rules."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

import torch
from torch import fx, nn

from ..capture import capture, propagate_shapes
from ..capture.tracer import LeafSpec
from .costs import LayerCost, ModelCost
from .measuring import MEASURED, measured_macs, needs_measuring
from .memory import CALL_OPS, FeatureMemory, feature_memory, tensors_in
from .rules import OpCall, find_rule

GRAPH_AS_GIVEN = "graph used as given"


def cost(model: nn.Module, input_shape: Sequence[int] = (1, 3, 224, 224),
         example_inputs: Union[torch.Tensor, Sequence[Any], None] = None,
         leaf_modules: Iterable[LeafSpec] = ()) -> ModelCost:
    """Multiply-accumulates, parameters and feature-map memory of one forward pass of ``model``.

    The input is ``example_inputs`` (a tensor or a tuple of arguments) or else a random
    tensor of ``input_shape``. A plain module is traced with :func:`octify.capture.capture`
    (``leaf_modules`` as there); an ``fx.GraphModule`` (a converted model) is costed on its
    own graph, so its node names are kept. MACs come from shapes through the counting rules
    (:mod:`octify.report.rules`); a leaf or third-party function no rule covers is measured
    on fake tensors (:mod:`octify.report.measuring`); nothing is computed or timed.
    """
    inputs = _example_inputs(model, input_shape, example_inputs)
    if isinstance(model, fx.GraphModule):
        graph_module, traced = _copy_with_shapes(model, inputs), GRAPH_AS_GIVEN
    else:
        captured = capture(model, inputs, leaf_modules)
        graph_module, traced = captured.module, captured.describe()
    return _measure(model, graph_module, inputs, traced)


def _example_inputs(model: nn.Module, input_shape: Sequence[int],
                    example_inputs: Union[torch.Tensor, Sequence[Any], None]) -> Tuple[Any, ...]:
    if example_inputs is None:
        reference = next(model.parameters(), None)
        if reference is not None and reference.is_floating_point():
            return (torch.rand(tuple(input_shape), dtype=reference.dtype, device=reference.device),)
        return (torch.rand(tuple(input_shape)),)
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    return tuple(example_inputs)


def _copy_with_shapes(model: fx.GraphModule, inputs: Tuple[Any, ...]) -> fx.GraphModule:
    """A GraphModule over ``model``'s submodules with a copy of its graph, shapes recorded (``model`` untouched).

    Shapes already recorded by the capture stage are reused.
    """
    graph = fx.Graph()
    graph.output(graph.graph_copy(model.graph, {}))
    copy = fx.GraphModule(model, graph, type(model).__name__)
    if not all("val" in node.meta for node in copy.graph.nodes if node.op != "output"):
        propagate_shapes(copy, inputs)
    return copy


def _measure(model: nn.Module, graph_module: fx.GraphModule, inputs: Tuple[Any, ...], traced: str) -> ModelCost:
    memory = feature_memory(graph_module.graph)
    scopes: Dict[fx.Node, str] = {}
    attributed: Set[int] = set()
    layers: List[LayerCost] = []
    uncounted: List[str] = []
    measured: List[str] = []
    for node in graph_module.graph.nodes:
        scopes[node] = _scope(node, scopes)
        if node.op not in CALL_OPS:
            continue
        module = graph_module.get_submodule(node.target) if node.op == "call_module" else None
        call = _op_call(node, module)
        rule = find_rule(call.target)
        params = _new_parameters(node, module, graph_module, attributed)
        if module is not None and rule is None and params:
            inside = _look_inside(module, call)
            if inside is not None:
                layers += [_prefixed(layer, node.target) for layer in inside.layers]
                uncounted += [f"{node.target}.{name}" for name in inside.uncounted]
                measured += [f"{node.target}.{name}" for name in inside.measured]
                continue
        layer = _layer(node, module, call, rule, params, memory, scopes[node])
        if rule is None and needs_measuring(node, module, params):
            macs = measured_macs(call)
            if macs is None:
                uncounted.append(f"{layer.name} ({layer.op})")
            else:
                measured.append(layer.name)
                layer = dataclasses.replace(layer, macs=macs, remark=MEASURED)
        if layer.output_shapes or layer.macs or layer.params:
            layers.append(layer)
    peak_node = memory.peak_node
    return ModelCost(
        model=type(model).__name__,
        input_shapes=[tuple(x.shape) for x in inputs if isinstance(x, torch.Tensor)],
        traced=traced,
        macs=sum(layer.macs for layer in layers),
        params=sum(p.numel() for p in model.parameters()),
        activation_bytes=sum(layer.activation_bytes for layer in layers),
        peak_activation_bytes=memory.peak,
        peak_at=_node_label(peak_node) if peak_node is not None else "",
        layers=layers,
        uncounted=uncounted,
        measured=measured,
        module_types=_module_types(model, graph_module))


def _op_call(node: fx.Node, module: Optional[nn.Module]) -> OpCall:
    args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda arg: arg.meta.get("val"))
    if node.op == "call_module":
        target = module
    elif node.op == "call_method":
        target = getattr(torch.Tensor, node.target, node.target)
    else:
        target = node.target
    return OpCall(target, tuple(args), dict(kwargs), node.meta.get("val"))


def _layer(node: fx.Node, module: Optional[nn.Module], call: OpCall, rule: Any, params: int,
           memory: FeatureMemory, scope: str) -> LayerCost:
    alpha_in, alpha_out = _alphas(module)
    return LayerCost(
        name=_node_label(node), scope=scope, op=_op_name(node, module),
        output_shapes=[tuple(t.shape) for t in tensors_in(call.output)],
        params=params, macs=int(rule.macs(call)) if rule is not None else 0,
        activation_bytes=memory.allocated.get(node, 0),
        alpha_in=alpha_in, alpha_out=alpha_out, remark=rule.remark if rule is not None else "")


def _node_label(node: fx.Node) -> str:
    """The qualified module name for a module call, the node name otherwise."""
    return str(node.target) if node.op == "call_module" else node.name


def _op_name(node: fx.Node, module: Optional[nn.Module]) -> str:
    if module is not None:
        return type(module).__name__
    if node.op == "call_method":
        return str(node.target)
    return getattr(node.target, "__name__", str(node.target))


def _alphas(module: Optional[nn.Module]) -> Tuple[Optional[float], Optional[float]]:
    """A module's ``alpha_in`` / ``alpha_out`` (octave layers), 0/0 for a plain Conv2d, else blank."""
    if hasattr(module, "alpha_in") and hasattr(module, "alpha_out"):
        return float(module.alpha_in), float(module.alpha_out)
    if isinstance(module, nn.Conv2d):
        return 0.0, 0.0
    return None, None


def _scope(node: fx.Node, scopes: Dict[fx.Node, str]) -> str:
    """The module a node belongs to: a module call's parent, a function's recorded module
    stack or, where the graph has none (a rewritten graph), its first input's scope."""
    if node.op == "call_module":
        return str(node.target).rpartition(".")[0]
    stack = node.meta.get("nn_module_stack")
    if stack:
        key, value = next(reversed(stack.items()))
        return value[0] if isinstance(value, tuple) else key
    for arg in node.all_input_nodes:
        return scopes.get(arg, "")
    return ""


def _new_parameters(node: fx.Node, module: Optional[nn.Module], graph_module: fx.GraphModule,
                    attributed: Set[int]) -> int:
    """Parameters the node uses (its module's, or the ones it reads directly) not already in an earlier row."""
    if module is not None:
        tensors = list(module.parameters())
    else:
        tensors = [graph_module.get_parameter(arg.target) for arg in node.all_input_nodes
                   if arg.op == "get_attr" and _is_parameter(graph_module, arg.target)]
    fresh = [t for t in tensors if id(t) not in attributed]
    attributed.update(id(t) for t in fresh)
    return sum(t.numel() for t in fresh)


def _is_parameter(graph_module: fx.GraphModule, target: str) -> bool:
    try:
        graph_module.get_parameter(target)
        return True
    except AttributeError:
        return False


def _look_inside(module: nn.Module, call: OpCall) -> Optional[ModelCost]:
    """Cost a leaf module that no rule covers by tracing it on its own; None if that fails."""
    if call.kwargs or not all(isinstance(arg, torch.Tensor) for arg in call.args) \
            or next(module.children(), None) is None:
        return None
    reference = next(module.parameters())
    inputs = tuple(torch.zeros(arg.shape, dtype=arg.dtype, device=reference.device) for arg in call.args)
    try:
        return cost(module, example_inputs=inputs)
    except Exception:  # not traceable on its own either: listed as uncounted
        return None


def _prefixed(layer: LayerCost, prefix: str) -> LayerCost:
    scope = f"{prefix}.{layer.scope}" if layer.scope else prefix
    return dataclasses.replace(layer, name=f"{prefix}.{layer.name}", scope=scope)


def _module_types(model: nn.Module, graph_module: fx.GraphModule) -> Dict[str, str]:
    """Qualified name -> class name, from the traced module stacks and the model (for group lines)."""
    types: Dict[str, str] = {}
    for node in graph_module.graph.nodes:
        for key, value in (node.meta.get("nn_module_stack") or {}).items():
            path, cls = value if isinstance(value, tuple) else (key, value)
            types[path] = getattr(cls, "__name__", str(cls))
    for name, module in model.named_modules():
        if type(module) is not nn.Module:
            types.setdefault(name, type(module).__name__)
    return types
