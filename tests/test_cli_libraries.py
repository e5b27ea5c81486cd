"""``octify timm:NAME`` and ``octify smp:ARCH[:ENCODER]``: models from timm and segmentation_models_pytorch.

The successful runs drive the installed script; the bad names run in-process, as in test_cli.
"""
import json
import sys

import pytest
import torch

from test_cli import assert_one_error_line, listing, load_saved, octify, octify_here

SMALL = ("--input-shape", "1,3,64,64")


def test_help_names_the_library_forms(tmp_path):
    result = octify("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "timm:NAME" in result.stdout and "smp:ARCH[:ENCODER]" in result.stdout


def test_timm_model_converts_into_the_default_directory(tmp_path):
    result = octify("timm:resnet18", *SMALL, "--format", "json", "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert listing(tmp_path) == ["resnet18-octave"]
    report = json.loads(result.stdout)
    assert report["original"]["model"] == "ResNet" and report["ratios"]["macs"] < 0.75
    with torch.no_grad():
        assert load_saved(tmp_path / "resnet18-octave")(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_smp_model_with_an_encoder_converts(tmp_path):
    result = octify("smp:Unet:resnet18", *SMALL, "--format", "json", "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert listing(tmp_path) == ["Unet-resnet18-octave"]
    report = json.loads(result.stdout)
    assert report["original"]["model"] == "Unet" and report["ratios"]["macs"] < 0.75
    saved = tmp_path / "Unet-resnet18-octave"
    assert "Unet_resnet18_octave" in listing(saved)
    with torch.no_grad():
        assert load_saved(saved)(torch.randn(1, 3, 64, 64)).shape == (1, 1, 64, 64)


BAD_NAMES = {
    "unknown-timm-name": (["timm:resnt18"], ["timm has no model 'resnt18'; did you mean resnet18"]),
    "timm-without-name": (["timm:"], ["MODEL 'timm:' needs a model name, such as timm:resnet18"]),
    "unknown-smp-arch": (["smp:Unte"], ["segmentation_models_pytorch has no model 'Unte'; did you mean Unet?"]),
    "unknown-smp-encoder": (["smp:FPN:resnt18"], ["segmentation_models_pytorch has no encoder 'resnt18'; "
                                                  "did you mean resnet18"]),
    "unknown-timm-encoder": (["smp:FPN:tu-nothing"], ["has no encoder 'tu-nothing'", "tu-NAME takes timm's NAME"]),
    "smp-without-name": (["smp:"], ["such as smp:Unet or smp:Unet:resnet18"]),
}


@pytest.mark.parametrize("args, fragments", list(BAD_NAMES.values()), ids=list(BAD_NAMES))
def test_bad_library_names(tmp_path, monkeypatch, capsys, args, fragments):
    monkeypatch.chdir(tmp_path)
    code, out, err = octify_here(capsys, *args)
    assert (code, out) == (2, "")
    assert_one_error_line(err, *fragments)
    assert listing(tmp_path) == []


@pytest.mark.parametrize("spec, package", [("timm:resnet18", "timm"), ("smp:Unet", "segmentation_models_pytorch")])
def test_missing_library_names_the_install_command(tmp_path, monkeypatch, capsys, spec, package):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, package, None)  # import fails as if not installed
    code, out, err = octify_here(capsys, spec)
    assert (code, out) == (2, "")
    assert_one_error_line(err, f"{package} is not installed: pip install 'octify[zoo]'")
    assert listing(tmp_path) == []
