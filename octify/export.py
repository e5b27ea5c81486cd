"""Save a converted module as code, and export it to ONNX, TorchScript or ``torch.export``.

Exports are made in eval mode (the module's own modes are restored afterwards) for the
shapes of ``example_inputs``: TorchScript and ONNX record the sizes they were traced at,
and ``torch.export`` specializes to them.
"""
from __future__ import annotations

import importlib
import inspect
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple, Union

import torch
from torch import fx, nn

from .capture.capture import eval_mode

PathLike = Union[str, Path]
Inputs = Sequence[torch.Tensor]

ONNX_SINGLE_FILE_LIMIT = 2 ** 31 - 2 ** 27  # protobuf's 2 GiB limit, with room for the graph


def export_onnx(module: nn.Module, example_inputs: Inputs, path: PathLike) -> None:
    """ONNX through ``torch.export`` (the dynamo exporter); weights go in a ``.data`` file only above 2 GiB."""
    weight_bytes = sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
    with eval_mode(module):
        torch.onnx.export(module, tuple(example_inputs), str(path), dynamo=True, verbose=False,
                          external_data=weight_bytes > ONNX_SINGLE_FILE_LIMIT)


def export_torchscript(module: nn.Module, example_inputs: Inputs, path: PathLike) -> None:
    """``torch.jit.trace`` (``torch.jit.script`` does not compile octify's layers); load with ``torch.jit.load``."""
    with eval_mode(module), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # sizes become constants: expected, see above
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
        traced = torch.jit.trace(module, tuple(example_inputs), check_trace=False)
        torch.jit.save(traced, str(path))


def export_program(module: nn.Module, example_inputs: Inputs, path: PathLike) -> None:
    """An ``ExportedProgram`` saved with ``torch.export.save``; load with ``torch.export.load(path).module()``."""
    with eval_mode(module):
        program = torch.export.export(module, tuple(example_inputs))
    torch.export.save(program, str(path))


Exporter = Callable[[nn.Module, Inputs, PathLike], None]
FORMATS: Dict[str, Tuple[str, Exporter]] = {
    "onnx": ("model.onnx", export_onnx),
    "torchscript": ("model.torchscript.pt", export_torchscript),
    "torch.export": ("model.pt2", export_program),
}
"""Export format name -> (conventional file name, function)."""


def export(module: nn.Module, example_inputs: Inputs, format_name: str, path: PathLike) -> None:
    """Export ``module`` in ``format_name`` (a key of :data:`FORMATS`) to ``path``."""
    if format_name not in FORMATS:
        raise ValueError(f"unknown export format {format_name!r}; choose from {', '.join(FORMATS)}")
    FORMATS[format_name][1](module, example_inputs, path)


def save_code(module: fx.GraphModule, folder: PathLike, class_name: str) -> None:
    """Write ``module`` as a Python package: ``from <folder> import <class_name>``.

    This is ``GraphModule.to_folder`` made relocatable and complete: the package finds its
    weight files next to its own code (not under the path it was written to), and imports
    the functions the graph calls outside torch (octify's octave functions among them).
    Loading it needs octify installed, since its layers are octify modules.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "saved as pickled files instead": octify's layers are
        module.to_folder(folder, class_name)
    code_file = folder / "module.py"
    code = code_file.read_text().replace(f"r'{folder}", "_HERE + r'")
    header = ["import os", "_HERE = os.path.dirname(os.path.abspath(__file__))", *_global_imports(module)]
    code_file.write_text("\n".join(header) + "\n" + code)


def _global_imports(module: fx.GraphModule) -> List[str]:
    """Import lines for the non-torch functions and classes the generated code refers to by name."""
    lines = []
    for name, value in module.graph.python_code(root_module="self").globals.items():
        origin, qualified = getattr(value, "__module__", None), getattr(value, "__qualname__", None)
        if inspect.ismodule(value) or not origin or origin == "builtins" or origin.split(".")[0] == "torch":
            continue  # to_folder's header covers these; torch functions are written as torch.<name>
        importable = qualified and "." not in qualified and getattr(importlib.import_module(origin), qualified, None)
        if importable is not value:
            raise ValueError(f"the graph calls {origin}.{qualified}, which cannot be imported by name")
        lines.append(f"from {origin} import {qualified} as {name}")
    return lines


__all__ = ["FORMATS", "eval_mode", "export", "export_onnx", "export_program", "export_torchscript", "save_code"]
