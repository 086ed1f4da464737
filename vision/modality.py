"""The image modality: how images enter the one classification flow (reading, decoding, previews,
the pixel reference, the search's image choices)."""

from __future__ import annotations

import copy
import io
import math
import os
from collections.abc import Sequence
from typing import Any

import torch

from transferkit.common.audit_report import data_uri
from transferkit.common.modality import Modality
from transferkit.common.sources import LabelledSource

from .data import IMAGE_EXTENSIONS, MAX_PIXELS, ImageDecodeError, ImageSet, as_image_set, load_image
from .transforms import AugmentConfig, eval_transform, processor_geometry

__all__ = ["ImageModality", "decode_problem", "input_sizes", "resized_processor"]

THUMBNAIL = 160  # longest side of a preview in audit.html, in pixels


class ImageModality(Modality):
    """Images: files Pillow decodes (with the decompression-bomb limit ``max_pixels``), normalised as the
    encoder's processor normalises for evaluation."""

    kind = "image"
    extensions = IMAGE_EXTENSIONS
    decode_error = ImageDecodeError
    reasons = {
        "truncated": ("the file ends before its data does", "-"),
        "too_large": ("more pixels than the decoder's safety limit", "pixels"),
    }

    def __init__(self, encoder: Any = None, *, checks: Any = None, max_pixels: int = MAX_PIXELS) -> None:
        super().__init__(encoder, checks=checks)
        self.max_pixels = max_pixels

    def read(self, data: Any) -> LabelledSource:
        """Every item of ``data`` *without* dropping the ones that do not decode (the audit reports them)."""
        if isinstance(data, (str, os.PathLike)):
            data = ImageSet.from_folder(data, validate=False) if os.path.isdir(data) else ImageSet.from_csv(data, validate=False)
        images = as_image_set(data)
        self.max_pixels = images.max_pixels
        return LabelledSource(images.items, images.targets or ["" for _ in images.items], origin=images.origin,
                              skipped=images.skipped)

    def decode(self, item: Any, *, strict: bool = True) -> Any:
        return load_image(item, max_pixels=self.max_pixels)

    def collate(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        tf = eval_transform(self.processor)
        return {"pixel_values": torch.stack([tf(img) for img in examples])}

    def problem(self, err: Exception, item: Any) -> tuple[str, str, float]:
        return decode_problem(err, item)

    def preview(self, item: Any) -> str:
        try:
            img = load_image(item, max_pixels=self.max_pixels)
        except ImageDecodeError:
            return ""
        img.thumbnail((THUMBNAIL, THUMBNAIL))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=85)
        return f'<img alt="" src="{data_uri(buf.getvalue(), "image/jpeg")}">'

    def fingerprint(self) -> str:
        from transferkit.common.features import fingerprint

        p = self.processor
        return fingerprint(processor_geometry(p), type(p).__name__, p.to_dict() if hasattr(p, "to_dict") else None)

    def reference(self) -> Any:
        """Logistic regression on 32x32 pixels."""
        from .reference import PixelLogReg

        return PixelLogReg()

    def search_space(self, trial: Any, task: Any) -> dict[str, Any]:
        """Augmentation on or off, and for encoders without position embeddings (CNNs) the input size."""
        sizes = input_sizes(task.encoder)
        if len(sizes) > 1:
            size = trial.suggest_categorical("image_size", sizes)
            task.encoder.processor = resized_processor(task.encoder.processor, size)
        plain = AugmentConfig(crop_scale=(1.0, 1.0), hflip=False)
        return {"augment": AugmentConfig() if trial.suggest_categorical("augment", [True, False]) else plain}


def decode_problem(err: ImageDecodeError, item: Any) -> tuple[str, str, float]:
    """The decoder's refusal as (reason, detail, score): unreadable, empty, truncated, corrupt or too_large."""
    text = str(err)
    name = f"{item}: " if isinstance(item, (str, os.PathLike)) else "<bytes>: "
    text = text[len(name):] if text.startswith(name) else text  # the report names the file already
    if isinstance(item, (str, os.PathLike)) and os.path.isfile(item) and os.path.getsize(item) == 0:
        return "empty", "0 bytes", math.nan
    if "has no pixels" in text:
        return "empty", text, math.nan
    if "exceeds the limit" in text or "decompression bomb" in text.lower():
        return "too_large", text, math.nan
    if "not a readable image" in text:
        return "unreadable", text, math.nan
    return ("truncated" if "truncated" in text.lower() else "corrupt"), text, math.nan


def input_sizes(encoder: Any) -> list[int]:
    """Square input sizes worth trying: the native one, and twice it for small-image encoders (a CIFAR
    net on photos); a size is kept only if the encoder runs on it and gives the same feature size
    (position embeddings and flattening layers rule sizes out). Encoders trained at 128 px or more keep
    their own size: offered three quarters of it (cheaper trials, up to commit 8242239), the search on
    ants vs bees picked MobileNetV2 at 160 px on a perfect dev score (seed 2 of ``python
    benchmarks/vision_transfer.py --auto --encoders mobilenet_v2``) and scored 0.843 on val, against
    0.928 and 0.961 for its 224-px picks of seeds 0 and 1."""
    (h, w), _, _ = processor_geometry(encoder.processor)
    if h != w or not hasattr(encoder.processor, "size"):
        return [h]
    candidates = {2 * h} if h <= 64 else set()
    device = next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    ok = []
    for size in sorted(candidates):
        try:
            with torch.no_grad():
                out = encoder(pixel_values=torch.zeros(1, 3, size, size, device=device))
            if tuple(out.shape) == (1, encoder.feature_dim):
                ok.append(size)
        except (RuntimeError, ValueError):
            pass
    encoder.train(was_training)
    return sorted({h, *ok})


def resized_processor(processor: Any, size: int) -> Any:
    """A copy of ``processor`` that resizes (and centre-crops, where it crops) to ``size`` x ``size``."""
    processor = copy.deepcopy(processor)
    processor.size = {"height": size, "width": size}
    if getattr(processor, "do_center_crop", False):
        processor.crop_size = {"height": size, "width": size}
    return processor
