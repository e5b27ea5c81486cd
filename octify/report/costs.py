"""The cost of one model: totals and one row per operation.

``ModelCost.to_dict()`` (schema version 2), all counts integers:

* ``schema_version``: 2; ``units``: what the numbers mean;
* ``model``: the model's class name; ``input_shapes``: list of shapes; ``traced``: how
  the graph was obtained;
* ``totals``: ``macs`` (multiply-accumulates), ``flops`` (2 x macs), ``params``,
  ``activation_bytes`` (every feature map the operations create), ``peak_activation_bytes``
  (most feature-map bytes live at once), ``peak_at`` (the node where that happens);
* ``layers``: one dict per operation, in execution order: ``name`` (qualified module
  name, or node name for functions), ``scope`` (the enclosing module), ``op``,
  ``alpha_in`` / ``alpha_out`` (null unless a convolution), ``output_shapes``, ``params``,
  ``macs``, ``activation_bytes``, ``remark`` (what the counting rule adds), ``reason``
  (the conversion's explanation), ``cause`` (the kind of reason, for grouping), ``latency``
  (seconds, measured in place by a tuning, a convolution with what ``for_inference`` fused into it;
  null when not measured);
* ``measured``: layers no counting rule covers, counted by ``FlopCounterMode`` on fake tensors
  (their remark says so);
* ``uncounted``: layers no rule covers that could not be measured either: ``macs`` excludes them.
"""
from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from . import formatting
from .exports import csv_text, dataframe
from .grouping import group

SCHEMA_VERSION = 3  # 2: layers' ``cause``, ``measured``; the report's ``coverage``; 3: ``latency``
UNITS = {"macs": "multiply-accumulates", "flops": "2 x macs", "activation_bytes": "bytes",
         "peak_activation_bytes": "bytes"}
DEFAULT_DEPTH = 2
MEASURED_TITLE = "Counted by measurement (FlopCounterMode on fake tensors, or on a fixed random input for code that reads values; no counting rule)"
UNCOUNTED_TITLE = "Not counted (no counting rule, could not be measured; MACs and ratios exclude them)"


@dataclass(frozen=True)
class LayerCost:
    """One operation of the graph (a leaf module call or a function call)."""

    name: str
    scope: str
    op: str
    output_shapes: List[Tuple[int, ...]]
    params: int
    macs: int
    activation_bytes: int
    alpha_in: Optional[float] = None
    alpha_out: Optional[float] = None
    remark: str = ""
    reason: str = ""
    cause: str = ""
    latency: Optional[float] = None

    @property
    def path(self) -> Tuple[str, ...]:
        """The scope's parts and the row's own last name part: the key for grouping."""
        return tuple(part for part in self.scope.split(".") if part) + (self.name.rsplit(".", 1)[-1],)

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def to_dict(self) -> Dict[str, Any]:
        record = asdict(self)
        record["output_shapes"] = [list(shape) for shape in self.output_shapes]
        return record


@dataclass(frozen=True)
class ModelCost:
    """Cost of one forward pass of one model; ``str()`` is the table (see :meth:`table`)."""

    model: str
    input_shapes: List[Tuple[int, ...]]
    traced: str
    macs: int
    params: int
    activation_bytes: int
    peak_activation_bytes: int
    peak_at: str
    layers: List[LayerCost]
    uncounted: List[str] = field(default_factory=list)
    measured: List[str] = field(default_factory=list)
    module_types: Dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def flops(self) -> int:
        """2 x MACs, the convention of ``FlopCounterMode``."""
        return 2 * self.macs

    def totals(self) -> Dict[str, Any]:
        return {"macs": self.macs, "flops": self.flops, "params": self.params,
                "activation_bytes": self.activation_bytes, "peak_activation_bytes": self.peak_activation_bytes,
                "peak_at": self.peak_at}

    # -- exports -----------------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        """JSON-serializable, versioned (see the module docstring for the schema)."""
        return {"schema_version": SCHEMA_VERSION, "units": UNITS, "model": self.model,
                "input_shapes": [list(shape) for shape in self.input_shapes], "traced": self.traced,
                "totals": self.totals(), "layers": [layer.to_dict() for layer in self.layers],
                "measured": list(self.measured), "uncounted": list(self.uncounted)}

    def to_json(self, indent: Optional[int] = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_csv(self) -> str:
        """One line per layer, the columns of ``LayerCost.to_dict()``."""
        return csv_text([layer.to_dict() for layer in self.layers])

    def to_dataframe(self) -> Any:
        """The layers as a pandas DataFrame (needs pandas)."""
        return dataframe([layer.to_dict() for layer in self.layers])

    def grid(self, depth: Optional[int] = DEFAULT_DEPTH) -> formatting.Grid:
        timed = any(layer.latency is not None for layer in self.layers)
        grid = formatting.Grid(["module", "op", "alpha in/out", "output", "params", "MACs", "feature maps"]
                               + (["ms"] if timed else []), numeric=("params", "MACs", "feature maps", "ms"))
        for entry in group(self.layers, depth):
            first = entry.rows[0]
            layer = entry.is_layer
            grid.rows.append(["  " * (len(entry.path) - 1) + entry.name, entry.op(self.module_types),
                              formatting.alphas(first.alpha_in, first.alpha_out) if layer else "",
                              formatting.shapes(first.output_shapes) if layer else "",
                              formatting.count(entry.params), formatting.count(entry.macs),
                              formatting.size(entry.activation_bytes)]
                             + ([formatting.milliseconds(entry.latency)] if timed else []))
        return grid

    def totals_grid(self) -> formatting.Grid:
        grid = formatting.Grid(["total", self.model], numeric=(self.model,))
        grid.rows = [["MACs (multiply-accumulates)", formatting.count(self.macs)],
                     ["FLOPs (2 x MACs)", formatting.count(self.flops)],
                     ["parameters", formatting.count(self.params)],
                     ["feature maps (all outputs)", formatting.size(self.activation_bytes)],
                     [f"peak live feature maps (at {self.peak_at})", formatting.size(self.peak_activation_bytes)]]
        return grid

    def table(self, depth: Optional[int] = DEFAULT_DEPTH) -> str:
        """Terminal table grouped by module prefix down to ``depth`` (None: every layer), then totals."""
        shapes = ", ".join(formatting.shapes([s]) for s in self.input_shapes)
        parts = [f"{self.model}, input {shapes}: {self.traced}", formatting.UNITS_NOTE, "",
                 self.grid(depth).text(), "", self.totals_grid().text()]
        return "\n".join(parts + [f"\n{line}" for line in self._lists()])

    def to_markdown(self, depth: Optional[int] = DEFAULT_DEPTH) -> str:
        return "\n\n".join([f"**{self.model}** ({self.traced}). {formatting.UNITS_NOTE}",
                            self.grid(depth).markdown(), self.totals_grid().markdown(), *self._lists()])

    def _lists(self) -> List[str]:
        """The layers counted by measurement and those not counted, a line each where there are any."""
        return [f"{title}: " + ", ".join(names) for title, names in
                ((MEASURED_TITLE, self.measured), (UNCOUNTED_TITLE, self.uncounted)) if names]

    def _repr_html_(self) -> str:
        return (f"<p><b>{html.escape(self.model)}</b> ({html.escape(self.traced)}). "
                f"{html.escape(formatting.UNITS_NOTE)}</p>"
                + self.grid().html() + self.totals_grid().html())

    def __str__(self) -> str:
        return self.table()
