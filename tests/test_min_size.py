"""``min_size``: the paper's 8 pixels, lowered to 4 by ``"auto"`` where small maps hold much of the work."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

import octify
from octave_helpers import macs_by_flop_counter
from octify.plan.min_size import PAPER_MIN_SIZE, SMALL_MAP_SHARE, SMALL_MIN_SIZE, resolve_min_size, small_map_share

OCTIFY = Path(sys.executable).with_name("octify")


def test_the_share_counts_the_macs_of_convolutions_writing_maps_under_8_pixels():
    assert small_map_share([(300, 14), (100, 7), (600, 56)]) == pytest.approx(0.1)
    assert small_map_share([(300, 8), (100, 4)]) == pytest.approx(0.25)
    assert small_map_share([]) == 0.0


def test_auto_keeps_the_papers_8_up_to_the_share_and_lowers_it_above_with_a_note():
    at_limit = [(round(SMALL_MAP_SHARE * 1000), 7), (1000 - round(SMALL_MAP_SHARE * 1000), 14)]
    assert resolve_min_size("auto", at_limit) == (PAPER_MIN_SIZE, None)
    size, note = resolve_min_size("auto", [(400, 7), (600, 14)])
    assert size == SMALL_MIN_SIZE
    assert (note.name, note.kind) == ("min_size", "schedule")
    assert "hold 40% of the convolution MACs" in note.reason and "min_size=8" in note.reason
    assert resolve_min_size(6, [(400, 7), (600, 14)]) == (6, None)  # a number is taken as it is


@pytest.fixture(scope="module")
def regnet() -> nn.Module:
    return torchvision.models.regnet_x_400mf(weights=None).eval()


def test_a_network_built_for_small_maps_converts_its_7x7_stage_by_default(regnet):
    automatic = octify.convert(regnet, 0.5)
    assert [note.name for note in automatic.notes if note.kind == "schedule"] == ["min_size"]
    assert "hold 53% of the convolution MACs" in automatic.explain()
    layer = automatic.module.get_submodule("trunk_output.block4.block4-1.f.a.0")  # a 7x7 map
    assert (layer.alpha_in, layer.alpha_out) == (0.5, 0.5)
    ratio = automatic.report.converted.macs / automatic.report.original.macs
    x = torch.randn(1, 3, 224, 224)
    assert ratio == pytest.approx(macs_by_flop_counter(automatic.module, x) / macs_by_flop_counter(regnet, x),
                                  abs=1e-12)
    assert ratio < 0.52  # min_size 4: every stage after the stem octave

    paper = octify.convert(regnet, 0.5, min_size=8)
    assert not [note for note in paper.notes if note.kind == "schedule"]
    assert type(paper.module.get_submodule("trunk_output.block4.block4-1.f.a.0")) is nn.Conv2d
    assert paper.report.converted.macs / paper.report.original.macs > 0.75  # 52% of the MACs stay plain


def test_the_papers_resnet50_keeps_its_7x7_stage_plain_by_default():
    conversion = octify.convert(torchvision.models.resnet50(weights=None), 0.5)
    assert not [note for note in conversion.notes if note.kind == "schedule"]
    assert "smaller than min_size=8" in conversion.explain()


@pytest.mark.parametrize("bad", [0, -8, 7.5, True, "small", None])
def test_a_bad_min_size_says_what_to_pass(bad):
    with pytest.raises(ValueError, match=r"min_size must be a positive number of pixels .* or 'auto', got"):
        octify.convert(nn.Conv2d(3, 8, 3), 0.5, input_shape=(1, 3, 16, 16), min_size=bad)


def test_the_command_line_takes_min_size(tmp_path):
    refused = subprocess.run([str(OCTIFY), "torchvision:resnet18", "--min-size", "tiny", "-o", str(tmp_path / "a")],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert "--min-size takes a positive number of pixels" in refused.stderr and "'tiny'" in refused.stderr
    assert not (tmp_path / "a").exists()
