"""Where a module lives."""
from __future__ import annotations

import torch
from torch import nn


def device_of(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter or buffer; the CPU for a module without any."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")
