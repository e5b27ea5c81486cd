"""The ``octify`` command as a user runs it.

The main flows drive the installed script in a subprocess; the many bad-input cases call
the same entry point in-process (``octify.cli.main.run``), which is what the script runs, to keep
the suite fast. Every failure must be one ``octify: error:`` line on stderr, no traceback,
the documented exit status, and no files left behind.
"""
import configparser
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from octify.cli.console import Console
from octify.cli.main import run
from octify.cli.options import EXPORT_FORMATS
from octify.export import FORMATS
from octify.layers import OctConv2d
from terminal import Terminal

SCRIPT = Path(sys.executable).with_name("octify")  # the script installed with this interpreter's octify
OCTIFY = str(SCRIPT) if SCRIPT.exists() else shutil.which("octify")
ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

NET = """
    import torch
    import torch.nn.functional as F
    from torch import nn


    class Block(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)

        def forward(self, x):
            return x + F.relu(self.conv(x))


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
            self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
            self.block = Block(32)
            self.conv3 = nn.Conv2d(32, 32, 3, padding=1)
            self.head = nn.Linear(32, 10)

        def forward(self, x):
            x = F.relu(self.conv2(F.relu(self.conv1(x))))
            x = F.relu(self.conv3(self.block(x)))
            return self.head(x.mean((2, 3)))


    model = Net()
"""
SMALL = ("--input-shape", "1,3,32,32")
MODEL_FILES = {
    "net.py": NET,
    "syntax.py": "import torch\ndef build_model(:\n    pass\n",
    "raises.py": "raise RuntimeError('needs a GPU')\n",
    "empty.py": "from torch import nn\n\nclass Net(nn.Module):\n    pass\n\nsize = 3\n",
    "both.py": "from torch import nn\nmodel = nn.Conv2d(3, 8, 3)\ndef build_model():\n    return nn.Conv2d(3, 8, 3)\n",
    "branchy.py": """
        from torch import nn


        class Branchy(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 8, 3, padding=1)

            def forward(self, x):
                if x.sum() > 0:  # depends on the values: fx cannot trace it
                    return self.conv(x)
                return -self.conv(x)


        model = Branchy()
    """,
    "sized.py": """
        from torch import nn


        class Sized(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 8, 3, padding=1)

            def forward(self, x):
                if x.shape[-1] > 16:  # depends on the size: traced with the example's size fixed
                    return self.conv(x)
                return self.conv(x) * 2


        model = Sized()
    """,
    "two.py": """
        import torch.nn.functional as F
        from torch import nn


        class TwoInputs(nn.Module):
            def __init__(self):
                super().__init__()
                self.image = nn.Conv2d(3, 16, 3, padding=1)
                self.mask = nn.Conv2d(1, 16, 3, padding=1)
                self.head = nn.Conv2d(16, 8, 3, padding=1)

            def forward(self, image, mask):
                return self.head(F.relu(self.image(image) + self.mask(mask)))


        model = TwoInputs()
    """,
    "gated.py": """
        from torch import nn


        class Gate(nn.Module):
            def forward(self, x):
                if x.mean() > 0:  # depends on the values: kept as it is, and no trace can follow it
                    return x
                return -x


        class Gated(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
                self.gate = Gate()
                self.conv2 = nn.Conv2d(16, 16, 3, padding=1)

            def forward(self, x):
                return self.conv2(self.gate(self.conv1(x)))


        model = Gated()
    """,
    "heads.py": """
        from torch import nn


        class Heads(nn.Module):
            def __init__(self):
                super().__init__()
                self.body = nn.Conv2d(3, 16, 3, padding=1)
                self.mask = nn.Conv2d(16, 1, 1)

            def forward(self, x):
                features = self.body(x)
                return {"features": features, "mask": self.mask(features)}


        model = Heads()
    """,
    "builders.py": """
        from torch import nn


        def not_a_model():
            return [1, 2]


        def broken():
            raise ValueError("missing config")
    """,
    "slow.py": """
        import os
        import time
        from torch import nn


        def build_model():
            open(os.environ["OCTIFY_TEST_MARKER"], "w").close()
            time.sleep(120)
            return nn.Conv2d(3, 8, 3)
    """,
}


# -- helpers ---------------------------------------------------------------------------------

@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh working directory holding the model files; the modules imported from it are forgotten."""
    for name, text in MODEL_FILES.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield tmp_path
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


def octify(*args, cwd, **popen):
    """The installed script, as a user runs it."""
    return subprocess.run([OCTIFY, *args], cwd=cwd, capture_output=True, text=True, timeout=300, **popen)


def octify_here(capsys, *args):
    """The same entry point in-process: ``(exit status, stdout, stderr)``."""
    status = run(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


def assert_one_error_line(stderr, *fragments):
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("octify: error: "), stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0]


def load_saved(folder):
    return torch.load(folder / "model.pt", weights_only=False).eval()


# -- the installed command -------------------------------------------------------------------

def test_help_shows_model_forms_and_examples(tmp_path):
    result = octify("--help", cwd=tmp_path)
    assert result.returncode == 0
    for text in ("torchvision:NAME", "package.module:NAME", "build_model()", "Examples:",
                 "octify torchvision:resnet18 --alpha 0.5 -o resnet18-octave", "weights_only=False"):
        assert text in result.stdout


def test_version_names_octify_and_torch(tmp_path):
    import octify as library
    result = octify("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith(f"octify {library.__version__} (torch {torch.__version__.split('+')[0]}")


def test_python_dash_m_octify_is_the_command(tmp_path):
    result = subprocess.run([sys.executable, "-m", "octify", "--version"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("octify ")


def test_command_line_parses_without_torch_and_octify_export_is_reachable(tmp_path):
    code = ("import sys, octify.cli.main; assert 'torch' not in sys.modules, 'the command line imports torch'; "
            "import octify; print(octify.export.export_onnx.__module__, octify.convert.__name__); "
            "print(*[name for name in octify.__all__ if getattr(octify, name, None) is None])")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["octify.export convert", ""]  # and every name in __all__ is there


def test_setup_installs_every_package_inside_octify():
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    listed = setup["options"]["packages"].split()
    found = [".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "octify").rglob("__init__.py")]
    assert sorted(listed) == sorted(found + ["octify.cli"])
    assert setup["options"]["package_dir"].split() == ["octify.cli", "=", "cli"]
    assert setup["options.entry_points"]["console_scripts"].split() == ["octify", "=", "octify.cli.main:main"]


def test_converts_a_model_file_verifies_and_writes_loadable_outputs(workdir):
    result = octify("net.py", "-o", "out", "--verify", *SMALL, cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Cost report: Net, original and converted, input 1x3x32x32")
    assert re.search(r"^verified: output shapes match \[\(1, 10\)\]; largest absolute output difference "
                     r"\S+, \S+% of the largest absolute output, \S+ \(expected with octave layers", result.stderr, re.M)
    assert "wrote out/: model.pt, net_octave/, report.json" in result.stderr
    assert "\r" not in result.stderr  # no progress when stderr is not a terminal
    assert listing(workdir / "out") == ["model.pt", "net_octave", "report.json"]
    assert not [name for name in listing(workdir) if name.startswith(".")]

    report = json.loads((workdir / "out" / "report.json").read_text())
    assert report["schema_version"] == 3 and report["ratios"]["macs"] < 1
    module = load_saved(workdir / "out")
    assert any(isinstance(m, OctConv2d) for m in module.modules())
    x = torch.randn(2, 3, 40, 24)  # the saved module is general: another batch and size
    sys.path.insert(0, str(workdir / "out"))
    try:
        from_code = importlib.import_module("net_octave").NetOctave().eval()
    finally:
        sys.path.remove(str(workdir / "out"))
        del sys.modules["net_octave"], sys.modules["net_octave.module"]
    with torch.no_grad():
        assert module(x).shape == (2, 10)
        torch.testing.assert_close(from_code(x), module(x), rtol=0, atol=0)


def test_torchvision_model_quiet_json_into_the_default_directory(tmp_path):
    result = octify("torchvision:resnet18", "--alpha", "0.25", "--input-shape", "1,3,64,64", "--format", "json",
                    "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert listing(tmp_path) == ["resnet18-octave"]
    printed = json.loads(result.stdout)
    assert printed == json.loads((tmp_path / "resnet18-octave" / "report.json").read_text())
    assert printed["original"]["model"] == "ResNet" and printed["ratios"]["macs"] < 1
    out = tmp_path / "resnet18-octave"
    package_bytes = sum(p.stat().st_size for p in (out / "resnet18_octave").iterdir())
    assert package_bytes * 100 < (out / "model.pt").stat().st_size  # the weights are stored once, in model.pt
    sys.path.insert(0, str(out))
    try:
        from_code = importlib.import_module("resnet18_octave").ResNetOctave().eval()
    finally:
        sys.path.remove(str(out))
        del sys.modules["resnet18_octave"], sys.modules["resnet18_octave.module"]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        module = load_saved(out)
        assert module(x).shape == (1, 1000)
        torch.testing.assert_close(from_code(x), module(x), rtol=0, atol=0)
    assert from_code.state_dict().keys() == module.state_dict().keys()


def test_exports_every_format(workdir):
    result = octify("net.py", "-o", "out", "-q", "--export", "onnx,torchscript", "--export", "torch.export",
                    "--input-shape", "1,3,33,31", cwd=workdir)
    assert result.returncode == 0, result.stderr
    out = workdir / "out"
    assert listing(out) == ["model.onnx", "model.pt", "model.pt2", "model.torchscript.pt", "net_octave", "report.json"]
    x = torch.randn(1, 3, 33, 31)  # exports are made for the --input-shape size
    with torch.no_grad():
        expected = load_saved(out)(x)
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_output = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(onnx_output, expected.numpy(), rtol=0, atol=1e-4)
    with pytest.warns(FutureWarning):
        torchscript = torch.jit.load(str(out / "model.torchscript.pt"))
    torch.testing.assert_close(torchscript(x), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.export.load(str(out / "model.pt2")).module()(x), expected, rtol=0, atol=1e-5)


def test_an_export_that_cannot_be_made_says_why_in_one_line_and_keeps_the_rest(workdir):
    result = octify("gated.py", "-o", "out", "--export", "onnx,torchscript", *SMALL, cwd=workdir)
    assert result.returncode == 1
    assert result.stdout.startswith("Cost report: Gated") and "def forward" not in result.stdout
    assert "\x1b" not in result.stderr and "def forward" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("octify: error: ")]
    assert len(errors) == 2 and "Traceback" not in result.stderr
    line = str(workdir / "gated.py") + ":7"
    assert errors[0].startswith("octify: error: export to onnx failed, the other outputs are written: "
                                "GuardOnDataDependentSymNode: Could not guard on data-dependent expression")
    assert errors[0].endswith(f"(at {line}: if x.mean() > 0:  # depends on the values: kept as it is, and no "
                              "trace can follow it)")
    assert errors[1] == ("octify: error: export to torchscript failed, the other outputs are written: "
                         f"torch.jit.trace cannot follow the decision at {line} (Converting a tensor to a Python "
                         "boolean might cause the trace to be incorrect): the TorchScript module would always do "
                         "what the example input made it do")
    assert "wrote out/: model.pt, gated_octave/, report.json" in result.stderr
    assert listing(workdir / "out") == ["gated_octave", "model.pt", "report.json"]
    x = torch.randn(1, 3, 32, 32)
    sys.path.insert(0, str(workdir))  # model.pt refers to the model file's classes
    with torch.no_grad():
        module, original = load_saved(workdir / "out"), importlib.import_module("gated").model.eval()
        assert module(x).shape == original(x).shape


@pytest.mark.parametrize("args, status, fragments", [
    (["missing.py"], 2, ["missing.py: no such file"]),
    (["torchvision:resnt18"], 2, ["torchvision has no model 'resnt18'; did you mean resnet18"]),
    (["branchy.py", *SMALL], 1, ["cannot convert branchy: Branchy: torch.fx cannot trace it", "--leaf"]),
], ids=["missing-file", "unknown-torchvision-name", "untraceable-root"])
def test_failures_are_one_line_without_traceback(workdir, args, status, fragments):
    before = listing(workdir)
    result = octify(*args, "-o", "out", cwd=workdir)
    assert result.returncode == status
    assert result.stdout == ""
    assert_one_error_line(result.stderr, *fragments)
    assert listing(workdir) == before


def _ctrl_c_as_in_a_terminal():
    """The child takes SIGINT as a terminal's foreground job does, even when the tests run as a background job
    (whose shell has SIGINT ignored, which children inherit)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_interrupted_run_leaves_nothing(workdir):
    marker = workdir / "started"
    process = subprocess.Popen([OCTIFY, "slow.py", "-o", "out"], cwd=workdir, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "OCTIFY_TEST_MARKER": str(marker)},
                               preexec_fn=_ctrl_c_as_in_a_terminal)
    deadline = time.monotonic() + 120
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [name for name in listing(workdir) if name.startswith(".out.")]  # the staging directory, mid-run
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert_one_error_line(stderr, "interrupted; nothing was written")
    assert listing(workdir) == sorted([*MODEL_FILES, "started"])


# -- bad input, in-process -------------------------------------------------------------------

BAD_INPUT = {
    "syntax-error": (["syntax.py"], 1, ["syntax.py:2: syntax error"]),
    "raises-at-import": (["raises.py"], 1, ["raises.py raised RuntimeError: needs a GPU while running",
                                            "--debug shows the traceback"]),
    "no-model-found": (["empty.py"], 2, ["no model found in empty.py: looked for a module-level `model` "
                                         "(an nn.Module) or a `build_model()` function; it defines Net"]),
    "several-candidates": (["both.py"], 2, ["choose one: both.py:model or both.py:build_model"]),
    "missing-attribute": (["net.py:Nett"], 2, ["net.py has no attribute 'Nett'; did you mean Net?"]),
    "not-a-model": (["builders.py:not_a_model"], 2, ["builders.py:not_a_model() returned a list, not an nn.Module"]),
    "builder-raises": (["builders.py:broken"], 1, ["builders.py:broken() raised ValueError: missing config"]),
    "unknown-form": (["resnet18"], 2, ["expected path/to/file.py", "torchvision:resnet18"]),
    "missing-package": (["no_such_package.nets:small"], 2, ["cannot import 'no_such_package.nets'"]),
    "alpha-out-of-range": (["net.py", "--alpha", "1.5"], 2, ["--alpha: alpha must be in [0, 1), got 1.5"]),
    "alpha-not-a-number": (["net.py", "--alpha", "half"], 2, ["'--alpha': 'half' is not a valid float"]),
    "malformed-shape": (["net.py", "--input-shape", "1,3,x"], 2, ["--input-shape '1,3,x': expected positive"]),
    "zero-size": (["net.py", "--input-shape", "1,3,0,8"], 2, ["--input-shape '1,3,0,8'"]),
    "shape-rejected": (["net.py", "--input-shape", "1,1,32,32"], 1,
                       ["cannot convert net: the model rejects an input of shape (1, 1, 32, 32)"]),
    "output-under-a-file": (["net.py", "-o", "net.py/out"], 2, ["cannot write net.py/out: net.py is not a directory"]),
    "output-parent-missing": (["net.py", "-o", "nowhere/out"], 2, ["cannot write nowhere/out: nowhere does not exist"]),
    "unknown-format": (["net.py", "--format", "xml"], 2, ["'--format': 'xml' is not one of"]),
    "unknown-export": (["net.py", "--export", "onnx,tflite"], 2, ["--export 'tflite': choose from onnx"]),
    "unknown-leaf": (["net.py", "--leaf", "blok", *SMALL], 2, ["--leaf 'blok'", "did you mean block"]),
    "alpha-and-schedule": (["net.py", "--alpha", "0.5", "--schedule", "alphas.toml"], 2, ["not both"]),
    "schedule-suffix": (["net.py", "--schedule", "net.py"], 2, ["expected a .toml or .json file"]),
    "missing-schedule": (["net.py", "--schedule", "alphas.toml"], 2, ["--schedule alphas.toml: cannot read it"]),
}


@pytest.mark.parametrize("args, status, fragments", list(BAD_INPUT.values()), ids=list(BAD_INPUT))
def test_bad_input(workdir, capsys, args, status, fragments):
    before = listing(workdir)
    code, out, err = octify_here(capsys, *args, "-o", "out") if "-o" not in args else octify_here(capsys, *args)
    assert code == status
    assert out == ""
    assert_one_error_line(err, *fragments)
    assert listing(workdir) == before


@pytest.mark.parametrize("text, fragment", [
    ('"*" = ', "not valid TOML"),
    ('"layer1.*" = "half"', "the value of 'layer1.*' must be a number"),
    ("conv1.weight = 0", "the value of 'conv1' must be a number"),  # unquoted dots make tables
    ('"*" = 1.0', "--schedule: alpha for pattern '*' must be in [0, 1)"),
    ("", "expected a non-empty mapping"),
])
def test_bad_schedule_file(workdir, capsys, text, fragment):
    (workdir / "alphas.toml").write_text(text + "\n")
    code, out, err = octify_here(capsys, "net.py", "--schedule", "alphas.toml", *SMALL)
    assert code == 2
    assert_one_error_line(err, fragment)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc, where nobody can create files")
def test_unwritable_output_directory(workdir, capsys):
    code, out, err = octify_here(capsys, "net.py", "-o", "/proc/octify-out")
    assert code == 2
    assert_one_error_line(err, "cannot write to /proc")


def test_debug_shows_the_traceback(workdir, capsys):
    code, out, err = octify_here(capsys, "branchy.py", "--debug", *SMALL)
    assert code == 1
    assert "Traceback (most recent call last)" in err
    assert err.splitlines()[-1].startswith("octify: error: cannot convert branchy")
    assert listing(workdir) == sorted(MODEL_FILES)


def test_debug_shows_an_exports_whole_error(workdir, capsys):
    code, out, err = octify_here(capsys, "gated.py", "--export", "torch.export", "--debug", "-o", "out", *SMALL)
    assert code == 1
    assert "Traceback (most recent call last)" in err and "The following call raised this error" in err
    assert err.splitlines()[-1].startswith("octify: error: export to torch.export failed")
    assert listing(workdir / "out") == ["gated_octave", "model.pt", "report.json"]


def test_missing_export_packages_are_named_before_any_work(workdir, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    monkeypatch.setenv("OCTIFY_TEST_MARKER", str(workdir / "loaded"))
    code, out, err = octify_here(capsys, "slow.py", "--export", "torchscript,onnx", "-o", "out")
    assert code == 1
    assert_one_error_line(err, '--export onnx: exporting to onnx needs onnxscript, not installed: '
                               'pip install "octify[export]"')
    assert listing(workdir) == sorted(MODEL_FILES)  # the model was not even loaded


def test_a_model_returning_a_dict_exports_to_torchscript(workdir, capsys):
    code, out, err = octify_here(capsys, "heads.py", "--export", "torchscript", "-o", "out", *SMALL)
    assert code == 0, err
    x = torch.randn(1, 3, 32, 32)
    with pytest.warns(FutureWarning):
        scripted = torch.jit.load(str(workdir / "out" / "model.torchscript.pt"))
    with torch.no_grad():
        expected, produced = load_saved(workdir / "out")(x), scripted(x)
    assert set(produced) == {"features", "mask"}
    for key in expected:
        torch.testing.assert_close(produced[key], expected[key], rtol=0, atol=1e-5)


# -- options, in-process ---------------------------------------------------------------------

def test_existing_output_is_kept_without_force_and_replaced_with_it(workdir, capsys):
    assert octify_here(capsys, "net.py", "-o", "out", *SMALL)[0] == 0
    (workdir / "out" / "notes.txt").write_text("mine")
    code, out, err = octify_here(capsys, "net.py", "-o", "out", *SMALL)
    assert code == 2
    assert_one_error_line(err, "out already exists; pass --force to replace it")
    assert (workdir / "out" / "notes.txt").exists()

    code, out, err = octify_here(capsys, "net.py", "-o", "out", "--alpha", "0", "--force", *SMALL)
    assert code == 0, err
    assert listing(workdir / "out") == ["model.pt", "net_octave", "report.json"]
    assert not any(isinstance(m, OctConv2d) for m in load_saved(workdir / "out").modules())
    assert listing(workdir) == sorted([*MODEL_FILES, "out"])


@pytest.mark.parametrize("force", [(), ("--force",)], ids=["plain", "force"])
def test_an_existing_file_is_refused_the_same_way_with_or_without_force(workdir, capsys, force):
    code, out, err = octify_here(capsys, "net.py", "-o", "net.py", *force, *SMALL)
    assert code == 2
    assert_one_error_line(err, "net.py is a file, not an octify output directory; octify never replaces it, "
                               "even with --force: choose another -o")
    assert (workdir / "net.py").read_text() == textwrap.dedent(NET)


def test_a_leftover_staging_directory_gets_a_warning_and_stays(workdir, capsys):
    (workdir / ".out.0123abcd.partial").mkdir()
    code, out, err = octify_here(capsys, "net.py", "-o", "out", *SMALL)
    assert code == 0, err
    assert ("octify: warning: .out.0123abcd.partial: left by an earlier run into out that was killed (or is still "
            "running); delete once no octify run is writing there") in err.splitlines()
    assert listing(workdir) == sorted([*MODEL_FILES, ".out.0123abcd.partial", "out"])


def test_force_refuses_to_replace_a_directory_octify_did_not_write(workdir, capsys):
    (workdir / "data").mkdir()
    (workdir / "data" / "images.bin").write_text("precious")
    for force in [(), ("--force",)]:  # the same answer with or without --force
        code, out, err = octify_here(capsys, "net.py", "-o", "data", *force, *SMALL)
        assert code == 2
        assert_one_error_line(err, "data exists and is not an octify output directory (no report.json); "
                                   "octify never replaces it, even with --force")
    assert listing(workdir / "data") == ["images.bin"]


def test_alpha_zero_verifies_to_the_same_outputs(workdir, capsys):
    code, out, err = octify_here(capsys, "net.py", "--alpha", "0", "--verify", "-q", *SMALL)
    assert code == 0, err
    found = re.search(r"largest absolute output difference (\S+), (\S+)% of the largest absolute output, (\S+)$",
                      err, re.M)
    difference, percent, magnitude = (float(value) for value in found.groups())
    assert difference < 1e-5 and magnitude > 0.1
    assert percent == pytest.approx(100 * difference / magnitude, rel=1e-2)
    assert listing(workdir) == sorted([*MODEL_FILES, "net-octave"])


def test_verify_scales_the_difference_by_the_outputs_magnitude(workdir, capsys):
    code, out, err = octify_here(capsys, "net.py", "--alpha", "0.5", "--verify", "-q", *SMALL)
    assert code == 0, err
    found = re.search(r"difference (\S+), (\S+)% of the largest absolute output, (\S+) \(expected", err)
    difference, percent, magnitude = (float(value) for value in found.groups())
    assert difference > 1e-4 and percent == pytest.approx(100 * difference / magnitude, rel=1e-2)


def test_one_input_shape_per_model_input_in_order(workdir, capsys):
    code, out, err = octify_here(capsys, "two.py", "--input-shape", "1,3,32,32", "--input-shape", "1,1,32,32",
                                 "--verify", "--export", "torch.export", "-o", "out")
    assert code == 0, err
    assert "verified: output shapes match [(1, 8, 32, 32)]" in err
    program = torch.export.load(str(workdir / "out" / "model.pt2")).module()
    image, mask = torch.randn(1, 3, 32, 32), torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(program(image, mask), load_saved(workdir / "out")(image, mask))
    for shapes, named in [(["1,3,32,32"], "(1, 3, 32, 32) ("),  # too few, or in the wrong order
                          (["1,1,32,32", "1,3,32,32"], "(1, 1, 32, 32), (1, 3, 32, 32) (")]:
        code, out, err = octify_here(capsys, "two.py", *(f"--input-shape={shape}" for shape in shapes), "-o", "bad")
        assert code == 1
        assert_one_error_line(err, f"cannot convert two: the model rejects an input of shape {named}")


def test_schedule_file_sets_alphas_by_pattern_first_match_wins(workdir, capsys):
    (workdir / "alphas.toml").write_text('"conv3" = 0\n"*" = 0.5\n"conv2" = 0.25\n')
    code, out, err = octify_here(capsys, "net.py", "--schedule", "alphas.toml", "-o", "out", *SMALL)
    assert code == 0, err
    module = load_saved(workdir / "out")
    assert module.conv3.low_out == 0
    assert module.conv2.low_out == 16  # "*" (0.5 of 32 channels) comes before "conv2"
    (workdir / "alphas.json").write_text('{"conv2": 0.25, "*": 0.5, "nothing.*": 0.5}')
    code, out, err = octify_here(capsys, "net.py", "--schedule", "alphas.json", "-o", "out2", *SMALL)
    assert code == 0, err
    assert load_saved(workdir / "out2").conv2.low_out == 8
    assert "octify: warning: schedule pattern 'nothing.*' matches no convolution of the model" in err


def test_warns_when_the_model_traces_only_at_a_fixed_size_even_when_quiet(workdir, capsys):
    code, out, err = octify_here(capsys, "sized.py", "-o", "out", "--quiet", *SMALL)
    assert code == 0, err
    assert ("octify: warning: traced with the example input's sizes fixed (its forward reads them): the converted "
            "module accepts inputs of shape (*, *, *, 32) only") in err
    notes = json.loads((workdir / "out" / "report.json").read_text())["notes"]
    assert [note["kind"] for note in notes].count("fixed shapes") == 1
    with pytest.raises(ValueError, match=r"sizes fixed at \(1, 3, 32, 32\).*got \(1, 3, 16, 16\)"):
        load_saved(workdir / "out")(torch.randn(1, 3, 16, 16))


@pytest.mark.parametrize("leaf", ["block", "Block", "net.Block"])
def test_leaf_keeps_a_submodule_or_class_as_it_is(workdir, capsys, leaf):
    code, out, err = octify_here(capsys, "net.py", "--leaf", leaf, "-o", "out", *SMALL)
    assert code == 0, err
    module = load_saved(workdir / "out")
    assert type(module.block).__name__ == "Block" and type(module.block.conv) is torch.nn.Conv2d
    assert isinstance(module.conv3, OctConv2d)


def test_leaf_by_importable_class_path(workdir, capsys):
    code, out, err = octify_here(capsys, "torchvision:resnet18", "--leaf", "torchvision.models.resnet.BasicBlock",
                                 "--input-shape", "1,3,64,64", "-o", "out")
    assert code == 0, err
    assert type(load_saved(workdir / "out").get_submodule("layer1.0")).__name__ == "BasicBlock"


def test_model_forms_name_attribute_class_and_dotted_import(workdir, capsys, monkeypatch):
    (workdir / "zoo").mkdir()
    (workdir / "zoo" / "__init__.py").write_text("")
    (workdir / "zoo" / "nets.py").write_text(textwrap.dedent(NET) + "\n\ndef small():\n    return Net()\n")
    monkeypatch.syspath_prepend(str(workdir))
    for spec, folder in [("net.py:Net", "Net-octave"), ("net.py:model", "model-octave"),
                         ("zoo.nets:small", "small-octave")]:
        code, out, err = octify_here(capsys, spec, "-q", *SMALL)
        assert code == 0, err
        assert (workdir / folder / "report.json").is_file()


@pytest.mark.parametrize("report_format, start", [("table", "Cost report: Net"), ("markdown", "**Cost report: Net"),
                                                  ("csv", "model,"), ("json", "{")])
def test_report_formats(workdir, capsys, report_format, start):
    code, out, err = octify_here(capsys, "net.py", "--format", report_format, "-q", "-o", report_format, *SMALL)
    assert code == 0, err
    assert out.startswith(start)


# -- pieces ----------------------------------------------------------------------------------

def test_progress_shows_on_a_terminal_for_slow_steps_only(monkeypatch):
    monkeypatch.setattr("octify.cli.console.PROGRESS_DELAY", 0.05)
    terminal = Terminal()
    console = Console(stderr=terminal)
    with console.step("quick"):
        pass
    with console.step("converting"):
        time.sleep(0.3)
    assert "quick" not in terminal.text
    assert "\r\x1b[Kconverting... 0 s" in terminal.text
    assert re.search(r"\r\x1b\[Kconverting: done in \d\.\d s\n$", terminal.text)
    quiet = Terminal()
    with Console(quiet=True, stderr=quiet).step("converting"):
        time.sleep(0.2)
    assert quiet.text == ""


def test_cli_export_names_are_the_librarys():
    assert EXPORT_FORMATS == tuple(FORMATS)


def test_readme_documents_every_option(tmp_path):
    section = README.read_text().split("## Command line", 1)[1].split("\n## ", 1)[0]
    options = set(re.findall(r"(--[a-z-]+)", octify("--help", cwd=tmp_path).stdout))
    assert options and not {option for option in options if option not in section}
