"""The comparison report: build_report, notes joined to rows, the table and the exports."""
import csv
import io
import json
import sys

import pytest
import torch
import torchvision
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import octify
from octify import Branchwise, ChannelSplit, OctConv2d, OctMerge, OctSplit
from octify.capture import capture
from octify.notes import Note
from octify.report import RULES, SCHEMA_VERSION, ModelCost, OpCall, Report, build_report, cost, register_rule
from octify.report.formatting import count, size

INPUT = torch.rand(1, 3, 16, 16)
HALF = ChannelSplit.from_alpha(16, 0.5)


def measured_macs(model: nn.Module, *inputs) -> int:
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        model(*inputs)
    return counter.get_total_flops() // 2


class Plain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1))
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.block(self.stem(x)).mean((2, 3)))


class Octave(nn.Module):
    """What a conversion of Plain looks like: same names, octave block between a split and a merge."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.split = OctSplit(HALF)
        self.block = nn.Sequential(OctConv2d(16, 16, 3, padding=1, alpha=0.5), Branchwise(nn.ReLU()),
                                   OctConv2d(16, 16, 3, padding=1, alpha=0.5))
        self.merge = OctMerge(HALF)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.merge(self.block(self.split(self.stem(x)))).mean((2, 3)))


NOTES = [Note("stem", "plain", "the stem keeps a plain output"),
         Note("split", "split", "stem is plain and enters the octave region at block.0"),
         Note("merge", "merge", "mean needs a plain tensor"),
         Note("head", "schedule", "linear layers are not converted")]


@pytest.fixture(scope="module")
def report() -> Report:
    converted = capture(Octave(), (INPUT,)).module
    return build_report(Plain(), converted, (INPUT,), NOTES)


def test_report_compares_both_models(report):
    plain_macs = measured_macs(Plain(), INPUT)
    assert report.original.macs == plain_macs
    assert report.converted.macs == measured_macs(Octave(), INPUT)
    assert report.ratios["macs"] == report.converted.macs / report.original.macs < 1
    assert report.ratios["params"] == 1.0
    assert report.ratios["peak_activation_bytes"] < 1
    assert report.notes == NOTES


def test_notes_join_rows_by_name(report):
    rows = {row.name: row for row in report.converted.layers}
    assert rows["stem"].reason == "the stem keeps a plain output"
    assert rows["block.0"].reason == "" and (rows["block.0"].alpha_in, rows["block.0"].alpha_out) == (0.5, 0.5)
    assert [row.name for row in report.plain_convolutions] == ["stem"]
    assert [row.name for row in report.splits_and_merges] == ["split", "merge"]
    for row in report.splits_and_merges:
        assert row.macs == 0 and row.activation_bytes > 0 and row.reason


def test_table_shows_totals_ratios_and_explanations(report):
    text = str(report)
    assert text.startswith("Cost report: Plain -> Octave, original and converted, input 1x3x16x16")
    for expected in ("MACs (multiply-accumulates)", "FLOPs (2 x MACs)", "converted/original",
                     "the stem keeps a plain output", "2x2 average pooling", "nearest x2 up-sampling",
                     "[schedule] head: linear layers are not converted", f"{report.ratios['macs']:.1%}"):
        assert expected in text


def first_column(table: str) -> list:
    return [line.split()[0] for line in table.splitlines() if line.strip()]


@pytest.mark.parametrize("table", ["report", "converted"])
def test_table_respects_depth(report, table):
    render = report.table if table == "report" else report.converted.table
    shallow, full = first_column(render(depth=1)), first_column(render(depth=None))
    assert "block" in shallow and "block.0" not in shallow
    assert "block" in full and "block.0" in full and "block.2" in full


def test_to_dict_is_json_and_versioned(report):
    text = report.to_json()
    assert text.startswith('{\n  "schema_version": 3,\n  "units": {')
    data = json.loads(text)
    assert data["schema_version"] == SCHEMA_VERSION == 3
    assert data["units"]["macs"] == "multiply-accumulates"
    assert data["original"]["totals"]["macs"] == report.original.macs
    assert data["converted"]["totals"]["flops"] == 2 * report.converted.macs
    assert data["ratios"]["macs"] == pytest.approx(report.ratios["macs"])
    assert data["notes"][0] == {"name": "stem", "kind": "plain", "reason": "the stem keeps a plain output", "cause": ""}
    assert data["coverage"]["share"] == pytest.approx(2 * 16 * 16 * 16 * 9 / (16 * 16 * 16 * 9 * 2 + 3 * 16 * 16 * 9))
    assert data["possible_savings"] is None and data["ratios_exclude"] == []
    split = next(layer for layer in data["converted"]["layers"] if layer["name"] == "split")
    assert split["output_shapes"] == [[1, 8, 16, 16], [1, 8, 8, 8]]
    single = report.converted.to_dict()
    assert single["schema_version"] == 3 and single["measured"] == single["uncounted"] == []


def test_csv_markdown_and_html_contain_the_rows(report):
    records = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert len(records) == len(report.original.layers) + len(report.converted.layers)
    split = next(r for r in records if r["name"] == "split")
    assert split["model"] == "converted" and split["op"] == "OctSplit" and split["macs"] == "0"
    assert "| module |" in report.to_markdown()
    assert "OctMerge" in report.to_markdown(depth=None) and "OctMerge" in report._repr_html_()
    assert report._repr_html_().count("<table") == 2
    assert "block.0" in report.converted.to_csv() and "<table" in report.converted._repr_html_()


def test_to_dataframe(report):
    pytest.importorskip("pandas")
    frame = report.to_dataframe()
    assert len(frame) == len(report.original.layers) + len(report.converted.layers)
    assert {"model", "name", "op", "macs", "activation_bytes", "reason"} <= set(frame.columns)
    assert frame[frame.model == "converted"].macs.sum() == report.converted.macs


def test_to_dataframe_without_pandas_says_what_to_install(report, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pip install pandas"):
        report.converted.to_dataframe()


def test_number_formats():
    assert count(4_089_184_256) == "4.09 G" and count(25_557_032) == "25.56 M" and count(999) == "999"
    assert size(9_633_792) == "9.63 MB" and size(512) == "512 B"


class Scaled(nn.Module):
    """A custom layer with a parameter and no built-in rule."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(4, 4))

    def forward(self, x):
        return x @ self.weight


class OnTheHost(Scaled):
    """A custom layer that leaves the tensor world (numpy): it cannot run on fake tensors."""

    def forward(self, x):
        return torch.from_numpy(x.detach().numpy() @ self.weight.detach().numpy())


def test_registering_a_rule_for_a_new_module_type():
    model = nn.Sequential(nn.Linear(4, 4), Scaled())
    measured = cost(model, input_shape=(2, 4), leaf_modules=[Scaled])
    assert measured.macs == 2 * 2 * 4 * 4 and measured.measured == ["1"] and measured.uncounted == []
    assert measured.layers[-1].remark.startswith("measured")
    register_rule(Scaled, remark="x @ weight")(lambda call: call.output.numel() * call.target.weight.shape[0])
    try:
        known = cost(model, input_shape=(2, 4), leaf_modules=[Scaled])
    finally:
        del RULES[Scaled]
    assert known.macs == 2 * 2 * 4 * 4 and known.uncounted == known.measured == []
    assert known.layers[-1].remark == "x @ weight"


def test_a_layer_that_cannot_be_measured_is_listed_and_excluded():
    model = nn.Sequential(nn.Linear(4, 4), OnTheHost())
    result = cost(model, input_shape=(2, 4), leaf_modules=[OnTheHost])
    assert result.macs == 2 * 4 * 4 and result.uncounted == ["1 (OnTheHost)"] and result.measured == []
    assert "Not counted (no counting rule, could not be measured; MACs and ratios exclude them): 1 (OnTheHost)" \
        in result.table()


def test_a_leaf_with_submodules_is_costed_inside():
    whole = cost(Plain(), example_inputs=INPUT)
    leaf = cost(Plain(), example_inputs=INPUT, leaf_modules=["block"])
    assert leaf.macs == whole.macs and leaf.uncounted == []
    assert [row.name for row in leaf.layers if row.name.startswith("block")] == ["block.0", "block.1", "block.2"]


def test_op_call_reads_positional_or_keyword_arguments():
    call = OpCall(None, (1,), {"value": 3})
    assert call.arg(0, "query") == 1 and call.arg(2, "value") == 3 and call.arg(1, "key") is None


def test_cost_from_octify_counts_a_model():
    result = octify.cost(Plain(), input_shape=(1, 3, 8, 8))
    assert isinstance(result, ModelCost)
    assert result.macs == 8 * 8 * (16 * 3 * 9 + 2 * 16 * 16 * 9) + 16 * 10


def test_report_of_a_real_conversion_matches_flop_counter():
    model = torchvision.models.squeezenet1_0(weights=None).eval()
    conversion = octify.convert(model, 0.5, input_shape=(1, 3, 128, 128))
    inputs = conversion.example_inputs
    result = build_report(model, conversion.module, inputs, conversion.notes)
    assert result.original.macs == measured_macs(model, *inputs)
    assert result.converted.macs == measured_macs(conversion.module, *inputs)
    assert result.splits_and_merges and all(row.reason for row in result.splits_and_merges)


def test_convert_report_of_resnet50():
    model = torchvision.models.resnet50(weights=None).eval()
    conversion = octify.convert(model, 0.5)
    inputs = conversion.example_inputs
    assert conversion.report.original.macs == measured_macs(model, *inputs) == 4_089_184_256
    assert conversion.report.converted.macs == measured_macs(conversion.module, *inputs)
