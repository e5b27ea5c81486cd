"""Find the model a MODEL argument names.

- ``path/to/file.py``: the file is run as a Python module and must define exactly one of
  ``model`` (an ``nn.Module`` instance) or ``build_model()`` (returning one);
- ``path/to/file.py:NAME``: the attribute ``NAME`` of that file, an ``nn.Module`` or a
  callable (function or class) that returns one when called without arguments;
- ``torchvision:NAME``: ``torchvision.models.get_model(NAME, weights=None)``;
- ``timm:NAME``: ``timm.create_model(NAME, pretrained=False)``;
- ``smp:ARCH[:ENCODER]``: segmentation_models_pytorch's ``create_model(ARCH, ENCODER,
  encoder_weights=None)``, the encoder by default smp's own (resnet34);
- ``package.module:NAME``: the attribute ``NAME`` of an importable module, as for a file.

Running a model file is running its code, as ``python file.py`` would (its directory goes
on ``sys.path``), except that an ``if __name__ == "__main__":`` block does not run.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, List, NoReturn

from torch import nn

from .errors import CommandError, UsageError, describe
from .options import split_model_spec

CONVENTION = ("model", "build_model")
FORMS = ("path/to/file.py, path/to/file.py:NAME, torchvision:NAME, timm:NAME, smp:ARCH[:ENCODER] "
         "or package.module:NAME")
LIBRARY_EXAMPLES = {"torchvision": "torchvision:resnet18", "timm": "timm:resnet18",
                    "smp": "smp:Unet or smp:Unet:resnet18"}  # the keys are options.MODEL_LIBRARIES
INSTALL_ZOO = "pip install 'octify[zoo]'"


def load_model(spec: str) -> nn.Module:
    """The ``nn.Module`` that ``spec`` names (see the module docstring); UsageError or CommandError if none."""
    source, attribute = split_model_spec(spec)
    if source in LIBRARY_EXAMPLES:
        if not attribute:
            raise UsageError(f"MODEL {spec!r} needs a model name, such as {LIBRARY_EXAMPLES[source]}")
        return {"torchvision": _torchvision_model, "timm": _timm_model, "smp": _smp_model}[source](attribute)
    if source.endswith(".py"):
        namespace = _run_file(Path(source))
    elif attribute:
        namespace = _import_module(source)
    else:
        raise UsageError(f"MODEL {spec!r}: expected {FORMS}{_torchvision_hint(spec)}")
    if attribute:
        return _instantiate(_attribute(namespace, attribute, source), spec)
    return _by_convention(namespace, source)


def _torchvision_model(name: str) -> nn.Module:
    from torchvision import models
    available = models.list_models()
    if name not in available:
        _unknown("torchvision", name, available, "torchvision.models.list_models() lists them")
    builder = models.get_model_builder(name)
    no_download = {"weights_backbone": None} if "weights_backbone" in inspect.signature(builder).parameters else {}
    return models.get_model(name, weights=None, **no_download)


def _timm_model(name: str) -> nn.Module:
    timm = _import_zoo("timm")
    if not timm.is_model(name):
        _unknown("timm", name, timm.list_models(), "timm.list_models() lists them")
    return timm.create_model(name, pretrained=False)


def _smp_model(spec: str) -> nn.Module:
    """``ARCH`` or ``ARCH:ENCODER``: an untrained segmentation_models_pytorch model (nothing is downloaded)."""
    smp = _import_zoo("segmentation_models_pytorch")
    arch, _, encoder = spec.partition(":")
    architectures = smp.MODEL_ARCHITECTURES_MAPPING  # lower-case name -> class
    if arch.lower() not in architectures:
        names = [model.__name__ for model in architectures.values()]
        _unknown("segmentation_models_pytorch", arch, names, f"choose from {', '.join(names)}")
    if encoder:
        encoders = smp.encoders.get_encoder_names()
        is_timm_encoder = encoder.startswith("tu-") and _import_zoo("timm").is_model(encoder[3:])
        if encoder not in encoders and not is_timm_encoder:
            _unknown("segmentation_models_pytorch", encoder, encoders,
                     "segmentation_models_pytorch.encoders.get_encoder_names() lists them, "
                     "and tu-NAME takes timm's NAME", kind="encoder")
    options = {"encoder_name": encoder} if encoder else {}
    return architectures[arch.lower()](encoder_weights=None, **options)


def _import_zoo(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise UsageError(f"{name} is not installed: {INSTALL_ZOO} (or pip install {name.replace('_', '-')})") \
            from error


def _unknown(library: str, name: str, available: List[str], otherwise: str, kind: str = "model") -> NoReturn:
    close = difflib.get_close_matches(name, available, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}?" if close else otherwise
    raise UsageError(f"{library} has no {kind} {name!r}; {hint}")


def _torchvision_hint(spec: str) -> str:
    from torchvision import models
    return f" (for torchvision's model, torchvision:{spec})" if spec in models.list_models() else ""


def _run_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    name = re.sub(r"\W", "_", path.stem)
    if name in sys.modules or not name.isidentifier():  # never shadow an imported module
        name = f"octify_model_{name}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # classes defined in the file pickle by this module name
    sys.path.insert(0, str(path.resolve().parent))
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        del sys.modules[name]
        raise CommandError(f"{path}:{error.lineno}: syntax error: {error.msg}") from error
    except Exception as error:
        del sys.modules[name]
        raise CommandError(f"{path} raised {describe(error)} while running") from error
    return module


def _import_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name and (name == error.name or name.startswith(error.name + ".")):
            raise UsageError(f"cannot import {name!r}: no module {error.name!r} (is it installed or on PYTHONPATH?)") \
                from error
        raise CommandError(f"importing {name} raised {describe(error)}") from error
    except Exception as error:
        raise CommandError(f"importing {name} raised {describe(error)}") from error


def _attribute(namespace: ModuleType, name: str, where: str) -> Any:
    if not hasattr(namespace, name):
        close = difflib.get_close_matches(name, [n for n in vars(namespace) if not n.startswith("_")], n=3)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise UsageError(f"{where} has no attribute {name!r}{hint}")
    return getattr(namespace, name)


def _by_convention(namespace: ModuleType, where: str) -> nn.Module:
    found = [name for name in CONVENTION if name in vars(namespace)]
    if len(found) > 1:
        raise UsageError(f"{where} defines both `model` and `build_model`; "
                         f"choose one: {where}:model or {where}:build_model")
    if not found:
        others = _module_like_names(namespace)
        hint = f"; it defines {', '.join(others)}: choose one with {where}:NAME" if others \
            else f"; name one with {where}:NAME"
        raise UsageError(f"no model found in {where}: looked for a module-level `model` (an nn.Module) "
                         f"or a `build_model()` function{hint}")
    return _instantiate(getattr(namespace, found[0]), f"{where}:{found[0]}")


def _module_like_names(namespace: ModuleType) -> List[str]:
    """nn.Module instances and nn.Module classes defined at the top level of ``namespace``."""
    names = []
    for name, value in vars(namespace).items():
        is_own_class = inspect.isclass(value) and issubclass(value, nn.Module) \
            and value.__module__ == namespace.__name__
        if not name.startswith("_") and (isinstance(value, nn.Module) or is_own_class):
            names.append(name)
    return names


def _instantiate(value: Any, where: str) -> nn.Module:
    if isinstance(value, nn.Module):
        return value
    if not callable(value):
        raise UsageError(f"{where} is a {type(value).__name__}, not an nn.Module or a function returning one")
    try:
        built = value()
    except Exception as error:
        raise CommandError(f"{where}() raised {describe(error)}") from error
    if not isinstance(built, nn.Module):
        raise UsageError(f"{where}() returned a {type(built).__name__}, not an nn.Module")
    return built
