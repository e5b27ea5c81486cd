"""Coverage of a conversion, plain convolutions grouped by cause, the low-savings warning,
counting by measurement, and the report's details (Markdown hierarchy, one line per split,
each uncounted layer once, a short ``repr``)."""
import csv
import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import octify
from octify import ChannelSplit, OctConv2d, OctMerge, OctSplit
from octify.capture import capture
from octify.report import SavingsWarning, build_report
from octify.report.coverage import octave_cost_factor

OCTIFY = Path(sys.executable).with_name("octify")
STEM, OFF, BODY, MID, SMALL = 16 * 16 * 8 * 3 * 9, 16 * 16 * 8 * 8 * 9, 16 * 16 * 8 * 8 * 9, 8 * 8 * 8 * 8 * 9, \
    4 * 4 * 8 * 8 * 9
ALL = STEM + OFF + BODY + MID + SMALL


class Stages(nn.Module):
    """Five 3x3 convolutions on a 16x16 input, each plain or octave for a different reason."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)  # stem: plain output
        self.off = nn.Conv2d(8, 8, 3, padding=1)  # alpha 0 in the schedule, plain input: plain
        self.body = nn.Conv2d(8, 8, 3, padding=1)  # 0 / 0.5
        self.mid = nn.Conv2d(8, 8, 3, stride=2, padding=1)  # 0.5 / 0: 8x8 output feeds only a small-map conv
        self.small = nn.Conv2d(8, 8, 3, stride=2, padding=1)  # 4x4 output: plain
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = self.small(F.relu(self.mid(F.relu(self.body(self.off(F.relu(self.stem(x))))))))
        return self.head(x.mean((2, 3)))


SCHEDULE = {"off": 0, "*": 0.5}


def measured_macs(model, x) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() // 2


@pytest.fixture(scope="module")
def stages():
    return octify.convert(Stages(), SCHEDULE, input_shape=(1, 3, 16, 16))


def test_coverage_is_the_share_of_convolution_macs_in_octave_layers(stages):
    alphas = {row.name: (row.alpha_in, row.alpha_out) for row in stages.report.converted.layers
              if row.alpha_in is not None}
    assert alphas == {"stem": (0, 0), "off": (0, 0), "body": (0, 0.5), "mid": (0.5, 0), "small": (0, 0)}
    cover = stages.report.coverage
    assert (cover.convolution_macs, cover.octave_macs) == (ALL, BODY + MID)
    assert cover.share == (BODY + MID) / ALL
    plain = [(group.cause, group.layers, group.macs, group.share) for group in cover.plain]
    assert plain == [("alpha 0 by schedule", ["off"], OFF, OFF / ALL), ("stem", ["stem"], STEM, STEM / ALL),
                     ("small maps (< min_size)", ["small"], SMALL, SMALL / ALL)]


def test_coverage_in_every_export(stages):
    report = stages.report
    share = f"{(BODY + MID) / ALL:.1%}"
    line = next(line for line in report.table().splitlines() if line.startswith("coverage"))
    assert line.split()[-1] == share
    assert f"| coverage: convolution MACs in octave layers | 396.29 K | 184.32 K | {share} |" in report.to_markdown()
    assert f"alpha 0 by schedule: {OFF / ALL:.1%} (147.46 K MACs, 1 convolution); fix: give these convolutions" \
        in report.table()
    data = json.loads(report.to_json())
    assert data["coverage"]["octave_macs"] == BODY + MID and data["coverage"]["convolution_macs"] == ALL
    assert data["coverage"]["plain"][0] == {"cause": "alpha 0 by schedule", "layers": ["off"], "macs": OFF,
                                            "share": OFF / ALL}
    assert data["possible_savings"] == round(ALL * (1 - octave_cost_factor(0.5)) - OFF * (1 - octave_cost_factor(0.5)))
    rows = {(r["model"], r["name"]): r for r in csv.DictReader(io.StringIO(report.to_csv()))}
    assert rows[("converted", "small")]["cause"] == "small maps (< min_size)"
    assert rows[("converted", "body")]["cause"] == ""


def test_reasons_quote_the_layers_own_numbers(stages):
    notes = {note.name: note for note in stages.notes if note.kind == "plain"}
    assert notes["off"].reason == "alpha 0 (pattern 'off')"
    assert notes["stem"].reason == ("stem: the first convolution on the network input (its output 8 channels, 16x16) "
                                    "keeps a plain output (plain_stem)")
    assert notes["small"].reason == "its output is 4x4, smaller than min_size=8; the paper keeps such stages plain"
    assert notes["mid"].reason == ("its output (8 channels, 8x8) only feeds small, which need a plain tensor")
    assert notes["mid"].cause == "output feeds only plain consumers: Conv2d on small maps"


def test_a_depthwise_convolution_after_the_stem_is_not_the_stem():
    conversion = octify.convert(torchvision.models.mobilenet_v2(weights=None), 0.5, input_shape=(1, 3, 64, 64))
    notes = {note.name: note for note in conversion.notes if note.kind == "plain"}
    assert notes["features.0.0"].cause == "stem"
    depthwise = notes["features.1.conv.0.0"]
    assert depthwise.cause == "depthwise after a plain layer (stem)"
    assert depthwise.reason.startswith("depthwise: keeps the channel split of its input, the plain output of "
                                       "features.0.0 (stem: ")
    causes = {group.cause for group in conversion.report.coverage.plain}
    assert "depthwise after a plain layer (stem)" in causes and "no reason recorded" not in causes


class Leafy(nn.Module):
    """A stem, a block kept as a leaf, and a custom layer with its own weight and no counting rule."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1))
        self.mixer = RawConv()
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.mixer(self.block(self.stem(x))).mean((2, 3)))


class RawConv(nn.Module):
    """A convolution through F.conv2d on its own weight: only measurement can count it."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(16, 16, 1, 1))

    def forward(self, x):
        return F.conv2d(x, self.weight) if x.shape[-1] > 1 else x


def test_leaves_say_so_and_are_counted_by_measurement():
    model, x = Leafy(), torch.randn(1, 3, 16, 16)
    with pytest.warns(SavingsWarning, match=r"inside leaf block: 91% .* \(use leaf_modules \(--leaf\) less\)"):
        conversion = octify.convert(model, 0.5, example_inputs=(x,), leaf_modules=["block", RawConv])
    report = conversion.report
    notes = {note.name: note for note in conversion.notes if note.kind == "plain"}
    assert notes["block.0"].reason == "inside leaf block (block is named in leaf_modules), kept as it is"
    assert notes["block.2"].cause == "inside leaf block"
    assert report.original.macs == measured_macs(model, x) == 16 * 16 * (16 * 3 * 9 + 2 * 16 * 16 * 9 + 16 * 16) + 160
    assert report.converted.macs == measured_macs(conversion.module, x)
    assert report.original.measured == report.converted.measured == ["mixer"]
    assert report.uncounted == [] and "excluding" not in report.table()
    mixer = next(row for row in report.original.layers if row.name == "mixer")
    assert mixer.macs == 16 * 16 * 16 * 16 and mixer.remark == "measured: FlopCounterMode on fake tensors"


class OnTheHost(nn.Module):
    """A layer that leaves the tensor world (numpy): neither traced nor run on fake tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return x * torch.from_numpy(self.scale.detach().numpy())


class Hosted(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.body = nn.Conv2d(16, 16, 3, padding=1)
        self.host = OnTheHost()

    def forward(self, x):
        return self.host(self.body(self.stem(x)))


def test_what_cannot_be_counted_is_listed_once_and_the_ratio_says_so():
    conversion = octify.convert(Hosted(), 0.5, input_shape=(1, 3, 16, 16), leaf_modules=[OnTheHost])
    assert conversion.module.get_submodule("body").alpha_out == 0.5  # merged before the op without a rule
    report = conversion.report
    assert report.original.uncounted == report.converted.uncounted == ["host (OnTheHost)"]
    assert report.uncounted == ["host (OnTheHost)"] and report.to_dict()["ratios_exclude"] == ["host (OnTheHost)"]
    table = report.table()
    assert table.count("host (OnTheHost)") == 1
    assert "MACs (multiply-accumulates, excluding 1 not counted)" in table


class SharedSplit(nn.Module):
    """One OctSplit module called on two tensors."""

    def __init__(self) -> None:
        super().__init__()
        half = ChannelSplit.from_alpha(16, 0.5)
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.split = OctSplit(half)
        self.block = nn.Sequential(OctConv2d(16, 16, 3, padding=1, alpha=0.5))
        self.merge = OctMerge(half)

    def forward(self, x):
        y = self.stem(x)
        return self.merge(self.block(self.split(y))), self.merge(self.block(self.split(2 * y)))


def test_report_details():
    x = torch.rand(1, 3, 16, 16)
    converted = capture(SharedSplit(), (x,)).module
    report = build_report(SharedSplit(), converted, (x,))
    sections = dict(report.explanations())
    assert [line.split(":")[0] for line in sections["Splits and merges (2)"]] == \
        ["split (OctSplit, 2 calls)", "merge (OctMerge, 2 calls)"]
    # both calls' pooled low branch, 2 x 8x8x8 x 4 B; the high branch is a view of the input
    assert "creates 4.10 KB of feature maps" in sections["Splits and merges (2)"][0]
    assert "| &nbsp;&nbsp;block.0 | OctConv2d x2 | 0.5/0.5 |" in report.to_markdown(depth=None)
    assert ">&nbsp;&nbsp;block.0</td>" in report._repr_html_()


def test_conversion_repr_is_short(stages):
    text = repr(stages)
    assert text == ("Conversion(Stages, MACs 396.37 K -> 341.07 K, coverage 46.5%, 4 notes, "
                    "captured by symbolic tracing)")


def test_a_conversion_that_saves_little_warns_with_the_fix():
    model = torchvision.models.resnet18(weights=None)
    with pytest.warns(SavingsWarning, match=r"small maps \(< min_size\): 9\d% .*pass that input_shape"):
        octify.convert(model, 0.5, input_shape=(1, 3, 28, 28), min_size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SavingsWarning)
        octify.convert(model, 0.5, input_shape=(1, 3, 64, 64), min_size=8)


def test_the_command_line_prints_the_warning_even_when_quiet(tmp_path):
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run([str(OCTIFY), "torchvision:resnet18", "--input-shape", "1,3,28,28", "--min-size", "8", "--quiet",
                             "--format", "json", "-o", str(tmp_path / "out")],
                            capture_output=True, text=True, env=environment, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("octify: warning: the conversion saves 0.0% of the MACs, "
                                                   "less than a tenth of the 55.4% its alphas could save")
    assert "small maps (< min_size): 95% of the convolution MACs" in lines[0]
    assert json.loads(result.stdout)["coverage"]["share"] == 0


class StandardizedConv(nn.Conv2d):
    """A Conv2d subclass that computes its weight in forward (as timm's StdConv2d): traced into F.conv2d."""

    def forward(self, x):
        return F.conv2d(x, self.weight - self.weight.mean(), self.bias, padding=1)


def test_functional_convolutions_count_by_their_module():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), StandardizedConv(8, 8, 3), StandardizedConv(8, 8, 3))
    conversion = octify.convert(model, {"1": 0.5, "2": 0.25}, input_shape=(1, 3, 16, 16))
    report = conversion.report
    functional = [(row.name, row.scope) for row in report.original.layers if row.op == "conv2d"]
    assert functional == [("conv2d", "1"), ("conv2d_1", "2")]
    cover = report.coverage
    assert (cover.convolution_macs, cover.octave_macs) == (16 * 16 * 8 * (3 + 8 + 8) * 9, 2 * 16 * 16 * 8 * 8 * 9)
    assert [(group.cause, group.layers) for group in cover.plain] == [("alpha 0 by schedule", ["0"])]
    assert report.possible_savings == round(16 * 16 * 8 * 8 * 9 * (2 - octave_cost_factor(0.5)
                                                                    - octave_cost_factor(0.25)))


def test_no_warning_where_convolutions_are_a_negligible_part_of_the_work():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 16 * 16, 4000))
    with warnings.catch_warnings():
        warnings.simplefilter("error", SavingsWarning)
        conversion = octify.convert(model, 0.5, input_shape=(1, 3, 16, 16))
    report = conversion.report
    assert report.saved_macs == 0 and 0 < report.possible_savings < 0.01 * report.original.macs
