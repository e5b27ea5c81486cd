"""How close each torchvision CNN comes to the MACs its default rules allow, estimated independently.

    python benchmarks/reachable.py                      # every torchvision CNN (ViT, Swin, MaxViT excluded)
    python benchmarks/reachable.py resnet50 alexnet     # these only

For each model, at alpha 0.5 and its own input size (299 for Inception-v3, else 224), it prints
the converted model's MAC ratio and the ratio it would reach if every convolution the default
rules allow were octave, estimated from forward hooks on the running original (not from
octify's planner): the stem's output, and what per-channel modules make of it, is plain; maps
smaller than ``min_size`` are plain (8, or 4 where convolutions writing maps under 8 pixels hold
more than 27% of the convolution MACs: ``min_size="auto"``, its share recomputed from the hooks);
a map read only by convolutions into small maps is plain (the paper's last octave layer before a
plain stage); depthwise convolutions keep their input's split. Each path is costed at its
exact size (low maps ceil-halved; a strided layer's low-to-high path at the output's full
resolution). Functional ops (add, concat, chunk) are not followed, so the estimate can be a little
optimistic where they carry a plain map.
"""
from __future__ import annotations

import math
import sys
import warnings
from typing import Dict, List, Tuple

import torch
import torchvision
from torch import nn

sys.path.insert(0, __file__.rsplit("/", 2)[0])
import octify  # noqa: E402
from octify.plan.min_size import PAPER_MIN_SIZE, SMALL_MAP_SHARE, SMALL_MIN_SIZE  # noqa: E402

ALPHA = 0.5
EXCLUDED = ("vit", "swin", "maxvit")


def octave_factor(alpha_in: float, alpha_out: float, height: int, width: int, strided: bool) -> float:
    """An octave convolution's MACs over the plain one's for an output of ``height`` x ``width`` (the paper's four
    paths; low maps are ceil-halved; a strided layer's low-to-high path runs at the output's full resolution)."""
    low = math.ceil(height / 2) * math.ceil(width / 2) / (height * width)
    to_high_from_low = 1 if strided else low
    return ((1 - alpha_in) * (1 - alpha_out) + (1 - alpha_in) * alpha_out * low
            + alpha_in * (1 - alpha_out) * to_high_from_low + alpha_in * alpha_out * low)


def convolutions(model: nn.Module, x: torch.Tensor) -> List[Dict]:
    """One record per convolution call (and per Linear on a channels-last map): MACs, sizes, map classes."""
    rows: List[Dict] = []
    classes: Dict[int, Tuple] = {}
    alive: List[torch.Tensor] = []  # keeps tensor ids unique while the model runs

    def class_of(t: torch.Tensor) -> Tuple:
        return classes.get(id(t), ("tensor", id(t)))

    def hook(module: nn.Module, inputs: Tuple, output: object) -> None:
        source = inputs[0] if inputs else None
        if not isinstance(source, torch.Tensor) or not isinstance(output, torch.Tensor):
            return
        alive.append(output)
        if isinstance(module, nn.Linear):
            if source.dim() == 4:
                _, height, width, _ = source.shape
                rows.append(dict(macs=height * width * module.in_features * module.out_features, size_in=min(height, width),
                                 size_out=min(height, width), out=(height, width), strided=False,
                                 source=class_of(source), result=("conv", len(rows)), stem=False, depthwise=False))
                classes[id(output)] = rows[-1]["result"]
            return
        if not isinstance(module, nn.Conv2d):
            if not list(module.children()) and not _pools_globally(source, output):  # a pooled vector is new
                classes[id(output)] = class_of(source)
            return
        _, channels_in, height, width = source.shape
        _, channels_out, out_height, out_width = output.shape
        depthwise = module.groups > 1 and module.groups == channels_in
        result = class_of(source) if depthwise else ("conv", len(rows))
        rows.append(dict(macs=out_height * out_width * channels_out * channels_in // module.groups
                         * module.kernel_size[0] * module.kernel_size[1],
                         size_in=min(height, width), size_out=min(out_height, out_width), out=(out_height, out_width),
                         strided=out_height < height, source=class_of(source), result=result, stem=source is x,
                         depthwise=depthwise))
        classes[id(output)] = result

    handles = [module.register_forward_hook(hook) for module in model.modules()]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return rows


def automatic_min_size(rows: List[Dict]) -> int:
    """``min_size="auto"`` for these convolutions: the paper's 8 unless maps under it hold a large share of MACs."""
    small = sum(row["macs"] for row in rows if row["size_out"] < PAPER_MIN_SIZE)
    return SMALL_MIN_SIZE if small > SMALL_MAP_SHARE * sum(row["macs"] for row in rows) else PAPER_MIN_SIZE


def _pools_globally(source: torch.Tensor, output: torch.Tensor) -> bool:
    return output.dim() == 4 and output.shape[-2:] == (1, 1) and source.dim() == 4 and source.shape[-2:] != (1, 1)


def reachable_savings(rows: List[Dict]) -> float:
    min_size = automatic_min_size(rows)
    plain = {row["result"] for row in rows if row["stem"]}
    readers: Dict[Tuple, List[Dict]] = {}
    for row in rows:
        readers.setdefault(row["source"], []).append(row)
    plain |= {cls for cls, reading in readers.items()
              if cls[0] == "conv" and all(row["size_out"] < min_size for row in reading)}
    saved = 0.0
    for row in rows:
        alpha_in = 0 if row["stem"] or row["source"] in plain or row["size_in"] < min_size else ALPHA
        alpha_out = 0 if row["result"] in plain or row["size_out"] < min_size else ALPHA
        if row["depthwise"]:
            shared = 0 if not alpha_in or not alpha_out else ALPHA
            factor = (1 - shared) + shared * octave_factor(0, 1, *row["out"], False)
        else:
            factor = octave_factor(alpha_in, alpha_out, *row["out"], row["strided"])
        saved += row["macs"] * (1 - factor)
    return saved


def main(names: List[str]) -> None:
    names = names or [name for name in torchvision.models.list_models(module=torchvision.models)
                      if not name.startswith(EXCLUDED)]
    print(f"{'model':28s} {'converted':>9s} {'reachable':>9s} {'gap':>6s}")
    for name in names:
        size = 299 if name.startswith("inception") else 224
        extra = {"aux_logits": True, "init_weights": False} if name in ("inception_v3", "googlenet") else {}
        model = torchvision.models.get_model(name, weights=None, **extra).eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = octify.convert(model, ALPHA, input_shape=(1, 3, size, size)).report
        converted = report.converted.macs / report.original.macs
        reachable = 1 - reachable_savings(convolutions(model, torch.randn(1, 3, size, size))) / report.original.macs
        print(f"{name:28s} {converted:9.3f} {reachable:9.3f} {converted - reachable:+6.3f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
