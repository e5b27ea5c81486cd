"""octify: turn a CNN into an Octave Convolution network automatically.

The names below load on first use, so that ``import octify`` (and the ``octify`` command's
option parsing) does not import torch until something needs it.
"""
import sys
from importlib import import_module
from types import ModuleType
from typing import TYPE_CHECKING, Any, List

__version__ = "0.1.0"

_LOCATIONS = {
    "Branchwise": ".layers", "ChannelSplit": ".layers", "OctBatchNorm2d": ".layers", "OctConv2d": ".layers",
    "OctConvTranspose2d": ".layers", "OctMerge": ".layers", "OctSplit": ".layers", "downsample": ".layers",
    "upsample_to": ".layers",
    "Conversion": ".convert", "convert": ".convert", "ConversionError": ".errors", "InternalError": ".errors",
    "for_inference": ".inference", "calibrate": ".recovery", "distill": ".recovery",
    "DistillationLoss": ".recovery", "DistillResult": ".recovery", "reconstruct": ".recovery",
    "Reconstruction": ".recovery", "refine": ".recovery", "Refinement": ".recovery",
    "Schedule": ".plan", "ModelCost": ".report", "Report": ".report", "cost": ".report",
    "tune": ".tuning", "Tuning": ".tuning",
}
_SUBMODULES = ("export",)

__all__ = ["Conversion", "ConversionError", "InternalError", "Schedule", "convert", "Branchwise", "ChannelSplit", "OctBatchNorm2d", "OctConv2d", "OctConvTranspose2d", "OctMerge", "OctSplit",
           "downsample", "upsample_to", "__version__", "ModelCost", "Report", "cost", "for_inference",
           "calibrate", "distill", "DistillationLoss", "DistillResult", "reconstruct", "Reconstruction", "refine",
           "Refinement", "tune",
           "Tuning"]

if TYPE_CHECKING:
    from . import export
    from .convert import Conversion, convert
    from .errors import ConversionError, InternalError
    from .inference import for_inference
    from .layers import (Branchwise, ChannelSplit, OctBatchNorm2d, OctConv2d, OctConvTranspose2d, OctMerge, OctSplit,
                         downsample, upsample_to)
    from .plan import Schedule
    from .recovery import (DistillationLoss, DistillResult, Reconstruction, Refinement, calibrate, distill,
                           reconstruct, refine)
    from .report import ModelCost, Report, cost
    from .tuning import Tuning, tune


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return import_module(f".{name}", __name__)
    if name not in _LOCATIONS:
        raise AttributeError(f"module 'octify' has no attribute {name!r}")
    value = getattr(import_module(_LOCATIONS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_LOCATIONS) | set(_SUBMODULES))


class _Package(ModuleType):
    """``octify.convert`` stays the function when its submodule, ``octify/convert.py``, is first imported
    (the import system then sets the package's attribute of that name to the submodule)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, ModuleType) and _LOCATIONS.get(name) == f".{name}":
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
