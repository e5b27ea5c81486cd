"""``octify --calibrate PATH --distill-steps N``: the installed command, with a tiny model and tiny images."""
import json
import textwrap

import pytest
import torch
from torchvision.io import write_png

from test_cli import assert_one_error_line, listing, load_saved, octify, octify_here

NET = """
    import torch
    from torch import nn


    class Net(nn.Module):
        def __init__(self, classes=10):
            super().__init__()
            self.body = nn.Sequential(
                nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
                nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()),
                nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()))
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, classes))

        def forward(self, x):
            return self.head(self.body(x))


    class Segmenter(Net):
        def __init__(self):
            super().__init__()
            self.head = nn.Conv2d(16, 2, 1)


    torch.manual_seed(0)
    model = Net().eval()
    segmenter = Segmenter().eval()
"""
SHAPE = ["--input-shape", "1,3,16,16"]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "net.py").write_text(textwrap.dedent(NET))
    images = tmp_path / "images"
    images.mkdir()
    generator = torch.Generator().manual_seed(0)
    for index, (height, width) in enumerate([(20, 24), (16, 16), (30, 18), (17, 21)] * 3):
        write_png(torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator),
                  str(images / f"{index:02d}.png"))
    (images / "notes.txt").write_text("not an image\n")
    (tmp_path / "empty").mkdir()
    torch.save(torch.randn(10, 3, 16, 16, generator=generator), tmp_path / "inputs.pt")
    torch.save(torch.randn(10, 3, 8, 8), tmp_path / "small.pt")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_calibrates_and_distils_on_a_folder_of_images(workdir):
    result = octify("net.py", *SHAPE, "--calibrate", "images", "--distill-steps", "3", "--distill-lr", "2e-3", "-o",
                    "out", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "calibrated on 10 inputs; top-1 agreement with the original on 2 held-out inputs: " in result.stderr
    assert "distilled 3 steps at lr 0.002 in " in result.stderr
    recovery = json.loads((workdir / "out" / "report.json").read_text())["recovery"]
    assert recovery["metric"] == "top-1 agreement" and (recovery["inputs"], recovery["held_out"]) == (10, 2)
    assert recovery["distill_steps"] == 3 and recovery["features"] == ["body.1", "body.2"]
    assert recovery["distill_lr"] == 0.002
    assert all((recovery[key] * 2).is_integer() for key in ("converted", "calibrated", "distilled"))  # of 2 inputs
    assert listing(workdir / "out") == ["model.pt", "net_octave", "report.json"]
    assert load_saved(workdir / "out")(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_a_tensor_file_and_a_map_output_report_relative_error(workdir, capsys):
    code, out, err = octify_here(capsys, "net.py:segmenter", *SHAPE, "--calibrate", "inputs.pt", "-o", "out", "-q")
    assert code == 0, err
    assert "calibrated on 8 inputs; relative error with the original on 2 held-out inputs: " in err
    recovery = json.loads((workdir / "out" / "report.json").read_text())["recovery"]
    assert recovery["metric"] == "relative error" and "distilled" not in recovery
    assert recovery["calibrated"] != recovery["converted"]
    saved = torch.load(workdir / "out" / "model.pt", weights_only=False)
    assert {int(m.num_batches_tracked) for m in saved.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1}


BAD = {
    "missing": (["--calibrate", "nowhere"], 2, ["--calibrate nowhere: no such folder or file"]),
    "not-a-tensor-file": (["--calibrate", "net.py"], 2, ["expected a folder of images or a .pt tensor file"]),
    "no-images": (["--calibrate", "empty"], 2, ["--calibrate empty: found no images", "at least 2 are needed"]),
    "wrong-shape": (["--calibrate", "small.pt"], 2, ["expected a floating-point tensor of shape (N, 3, 16, 16)",
                                                      "found shape (10, 3, 8, 8)"]),
    "distill-without-data": (["--distill-steps", "5"], 2, ["--distill-steps needs --calibrate PATH"]),
    "zero-steps": (["--calibrate", "images", "--distill-steps", "0"], 2, ["--distill-steps"]),
    "lr-without-steps": (["--calibrate", "images", "--distill-lr", "1e-5"], 2,
                         ["--distill-lr needs --distill-steps N"]),
    "zero-lr": (["--calibrate", "images", "--distill-steps", "3", "--distill-lr", "0"], 2, ["--distill-lr"]),
    "reconstruct-without-data": (["--reconstruct"], 2, ["--reconstruct needs --calibrate PATH"]),
    "refine-without-data": (["--refine-steps", "3"], 2, ["--refine-steps needs --calibrate PATH"]),
    "zero-refine-steps": (["--calibrate", "images", "--refine-steps", "0"], 2, ["--refine-steps"]),
    "channels-without-data": (["--choose-channels"], 2, ["--choose-channels needs --calibrate PATH"]),
    "channels-with-tuning": (["--calibrate", "images", "--choose-channels", "--fastest"], 2,
                             ["--choose-channels works with --alpha or --schedule, not with a tuning target"]),
}


@pytest.mark.parametrize("args, status, fragments", list(BAD.values()), ids=list(BAD))
def test_bad_recovery_options(workdir, capsys, args, status, fragments):
    before = listing(workdir)
    code, out, err = octify_here(capsys, "net.py", *SHAPE, *args, "-o", "out")
    assert (code, out) == (status, "")
    assert_one_error_line(err, *fragments)
    assert listing(workdir) == before


def test_channels_chosen_layers_fitted_and_blocks_refined_on_the_held_in_images(workdir):
    result = octify("net.py", *SHAPE, "--calibrate", "images", "--choose-channels", "--reconstruct",
                    "--refine-steps", "4", "--strided-high", "-o", "out", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "reconstructed 2 layers (0 left as they were); top-1 agreement: " in result.stderr
    assert "refined 2 blocks, 4 steps each, in " in result.stderr
    report = json.loads((workdir / "out" / "report.json").read_text())
    recovery = report["recovery"]
    assert recovery["reconstructed_layers"] == 2 and recovery["reconstruction_skipped"] == {}
    assert recovery["refined_blocks"] == 2 and recovery["refine_steps"] == 4
    assert recovery["refinement_skipped"] == {} and recovery["refine_seconds"] > 0
    assert all((recovery[key] * 2).is_integer() for key in ("reconstructed", "refined"))  # of 2 inputs
    chosen = [note for note in report["notes"] if note["kind"] == "channels"]
    assert chosen and all("low" in note["reason"] for note in chosen), report["notes"]
