"""``--leaf`` values -> octify's ``leaf_modules``: submodule names or nn.Module classes."""
from __future__ import annotations

import difflib
import importlib
import inspect
from typing import List, Optional, Sequence, Type

from torch import nn

from octify.capture.tracer import LeafSpec

from .errors import UsageError


def resolve_leaves(model: nn.Module, values: Sequence[str]) -> List[LeafSpec]:
    """Each value is, in this order of preference: a qualified submodule name (``layer4.0``);
    the name or dotted path of a class the model uses (``BasicBlock``,
    ``torchvision.models.resnet.BasicBlock``); or an importable ``nn.Module`` class."""
    names = [name for name, _ in model.named_modules() if name]
    used_classes = {type(m) for m in model.modules()}
    leaves: List[LeafSpec] = []
    for value in values:
        if value in names:
            leaves.append(value)
            continue
        classes = [c for c in used_classes if value in (c.__name__, f"{c.__module__}.{c.__qualname__}")]
        classes = classes or [c for c in [_import_class(value)] if c is not None]
        if not classes:
            close = difflib.get_close_matches(value, names + [c.__name__ for c in used_classes], n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise UsageError(f"--leaf {value!r}: the model has no submodule or module class of that name, "
                             f"and it does not import as an nn.Module class{hint}")
        leaves.extend(classes)
    return leaves


def _import_class(path: str) -> Optional[Type[nn.Module]]:
    module_name, _, class_name = path.replace(":", ".").rpartition(".")
    if not module_name:
        return None
    try:
        found = getattr(importlib.import_module(module_name), class_name, None)
    except Exception:  # not an importable module path
        return None
    return found if inspect.isclass(found) and issubclass(found, nn.Module) else None
