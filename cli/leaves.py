"""``--leaf`` values -> octify's ``leaf_modules``: submodule names or nn.Module classes."""
from __future__ import annotations

from typing import List, Sequence

from torch import nn

from octify.capture import resolve_leaf_modules
from octify.capture.tracer import LeafSpec

from .errors import UsageError


def resolve_leaves(model: nn.Module, values: Sequence[str]) -> List[LeafSpec]:
    """What each ``--leaf`` value names in ``model`` (see ``octify.capture.resolve_leaf_modules``)."""
    try:
        return resolve_leaf_modules(model, values, option="--leaf")
    except ValueError as error:
        raise UsageError(str(error)) from error
