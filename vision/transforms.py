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

    @property
    def random(self) -> bool:
        """Whether training examples change at random (a frozen-prefix cache needs them not to)."""
        return self.crop_scale != (1.0, 1.0) or self.hflip or self.randaugment or self.mixup > 0 or self.cutmix > 0


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


def resized_crops(pixels: torch.Tensor | Sequence[torch.Tensor], size: tuple[int, int], scale: tuple[float, float] = (0.25, 1.0),
                  ratio: tuple[float, float] = (3 / 4, 4 / 3), hflip: bool = True) -> torch.Tensor:
    """RandomResizedCrop + RandomHorizontalFlip, image by image, on a ``(B, C, H, W)`` uint8 batch or a
    list of ``(C, h, w)`` images of any sizes: each crop drawn and resized (antialiased) exactly as
    torchvision's transforms do it on one image. Returns a float ``(B, C, *size)`` batch in 0-255."""
    from torchvision.transforms import v2
    from torchvision.transforms.v2 import functional as F

    out = torch.empty(len(pixels), pixels[0].shape[0], *size)
    for i, img in enumerate(pixels):
        top, left, h, w = v2.RandomResizedCrop.get_params(img, list(scale), list(ratio))
        crop = F.resized_crop(img, top, left, h, w, list(size), antialias=True)
        out[i] = crop.flip(-1) if hflip and torch.rand(1).item() < 0.5 else crop
    return out
