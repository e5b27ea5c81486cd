"""The parsed command line, and the option values that need more than a type.

Nothing here imports torch, so a wrong command line fails at once.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from .errors import UsageError

EXPORT_FORMATS = ("onnx", "torchscript", "torch.export")  # the keys of octify.export.FORMATS
REPORT_FORMATS = ("table", "json", "markdown", "csv")
MODEL_LIBRARIES = ("torchvision", "timm", "smp")  # MODEL prefixes: torchvision:NAME, timm:NAME, smp:ARCH[:ENCODER]
DEFAULT_INPUT_SHAPE = (1, 3, 224, 224)
DEVICES = ("cpu", "cuda")  # octify.tuning.measure.DEVICES


@dataclass
class Request:
    """What the command line asks for."""

    model: str
    alpha: Optional[float] = None
    schedule: Optional[Dict[str, float]] = None
    input_shapes: Tuple[Tuple[int, ...], ...] = (DEFAULT_INPUT_SHAPE,)  # one per model input, in order
    leaves: Sequence[str] = ()
    verify: bool = False
    exports: Sequence[str] = ()
    report_format: str = "table"
    debug: bool = False  # tracebacks, and everything torch prints and warns
    calibration_data: Optional[Path] = None  # --calibrate PATH: a folder of images or a .pt tensor
    distill_steps: int = 0
    normalize: bool = True  # ImageNet normalization of images read for --calibrate
    tuning: Optional["TuneRequest"] = None  # alphas chosen by measurement instead of --alpha / --schedule
    choose_channels: bool = False  # --choose-channels: low channels chosen from the --calibrate inputs
    reconstruct: bool = False  # --reconstruct: octave layers fitted to the original on the --calibrate inputs
    strided_high: bool = False  # --strided-high: strided layers keep the original strided high path
    min_size: Union[int, str] = "auto"  # --min-size: maps smaller than this many pixels stay plain
    distill_lr: Optional[float] = None  # --distill-lr: the learning rate of --distill-steps (None: octify.distill's)
    refine_steps: int = 0  # --refine-steps: steps per block of octify.refine on the --calibrate inputs


def check_recovery(request: Request) -> None:
    """UsageError for --calibrate / --distill-steps values that cannot work, before any work."""
    if request.distill_steps and request.calibration_data is None:
        raise UsageError("--distill-steps needs --calibrate PATH: the inputs to distil with")
    if request.distill_lr is not None and not request.distill_steps:
        raise UsageError("--distill-lr needs --distill-steps N: the steps it is the learning rate of")
    for option, asked in (("--choose-channels", request.choose_channels), ("--reconstruct", request.reconstruct),
                          ("--refine-steps", request.refine_steps)):
        if asked and request.calibration_data is None:
            raise UsageError(f"{option} needs --calibrate PATH: the inputs it learns from")
    for option, asked in (("--choose-channels", request.choose_channels), ("--strided-high", request.strided_high)):
        if asked and request.tuning is not None:
            raise UsageError(f"{option} works with --alpha or --schedule, not with a tuning target")
    if request.calibration_data is None:
        return
    if len(request.input_shapes) != 1:
        raise UsageError("--calibrate works with a model of one input (one --input-shape)")
    from .data import check_data_path
    check_data_path(request.calibration_data)


@dataclass
class TuneRequest:
    """A tuning target and how to measure it: ``octify.tune``'s arguments."""

    target_macs: Optional[float] = None
    target_latency: Optional[float] = None
    fastest: bool = False
    batch_size: int = 1
    device: str = "cpu"
    measure: bool = True

    def arguments(self) -> Dict[str, Any]:
        return {"target_macs": self.target_macs, "target_latency": self.target_latency, "fastest": self.fastest,
                "batch_size": self.batch_size, "device": self.device, "measure": self.measure}


def parse_tuning(target_macs: Optional[float], target_latency: Optional[float], fastest: bool,
                 batch_size: Optional[int], device: Optional[str], no_measure: bool,
                 alpha_given: bool) -> Optional[TuneRequest]:
    """The tuning the options ask for (None: none), or a UsageError saying which options do not go together."""
    targets = [name for name, given in (("--target-macs", target_macs is not None),
                                        ("--target-latency", target_latency is not None), ("--fastest", fastest))
               if given]
    measuring = [name for name, given in (("--batch-size", batch_size is not None), ("--device", device is not None),
                                          ("--no-measure", no_measure)) if given]
    if not targets:
        if measuring:
            raise UsageError(f"{measuring[0]} is for a tuning target: use it with --target-macs, --target-latency "
                             "or --fastest")
        return None
    if len(targets) > 1:
        raise UsageError(f"use one of --target-macs, --target-latency or --fastest, not {' and '.join(targets)}")
    if alpha_given:
        raise UsageError(f"{targets[0]} chooses the alphas by measurement: use it without --alpha or --schedule "
                         "(the schedule it chooses is saved as schedule.toml, which --schedule reads back)")
    for name, ratio in (("--target-macs", target_macs), ("--target-latency", target_latency)):
        if ratio is not None and not 0 < ratio <= 1:
            what = "MACs" if name == "--target-macs" else "measured latency"
            raise UsageError(f"{name} {ratio:g}: expected a ratio of the original's {what} in (0, 1], such as 0.5")
    if no_measure and targets[0] != "--target-macs":
        raise UsageError(f"--no-measure: only --target-macs can be met without measuring, not {targets[0]}")
    if no_measure and len(measuring) > 1:
        raise UsageError(f"--no-measure measures nothing: drop {[m for m in measuring if m != '--no-measure'][0]}")
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"--batch-size {batch_size}: expected a positive integer")
    return TuneRequest(target_macs, target_latency, fastest, batch_size or 1, device or "cpu", not no_measure)


def parse_min_size(text: str) -> Union[int, str]:
    """``--min-size``: ``auto`` or a positive number of pixels (``octify.convert``'s ``min_size``)."""
    if text == "auto":
        return text
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise UsageError(f"--min-size takes a positive number of pixels (maps smaller than it stay plain; the "
                     f"paper's rule is 8) or 'auto', got {text!r}")


def split_model_spec(spec: str) -> Tuple[str, Optional[str]]:
    """``"file.py:NAME"`` -> ``("file.py", "NAME")``; ``"file.py"`` -> ``("file.py", None)``;
    ``"smp:Unet:resnet18"`` -> ``("smp", "Unet:resnet18")`` (a model library's prefix ends at its colon)."""
    library, colon, name = spec.partition(":")
    if colon and library in MODEL_LIBRARIES:
        return library, name
    source, colon, attribute = spec.rpartition(":")
    return (source, attribute) if colon else (spec, None)


def model_name(spec: str) -> str:
    """The name of what MODEL names: ``NAME`` when given (``ARCH-ENCODER`` for smp), else the file's stem."""
    source, attribute = split_model_spec(spec)
    return attribute.replace(":", "-") if attribute else Path(source).stem


def parse_input_shapes(values: Sequence[str]) -> Tuple[Tuple[int, ...], ...]:
    """One shape per ``--input-shape`` value, in order; the default shape when there is none."""
    return tuple(parse_input_shape(value) for value in values) or (DEFAULT_INPUT_SHAPE,)


def parse_input_shape(text: str) -> Tuple[int, ...]:
    """``"1,3,224,224"`` -> ``(1, 3, 224, 224)``; every size a positive integer."""
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(size <= 0 for size in shape):
        raise UsageError(f"--input-shape {text!r}: expected positive integers separated by commas, "
                         "such as 1,3,224,224")
    return shape


def parse_exports(values: Iterable[str]) -> List[str]:
    """``("onnx,torchscript", "torch.export")`` -> the formats in order, each once."""
    formats: List[str] = []
    for value in values:
        for name in (part.strip() for part in value.split(",")):
            if name not in EXPORT_FORMATS:
                raise UsageError(f"--export {name!r}: choose from {', '.join(EXPORT_FORMATS)}")
            if name not in formats:
                formats.append(name)
    return formats


def read_schedule(path: Path) -> Dict[str, float]:
    """A schedule file (TOML or JSON, by extension): ``pattern -> alpha`` in file order."""
    language = {".toml": "TOML", ".json": "JSON"}.get(path.suffix.lower())
    if language is None:
        raise UsageError(f"--schedule {path}: expected a .toml or .json file")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise UsageError(f"--schedule {path}: cannot read it ({error.strerror or error})") from error
    rules = _parse(path, text, _toml_loads() if language == "TOML" else json.loads, language)
    if not isinstance(rules, dict) or not rules:
        raise UsageError(f"--schedule {path}: expected a non-empty mapping of pattern to alpha, "
                         'such as {"layer4.*": 0, "*": 0.5}')
    for pattern, alpha in rules.items():
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
            raise UsageError(f"--schedule {path}: the value of {pattern!r} must be a number, got {alpha!r} "
                             '(in TOML, quote patterns that contain dots: "layer1.0.conv1" = 0)')
    return rules


def _parse(path: Path, text: str, loads: Any, language: str) -> Any:
    try:
        return loads(text)
    except ValueError as error:  # json.JSONDecodeError and tomllib.TOMLDecodeError are ValueErrors
        raise UsageError(f"--schedule {path}: not valid {language} ({error})") from error


def _toml_loads() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib
        return tomllib.loads
    try:
        import tomli
    except ImportError:
        raise UsageError("TOML schedules need Python 3.11 or the tomli package; use a .json schedule") from None
    return tomli.loads
