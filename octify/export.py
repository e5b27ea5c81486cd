"""Save a converted module as code, and export it to ONNX, TorchScript or ``torch.export``.

Exports are made in eval mode (the module's own modes are restored afterwards) for the
shapes of ``example_inputs``: TorchScript and ONNX record the sizes they were traced at,
and ``torch.export`` specializes to them. An export that cannot be made raises
:class:`ExportError`, whose message is the reason in one line, and leaves no file behind.
"""
from __future__ import annotations

import copy
import importlib
import importlib.util
import inspect
import os
import re
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import fx, nn

from .capture.capture import eval_mode

PathLike = Union[str, Path]
Inputs = Sequence[torch.Tensor]

ONNX_SINGLE_FILE_LIMIT = 2 ** 31 - 2 ** 27  # protobuf's 2 GiB limit, with room for the graph
REQUIRED_PACKAGES: Dict[str, Tuple[str, ...]] = {"onnx": ("onnx", "onnxscript")}
"""Export format name -> the packages it needs beyond torch (the ``export`` extra has them)."""
INSTALL_EXTRA = 'pip install "octify[export]"'
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
_CALL_SITE = re.compile(r'The following call raised this error:\s*File "([^"]+)", line (\d+), in \S+\s*\n\s*(\S.*)')
_TRACE_SAFE_SOURCES = tuple(os.path.join(os.path.dirname(os.path.abspath(package)), "")
                            for package in (__file__, torch.__file__))  # octify's and torch's folders


class ExportError(RuntimeError):
    """An export could not be made; the message says why in one line (the full error is its ``__cause__``)."""


def check_available(format_name: str) -> None:
    """ExportError naming the install command if ``format_name`` needs packages that are not installed."""
    missing = [name for name in REQUIRED_PACKAGES.get(format_name, ()) if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"exporting to {format_name} needs {' and '.join(missing)}, not installed: "
                          f"{INSTALL_EXTRA}")


def export_onnx(module: nn.Module, example_inputs: Inputs, path: PathLike) -> None:
    """ONNX through ``torch.export`` (the dynamo exporter, given the exported program: one attempt, which fails
    with ``torch.export``'s own reason); weights go in a ``.data`` file only above 2 GiB."""
    check_available("onnx")
    weight_bytes = sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
    with _failure_explained(path), eval_mode(module):
        program = torch.export.export(module, tuple(example_inputs))
        torch.onnx.export(program, tuple(example_inputs), str(path), dynamo=True, verbose=False,
                          external_data=weight_bytes > ONNX_SINGLE_FILE_LIMIT)


def export_torchscript(module: nn.Module, example_inputs: Inputs, path: PathLike) -> None:
    """``torch.jit.trace`` (``torch.jit.script`` does not compile octify's layers); load with ``torch.jit.load``.

    Outputs may be tensors, tuples, lists or dicts. Tracing records operations, not Python
    decisions: sizes become constants (expected, see above), and a decision on tensor values
    (``if x.mean() > 0:`` in a module octify kept as it is) would be frozen to the example's
    branch, so that is an ExportError naming the line.
    """
    with _failure_explained(path), eval_mode(module), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
        traced = torch.jit.trace(module, tuple(example_inputs), check_trace=False, strict=False)
        frozen = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning) and _is_model_code(w.filename)]
        if frozen:
            raise ExportError(f"torch.jit.trace cannot follow the decision at {frozen[0].filename}:{frozen[0].lineno} "
                              f"({str(frozen[0].message).split('.')[0]}): the TorchScript module would always do "
                              "what the example input made it do")
        torch.jit.save(traced, str(path))


def export_program(module: nn.Module, example_inputs: Inputs, path: PathLike) -> None:
    """An ``ExportedProgram`` saved with ``torch.export.save``; load with ``torch.export.load(path).module()``."""
    with _failure_explained(path):
        with eval_mode(module):
            program = torch.export.export(module, tuple(example_inputs))
        torch.export.save(program, str(path))


@contextmanager
def _failure_explained(path: PathLike) -> Iterator[None]:
    """Any failure becomes an ExportError with the root cause in one line; a file it left at ``path`` is removed."""
    existed = os.path.exists(path)
    try:
        yield
    except Exception as error:
        if not existed and os.path.exists(path):
            os.remove(path)
        if isinstance(error, ExportError):
            raise
        raise ExportError(_reason(error)) from error


def _reason(error: BaseException) -> str:
    """The innermost cause's first line, without colour codes, and the model's line that raised it if known."""
    while error.__cause__ is not None:
        error = error.__cause__
    text = _ANSI_ESCAPE.sub("", str(error))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reason = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    call = _CALL_SITE.search(text)
    return f"{reason} (at {call.group(1)}:{call.group(2)}: {call.group(3).strip()})" if call else reason


def _is_model_code(filename: str) -> bool:
    """Code outside torch, octify and fx's generated forwards (whose decisions are all on sizes)."""
    return not filename.startswith("<") and not os.path.abspath(filename).startswith(_TRACE_SAFE_SOURCES)


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
    check_available(format_name)
    FORMATS[format_name][1](module, example_inputs, path)


def save_code(module: fx.GraphModule, folder: PathLike, class_name: str, weights_file: Optional[str] = None) -> None:
    """Write ``module`` as a Python package: ``from <folder> import <class_name>``.

    This is ``GraphModule.to_folder`` made relocatable and complete: the package finds its
    files next to its own code (not under the path it was written to), and imports the
    functions the graph calls outside torch (octify's octave functions among them). The
    weights are stored once: in the package's ``state_dict.pt``, or, with ``weights_file``
    (a path relative to ``folder``), taken from that file, ``module`` saved by ``torch.save``
    (the command line's ``model.pt``, next to the package). The modules the code cannot
    construct are pickled without their weights. Loading it needs octify installed, since
    its layers are octify modules.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "saved as pickled files instead": octify's layers are
        _without_weights(module).to_folder(folder, class_name)
    state_file = folder / "state_dict.pt"
    loading = "self.load_state_dict(torch.load(_HERE + r'/state_dict.pt'))"
    if weights_file is None:
        torch.save(module.state_dict(), state_file)
        weights = "torch.load(os.path.join(_HERE, 'state_dict.pt'))"
    else:
        state_file.unlink()
        weights = f"torch.load(os.path.join(_HERE, {weights_file!r}), weights_only=False).state_dict()"
    code_file = folder / "module.py"
    code = code_file.read_text().replace(f"r'{folder}", "_HERE + r'")
    if loading not in code:
        raise RuntimeError(f"GraphModule.to_folder no longer loads weights with {loading!r}")
    code = code.replace(loading, f"self.load_state_dict({weights}, assign=True)  # the weights, stored once")
    header = ["import os", "_HERE = os.path.dirname(os.path.abspath(__file__))", *_global_imports(module)]
    code_file.write_text("\n".join(header) + "\n" + code)


def _without_weights(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose parameters and persistent buffers are empty (on the meta device)."""
    memo: Dict[int, torch.Tensor] = {}
    for tensor in module.state_dict(keep_vars=True).values():
        empty = torch.empty_like(tensor, device="meta")
        memo[id(tensor)] = nn.Parameter(empty, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else empty
    return copy.deepcopy(module, memo)


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


__all__ = ["FORMATS", "ExportError", "check_available", "eval_mode", "export", "export_onnx", "export_program",
           "export_torchscript", "save_code"]
