"""Augmentation and preprocessing sized from the encoder's own image processor."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class AugmentConfig:
    """Training-time augmentation (evaluation always uses the processor's plain resize + normalise)."""

    crop_scale: tuple[float, float] = field(default=(0.25, 1.0), metadata={"help": "RandomResizedCrop area range (1,1 = plain resize)."})
    hflip: bool = field(default=True, metadata={"help": "Random horizontal flips (turn off for text, digits, maps)."})
    randaugment: bool = field(default=False, metadata={"help": "RandAugment (2 ops, magnitude 9)."})
    mixup: float = field(default=0.0, metadata={"help": "MixUp alpha (0: off)."})
    cutmix: float = field(default=0.0, metadata={"help": "CutMix alpha (0: off)."})

    def __post_init__(self) -> None:
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")
        if self.mixup < 0 or self.cutmix < 0:
            raise ValueError("mixup and cutmix alphas must be >= 0")


def processor_geometry(processor: Any) -> tuple[tuple[int, int], Sequence[float], Sequence[float]]:
    """(height, width), mean and std of a Hugging Face image processor (ImageNet defaults without one)."""
    if processor is None:
        return (224, 224), IMAGENET_MEAN, IMAGENET_STD
    size = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None
    size = size or getattr(processor, "size", None) or {"height": 224, "width": 224}
    if "height" in size:
        hw = (int(size["height"]), int(size["width"]))
    else:
        edge = int(size.get("shortest_edge", 224))
        hw = (edge, edge)
    mean = getattr(processor, "image_mean", None) or IMAGENET_MEAN
    std = getattr(processor, "image_std", None) or IMAGENET_STD
    return hw, list(mean), list(std)


def train_transform(processor: Any, aug: AugmentConfig) -> Callable[[Image.Image], torch.Tensor]:
    from torchvision.transforms import v2

    hw, mean, std = processor_geometry(processor)
    ops: list[Any] = [v2.PILToTensor()]
    ops.append(v2.RandomResizedCrop(hw, scale=aug.crop_scale, antialias=True) if aug.crop_scale != (1.0, 1.0)
               else v2.Resize(hw, antialias=True))
    if aug.hflip:
        ops.append(v2.RandomHorizontalFlip())
    if aug.randaugment:
        ops.append(v2.RandAugment())
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    return v2.Compose(ops)


def eval_transform(processor: Any) -> Callable[[Image.Image], torch.Tensor]:
    """The processor itself when it can run (so exports predict exactly as ``pipeline`` does), else resize + normalise."""
    if processor is not None and callable(processor) and hasattr(processor, "image_mean"):
        return lambda img: processor(images=img, return_tensors="pt")["pixel_values"][0]
    from torchvision.transforms import v2

    hw, mean, std = processor_geometry(processor)
    return v2.Compose([v2.PILToTensor(), v2.Resize(hw, antialias=True), v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(mean, std)])


def batch_mixer(aug: AugmentConfig, num_classes: int) -> Callable[[torch.Tensor, torch.Tensor], tuple] | None:
    """MixUp and/or CutMix on a batch; labels become soft targets."""
    from torchvision.transforms import v2

    mixers = []
    if aug.mixup > 0:
        mixers.append(v2.MixUp(alpha=aug.mixup, num_classes=num_classes))
    if aug.cutmix > 0:
        mixers.append(v2.CutMix(alpha=aug.cutmix, num_classes=num_classes))
    if not mixers:
        return None
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)


def random_resized_crop_flip(pixels: torch.Tensor, size: tuple[int, int], scale: tuple[float, float] = (0.25, 1.0),
                             ratio: tuple[float, float] = (3 / 4, 4 / 3), hflip: bool = True) -> torch.Tensor:
    """RandomResizedCrop + RandomHorizontalFlip on a whole ``(B, C, H, W)`` float batch in one resampling.

    Each image gets its own crop, drawn as torchvision draws it (area fraction uniform in ``scale``,
    log aspect ratio uniform in ``ratio``, ten tries, then the centre crop), and its own flip; one
    ``grid_sample`` (bilinear) cuts, flips and resizes every image to ``size`` at once, instead of
    three transforms per image.
    """
    import math

    import torch.nn.functional as F

    b, _, h, w = pixels.shape
    tries = 10
    area = torch.empty(b, tries).uniform_(scale[0], scale[1]) * (h * w)
    log_r = torch.empty(b, tries).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    cw, ch = (area * log_r.exp()).sqrt().round(), (area / log_r.exp()).sqrt().round()
    ok = (cw >= 1) & (ch >= 1) & (cw <= w) & (ch <= h)
    first = ok.float().argmax(1)
    rows = torch.arange(b)
    cw, ch = cw[rows, first], ch[rows, first]
    # torchvision's fallback when no try fits: the whole image, clamped to the ratio range, centred.
    in_ratio = w / h
    fw, fh = (w, round(w / ratio[0])) if in_ratio < ratio[0] else (round(h * ratio[1]), h) if in_ratio > ratio[1] else (w, h)
    fits = ok.any(1)
    cw, ch = torch.where(fits, cw, torch.tensor(float(fw))), torch.where(fits, ch, torch.tensor(float(fh)))
    top = torch.where(fits, (torch.rand(b) * (h - ch + 1)).floor(), ((h - ch) / 2).round())
    left = torch.where(fits, (torch.rand(b) * (w - cw + 1)).floor(), ((w - cw) / 2).round())
    flip = torch.where(torch.rand(b) < 0.5, -1.0, 1.0) if hflip else torch.ones(b)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = cw / w * flip  # a negative x scale reads the crop right to left: the flip
    theta[:, 0, 2] = (2 * left + cw) / w - 1
    theta[:, 1, 1] = ch / h
    theta[:, 1, 2] = (2 * top + ch) / h - 1
    grid = F.affine_grid(theta.to(pixels.dtype), [b, pixels.shape[1], *size], align_corners=False)
    return F.grid_sample(pixels, grid.to(pixels.device), mode="bilinear", padding_mode="border", align_corners=False)
