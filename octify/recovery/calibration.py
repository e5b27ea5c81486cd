"""``calibrate``: re-estimate the BatchNorm statistics of a (converted) network from unlabelled inputs."""
from __future__ import annotations

import copy
import warnings
from typing import Iterator, List, Optional, Union

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..capture.capture import eval_mode
from ..layers.branchwise import OctBatchNormFunction
from .data import Data, batches
from ..devices import device_of


def calibrate(module: nn.Module, data: Data, *, batches: Optional[int] = None,
              device: Union[str, torch.device, None] = None, inplace: bool = False) -> nn.Module:
    """Re-estimate every BatchNorm's running mean and variance from ``data``; returns the calibrated module.

    Each BatchNorm (``nn.BatchNorm2d`` and its subclasses such as timm's ``BatchNormAct2d``, the per-branch
    copies inside ``OctBatchNorm2d`` and ``PerBranch``) forgets its statistics and averages those of every
    batch, each batch counting equally (a cumulative average: ``momentum=None``). Everything else runs in
    eval mode (dropout and drop path off), under ``torch.no_grad()``; modes and momenta are restored after.
    Works on plain and converted modules.

    Args:
        data: a tensor ``(N, C, H, W)`` (split into batches of 32), or an iterable of tensors or of
            ``(input, ...)`` tuples (a ``DataLoader``); labels are ignored.
        batches: use at most this many batches (default: all).
        device: run there (the module is moved there); default: where the module's parameters are.
        inplace: calibrate ``module`` itself; by default a deep copy is calibrated and ``module`` is unchanged.
    Raises:
        ValueError: ``data`` is not one of the accepted forms, or gives no batch.
    """
    if not isinstance(module, nn.Module):
        raise ValueError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    target = module if inplace else copy.deepcopy(module)
    if device is not None:
        target.to(device)
    norms = batch_norms(target)
    _warn_about_fixed_batch_norms(target)
    if not norms:
        warnings.warn(f"{type(module).__name__} has no BatchNorm with running statistics: nothing to calibrate",
                      UserWarning, stacklevel=2)
        return target
    momenta = [norm.momentum for norm in norms]
    seen = 0
    with eval_mode(target), torch.no_grad():
        try:
            for norm in norms:
                norm.reset_running_stats()
                norm.momentum = None
                norm.train()
            for batch in _batches(data, batches, device_of(target)):
                target(batch)
                seen += 1
        finally:
            for norm, momentum in zip(norms, momenta):
                norm.momentum = momentum
    if not seen:
        raise ValueError("the data gave no batch to calibrate with")
    return target


def batch_norms(module: nn.Module) -> List[_BatchNorm]:
    """Every BatchNorm in ``module`` that keeps running statistics."""
    return [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats
            and m.running_mean is not None]


def _batches(data: Data, limit: Optional[int], device: torch.device) -> Iterator[torch.Tensor]:
    for batch in batches(data, limit, device):
        yield batch.input


def _warn_about_fixed_batch_norms(module: nn.Module) -> None:
    """Functional batch-norm calls whose training flag a traced graph holds as a constant cannot be re-estimated."""
    fixed: List[str] = []
    for name, part in module.named_modules():
        if isinstance(part, fx.GraphModule):
            for node in part.graph.nodes:
                functional = node.op == "call_function" and node.target is F.batch_norm
                per_branch = node.op == "call_module" and isinstance(part.get_submodule(node.target),
                                                                    OctBatchNormFunction)
                if functional or per_branch:
                    fixed.append(f"{name}.{node.name}".lstrip("."))
    if fixed:
        warnings.warn(f"{len(fixed)} functional batch_norm call(s) ({', '.join(fixed[:3])}"
                      f"{', ...' if len(fixed) > 3 else ''}) keep their statistics: the traced graph fixes whether "
                      "they update them; make their module a leaf (leaf_modules) when converting to calibrate them",
                      UserWarning, stacklevel=3)
