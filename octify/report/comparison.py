"""The comparison report of a conversion: the original and the converted model side by side.

``Report.to_dict()`` (schema version 3): ``schema_version``, ``units``, ``original`` and
``converted`` (each a ``ModelCost.to_dict()`` without its own version and units),
``ratios`` (converted / original for ``macs``, ``params``, ``activation_bytes``,
``peak_activation_bytes``; null where the original is 0), ``ratios_exclude`` (layers of
either model that could not be counted, so that MACs and their ratio leave them out),
``coverage`` (``convolution_macs``, ``octave_macs``, ``share``, and ``plain``: one
``{"cause", "layers", "macs", "share"}`` per cause, largest first; see
:mod:`octify.report.coverage`), ``possible_savings`` (MACs the alphas could save if every
convolution were octave; null when no alphas were given), ``notes`` (the conversion's
notes, ``{"name", "kind", "reason", "cause"}``) and ``latency`` (null unless a tuning measured it:
``{"setting", "original_s", "converted_s", "ratio", "estimated_ratio"}``, see
:class:`octify.report.latency.Latency`; each measured layer's seconds are its ``latency``).
"""
from __future__ import annotations

import dataclasses
import html
import json
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from .. import ops
from ..capture.tracer import LeafSpec
from ..layers import ChannelSplitter, OctGlobalAvgPool, OctGlobalMaxPool, OctMerge, OctSplit
from ..notes import Note
from . import formatting
from .costs import DEFAULT_DEPTH, MEASURED_TITLE, SCHEMA_VERSION, UNCOUNTED_TITLE, UNITS, LayerCost, ModelCost
from .counting import cost
from .coverage import Coverage, coverage, possible_savings, shortfall_warning
from .exports import csv_text, dataframe
from .grouping import group, subtotals
from .latency import Latency

RATIO_KEYS = ("macs", "params", "activation_bytes", "peak_activation_bytes")
BOUNDARY_OPS = tuple(op.__name__ for op in (OctSplit, OctMerge, OctGlobalAvgPool, OctGlobalMaxPool, ChannelSplitter,
                                            ops.split_channels))
Section = Tuple[str, List[str]]


def build_report(original: nn.Module, converted: nn.Module, example_inputs: Sequence[Any],
                 notes: Iterable[Note] = (), leaf_modules: Iterable[LeafSpec] = (),
                 alphas: Optional[Mapping[str, float]] = None) -> "Report":
    """Cost both models on ``example_inputs`` and attach the conversion's ``notes`` to the converted rows.

    ``alphas`` (convolution name -> scheduled alpha) gives the possible savings the report
    measures the conversion against.
    """
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    notes = list(notes)
    converted_cost = cost(converted, example_inputs=inputs, leaf_modules=leaf_modules)
    by_name: Dict[str, List[Note]] = {}
    for note in notes:
        by_name.setdefault(note.name, []).append(note)
    layers = [_with_notes(layer, by_name[layer.name]) if layer.name in by_name else layer
              for layer in converted_cost.layers]
    original_cost = cost(original, example_inputs=inputs, leaf_modules=leaf_modules)
    possible = possible_savings(original_cost, alphas) if alphas is not None else None
    return Report(original_cost, dataclasses.replace(converted_cost, layers=layers), notes, possible)


def _with_notes(layer: LayerCost, notes: List[Note]) -> LayerCost:
    causes = [note.group for note in notes if note.kind == "plain"]
    return dataclasses.replace(layer, reason="; ".join(note.reason for note in notes),
                               cause=causes[0] if causes else "")


@dataclass(frozen=True)
class Report:
    """Costs of the original and the converted model, their ratios and the conversion's notes.

    ``str(report)`` is the table (:meth:`table`); exports: :meth:`to_dict`, :meth:`to_json`,
    :meth:`to_csv`, :meth:`to_markdown`, :meth:`to_dataframe`, and HTML in notebooks.
    """

    original: ModelCost
    converted: ModelCost
    notes: List[Note] = field(default_factory=list)
    possible_savings: Optional[int] = None
    latency: Optional[Latency] = None

    @property
    def coverage(self) -> Coverage:
        """The share of the original's convolution MACs now in octave layers, plain ones by cause."""
        return coverage(self.original, self.converted, self.notes)

    @property
    def saved_macs(self) -> int:
        return self.original.macs - self.converted.macs

    @property
    def uncounted(self) -> List[str]:
        """Layers of either model no rule or measurement could count, once each: the totals exclude them."""
        return list(dict.fromkeys(self.original.uncounted + self.converted.uncounted))

    def shortfall(self) -> Optional[str]:
        """A warning's text when the conversion saves less than a tenth of :attr:`possible_savings`, else None."""
        if self.possible_savings is None:
            return None
        return shortfall_warning(self.saved_macs, self.possible_savings, self.original.macs, self.coverage)

    @property
    def ratios(self) -> Dict[str, Optional[float]]:
        """Converted / original for MACs, parameters, feature maps and peak feature maps."""
        return {key: formatting.ratio(getattr(self.converted, key), getattr(self.original, key))
                for key in RATIO_KEYS}

    @property
    def plain_convolutions(self) -> List[LayerCost]:
        """Converted convolutions whose output stays plain (alpha_out 0), with their reasons."""
        return [layer for layer in self.converted.layers if layer.alpha_in is not None and layer.alpha_out == 0]

    @property
    def splits_and_merges(self) -> List[LayerCost]:
        """Where the converted model changes between plain and octave tensors (every call of each)."""
        return [layer for layer in self.converted.layers if layer.op in BOUNDARY_OPS]

    # -- exports -----------------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        """JSON-serializable, versioned (see the module docstring for the schema)."""
        def body(model_cost: ModelCost) -> Dict[str, Any]:
            return {k: v for k, v in model_cost.to_dict().items() if k not in ("schema_version", "units")}

        return {"schema_version": SCHEMA_VERSION, "units": UNITS, "original": body(self.original),
                "converted": body(self.converted), "ratios": self.ratios, "ratios_exclude": self.uncounted,
                "coverage": self.coverage.to_dict(), "possible_savings": self.possible_savings,
                "notes": [note.to_dict() for note in self.notes],
                "latency": self.latency.to_dict() if self.latency else None}

    def to_json(self, indent: Optional[int] = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def _records(self) -> List[Dict[str, Any]]:
        return [{"model": which, **layer.to_dict()}
                for which, model_cost in (("original", self.original), ("converted", self.converted))
                for layer in model_cost.layers]

    def to_csv(self) -> str:
        """One line per layer of both models; the first column, ``model``, says which."""
        return csv_text(self._records())

    def to_dataframe(self) -> Any:
        """The layers of both models as a pandas DataFrame with a ``model`` column (needs pandas)."""
        return dataframe(self._records())

    def grid(self, depth: Optional[int] = DEFAULT_DEPTH) -> formatting.Grid:
        """Converted layers grouped to ``depth``, next to the original's entry of the same name."""
        numeric = ("params", "MACs original", "MACs", "ratio", "maps original", "feature maps", "maps ratio")
        timed = ("ms original", "ms", "ms ratio") if self.latency else ()
        grid = formatting.Grid(["module", "op", "alpha in/out", *numeric, *timed], numeric=numeric + timed)
        before = subtotals(self.original.layers)
        for entry in group(self.converted.layers, depth):
            old = before.get(entry.path)
            old_macs, old_bytes, old_latency = (old.macs, old.activation_bytes, old.latency) if old else (None,) * 3
            first = entry.rows[0]
            grid.rows.append([
                "  " * (len(entry.path) - 1) + entry.name, entry.op(self.converted.module_types),
                formatting.alphas(first.alpha_in, first.alpha_out) if entry.is_layer else "",
                formatting.count(entry.params),
                formatting.count(old_macs), formatting.count(entry.macs),
                formatting.percent(formatting.ratio(entry.macs, old_macs)),
                formatting.size(old_bytes), formatting.size(entry.activation_bytes),
                formatting.percent(formatting.ratio(entry.activation_bytes, old_bytes))]
                + ([formatting.milliseconds(old_latency), formatting.milliseconds(entry.latency),
                    formatting.percent(formatting.ratio(entry.latency, old_latency))] if timed else []))
        return grid

    def totals_grid(self) -> formatting.Grid:
        grid = formatting.Grid(["total", "original", "converted", "converted/original"],
                               numeric=("original", "converted", "converted/original"))
        excluding = f", excluding {len(self.uncounted)} not counted" if self.uncounted else ""
        lines = [(f"MACs (multiply-accumulates{excluding})", "macs", formatting.count),
                 ("FLOPs (2 x MACs)", "flops", formatting.count),
                 ("parameters", "params", formatting.count),
                 ("feature maps (all outputs)", "activation_bytes", formatting.size),
                 ("peak live feature maps", "peak_activation_bytes", formatting.size)]
        for label, key, show in lines:
            grid.rows.append([label, show(getattr(self.original, key)), show(getattr(self.converted, key)),
                              formatting.percent(formatting.ratio(getattr(self.converted, key),
                                                                  getattr(self.original, key)))])
        grid.rows.append(["peak reached at", self.original.peak_at, self.converted.peak_at, ""])
        if self.latency:
            grid.rows.append([f"latency, ms ({self.latency.setting}; measured)",
                              formatting.milliseconds(self.latency.original),
                              formatting.milliseconds(self.latency.converted), formatting.percent(self.latency.ratio)])
        cover = self.coverage
        grid.rows.append(["coverage: convolution MACs in octave layers", formatting.count(cover.convolution_macs),
                          formatting.count(cover.octave_macs), formatting.percent(cover.share)])
        return grid

    def explanations(self) -> List[Section]:
        """Titled lists: the plain convolutions and why, the splits and merges and their cost, other notes."""
        shown = set()
        plain = []
        for layer in self.plain_convolutions:
            shown.add(layer.name)
            plain.append(f"{layer.name} ({layer.op} {formatting.alphas(layer.alpha_in, layer.alpha_out)}, "
                         f"{formatting.count(layer.macs)} MACs): {layer.reason or 'no reason recorded'}")
        by_cause = [f"{group.cause}: {formatting.percent(group.share)} ({formatting.count(group.macs)} MACs, "
                    f"{len(group.layers)} convolution{'s' if len(group.layers) != 1 else ''})"
                    + (f"; fix: {group.fix}" if group.fix else "") for group in self.coverage.plain]
        calls: Dict[str, List[LayerCost]] = {}
        for layer in self.splits_and_merges:
            calls.setdefault(layer.name, []).append(layer)
        resampling = []
        for name, layers in calls.items():
            shown.add(name)
            layer, times = layers[0], f", {len(layers)} calls" if len(layers) > 1 else ""
            details = [f"output {formatting.shapes(layer.output_shapes)}",
                       f"creates {formatting.size(sum(l.activation_bytes for l in layers))} of feature maps",
                       "0 MACs", layer.remark, layer.reason]
            resampling.append(f"{name} ({layer.op}{times}): " + "; ".join(d for d in details if d))
        others = [f"[{note.kind}] {note.name}: {note.reason}" for note in self.notes if note.name not in shown]
        measured = list(dict.fromkeys(self.original.measured + self.converted.measured))
        sections = [("Plain convolutions by cause (share of the original's convolution MACs)", by_cause),
                    (f"Convolutions with a plain output ({len(plain)})", plain),
                    (f"Splits and merges ({len(resampling)})", resampling), ("Other notes", others),
                    (MEASURED_TITLE, [", ".join(measured)] if measured else []), (UNCOUNTED_TITLE, self.uncounted)]
        return [(title, lines) for title, lines in sections if lines]

    def _title(self) -> str:
        shapes = ", ".join(formatting.shapes([s]) for s in self.converted.input_shapes)
        models = self.original.model if self.original.model == self.converted.model \
            else f"{self.original.model} -> {self.converted.model}"
        return f"Cost report: {models}, original and converted, input {shapes}"

    def table(self, depth: Optional[int] = DEFAULT_DEPTH) -> str:
        """Terminal table grouped by module prefix down to ``depth`` (None: every layer),
        then totals and ratios, then the conversion's explanations."""
        parts = [self._title(), formatting.UNITS_NOTE, "", self.grid(depth).text(), "", self.totals_grid().text()]
        for title, lines in self.explanations():
            parts += ["", f"{title}:"] + [f"  {line}" for line in lines]
        return "\n".join(parts)

    def to_markdown(self, depth: Optional[int] = DEFAULT_DEPTH) -> str:
        parts = [f"**{self._title()}**", formatting.UNITS_NOTE, self.grid(depth).markdown(),
                 self.totals_grid().markdown()]
        for title, lines in self.explanations():
            parts.append(f"{title}:\n\n" + "\n".join(f"- {line}" for line in lines))
        return "\n\n".join(parts)

    def _repr_html_(self) -> str:
        parts = [f"<p><b>{html.escape(self._title())}</b><br>{html.escape(formatting.UNITS_NOTE)}</p>",
                 self.grid().html(), self.totals_grid().html()]
        for title, lines in self.explanations():
            items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
            parts.append(f"<p>{html.escape(title)}:</p><ul>{items}</ul>")
        return "".join(parts)

    def __str__(self) -> str:
        return self.table()
