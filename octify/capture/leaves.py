"""``leaf_modules``: which submodules stay as they are, named by the user."""
from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Iterable, List, Optional, Type

from torch import nn

from .tracer import LeafSpec


def resolve_leaf_modules(model: nn.Module, specs: Iterable[LeafSpec], option: str = "leaf_modules") -> List[LeafSpec]:
    """The leaves ``specs`` name in ``model``: ValueError, with suggestions, for one that names nothing.

    Each spec is an ``nn.Module`` class, or a string that is, in this order of preference: a
    qualified submodule name (``layer4.0``); the name or dotted path of a class the model
    uses (``BasicBlock``, ``torchvision.models.resnet.BasicBlock``); or an importable
    ``nn.Module`` class. ``option`` is how the messages name the argument.
    """
    names = [name for name, _ in model.named_modules() if name]
    used_classes = {type(m) for m in model.modules()}
    leaves: List[LeafSpec] = []
    for spec in specs:
        if inspect.isclass(spec) and issubclass(spec, nn.Module):
            leaves.append(spec)
            continue
        if not isinstance(spec, str):
            raise ValueError(f"{option}: expected submodule names or nn.Module classes, got {spec!r}")
        if spec in names:
            leaves.append(spec)
            continue
        classes = [c for c in used_classes if spec in (c.__name__, f"{c.__module__}.{c.__qualname__}")]
        classes = classes or [c for c in [_import_class(spec)] if c is not None]
        if not classes:
            close = difflib.get_close_matches(spec, names + [c.__name__ for c in used_classes], n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise ValueError(f"{option} {spec!r}: the model has no submodule or module class of that name, "
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


__all__ = ["resolve_leaf_modules"]
