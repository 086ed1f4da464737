"""The modality adapter: what one kind of data (images, audio clips, ...) tells the classification flow.

The classifier (:class:`~transferkit.common.classifier.TransferClassifier`), the data audit
(:func:`~transferkit.common.audit_driver.audit_data`) and the command-line verbs
(:func:`~transferkit.common.cli_verbs.add_classifier_verbs`) are written once; a modality fills in
the few hooks below, the way each PEFT method fills in the hooks of one tuner. Only :meth:`decode`
and :meth:`collate` are required; the rest have a plain default.

An adapter is bound to an encoder (its processor says the input size, the sampling rate): build it with
``Modality(encoder)``; :meth:`read` works without one.

Example:
    >>> import torch
    >>> class Vectors(Modality):
    ...     kind, extensions = "vectors", (".npy",)
    ...     def decode(self, item, *, strict=True):
    ...         return np.asarray(item, dtype=np.float32)
    ...     def collate(self, examples):
    ...         return {"inputs": torch.as_tensor(np.stack(examples))}
    >>> m = Vectors()
    >>> m.collate([m.decode([1, 2]), m.decode([3, 4])])["inputs"].shape
    torch.Size([2, 2])
"""

from __future__ import annotations

import hashlib
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from .encoders import Encoder, load_encoder
from .features import fingerprint
from .sources import LabelledSource, read_labelled


class Modality(ABC):
    """One kind of data, as the classification flow sees it.

    Class attributes:
        kind: the modality's name: the encoder task it registered (``load_encoder(task=kind)``), the
            ``datasets`` column that holds its items, and the reader's skip reason ``not_<kind>``.
        extensions: the file extensions its decoder reads (other files in a label folder are skipped).
        decode_error: what :meth:`decode` raises for an item it refuses.
        reasons: the audit reasons this modality adds (``{"silent": (meaning, what the score measures)}``).
        noun: what one item is called in messages (``"clip"``; default: ``kind``).
        checks_class: a settings dataclass of the modality's own audit checks (its fields become
            flags of the ``audit`` verb), or None.
    """

    kind: ClassVar[str] = ""
    extensions: ClassVar[tuple[str, ...]] = ()
    decode_error: ClassVar[type[Exception]] = ValueError
    noun: ClassVar[str] = ""
    reasons: ClassVar[dict[str, tuple[str, str]]] = {}
    checks_class: ClassVar[type | None] = None

    def __init__(self, encoder: Encoder | None = None, *, checks: Any = None) -> None:
        self.encoder = encoder
        self.checks = checks if checks is not None else (self.checks_class() if self.checks_class else None)

    @property
    def processor(self) -> Any:
        return self.encoder.processor if self.encoder is not None else None

    # -- required ------------------------------------------------------------------------------
    @abstractmethod
    def decode(self, item: Any, *, strict: bool = True) -> Any:
        """One item as read (a path, a dataset value, an in-memory object) -> the example :meth:`collate`
        takes, or raise :attr:`decode_error`. ``strict=False`` (previews) relaxes the audit's own limits."""

    @abstractmethod
    def collate(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        """Decoded examples -> one batch of encoder inputs at evaluation preprocessing (no augmentation)."""

    # -- optional ------------------------------------------------------------------------------
    @classmethod
    def encoder_for(cls, spec: Any, **kwargs: Any) -> Encoder:
        """The encoder of ``spec``: what ``fit --model`` takes, an ``nn.Module`` with ``feature_dim``, an
        :class:`~transferkit.common.Encoder`, or a trained task (its encoder)."""
        if hasattr(spec, "encoder") and isinstance(spec.encoder, Encoder):
            return spec.encoder
        if isinstance(spec, torch.nn.Module) and not isinstance(spec, Encoder) and hasattr(spec, "feature_dim"):
            kwargs.setdefault("feature_dim", int(spec.feature_dim))
        return load_encoder(spec, task=cls.kind, **{k: v for k, v in kwargs.items() if v is not None})

    def read(self, data: Any) -> LabelledSource:
        """Any labelled source -> its undecoded items and labels (:func:`~transferkit.common.sources.read_labelled`)."""
        return read_labelled(data, extensions=self.extensions, kind=self.kind, media_column=self.kind)

    def augment(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A training batch, randomly augmented (none by default)."""
        return batch

    def problem(self, err: Exception, item: Any) -> tuple[str, str, float]:
        """The decoder's refusal as an audit ``(reason, detail, score)``: ``empty`` for an empty file,
        else ``unreadable``."""
        if isinstance(item, (str, os.PathLike)) and os.path.isfile(item) and os.path.getsize(item) == 0:
            return "empty", "0 bytes", math.nan
        return "unreadable", str(err), math.nan

    def check(self, example: Any) -> tuple[str, str, float] | None:
        """An audit problem of a decoded example beyond what the decoder refuses (a silent clip), or None."""
        return None

    def length(self, example: Any) -> int | None:
        """The example's length where padding depends on it (the audit batches shortest-first), else None."""
        return None

    def preview(self, item: Any) -> str:
        """HTML showing ``item`` in the audit page (a thumbnail, a player), or "" for none."""
        return ""

    def reference(self) -> Any:
        """The simple reference results sit beside (``fit(examples, labels)``, ``predict(examples)``), or None."""
        return None

    def search_space(self, trial: Any, task: Any) -> dict[str, Any]:
        """The modality's own recipe choices for an Optuna ``trial``: ``fit`` keywords to add, or changes
        made to ``task`` (a clone being tried). None by default."""
        return {}

    def fingerprint(self) -> str:
        """Changes whenever the preprocessing of :meth:`collate` changes (keys cached features)."""
        p = self.processor
        return fingerprint(type(self).__name__, type(p).__name__, p.to_dict() if hasattr(p, "to_dict") else None)


def content_hash(item: Any, example: Any = None) -> str | None:
    """blake2b of a file's bytes, a dataset value's bytes, or an in-memory item's (else its decoded
    example's) values: equal only for identical content."""
    h = hashlib.blake2b(digest_size=16)
    if isinstance(item, (str, os.PathLike)):
        with open(item, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    if isinstance(item, dict) and item.get("bytes"):
        h.update(item["bytes"])
        return h.hexdigest()
    value = item if isinstance(item, np.ndarray) else example
    if value is None:
        return None
    arr = np.ascontiguousarray(np.asarray(value))
    h.update(str(arr.shape).encode())
    h.update(arr.tobytes())
    return h.hexdigest()


class DecodedItems(torch.utils.data.Dataset):
    """The items of a source decoded on access, with their label ids (``-1`` without labels)."""

    def __init__(self, modality: Modality, items: Sequence[Any], label_ids: Sequence[int] | None = None) -> None:
        self.modality, self.items = modality, list(items)
        self.label_ids = list(label_ids) if label_ids is not None else [-1] * len(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return {"example": self.modality.decode(self.items[i]), "labels": self.label_ids[i]}


def labelled_collate(modality: Modality, augment: bool = False):
    """Rows of :class:`DecodedItems` -> the modality's encoder inputs plus ``labels`` (augmented with ``augment``)."""

    def collate(rows: list[dict]) -> dict:
        batch = {**modality.collate([r["example"] for r in rows]),
                 "labels": torch.tensor([int(r["labels"]) for r in rows], dtype=torch.long)}
        return modality.augment(batch) if augment else batch

    return collate


def decodable(modality: Modality, source: LabelledSource) -> LabelledSource:
    """The items of ``source`` that ``modality`` decodes; the others are skipped, counted (``undecodable``) and logged."""
    kept = LabelledSource([], [], origin=source.origin, skipped=dict(source.skipped), examples=dict(source.examples))
    kept.skipped.setdefault("undecodable", 0)
    for item, target in zip(source.items, source.targets):
        try:
            modality.decode(item)
        except modality.decode_error as err:
            kept.skip("undecodable", str(item) if isinstance(item, (str, os.PathLike)) else "<item>", str(err))
            continue
        kept.items.append(item)
        kept.targets.append(target)
    return kept
