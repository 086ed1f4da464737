"""Audit a labelled set of clips before training on it: unusable clips, copies, leakage, label errors, outliers.

Every clip is read and decoded by :class:`~transferkit.audio.modality.AudioModality`, with the same reader
and :func:`~transferkit.audio.decode.load_audio` that training uses, at the encoder's sampling rate, so a
clip flagged unreadable, empty, corrupt or clipped here is exactly one that ``fit`` would skip; clips
whose peak stays below ``silence_db`` are flagged silent on top (the decoder keeps them, but a silent
clip teaches a label nothing). :func:`~transferkit.common.audit_driver.audit_data` does the rest.
Files are only read, never written.

Example:
    >>> report = audit("clips/train", "packaged:speech_embedding", test="clips/test")  # doctest: +SKIP
    >>> report.write("audit-out")                  # audit.md, audit.html (with players), flagged.csv  # doctest: +SKIP
    >>> report.write_clean("train.clean.csv")      # fit("train.clean.csv") trains on the rest  # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any

from transferkit.common.audit import AuditConfig, AuditReport
from transferkit.common.audit_driver import audit_data

from .modality import AudioModality, ClipChecks, clip_problem

__all__ = ["ClipChecks", "audit", "clip_problem"]


def audit(data: Any, encoder_or_model_spec: Any, test: Any = None, config: AuditConfig | None = None, *,
          checks: ClipChecks | None = None, sampling_rate: int | None = None,
          cache_dir: str | os.PathLike | None = None, batch_size: int = 32, progress: bool = True) -> AuditReport:
    """Audit a labelled set of clips (folder of label sub-folders, ``path,label`` CSV/TSV manifest,
    :class:`AudioDataset` or ``(arrays, labels)``), and its leakage into ``test`` when given.

    Args:
        encoder_or_model_spec: what ``fit --model`` takes (a Hub id, ``packaged:speech_embedding``, a local
            folder), an ``nn.Module`` with ``feature_dim``, an :class:`~transferkit.common.Encoder`, or a
            trained classifier (its encoder is used).
        config: thresholds (:class:`~transferkit.common.audit.AuditConfig`).
        checks: the silence and clipping limits (:class:`ClipChecks`).
        sampling_rate: Hz of ``(arrays, labels)`` (default: the encoder's).
        cache_dir: keep the features here (a second audit of the same clips reads them back).

    Returns:
        an :class:`~transferkit.common.audit.AuditReport`; nothing is written until ``report.write(...)``.
    """
    modality = AudioModality(AudioModality.encoder_for(encoder_or_model_spec), checks=checks, input_rate=sampling_rate)
    return audit_data(modality, data, test, config, cache_dir=cache_dir, batch_size=batch_size, progress=progress)
