"""Audit an image set before training on it: files the decoder refuses, copies, leakage, label errors, outliers.

Every image is read and decoded by :class:`~transferkit.vision.modality.ImageModality`, with the same
reader and :func:`~transferkit.vision.data.load_image` that training uses, so an image flagged here is
exactly one that ``fit`` would skip; :func:`~transferkit.common.audit_driver.audit_data` does the rest.
Files are only read, never written.

Example:
    >>> report = audit("data/train", "packaged:mobilenet_v2", test="data/val")  # doctest: +SKIP
    >>> report.write("audit-out")                  # audit.md, audit.html, flagged.csv  # doctest: +SKIP
    >>> report.write_clean("train.clean.csv")      # fit("train.clean.csv") trains on the rest  # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any

from transferkit.common.audit import AuditConfig, AuditReport
from transferkit.common.audit_driver import audit_data

from .modality import ImageModality, decode_problem

__all__ = ["audit", "decode_problem"]


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
    modality = ImageModality(ImageModality.encoder_for(encoder_or_model_spec, weights=weights))
    return audit_data(modality, data, test, config, cache_dir=cache_dir, batch_size=batch_size, progress=progress)
