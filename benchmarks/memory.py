"""Peak bytes of live tensors during a forward pass, measured at the dispatcher.

``torch`` allocations are invisible to ``tracemalloc``; a ``TorchDispatchMode`` sees every
tensor an operator returns. Bytes are counted per storage (views and in-place results add
nothing) from the first tensor on it until the last one is freed. Tensors that exist
before the pass (inputs, parameters, views of them) and temporaries inside one operator
are not counted.
"""
from __future__ import annotations

import weakref
from typing import Any, Dict, Iterable, Set

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class LiveTensorBytes(TorchDispatchMode):
    """Tracks the bytes held by tensors that operators created; ``peak`` is the high-water mark."""

    def __init__(self, ignore: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        self._ignored = {t.untyped_storage().data_ptr() for t in ignore}
        self.live = 0
        self.peak = 0
        self._holders: Dict[int, int] = {}  # storage address -> number of live tensors on it
        self._seen: Set[int] = set()  # ids of the live tensors already counted

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        result = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(result):
            if isinstance(tensor, torch.Tensor) and id(tensor) not in self._seen:
                self._track(tensor)
        return result

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        address, nbytes = storage.data_ptr(), storage.nbytes()
        if address in self._ignored:
            return
        if address not in self._holders:
            self._holders[address] = 0
            self.live += nbytes
            self.peak = max(self.peak, self.live)
        self._holders[address] += 1
        self._seen.add(id(tensor))
        weakref.finalize(tensor, self._release, id(tensor), address, nbytes)

    def _release(self, tensor_id: int, address: int, nbytes: int) -> None:
        self._seen.discard(tensor_id)
        self._holders[address] -= 1
        if not self._holders[address]:
            del self._holders[address]
            self.live -= nbytes


def peak_activation_bytes(module: nn.Module, *inputs: torch.Tensor) -> int:
    """Peak bytes of the tensors ``module(*inputs)`` creates (its output included), without gradients."""
    state = list(module.parameters()) + list(module.buffers()) + list(inputs)
    with torch.no_grad(), LiveTensorBytes(ignore=state) as mode:
        result = module(*inputs)
        peak = mode.peak
    del result
    return peak
