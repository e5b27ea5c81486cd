"""octify.export: converted modules export to ONNX (checked in onnxruntime), TorchScript and
torch.export, and save as an importable code package, at even and odd input sizes."""
import importlib
import re
import shutil
import sys

import numpy as np
import onnxruntime
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import octify
from octify.export import (FORMATS, ExportError, check_available, export, export_onnx, export_program,
                           export_torchscript, save_code)
from octify.layers import OctConv2d


class SmallNet(nn.Module):
    """Stride 2, a residual add, a channel concat and functional activations: every resampling path."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.conv1 = nn.Conv2d(16, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.down = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(32, 32, 3, padding=1)
        self.side = nn.Conv2d(32, 16, 1)
        self.head = nn.Linear(48, 10)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = x + F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.down(x))
        x = torch.cat([self.conv2(x), self.side(x)], 1)
        return self.head(x.mean((2, 3)))


SIZES = {"odd": (1, 3, 37, 29), "even": (2, 3, 32, 32)}


def convert(model, shape):
    conversion = octify.convert(model, 0.5, input_shape=shape)
    assert any(isinstance(m, OctConv2d) and m.low_in and m.low_out for m in conversion.module.modules())
    module = conversion.module.eval()
    x = torch.randn(shape)
    with torch.no_grad():
        return module, x, module(x)


@pytest.fixture(scope="module", params=list(SIZES))
def small(request):
    torch.manual_seed(0)
    return convert(SmallNet(), SIZES[request.param])


def run_onnx(path, x):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def test_onnx_runs_in_onnxruntime_and_matches(small, tmp_path):
    module, x, expected = small
    export_onnx(module, (x,), tmp_path / "model.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # one file: weights inside
    np.testing.assert_allclose(run_onnx(tmp_path / "model.onnx", x), expected.numpy(), rtol=0, atol=1e-4)


def test_onnx_of_resnet18_at_an_odd_size_matches(tmp_path):
    module, x, expected = convert(torchvision.models.resnet18(weights=None, num_classes=10), (1, 3, 65, 63))
    export(module, (x,), "onnx", tmp_path / "model.onnx")
    np.testing.assert_allclose(run_onnx(tmp_path / "model.onnx", x), expected.numpy(), rtol=0, atol=1e-4)


def test_torchscript_loads_and_matches(small, tmp_path):
    module, x, expected = small
    export_torchscript(module, (x,), tmp_path / "model.torchscript.pt")
    with pytest.warns(FutureWarning):  # torch.jit is deprecated, still supported
        loaded = torch.jit.load(str(tmp_path / "model.torchscript.pt"))
    torch.testing.assert_close(loaded(x), expected, rtol=0, atol=1e-5)


def test_torch_export_loads_and_matches(small, tmp_path):
    module, x, expected = small
    export_program(module, (x,), tmp_path / "model.pt2")
    loaded = torch.export.load(str(tmp_path / "model.pt2")).module()
    torch.testing.assert_close(loaded(x), expected, rtol=0, atol=1e-5)


def test_exports_use_eval_mode_and_restore_the_modules_modes(tmp_path):
    torch.manual_seed(0)
    conversion = octify.convert(SmallNet(), 0.5, input_shape=(2, 3, 16, 16))
    module = conversion.module.train()
    x = torch.randn(2, 3, 16, 16)
    export_program(module, (x,), tmp_path / "model.pt2")
    assert all(m.training for m in module.modules())
    with torch.no_grad():
        expected = module.eval()(x)
    torch.testing.assert_close(torch.export.load(str(tmp_path / "model.pt2")).module()(x), expected)


def test_formats_name_their_files_and_unknown_formats_are_refused(tmp_path):
    assert {name: file for name, (file, _) in FORMATS.items()} == {
        "onnx": "model.onnx", "torchscript": "model.torchscript.pt", "torch.export": "model.pt2"}
    with pytest.raises(ValueError, match="unknown export format 'tflite'; choose from onnx, torchscript"):
        export(nn.Identity(), (torch.zeros(1),), "tflite", tmp_path / "model")


def test_saved_code_imports_and_runs_after_the_folder_moves(small, tmp_path):
    module, x, expected = small
    save_code(module, tmp_path / "written" / "small_octave", "SmallNetOctave")
    moved = tmp_path / "moved"
    shutil.move(str(tmp_path / "written"), str(moved))
    source = (moved / "small_octave" / "module.py").read_text()
    assert "from octify.ops import" in source and str(tmp_path) not in source
    pickled = [p for p in (moved / "small_octave").glob("*.pt") if p.name != "state_dict.pt"]
    assert pickled and all(t.is_meta for p in pickled for t in torch.load(p, weights_only=False).state_dict().values())
    sys.path.insert(0, str(moved))
    try:
        package = importlib.import_module("small_octave")
        rebuilt = package.SmallNetOctave().eval()
    finally:
        sys.path.remove(str(moved))
        for name in [n for n in sys.modules if n == "small_octave" or n.startswith("small_octave.")]:
            del sys.modules[name]
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), expected, rtol=0, atol=0)


class Gate(nn.Module):
    def forward(self, x):
        if x.mean() > 0:  # a decision on values: fx cannot trace it, octify keeps this module as it is
            return x
        return -x


@pytest.fixture(scope="module")
def gated():
    conversion = octify.convert(nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), Gate(), nn.Conv2d(16, 16, 3, padding=1)),
                                0.5, input_shape=(1, 3, 16, 16))
    return conversion.module, conversion.example_inputs


def test_torchscript_refuses_to_freeze_a_decision_on_values(gated, tmp_path):
    line = Gate.forward.__code__.co_firstlineno + 1
    with pytest.raises(ExportError, match=re.escape(f"torch.jit.trace cannot follow the decision at {__file__}:{line} "
                                                    "(Converting a tensor to a Python boolean")):
        export_torchscript(*gated, tmp_path / "model.torchscript.pt")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_export_says_why_in_one_line_and_leaves_no_file(gated, tmp_path):
    with pytest.raises(ExportError) as failure:
        export(*gated, "onnx", tmp_path / "model.onnx")
    message = str(failure.value)
    assert "\n" not in message and "\x1b" not in message
    assert message.startswith("GuardOnDataDependentSymNode: Could not guard on data-dependent expression")
    assert message.endswith("if x.mean() > 0:  # a decision on values: fx cannot trace it, octify keeps this module "
                            "as it is)")
    assert "The following call raised this error" in str(failure.value.__cause__)  # the whole error, for debugging
    assert list(tmp_path.iterdir()) == []


def test_missing_packages_are_named_with_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    check_available("torchscript")
    with pytest.raises(ExportError, match=re.escape('exporting to onnx needs onnxscript, not installed: '
                                                    'pip install "octify[export]"')):
        export(nn.Conv2d(3, 4, 1), (torch.zeros(1, 3, 4, 4),), "onnx", tmp_path / "model.onnx")
