"""``octify MODEL [options]``: parse the command line, run the conversion, print the result.

Exit status: 0 done; 1 running failed (the model's code, the conversion, --verify, an
export (the other outputs are still written), writing); 2 the command line or something it
names is wrong; 130 interrupted.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import traceback
import warnings
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, NoReturn, Optional, Sequence, Tuple

import click

from .console import Console
from .errors import CommandError, UsageError, describe
from .options import (DEVICES, EXPORT_FORMATS, REPORT_FORMATS, Request, check_recovery, model_name, parse_exports,
                      parse_input_shapes, parse_min_size, parse_tuning, read_schedule)
from .output import leftovers, staged_directory

if TYPE_CHECKING:  # imported when needed: it loads torch
    from . import pipeline

INTERRUPTED = 130
LIBRARY_WARNINGS = r"(torch|torchvision|onnx|onnxscript|onnxruntime)(\.|$)"  # shown only with --debug

EPILOG = """\b
MODEL is one of:
  path/to/file.py        the file defines `model` (an nn.Module) or `build_model()`
  path/to/file.py:NAME   an nn.Module, or a function or class that returns one
  torchvision:NAME       torchvision.models.get_model(NAME, weights=None)
  timm:NAME              timm.create_model(NAME, pretrained=False)
  smp:ARCH[:ENCODER]     a segmentation_models_pytorch model, encoder_weights=None
  package.module:NAME    as file.py:NAME, from an importable module
A model file is Python code, and octify runs it.

\b
Writes into the output directory (default ./NAME-octave, NAME from MODEL):
  model.pt      the converted module; torch.load(path, weights_only=False)
  NAME_octave/  its code, an importable package; takes its weights from model.pt
  report.json   the cost report
  schedule.toml the alphas a tuning target chose (--fastest, --target-...)
  model.onnx, model.torchscript.pt, model.pt2   with --export

\b
Examples:
  octify torchvision:resnet18 --alpha 0.5 -o resnet18-octave
  octify mynet.py --input-shape 1,3,128,128 --verify
  octify mynet.py:build_small --schedule alphas.toml --format json > report.json
  octify torchvision:resnet50 --leaf layer4 --export onnx,torchscript --force
  octify mynet.py --input-shape 1,3,96,96 --calibrate images/ --distill-steps 200
  octify mynet.py --calibrate images/ --choose-channels --reconstruct --refine-steps 200
  octify torchvision:resnet50 --target-latency 0.7 --batch-size 8
"""


def _version() -> str:
    def installed(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"
    return f"octify {installed('octify')} (torch {installed('torch')}, Python {sys.version.split()[0]})"


@click.command(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("model")
@click.option("--alpha", type=float, help="Fraction of low-frequency channels, in [0, 1).  [default: 0.5]")
@click.option("--schedule", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE",
              help="Per-layer alphas: a TOML or JSON mapping of glob pattern over convolution names to alpha, "
                   "e.g. {\"layer4.*\": 0, \"*\": 0.5}; the first matching pattern wins, unmatched "
                   "convolutions stay plain.")
@click.option("--fastest", is_flag=True,
              help="Choose each layer group's alpha by measured latency: the fastest schedule, never slower than the "
                   "original; saves it as schedule.toml.")
@click.option("--target-macs", type=float, metavar="RATIO",
              help="Choose the alphas for the lowest measured latency within RATIO of the original's MACs (0.5).")
@click.option("--target-latency", type=float, metavar="RATIO",
              help="Choose the alphas for the fewest MACs within RATIO of the original's measured latency (0.7).")
@click.option("--batch-size", type=int, metavar="N", help="Batch size latency is measured at.  [default: 1]")
@click.option("--device", type=click.Choice(DEVICES), help="Device latency is measured on.  [default: cpu]")
@click.option("--no-measure", is_flag=True, help="With --target-macs: choose from MACs alone, timing nothing.")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="N,C,H,W",
              help="Shape of the random example input the model is traced, costed and exported with; for a "
                   "model with several inputs, once per input, in order.  [default: 1,3,224,224]")
@click.option("-o", "--output", type=click.Path(path_type=Path), metavar="DIR",
              help="Output directory; must not exist unless --force.  [default: ./NAME-octave]")
@click.option("--format", "report_format", type=click.Choice(REPORT_FORMATS), default="table", show_default=True,
              help="How the report prints on stdout.")
@click.option("--leaf", "leaves", multiple=True, metavar="MODULE",
              help="Keep a submodule (qualified name, e.g. layer4.0) or a module class (name or dotted path) "
                   "as it is, unconverted. Repeatable.")
@click.option("--verify", is_flag=True,
              help="Run the original and the converted model on a random input, check the output shapes and "
                   "print the largest output difference (non-zero when alpha > 0: the layers change).")
@click.option("--export", "exports", multiple=True, metavar="FORMAT",
              help=f"Also export to {', '.join(EXPORT_FORMATS)}. Repeatable or comma-separated.")
@click.option("--calibrate", "calibration_data", type=click.Path(path_type=Path), metavar="PATH",
              help="Re-estimate the BatchNorm statistics on these inputs: a folder of images (resized to "
                   "--input-shape) or a .pt tensor (N,C,H,W); a fifth of them is held out to report how often "
                   "the converted model agrees with the original.")
@click.option("--distill-steps", type=click.IntRange(min=1), metavar="N",
              help="Then train the converted model N steps to follow the original on the --calibrate inputs.")
@click.option("--distill-lr", type=click.FloatRange(min=0, min_open=True), metavar="LR",
              help="Learning rate of --distill-steps (octify.distill's lr).  [default: 0.001; after --reconstruct "
                   "a small one, such as 1e-5, keeps the fit]")
@click.option("--normalize", type=click.Choice(["imagenet", "none"]), default="imagenet", show_default=True,
              help="How images read for --calibrate are normalized after scaling to [0, 1].")
@click.option("--choose-channels", is_flag=True,
              help="Make low the channels that lose least at half resolution on the --calibrate inputs, instead "
                   "of the last ones.")
@click.option("--reconstruct", is_flag=True,
              help="After calibrating, fit each octave layer to the original layer's output on the --calibrate "
                   "inputs (least squares, in network order).")
@click.option("--refine-steps", type=click.IntRange(min=1), metavar="N",
              help="After calibrating (and --reconstruct), train each block of the converted model alone N steps "
                   "to compute the original block's output on the --calibrate inputs (octify.refine).")
@click.option("--strided-high", is_flag=True,
              help="Strided layers keep the original strided convolution as their high-to-high path.")
@click.option("--min-size", default="auto", show_default=True, metavar="PIXELS|auto",
              help="Feature maps smaller than this stay plain (the paper's rule is 8); auto: 8, or 4 where maps "
                   "under 8 pixels hold more than 27% of the convolution MACs.")
@click.option("--force", is_flag=True, help="Replace an existing output directory.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the report, errors and the --verify result.")
@click.option("--debug", is_flag=True, help="Show tracebacks and every warning.")
@click.version_option(message=_version(), help="Show the versions and exit.")
def command(model: str, alpha: Optional[float], schedule: Optional[Path], fastest: bool,
            target_macs: Optional[float], target_latency: Optional[float], batch_size: Optional[int],
            device: Optional[str], no_measure: bool, input_shapes: Tuple[str, ...], output: Optional[Path],
            report_format: str, leaves: Tuple[str, ...], verify: bool, exports: Tuple[str, ...],
            calibration_data: Optional[Path], distill_steps: Optional[int], distill_lr: Optional[float],
            normalize: str, choose_channels: bool, reconstruct: bool, refine_steps: Optional[int], strided_high: bool,
            min_size: str, force: bool, quiet: bool, debug: bool) -> int:
    """Convert MODEL into an Octave Convolution network, print its cost report and save it."""
    console = Console(quiet)
    try:
        if alpha is not None and schedule is not None:
            raise UsageError("use --alpha or --schedule, not both (a '*' pattern in the schedule "
                             "sets the alpha of every other convolution)")
        tuning = parse_tuning(target_macs, target_latency, fastest, batch_size, device, no_measure,
                              alpha is not None or schedule is not None)
        request = Request(model, alpha, read_schedule(schedule) if schedule else None, parse_input_shapes(input_shapes),
                          leaves, verify, parse_exports(exports), report_format, debug, calibration_data,
                          distill_steps or 0, normalize == "imagenet", tuning, choose_channels, reconstruct,
                          strided_high, parse_min_size(min_size), distill_lr, refine_steps or 0)
        check_recovery(request)
        target = output or Path(f"{model_name(model)}-octave")
        _warn_about_leftovers(console, target)
        with _warnings_shown(console, debug), staged_directory(target, force) as folder:
            with console.step("loading PyTorch"):
                from . import pipeline
            outcome = pipeline.run(request, folder, console)
    except CommandError as error:
        hint = " (--debug shows the traceback)" if error.__cause__ and error.exit_code == 1 else ""
        return _failed(console, str(error), hint, error.exit_code, debug)
    except KeyboardInterrupt:
        return _failed(console, "interrupted; nothing was written", "", INTERRUPTED, debug=False)
    except Exception as error:  # a failure octify does not anticipate
        return _failed(console, describe(error), " (--debug shows the traceback)", 1, debug)
    _print_outcome(console, target, outcome)
    for format_name, error in outcome.failed_exports.items():
        if debug:
            traceback.print_exception(type(error), error, error.__traceback__, file=console.stderr)
        console.error(f"export to {format_name} failed, the other outputs are written: {error}")
    return 1 if outcome.failed_exports else 0


def _warn_about_leftovers(console: Console, target: Path) -> None:
    found = leftovers(target)
    if found:
        console.warning(f"{', '.join(os.path.relpath(p) for p in found)}: left by an earlier run into {target} that was killed "
                        "(or is still running); delete once no octify run is writing there")


def _failed(console: Console, message: str, hint: str, status: int, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    console.error(message if debug else message + hint)
    return status


def _print_outcome(console: Console, target: Path, outcome: pipeline.Outcome) -> None:
    console.result(outcome.report)
    if outcome.comparison:
        why = " (expected with octave layers: they compute differently)" if outcome.has_octave_layers else ""
        comparison = outcome.comparison
        scale = f"{100 * comparison.relative_difference:.3g}% of the largest absolute output, {comparison.max_abs_output:.3g}" \
            if comparison.max_abs_output else "the original's outputs are all zero"
        console.message(f"verified: output shapes match {comparison.shapes}; largest absolute output difference "
                        f"{comparison.max_abs_difference:.3g}, {scale}{why}")
    for line in outcome.recovery_lines:
        console.message(line)
    if outcome.tuning:
        console.info(outcome.tuning)
    console.info(f"wrote {target}/: {', '.join(outcome.written)}")


@contextmanager
def _warnings_shown(console: Console, debug: bool) -> Iterator[None]:
    """Each distinct warning once; without ``debug``, torch's own warnings and log messages are hidden
    and the rest print as ``octify: warning:`` lines after a successful run."""
    with warnings.catch_warnings(record=not debug) as caught:
        warnings.simplefilter("default")
        if not debug:
            warnings.filterwarnings("ignore", module=LIBRARY_WARNINGS)
            logging.disable(logging.WARNING)  # torch's log messages
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)
    for warning in caught or ():
        console.warning(str(warning.message))


def run(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command on ``argv`` (default: ``sys.argv[1:]``) and return its exit status."""
    try:
        return command.main(args=None if argv is None else list(argv), prog_name="octify", standalone_mode=False)
    except click.ClickException as error:  # the command line does not parse
        Console().error(f"{error.format_message()} (octify --help shows the usage)")
        return error.exit_code
    except click.Abort:
        Console().error("interrupted; nothing was written")
        return INTERRUPTED


def main(argv: Optional[Sequence[str]] = None) -> NoReturn:
    """The ``octify`` console script."""
    signal.signal(signal.SIGTERM, _interrupt)  # clean up as after Ctrl-C
    sys.exit(run(argv))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
