"""torch.fx tracing with user-extensible leaf modules, and a fallback that fixes shapes.

:class:`OctifyTracer` is torch.fx's symbolic tracer, plus: octify's own layers and any
user-named module types or qualified names are leaves, and a failure inside a submodule
is tagged with that submodule's name so the caller can make it a leaf and retry.

:class:`FixedShapeTracer` additionally evaluates every node on the example input as it
traces (for real, so that data-dependent leaves work; run it on a copy in eval mode), so
``x.shape``, ``x.size()`` and ``len(x)`` are concrete integers: models that branch on input
sizes still trace, and the graph is valid for that input size. Branching on tensor
*values* still fails, so that such a submodule becomes a leaf rather than a silent guess.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Sequence, Set, Tuple, Type, Union

import torch
from torch import fx, nn

from .. import layers

LeafSpec = Union[str, Type[nn.Module]]
_MODULE_CALL, _MODULE_GETATTR = nn.Module.__call__, nn.Module.__getattr__
OCTIFY_LEAVES: Tuple[Type[nn.Module], ...] = (layers.OctConv2d, layers.FunctionalOctConv2d, layers.OctConvTranspose2d,
                                              layers.OctBatchNorm2d, layers.Branchwise, layers.OctSplit,
                                              layers.OctMerge, layers.OctPool2d, layers.OctInterpolate,
                                              layers.PerBranch, layers.OctBatchNormFunction,
                                              layers.OctGroupNormFunction, layers.OctPReLUFunction,
                                              layers.PointwiseLinear, layers.ChannelLayerNorm, layers.ChannelsLast,
                                              layers.OctChannelLayerNorm)


def _torchvision_leaves() -> Tuple[Type[nn.Module], ...]:
    try:
        from torchvision.ops import StochasticDepth
    except ImportError:  # torchvision is optional for the tracer itself
        return ()
    return (StochasticDepth,)


def _timm_leaves() -> Tuple[Type[nn.Module], ...]:
    """timm modules whose forward a trace would fix: ``Conv2dSame`` pads by the input size at run
    time; norm + activation and drop path read ``self.training``. Leaves keep the graph general."""
    try:
        from timm.layers import BatchNormAct2d, Conv2dSame, DropPath, FrozenBatchNormAct2d
    except ImportError:  # timm is optional
        return ()
    return (Conv2dSame, BatchNormAct2d, FrozenBatchNormAct2d, DropPath)


class OctifyTracer(fx.Tracer):
    """Symbolic tracer whose leaves are torch.nn built-ins, octify layers and ``leaf_modules``."""

    def __init__(self, leaf_modules: Iterable[LeafSpec] = ()) -> None:
        super().__init__()
        specs = list(leaf_modules)
        self.leaf_types = (OCTIFY_LEAVES + _torchvision_leaves() + _timm_leaves()
                           + tuple(s for s in specs if isinstance(s, type)))
        self.leaf_names = {s for s in specs if isinstance(s, str)}

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, self.leaf_types) or module_qualified_name in self.leaf_names:
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: Tuple[Any, ...],
                    kwargs: Dict[str, Any]) -> Any:
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception as error:
            if not hasattr(error, "octify_module"):
                error.octify_module = self.path_of_module(m)
            raise


class _ConcreteProxy(fx.Proxy):
    """A proxy that answers shape questions with the value seen on the example input."""

    def _value(self) -> Any:
        return self.tracer.values[self.node]

    def __getattr__(self, name: str) -> Any:
        value = self.tracer.values.get(self.node)
        if isinstance(value, torch.Tensor) and name == "shape":
            return _RecordedShape(value.shape, self.tracer.size_reads, self.node)
        if isinstance(value, torch.Tensor) and name in ("ndim", "dtype", "device", "is_cuda"):
            return getattr(value, name)
        return super().__getattr__(name)

    def __len__(self) -> int:
        self.tracer.size_reads.add((self.node, 0))
        return len(self._value())


ALL_DIMS = None  # a read of the whole shape, in ``FixedShapeTracer.size_reads``


class _RecordedShape(tuple):
    """A traced tensor's shape that records which of its dimensions the model reads."""

    def __new__(cls, shape: torch.Size, reads: Set[Tuple[fx.Node, Optional[int]]], node: fx.Node) -> "_RecordedShape":
        recorded = super().__new__(cls, shape)
        recorded._reads, recorded._node = reads, node
        return recorded

    def _read(self, dims: Iterable[Optional[int]]) -> None:
        self._reads.update((self._node, d if d is None or d >= 0 else d + len(self)) for d in dims)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            self._read(range(len(self))[index])
            return torch.Size(tuple(self)[index])
        self._read([index])
        return tuple.__getitem__(self, index)

    def __iter__(self) -> Iterator[int]:
        self._read([ALL_DIMS])
        return tuple.__iter__(self)

    def __eq__(self, other: object) -> bool:
        self._read([ALL_DIMS])
        return tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = tuple.__hash__

    def numel(self) -> int:
        return torch.Size(self).numel()


class FixedShapeTracer(OctifyTracer):
    """Traces while evaluating each node on the example input, so sizes are concrete integers."""

    CONCRETE_METHODS = frozenset({"size", "dim", "numel", "nelement", "ndimension"})

    def __init__(self, example_inputs: Sequence[torch.Tensor], leaf_modules: Iterable[LeafSpec] = ()) -> None:
        super().__init__(leaf_modules)
        self.example_inputs = list(example_inputs)
        self.values: Dict[fx.Node, Any] = {}
        self.size_reads: Set[Tuple[fx.Node, Optional[int]]] = set()
        self._placeholders = 0
        self._evaluating = False

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: Tuple[Any, ...],
                    kwargs: Dict[str, Any]) -> Any:
        if self._evaluating:  # a module called while computing a value: just run it
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _ConcreteProxy(node, self)

    def create_proxy(self, kind: str, target: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any],
                     name: Optional[str] = None, type_expr: Any = None, proxy_factory_fn: Any = None) -> Any:
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr, proxy_factory_fn)
        value = self._evaluate(proxy.node)
        self.values[proxy.node] = value
        if kind == "call_method" and target in self.CONCRETE_METHODS:
            self._record_size_read(target, args)
            self.graph.erase_node(proxy.node)
            return value
        return proxy

    def _record_size_read(self, method: str, args: Tuple[Any, ...]) -> None:
        source = args[0].node
        if method in ("dim", "ndimension"):
            return
        dim = args[1] if method == "size" and len(args) > 1 else ALL_DIMS
        ndim = self.values[source].ndim
        self.size_reads.add((source, dim if dim is None or dim >= 0 else dim + ndim))

    def fixed_dims(self) -> Tuple[Tuple[int, ...], ...]:
        """For each input, the dimensions whose sizes the traced graph depends on.

        A read of an input's own size fixes that dimension. A read of an intermediate
        tensor's size is traced back conservatively: its batch dimension to every input's
        batch dimension, any other to every input's non-batch dimensions.
        """
        placeholders = [n for n in self.graph.nodes if n.op == "placeholder"]
        ndims = [x.ndim if isinstance(x, torch.Tensor) else 0 for x in self.example_inputs]
        fixed = [set() for _ in placeholders]
        for node, dim in self.size_reads:
            if node in placeholders:
                index = placeholders.index(node)
                fixed[index].update(range(ndims[index]) if dim is None else {dim})
                continue
            for index, ndim in enumerate(ndims[:len(placeholders)]):
                fixed[index].update(range(ndim) if dim is None else ({0} if dim == 0 else range(1, ndim)))
        return tuple(tuple(sorted(dims)) for dims in fixed)

    def iter(self, obj: fx.Proxy) -> Iterable[Any]:
        return iter([obj[i] for i in range(len(self.values[obj.node]))])

    def _evaluate(self, node: fx.Node) -> Any:
        if node.op == "placeholder":
            index = self._placeholders
            self._placeholders += 1
            return self.example_inputs[index] if index < len(self.example_inputs) else None
        if node.op == "get_attr":
            return self._attribute(node)
        args, kwargs = fx.node.map_arg(
            (node.args, node.kwargs), lambda n: self.values[n] if n in self.values else self._attribute(n))
        self._evaluating = True
        patched = nn.Module.__call__, nn.Module.__getattr__
        nn.Module.__call__, nn.Module.__getattr__ = _MODULE_CALL, _MODULE_GETATTR  # tracing's patches off
        try:
            with torch.no_grad():
                if node.op == "call_function":
                    return node.target(*args, **kwargs)
                if node.op == "call_method":
                    self_value, *rest = args
                    return getattr(self_value, node.target)(*rest, **kwargs)
                return self.root.get_submodule(node.target)(*args, **kwargs)
        finally:
            nn.Module.__call__, nn.Module.__getattr__ = patched
            self._evaluating = False

    def _attribute(self, node: fx.Node) -> Any:
        """Resolve a get_attr target without the tracer's patched ``Module.__getattr__``."""
        value: Any = self.root
        for part in str(node.target).split("."):
            if isinstance(value, nn.Module):
                for store in (value.__dict__, value._parameters, value._buffers, value._modules):
                    if part in store:
                        value = store[part]
                        break
                else:
                    value = object.__getattribute__(value, part)
            else:
                value = getattr(value, part)
        return value


def trace(model: nn.Module, tracer: OctifyTracer) -> fx.GraphModule:
    """Trace ``model`` with ``tracer`` into a GraphModule that keeps the model's submodule names.

    While tracing, ``torch.compiler.is_compiling()`` answers True, as under ``torch.compile``:
    models skip the run-time checks that they skip for any graph capture (an input-size
    check that reads ``x.shape`` would otherwise fix the graph to the example's size).
    """
    with _capturing_a_graph():
        graph = tracer.trace(model)
    name = type(model).__name__
    return fx.GraphModule(tracer.root, graph, name)


@contextmanager
def _capturing_a_graph() -> Iterator[None]:
    is_compiling = torch.compiler.is_compiling
    torch.compiler.is_compiling = lambda: True
    try:
        yield
    finally:
        torch.compiler.is_compiling = is_compiling


__all__ = ["FixedShapeTracer", "LeafSpec", "OctifyTracer", "trace"]
