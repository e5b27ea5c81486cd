"""Which models octify converts: a sweep over timm, torchvision and segmentation_models_pytorch.

    python benchmarks/coverage.py                          # everything (hours on 2 cores)
    python benchmarks/coverage.py --only timm --limit 10   # the first 10 timm CNN families
    python benchmarks/coverage.py --models timm:dpn48b,smp:Unet:resnet18,torchvision:resnet18
    python benchmarks/coverage.py --table coverage.json    # the table of a sweep so far

The models, untrained, each named as on the command line (``octify --help``):

- timm: one model per CNN family. A family is a timm model module (``timm.list_modules()``:
  ``resnet``, ``efficientnet``, ``dpn``...); its representative is its model with the fewest
  parameters. A family is a CNN when convolutions make at least half of that model's
  multiply-accumulates (FlopCounterMode, at its default input size); the others (ViT, Swin,
  MLP-Mixer, ConvNeXt's linear layers...) are listed as excluded with their share.
- torchvision: every classifier (``torchvision.models.list_models(module=torchvision.models)``).
- segmentation_models_pytorch: every architecture but DPT (a ViT encoder), with a resnet18 encoder.

Each is converted with ``octify.convert`` at alpha 0.5 and default settings on a random input of
its default size (timm's ``pretrained_cfg``, else 224x224, 256x256 for segmentation), then
the converted module runs once in eval mode and must give the original's output shapes.
A ``ConversionError`` is a documented refusal; any other exception is a bug. The table
(sorted by outcome, then MAC ratio) prints at the end and the JSON file is rewritten after
every model, so an interrupted sweep keeps what it measured.
"""
from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import sys
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch.utils.flop_counter import FlopCounterMode
from torch.utils._pytree import tree_flatten

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import octify  # noqa: E402
from cli.models import load_model  # noqa: E402
from octify.layers import OctConvTranspose2d  # noqa: E402
from octify.layers.octconv import OctaveConvBase  # noqa: E402

SOURCES = ("timm", "smp", "torchvision")
ALPHA = 0.5
MIN_CONV_SHARE = 0.5
SMP_ENCODER = "resnet18"
SMP_EXCLUDED = {"dpt": "needs a ViT encoder"}
OCTAVE_LAYERS = (OctaveConvBase, OctConvTranspose2d)  # OctConv2d, FunctionalOctConv2d, OctConvTranspose2d
OUTCOMES = ("crash", "ConversionError", "plain", "converted")  # table order: bugs first


@dataclass
class Result:
    """One model's outcome: ``converted`` (some layer octave), ``plain`` (none), ``ConversionError`` or ``crash``."""

    model: str
    family: str
    input_size: Tuple[int, int]
    params: int = 0
    outcome: str = ""
    mac_ratio: Optional[float] = None
    octave_layers: int = 0
    plain_layers: int = 0
    seconds: float = 0.0
    error: str = ""
    where: List[str] = field(default_factory=list)  # the innermost frames of a crash


@dataclass
class Candidate:
    model: str  # a MODEL spec: timm:NAME, torchvision:NAME, smp:ARCH:ENCODER
    family: str
    input_size: Tuple[int, int]


def timm_families(excluded: Dict[str, str]) -> Iterator[Candidate]:
    """The smallest model of every timm CNN family, one family at a time; why others are left out goes in ``excluded``."""
    import timm
    for module in timm.list_modules():
        sizes = {}
        for name in timm.list_models(module=module):
            try:
                sizes[name] = _parameter_count(name)
            except Exception as error:  # a model timm cannot build without downloads or extras
                excluded[f"{module}/{name}"] = f"cannot build: {_one_line(error)}"
        if not sizes:
            excluded.setdefault(module, "no model builds")
            continue
        smallest = min(sizes, key=lambda name: (sizes[name], name))
        size = tuple(timm.get_pretrained_cfg_value(smallest, "input_size") or (3, 224, 224))[1:]
        try:
            share = _convolution_share(smallest, size)
        except Exception as error:  # a forward that needs real values
            excluded[module] = f"{smallest}: cannot count its MACs on meta tensors: {_one_line(error)}"
            continue
        if share < MIN_CONV_SHARE:
            excluded[module] = f"{smallest}: convolutions are {share:.0%} of its MACs"
            continue
        yield Candidate(f"timm:{smallest}", module, size)


def _parameter_count(name: str) -> int:
    import timm
    with torch.device("meta"):
        return sum(p.numel() for p in timm.create_model(name, pretrained=False).parameters())


def _convolution_share(name: str, size: Tuple[int, int]) -> float:
    """The fraction of the model's MACs that convolutions make, counted on meta tensors (no compute)."""
    import timm
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False).eval()
        with FlopCounterMode(display=False) as counter:
            model(torch.empty(1, 3, *size))
    counts = counter.get_flop_counts().get("Global", {})
    total = sum(counts.values())
    convolution = sum(flops for op, flops in counts.items() if "convolution" in str(op))
    return convolution / total if total else 0.0


def torchvision_classifiers() -> List[Candidate]:
    import torchvision
    return [Candidate(f"torchvision:{name}", "torchvision", (224, 224))
            for name in torchvision.models.list_models(module=torchvision.models)]


def smp_architectures() -> List[Candidate]:
    import segmentation_models_pytorch as smp
    return [Candidate(f"smp:{model.__name__}:{SMP_ENCODER}", "smp", (256, 256))
            for key, model in smp.MODEL_ARCHITECTURES_MAPPING.items() if key not in SMP_EXCLUDED]


def measure(candidate: Candidate) -> Result:
    """Convert one model at alpha 0.5 and run the result once; never raises."""
    result = Result(candidate.model, candidate.family, candidate.input_size)
    start = time.perf_counter()
    try:
        model = load_model(candidate.model).eval()
        result.params = sum(p.numel() for p in model.parameters())
        x = torch.randn(1, 3, *candidate.input_size)
        conversion = octify.convert(model, ALPHA, example_inputs=(x,))
        with torch.no_grad():
            expected, actual = _shapes(model(x)), _shapes(conversion.module.eval()(x))
        if actual != expected:
            raise AssertionError(f"the converted model gives shapes {actual}, the original {expected}")
        result.octave_layers, result.plain_layers = _convolution_counts(conversion.module)
        result.mac_ratio = conversion.report.ratios["macs"]
        result.outcome = "converted" if result.octave_layers else "plain"
    except octify.ConversionError as error:
        result.outcome, result.error = "ConversionError", _one_line(error)
    except Exception as error:
        result.outcome, result.error = "crash", _one_line(error)
        result.where = [f"{frame.filename}:{frame.lineno} {frame.name}"
                        for frame in traceback.extract_tb(error.__traceback__)[-4:]]
    result.seconds = round(time.perf_counter() - start, 1)
    return result


def _convolution_counts(module: torch.nn.Module) -> Tuple[int, int]:
    """Octave and plain convolution layers (an octave layer's own path convolutions are part of it)."""
    octave = [m for m in module.modules() if isinstance(m, OCTAVE_LAYERS)]
    paths = {id(part) for layer in octave for part in layer.modules() if part is not layer}
    plain = [m for m in module.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))
             and id(m) not in paths]
    octave_count = sum(not layer.is_plain for layer in octave)
    return octave_count, len(octave) - octave_count + len(plain)


def _shapes(output) -> List[Tuple[int, ...]]:
    return [tuple(leaf.shape) for leaf in tree_flatten(output)[0] if isinstance(leaf, torch.Tensor)]


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}"


def table(results: Sequence[Result]) -> str:
    """Markdown, bugs first, then refusals, models left plain, and converted models by MAC ratio."""
    rows = sorted(results, key=lambda r: (OUTCOMES.index(r.outcome), r.mac_ratio or 0.0, r.model))
    lines = ["| model | family | input | outcome | MACs ratio | octave / plain convs | seconds | error |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r.mac_ratio:.3f}" if r.mac_ratio is not None else ""
        size = "x".join(map(str, r.input_size))
        lines.append(f"| {r.model} | {r.family} | {size} | {r.outcome} | {ratio} | "
                     f"{r.octave_layers} / {r.plain_layers} | {r.seconds} | {r.error.replace('|', '/')} |")
    counts = {outcome: sum(r.outcome == outcome for r in results) for outcome in OUTCOMES}
    lines.append("\n" + ", ".join(f"{count} {outcome}" for outcome, count in counts.items()))
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parse(argv)
    if args.table:
        print(table([Result(**r) for r in json.loads(args.table.read_text())["results"]]))
        return 0
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    excluded: Dict[str, str] = {}
    results: List[Result] = []
    for candidate in _candidates(args, excluded):
        if args.size:
            candidate = Candidate(candidate.model, candidate.family, (args.size, args.size))
        results.append(measure(candidate))
        gc.collect()
        last = results[-1]
        print(f"[{len(results)}] {last.model}: {last.outcome} {last.mac_ratio or ''} {last.seconds}s {last.error}",
              file=sys.stderr, flush=True)
        _write(args.json, results, excluded)
    print(table(results))
    return int(any(r.outcome == "crash" for r in results))


def _candidates(args: argparse.Namespace, excluded: Dict[str, str]) -> Iterator[Candidate]:
    if args.models:
        yield from (Candidate(spec, spec.split(":")[0], (224, 224)) for spec in args.models)
        return
    for source in args.only or SOURCES:
        found = {"timm": lambda: timm_families(excluded), "torchvision": torchvision_classifiers,
                 "smp": smp_architectures}[source]()
        yield from itertools.islice(found, args.limit)


def _write(path: Path, results: Sequence[Result], excluded: Dict[str, str]) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({"alpha": ALPHA, "torch": torch.__version__, "results": [asdict(r) for r in results],
                                   "excluded": excluded}, indent=1))
    os.replace(partial, path)


def _parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", type=lambda text: text.split(","), metavar="SOURCES",
                        help=f"comma-separated subset of {','.join(SOURCES)}")
    parser.add_argument("--models", type=lambda text: text.split(","), metavar="SPECS",
                        help="these models only (MODEL specs, comma-separated)")
    parser.add_argument("--limit", type=int, help="at most this many models per source")
    parser.add_argument("--size", type=int, help="square input size for every model instead of its default")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--table", type=Path, metavar="JSON", help="print the table of an earlier (or running) sweep")
    parser.add_argument("--json", type=Path, default=Path("coverage.json"), help="output file (default coverage.json)")
    args = parser.parse_args(argv)
    unknown = set(args.only or ()) - set(SOURCES)
    if unknown:
        parser.error(f"--only: unknown source {', '.join(sorted(unknown))}; choose from {', '.join(SOURCES)}")
    return args


if __name__ == "__main__":
    sys.exit(main())
