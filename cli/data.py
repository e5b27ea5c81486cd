"""``--calibrate PATH``: the inputs to calibrate and distil with, from a folder of images or a tensor file."""
from __future__ import annotations

from pathlib import Path
from typing import Tuple

import torch

from .errors import UsageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp")  # what torchvision.io decodes
TENSOR_SUFFIX = ".pt"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def check_data_path(path: Path) -> None:
    """UsageError unless ``path`` is a folder or a ``.pt`` file (no torch needed: checked before any work)."""
    if not path.exists():
        raise UsageError(f"--calibrate {path}: no such folder or file")
    if not path.is_dir() and path.suffix.lower() != TENSOR_SUFFIX:
        raise UsageError(f"--calibrate {path}: expected a folder of images or a {TENSOR_SUFFIX} tensor file")


def read_inputs(path: Path, shape: Tuple[int, ...], normalize: bool) -> torch.Tensor:
    """The inputs at ``path`` as one ``(N, C, H, W)`` tensor matching ``shape``'s ``C, H, W``.

    A folder: its images (``IMAGE_SUFFIXES``, sorted by name), each resized so that it covers ``H x W``,
    center-cropped to it, scaled to [0, 1] and, when ``normalize``, normalized with ImageNet's mean and
    standard deviation (their averages for one channel). A ``.pt`` file: a tensor saved with ``torch.save``.
    """
    check_data_path(path)
    if len(shape) != 4:
        raise UsageError(f"--calibrate needs a 4-d --input-shape N,C,H,W, got {','.join(map(str, shape))}")
    return _read_folder(path, shape, normalize) if path.is_dir() else _read_tensor(path, shape)


def _read_tensor(path: Path, shape: Tuple[int, ...]) -> torch.Tensor:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UsageError(f"--calibrate {path}: cannot read a tensor from it ({str(error).splitlines()[0]})") from error
    if not isinstance(data, torch.Tensor) or not data.is_floating_point() or data.ndim != 4 \
            or tuple(data.shape[1:]) != tuple(shape[1:]) or len(data) < 2:
        found = f"shape {tuple(data.shape)} ({data.dtype})" if isinstance(data, torch.Tensor) else type(data).__name__
        expected = ", ".join(map(str, shape[1:]))
        raise UsageError(f"--calibrate {path}: expected a floating-point tensor of shape (N, {expected}) with N >= 2, "
                         f"as --input-shape says; found {found}")
    return data


def _read_folder(path: Path, shape: Tuple[int, ...], normalize: bool) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2 import functional as TF

    channels, height, width = shape[1:]
    if channels not in (1, 3):
        raise UsageError(f"--calibrate {path}: images make inputs of 1 or 3 channels, --input-shape asks for "
                         f"{channels}; pass a {TENSOR_SUFFIX} tensor file")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if len(files) < 2:
        raise UsageError(f"--calibrate {path}: found {len(files) or 'no'} image{'' if len(files) == 1 else 's'} "
                         f"({', '.join(IMAGE_SUFFIXES)}); at least 2 are needed (one is held out)")
    mode = ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY
    images = []
    for file in files:
        try:
            image = decode_image(str(file), mode=mode)
        except Exception as error:
            raise UsageError(f"--calibrate {path}: cannot read {file.name} ({str(error).splitlines()[0]})") from error
        image = TF.resize(image[:channels], max(height, width), antialias=True)
        images.append(TF.center_crop(image, [height, width]))
    batch = torch.stack(images).float() / 255
    if normalize:
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else \
            ((sum(IMAGENET_MEAN) / 3,), (sum(IMAGENET_STD) / 3,))
        batch = TF.normalize(batch, list(mean), list(std))
    return batch
