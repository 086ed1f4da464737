"""Audit an image set before training on it: files the decoder refuses, copies, leakage, label errors, outliers.

Every image is decoded with the same :func:`~transferkit.vision.data.load_image` that training uses, so
an image flagged here is exactly one that ``fit`` would skip. The usable ones are encoded once (through
:class:`~transferkit.common.features.FeatureCache`, at the encoder's own evaluation preprocessing) and
:func:`~transferkit.common.audit.run_audit` does the rest. Files are only read, never written.

Example:
    >>> report = audit("data/train", "packaged:mobilenet_v2", test="data/val")  # doctest: +SKIP
    >>> report.write("audit-out")                  # audit.md, audit.html, flagged.csv  # doctest: +SKIP
    >>> report.write_clean("train.clean.csv")      # fit("train.clean.csv") trains on the rest  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transferkit.common import TransferClassifier, load_encoder
from transferkit.common.audit import AuditConfig, AuditReport, AuditSplit, run_audit
from transferkit.common.audit_report import data_uri
from transferkit.common.features import FeatureCache, fingerprint

from .data import ImageDecodeError, ImageSet, as_image_set, load_image
from .transforms import eval_transform, processor_geometry

__all__ = ["audit", "decode_problem", "image_set"]

THUMBNAIL = 160  # longest side of a preview in audit.html, in pixels


def image_set(data: Any) -> ImageSet:
    """Every item of ``data`` *without* dropping the ones that do not decode (the audit reports them)."""
    if isinstance(data, ImageSet):
        return data
    if isinstance(data, (str, os.PathLike)):
        p = Path(data)
        if p.is_dir():
            return ImageSet.from_folder(p, validate=False)
        if p.suffix.lower() in (".csv", ".tsv"):
            return ImageSet.from_csv(p, validate=False)
    return as_image_set(data)


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


def content_hash(item: Any, img: Any = None) -> str | None:
    """blake2b of a file's bytes (or of an in-memory image's pixels): equal only for identical content."""
    h = hashlib.blake2b(digest_size=16)
    if isinstance(item, (str, os.PathLike)):
        with open(item, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    elif isinstance(item, dict) and item.get("bytes"):
        h.update(item["bytes"])
    elif img is not None:
        arr = np.asarray(img)
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    else:
        return None
    return h.hexdigest()


class _Pixels(torch.utils.data.Dataset):
    def __init__(self, images: ImageSet, transform: Any) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"pixel_values": self.transform(load_image(self.images.items[i], max_pixels=self.images.max_pixels)),
                "labels": 0}


def _collate(rows: list[dict]) -> dict:
    return {"pixel_values": torch.stack([r["pixel_values"] for r in rows]), "labels": torch.zeros(len(rows), dtype=torch.long)}


def _encoder(spec: Any, weights: str | None) -> Any:
    if isinstance(spec, TransferClassifier):
        return spec.encoder
    kw = {"weights": weights} if weights else {}
    if isinstance(spec, torch.nn.Module) and hasattr(spec, "feature_dim"):
        kw["feature_dim"] = int(spec.feature_dim)
    return load_encoder(spec, task="image", **kw)


def _split(images: ImageSet, encoder: Any, cache: FeatureCache, batch_size: int, progress: bool) -> AuditSplit:
    labels = images.targets or ["" for _ in images.items]
    usable, hashes, problems = [], [], {}
    for i, item in enumerate(images.items):
        try:
            img = load_image(item, max_pixels=images.max_pixels)
        except ImageDecodeError as err:
            problems[i] = decode_problem(err, item)
            hashes.append(None)
            continue
        usable.append(i)
        hashes.append(content_hash(item, img))
    kept = ImageSet([images.items[i] for i in usable], [labels[i] for i in usable], max_pixels=images.max_pixels)
    processor = encoder.processor
    prep = fingerprint(processor_geometry(processor), type(processor).__name__,
                       processor.to_dict() if hasattr(processor, "to_dict") else None)
    if usable:
        feats, _ = cache.get_or_compute(encoder, _Pixels(kept, eval_transform(processor)), collate_fn=_collate,
                                        key_parts=("audit", encoder.fingerprint(), kept.fingerprint(), prep),
                                        batch_size=batch_size, progress=progress)
        features = feats.numpy()
    else:
        features = np.zeros((0, encoder.feature_dim), np.float32)
    files = all(isinstance(x, (str, os.PathLike)) for x in images.items)
    notes = [f"{images.origin}: {n} file(s) {why.replace('_', ' ')} left out by the reader"
             for why, n in images.skipped.items() if n]
    sources = [str(x) if isinstance(x, (str, os.PathLike)) else f"<image {i}>" for i, x in enumerate(images.items)]
    return AuditSplit(sources, labels, features, usable, hashes, problems, files=files, origin=images.origin, notes=notes)


def _preview(sets: dict[str, ImageSet]):
    def show(split: str, index: int) -> str:
        images = sets[split]
        try:
            img = load_image(images.items[index], max_pixels=images.max_pixels)
        except ImageDecodeError:
            return ""
        img.thumbnail((THUMBNAIL, THUMBNAIL))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=85)
        return f'<img alt="" src="{data_uri(buf.getvalue(), "image/jpeg")}">'

    return show


def audit(data: Any, encoder_or_model_spec: Any, test: Any = None, config: AuditConfig | None = None, *,
          weights: str | None = None, cache_dir: str | os.PathLike | None = None, batch_size: int = 32,
          progress: bool = True) -> AuditReport:
    """Audit a labelled image set (folder, CSV manifest, ``datasets.Dataset``, :class:`ImageSet` or
    ``(images, labels)``), and its leakage into ``test`` when given.

    Args:
        encoder_or_model_spec: what ``fit --model`` takes (a Hub id, ``packaged:mobilenet_v2``,
            ``torchvision:<name>`` with ``weights``, a local folder), an ``nn.Module`` with ``feature_dim``,
            an :class:`~transferkit.common.Encoder` or a trained classifier (its encoder is used).
        config: thresholds (:class:`~transferkit.common.audit.AuditConfig`).
        cache_dir: keep the features here (a second audit of the same files reads them back).

    Returns:
        an :class:`~transferkit.common.audit.AuditReport`; nothing is written until ``report.write(...)``.
    """
    encoder = _encoder(encoder_or_model_spec, weights)
    train_set = image_set(data)
    test_set = image_set(test) if test is not None else None
    with tempfile.TemporaryDirectory(prefix="tk-audit-") as tmp:
        cache = FeatureCache(cache_dir or tmp)
        train = _split(train_set, encoder, cache, batch_size, progress)
        held_out = _split(test_set, encoder, cache, batch_size, progress) if test_set is not None else None
    sets = {"train": train_set, **({"test": test_set} if test_set is not None else {})}
    return run_audit(train, held_out, config, preview=_preview(sets))
