"""The benchmark script runs end to end (a smoke test: no timing is asserted)."""
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "benchmark.py"


def test_benchmark_script_prints_its_table():
    command = [sys.executable, str(SCRIPT), "--models", "resnet18", "--alphas", "0.5", "--batches", "1",
               "--repeats", "1", "--train-repeats", "1", "--size", "64", "--processes", "2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| resnet18 | 0.5 |")]
    assert len(rows) == 1
    cells = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert len(cells) == 7 and all(cells), cells  # MACs, latency, training step, memory measured and estimated


TUNED = SCRIPT.with_name("tuned.py")


def test_tuned_benchmark_prints_a_row_per_target():
    command = [sys.executable, str(TUNED), "--models", "resnet18", "--batches", "1", "--targets", "fastest",
               "macs=0.6", "--size", "64", "--repeats", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| resnet18 | 1 |")]
    assert [row.split(" | ")[2] for row in rows] == ["fastest", "macs=0.6"]
    assert all(len(row.strip("|").split("|")) == 7 for row in rows)
