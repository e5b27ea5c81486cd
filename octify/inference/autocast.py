"""Running a module under ``torch.autocast``: half-precision convolutions with float32 where it matters."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

AUTOCAST_DTYPES = (torch.float16, torch.bfloat16)


def check_autocast_dtype(dtype: object) -> None:
    """ValueError unless ``dtype`` is a half-precision type autocast runs with."""
    if dtype not in AUTOCAST_DTYPES:
        raise ValueError(f"dtype must be torch.float16 or torch.bfloat16 (autocast), or None for float32; "
                         f"got {dtype}")


class Autocast(nn.Module):
    """Calls ``module`` under ``torch.autocast`` with ``dtype`` on the device its parameters are on."""

    def __init__(self, module: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        check_autocast_dtype(dtype)
        self.module, self.dtype = module, dtype

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        parameter = next(self.module.parameters(), None)
        device_type = parameter.device.type if parameter is not None else "cpu"
        with torch.autocast(device_type, dtype=self.dtype):
            return self.module(*args, **kwargs)
