"""The ``octify`` command's tuning options: a target, how it is measured, the schedule file it saves.

Which schedule a target chooses is tested with a fake timer in ``test_tuning.py``; here the real
command runs a tiny model (real timings, so only what holds whatever they are is checked).
"""
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from octify.cli.console import Console
from octify.cli.main import run
from terminal import Terminal

SCRIPT = Path(sys.executable).with_name("octify")
OCTIFY = str(SCRIPT) if SCRIPT.exists() else shutil.which("octify")
TINY = """
    import torch.nn.functional as F
    from torch import nn


    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 3, padding=1)
            self.a = nn.Conv2d(16, 32, 3, padding=1)
            self.b = nn.Conv2d(32, 32, 3, padding=1)
            self.head = nn.Linear(32, 10)

        def forward(self, x):
            x = F.relu(self.b(F.relu(self.a(F.relu(self.stem(x))))))
            return self.head(x.mean((2, 3)))


    model = Tiny()
"""
SMALL = ("--input-shape", "1,3,32,32")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "tiny.py").write_text(textwrap.dedent(TINY))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OCTIFY_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def octify(*args, cwd):
    return subprocess.run([OCTIFY, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def alphas(report):
    return [(layer["name"], layer["alpha_in"], layer["alpha_out"]) for layer in report["converted"]["layers"]
            if layer["alpha_in"] is not None]


def test_fastest_measures_saves_the_schedule_and_the_schedule_reproduces_the_plan(workdir):
    result = octify("tiny.py", "--fastest", "--batch-size", "2", "-o", "tuned", "--format", "json", *SMALL,
                    cwd=workdir)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    latency = report["latency"]
    assert latency["setting"] == "batch 2, cpu, float32, eager" and latency["ratio"] <= 1
    assert {layer["name"]: layer["latency"] is not None for layer in report["original"]["layers"]
            if layer["name"] in ("stem", "a", "b")} == {"stem": False, "a": True, "b": True}
    assert "wrote tuned/: model.pt, tiny_octave/, report.json, schedule.toml" in result.stderr
    assert "tuned for fastest (batch 2, cpu, float32, eager): " in result.stderr
    schedule = (workdir / "tuned" / "schedule.toml").read_text()
    assert schedule.startswith("# octify schedule: fastest, batch 2, cpu, float32, eager\n")
    assert [line.split(" = ")[0] for line in schedule.splitlines() if not line.startswith("#")] == ['"a"', '"b"', '"*"']
    assert list((workdir / "cache").glob("latency-*.json"))

    again = octify("tiny.py", "--schedule", "tuned/schedule.toml", "-o", "again", "--format", "json", *SMALL,
                   cwd=workdir)
    assert again.returncode == 0, again.stderr
    assert alphas(json.loads(again.stdout)) == alphas(report)
    assert json.loads(again.stdout)["latency"] is None


def test_a_macs_target_without_measuring(workdir, capsys):
    status = run(["tiny.py", "--target-macs", "0.8", "--no-measure", "-o", "out", "--format", "json", *SMALL])
    out, err = capsys.readouterr()
    assert status == 0, err
    report = json.loads(out)
    assert report["ratios"]["macs"] <= 0.8 and report["latency"] is None
    assert "tuned for target_macs 0.8 (MACs only, not measured)" in err
    assert not (workdir / "cache").exists()


@pytest.mark.parametrize("args, fragment", [
    (["--fastest", "--alpha", "0.5"], "--fastest chooses the alphas by measurement: use it without --alpha or "
                                      "--schedule"),
    (["--target-macs", "0.5", "--fastest"], "use one of --target-macs, --target-latency or --fastest, not "
                                            "--target-macs and --fastest"),
    (["--batch-size", "8"], "--batch-size is for a tuning target: use it with --target-macs, --target-latency or "
                            "--fastest"),
    (["--device", "cpu", "--alpha", "0.5"], "--device is for a tuning target"),
    (["--target-macs", "1.5"], "--target-macs 1.5: expected a ratio of the original's MACs in (0, 1]"),
    (["--target-latency", "0"], "--target-latency 0: expected a ratio of the original's measured latency"),
    (["--fastest", "--no-measure"], "--no-measure: only --target-macs can be met without measuring, not --fastest"),
    (["--target-macs", "0.5", "--no-measure", "--batch-size", "2"], "--no-measure measures nothing: drop --batch-size"),
    (["--fastest", "--batch-size", "0"], "--batch-size 0: expected a positive integer"),
])
def test_tuning_options_that_do_not_go_together_are_one_error_line(workdir, capsys, args, fragment):
    status = run(["tiny.py", *args, *SMALL])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and err.startswith("octify: error: ") and fragment in err, err
    assert sorted(p.name for p in workdir.iterdir()) == ["tiny.py"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_a_gpu_is_refused_before_any_work(workdir, capsys):
    assert run(["tiny.py", "--fastest", "--device", "cuda", *SMALL]) == 2
    assert "--device cuda: torch finds no CUDA device here" in capsys.readouterr().err


def test_the_progress_bar_shows_on_a_terminal_unless_quiet():
    terminal, quiet = Terminal(), Terminal()
    for stream, console in ((terminal, Console(stderr=terminal)), (quiet, Console(quiet=True, stderr=quiet))):
        console.progress("timing layers", 1, 4)
        console.progress("timing layers", 4, 4)
    assert terminal.text == ("\r\x1b[Ktiming layers [#####...............] 1/4"
                             "\r\x1b[Ktiming layers [####################] 4/4\r\x1b[K")
    assert quiet.text == ""
