"""The data audit of any modality: read, decode, hash and encode every item, then :func:`run_audit`.

Every item is read by the modality's reader and decoded by its decoder, the same ones training uses,
so an item flagged here is exactly one that ``fit`` would skip; the modality's own checks (a silent
clip) come on top. The usable items are encoded once (through
:class:`~transferkit.common.features.FeatureCache`, at the encoder's evaluation preprocessing).
Files are only read, never written.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np

from .audit import AuditConfig, AuditReport, AuditSplit, run_audit
from .features import FeatureCache, fingerprint
from .modality import DecodedItems, Modality, content_hash, labelled_collate
from .sources import LabelledSource

__all__ = ["audit_data", "audit_split"]


def audit_split(modality: Modality, source: LabelledSource, cache: FeatureCache, *, batch_size: int = 32,
                progress: bool = True) -> AuditSplit:
    """One split: the decoder's refusals and the modality's checks as problems, a content hash per
    item, and the encoder's features of the usable items."""
    hashes, problems, lengths, usable = [], {}, {}, []
    for i, item in enumerate(source.items):
        try:
            example = modality.decode(item)
        except modality.decode_error as err:
            problems[i] = modality.problem(err, item)
            hashes.append(None)
            continue
        hashes.append(content_hash(item, example))
        problem = modality.check(example)
        if problem is not None:
            problems[i] = problem
            continue
        usable.append(i)
        lengths[i] = modality.length(example)
    encoder = modality.encoder
    features = np.zeros((0, encoder.feature_dim), np.float32)
    if usable:
        # Shortest first where padding depends on length, so that little padding enters a batch.
        order = sorted(usable, key=lambda i: lengths[i] or 0)
        items = DecodedItems(modality, [source.items[i] for i in order])
        key = ("audit", encoder.fingerprint(), fingerprint([str(x) if isinstance(x, (str, os.PathLike)) else x
                                                            for x in items.items]), modality.fingerprint())
        feats, _ = cache.get_or_compute(encoder, items, collate_fn=labelled_collate(modality), key_parts=key,
                                        batch_size=batch_size, progress=progress)
        back = np.argsort(np.asarray(order))  # row k of feats is item order[k]: back[p] is the row of usable[p]
        features = feats.numpy()[back]
    sources = [str(x) if isinstance(x, (str, os.PathLike)) else f"<{modality.noun or modality.kind} {i}>" for i, x in enumerate(source.items)]
    return AuditSplit(sources, source.targets, features, usable, hashes, problems, files=source.files,
                      origin=source.origin, notes=source.notes())


def audit_data(modality: Modality, data: Any, test: Any = None, config: AuditConfig | None = None, *,
               cache_dir: str | os.PathLike | None = None, batch_size: int = 32, progress: bool = True) -> AuditReport:
    """Audit labelled ``data`` (any source the modality reads), and its leakage into ``test`` when given.

    Args:
        modality: the adapter, bound to the encoder whose features the audit compares.
        config: thresholds (:class:`~transferkit.common.audit.AuditConfig`).
        cache_dir: keep the features here (a second audit of the same items reads them back).

    Returns:
        an :class:`~transferkit.common.audit.AuditReport`; nothing is written until ``report.write(...)``.
    """
    sources = {"train": modality.read(data), **({"test": modality.read(test)} if test is not None else {})}
    with tempfile.TemporaryDirectory(prefix="tk-audit-") as tmp:
        cache = FeatureCache(cache_dir or tmp)
        splits = {name: audit_split(modality, s, cache, batch_size=batch_size, progress=progress)
                  for name, s in sources.items()}

    def preview(split: str, index: int) -> str:
        return modality.preview(sources[split].items[index])

    report = run_audit(splits["train"], splits.get("test"), config, preview=preview)
    report.reasons = {**report.reasons, **modality.reasons}
    return report
