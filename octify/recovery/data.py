"""Unlabelled (or labelled) data in the forms ``calibrate`` and ``distill`` accept, as batches on a device."""
from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from typing import Any, Iterable, Iterator, Optional, Union

import torch
from torch import Tensor

DEFAULT_BATCH_SIZE = 32  # samples per batch when the data is one tensor

Data = Union[Tensor, Iterable[Any]]


@dataclass
class Batch:
    """One batch: the network ``input`` and, when the data carries them, class ``labels``."""

    input: Tensor
    labels: Optional[Tensor] = None


def batches(data: Data, limit: Optional[int] = None, device: Optional[torch.device] = None) -> Iterator[Batch]:
    """The batches of ``data``, at most ``limit`` of them, moved to ``device``.

    ``data`` is a tensor (split along its first dimension into batches of ``DEFAULT_BATCH_SIZE``), or an
    iterable (a list, a ``DataLoader``) of tensors or of ``(input, ...)`` tuples whose second element, if
    it is a 1-d integer tensor, is read as class labels.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"batches must be a positive integer or None, got {limit!r}")
    if isinstance(data, Tensor):
        if data.ndim < 2 or not len(data):
            raise ValueError(f"a data tensor must hold a batch of inputs (N, C, ...), got shape {tuple(data.shape)}")
        source: Iterable[Any] = data.split(DEFAULT_BATCH_SIZE)
    elif isinstance(data, (str, bytes, dict)) or not isinstance(data, Iterable):
        raise ValueError(f"data must be a tensor or an iterable of tensors or (input, ...) tuples, such as a "
                         f"DataLoader; got {type(data).__name__}")
    else:
        source = data
    for index, item in enumerate(islice(source, limit)):
        batch = _batch(item, index)
        if device is not None:
            batch = Batch(batch.input.to(device, non_blocking=True),
                          None if batch.labels is None else batch.labels.to(device, non_blocking=True))
        yield batch


def _batch(item: Any, index: int) -> Batch:
    if isinstance(item, (tuple, list)) and item:
        inputs, rest = item[0], item[1:]
    else:
        inputs, rest = item, ()
    if not isinstance(inputs, Tensor):
        raise ValueError(f"batch {index} of the data is a {type(item).__name__}; expected a tensor or an "
                         f"(input, ...) tuple whose first element is a tensor")
    labels = rest[0] if rest and isinstance(rest[0], Tensor) and rest[0].ndim == 1 \
        and not rest[0].is_floating_point() and len(rest[0]) == len(inputs) else None
    return Batch(inputs, labels)


def endless(data: Data, device: Optional[torch.device] = None) -> Iterator[Batch]:
    """The batches of ``data`` over and over (a tensor is shuffled before each pass)."""
    passes = 0
    while True:
        source = data[torch.randperm(len(data), device=data.device)] if isinstance(data, Tensor) and passes else data
        count = 0
        for batch in batches(source, None, device):
            count += 1
            yield batch
        if not count:
            raise ValueError("the data gave no batch" if not passes else
                             "the data gave no batch on its second pass (an iterator is read once): pass a tensor, "
                             "a list or a DataLoader")
        passes += 1
