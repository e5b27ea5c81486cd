"""Calibration data: what the recovery functions accept as ``data`` and how they iterate it."""
from __future__ import annotations

from typing import Iterable, Iterator, Tuple, Union

import torch
from torch import Tensor

Batch = Union[Tensor, Tuple[Tensor, ...]]
Data = Union[Tensor, Iterable[Batch]]


def batches(data: Data, device: torch.device, batch_size: int = 16) -> Iterator[Tuple[Tensor, ...]]:
    """The model's positional inputs, batch by batch, on ``device``.

    ``data`` is a tensor of inputs (cut into batches of ``batch_size``), or an iterable of batches,
    each a tensor or a tuple of tensors (the model's inputs, in order). Raises ValueError for
    anything else, and for no data at all.
    """
    if isinstance(data, Tensor):
        data = data.split(batch_size) if data.ndim else [data]
    elif isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise ValueError(f"calibration data must be a tensor of inputs or an iterable of batches (tensors or tuples "
                         f"of tensors), got {type(data).__name__}")
    count = 0
    for index, batch in enumerate(data):
        inputs = tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
        if not inputs or not all(isinstance(x, Tensor) for x in inputs):
            raise ValueError(f"calibration batch {index} must be a tensor or a tuple of tensors (the model's inputs), "
                             f"got {type(batch).__name__}")
        count += 1
        yield tuple(x.to(device) for x in inputs)
    if not count:
        raise ValueError("calibration data is empty: give at least one batch of inputs")
