"""The command's work, step by step: load the model, convert, verify, save, export."""
from __future__ import annotations

import io
import json
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch

import octify
from octify.export import FORMATS, ExportError, check_available, export, save_code

from .checks import Comparison, compare_outputs
from .console import Console
from .data import read_inputs
from .errors import CommandError, UsageError
from .leaves import resolve_leaves
from .models import load_model
from .options import Request, model_name
from .recovery import hold_out, recover

MODULE_FILE = "model.pt"
REPORT_FILE = "report.json"
SCHEDULE_FILE = "schedule.toml"


@dataclass
class Outcome:
    report: str  # in the requested format
    has_octave_layers: bool  # whether any layer now computes with a low-frequency branch
    written: List[str] = field(default_factory=list)  # names in the output directory
    comparison: Optional[Comparison] = None
    failed_exports: Dict[str, ExportError] = field(default_factory=dict)  # format -> why; the rest is written
    recovery: Optional[Dict[str, Any]] = None  # --calibrate / --distill-steps: what was done, agreement after each
    recovery_lines: List[str] = field(default_factory=list)  # the same, to print
    tuning: str = ""  # what a tuning chose and measured, one line


def run(request: Request, folder: Path, console: Console) -> Outcome:
    """Convert the requested model and write every output into ``folder``; an export that fails is left out
    and recorded in the outcome."""
    schedule = _schedule(request)
    if request.tuning and request.tuning.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: torch finds no CUDA device here; measure on --device cpu")
    for format_name in request.exports:  # before any work
        try:
            check_available(format_name)
        except ExportError as error:
            raise CommandError(f"--export {format_name}: {error}") from None
    name = model_name(request.model)
    data = None
    if request.calibration_data is not None:
        with console.step("reading the inputs"):
            data = hold_out(read_inputs(request.calibration_data, request.input_shapes[0], request.normalize))
    with console.step("loading the model"):
        model = load_model(request.model)
    leaves = resolve_leaves(model, request.leaves)
    try:
        if request.tuning:
            half = torch.float16 if request.tuning.device == "cuda" else None  # autocast on a GPU
            conversion = octify.tune(model, **request.tuning.arguments(), dtype=half, progress=console.progress,
                                     leaf_modules=leaves, min_size=request.min_size, **_inputs(request.input_shapes))
        else:
            with console.step("converting"):
                conversion = octify.convert(model, schedule, leaf_modules=leaves, strided_high=request.strided_high,
                                            min_size=request.min_size,
                                            calibration_data=data.train if request.choose_channels else None,
                                            **_inputs(request.input_shapes))
    except octify.ConversionError as error:
        raise CommandError(f"cannot convert {name}: {error}") from error
    layers = conversion.report.converted.layers
    outcome = Outcome(format_report(conversion.report, request.report_format),
                      any(layer.alpha_in or layer.alpha_out for layer in layers), tuning=_tuning_line(conversion))
    if data is not None:
        outcome.recovery, outcome.recovery_lines = recover(model, conversion.module, data, request.distill_steps,
                                                           request.reconstruct, console, request.distill_lr,
                                                           request.refine_steps)
    if request.verify:
        with console.step("verifying"):
            examples = [torch.randn_like(x) for x in conversion.example_inputs]
            outcome.comparison = compare_outputs(model, conversion.module, examples)
    with console.step("saving"):
        outcome.written = save(conversion, folder, name, outcome.recovery)
    for format_name in request.exports:
        file_name = FORMATS[format_name][0]
        with console.step(f"exporting to {format_name}"), _printing_hidden(not request.debug):
            try:
                export(conversion.module, conversion.example_inputs, format_name, folder / file_name)
            except ExportError as error:
                outcome.failed_exports[format_name] = error
                continue
        outcome.written.append(file_name)
    return outcome


@contextmanager
def _printing_hidden(hidden: bool) -> Iterator[None]:
    """What the block prints on stdout or stderr (an exporter's graph dumps) is dropped when ``hidden``."""
    if not hidden:
        yield
        return
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        yield


def save(conversion: octify.Conversion, folder: Path, name: str,
         recovery: Optional[Dict[str, Any]] = None) -> List[str]:
    """The module (``torch.save``), its code as a package that loads its weights from that file, the report
    as JSON (with ``recovery`` under that key), and a tuning's schedule; returns the names written."""
    package = code_package_name(name)
    torch.save(conversion.module, folder / MODULE_FILE)
    save_code(conversion.module, folder / package, class_name(conversion.module), f"../{MODULE_FILE}")
    report = conversion.report.to_dict()
    if recovery is not None:
        report["recovery"] = recovery
    (folder / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if conversion.tuning is None:
        return [MODULE_FILE, f"{package}/", REPORT_FILE]
    conversion.tuning.write_schedule(folder / SCHEDULE_FILE)
    return [MODULE_FILE, f"{package}/", REPORT_FILE, SCHEDULE_FILE]


def _tuning_line(conversion: octify.Conversion) -> str:
    tuning = conversion.tuning
    if tuning is None:
        return ""
    octave = sum(1 for alpha in tuning.alphas.values() if alpha)
    latency = "" if tuning.measured_ratio is None else f", latency {tuning.measured_ratio:.3f} measured end to end" + (
        f" ({tuning.estimated_ratio:.3f} estimated from the layers)" if tuning.estimated_ratio is not None else "")
    return (f"tuned for {tuning.target} ({tuning.setting}): {octave} of {len(tuning.alphas)} layer groups octave, "
            f"MACs {tuning.macs_ratio:.3f}{latency} of the original's; the schedule is in {SCHEDULE_FILE}")


def format_report(report: octify.Report, report_format: str) -> str:
    return {"table": str, "json": octify.Report.to_json, "markdown": octify.Report.to_markdown,
            "csv": octify.Report.to_csv}[report_format](report)


def code_package_name(name: str) -> str:
    """An importable package name for the saved code: ``resnet18`` -> ``resnet18_octave``."""
    cleaned = "".join(c if c.isalnum() else "_" for c in name).strip("_") or "model"
    return f"{'m_' if cleaned[0].isdigit() else ''}{cleaned}_octave"


def class_name(module: torch.nn.Module) -> str:
    """The saved code's class: the original's class name with ``Octave`` appended (``ResNetOctave``)."""
    return f"{type(module).__name__}Octave"


def _inputs(shapes: Sequence[Tuple[int, ...]]) -> Dict[str, Any]:
    """``convert``'s arguments for the example inputs: one shape (random input of the model's dtype), or several."""
    if len(shapes) == 1:
        return {"input_shape": shapes[0]}
    return {"example_inputs": [torch.randn(shape) for shape in shapes]}


def _schedule(request: Request) -> Union[float, Dict[str, float]]:
    alpha: Union[float, Dict[str, float]] = request.schedule if request.schedule is not None \
        else 0.5 if request.alpha is None else request.alpha
    try:
        octify.Schedule(alpha)
    except ValueError as error:
        raise UsageError(f"--{'schedule' if request.schedule is not None else 'alpha'}: {error}") from error
    return alpha
