"""Audit a labelled set of clips before training on it: unusable clips, copies, leakage, label errors, outliers.

Every clip is decoded with the same :func:`~transferkit.audio.decode.load_audio` that training uses, at
the encoder's sampling rate, so a clip flagged unreadable, empty, corrupt or clipped here is exactly one
that ``fit`` would skip; clips whose peak stays below ``silence_db`` are flagged silent on top (the
decoder keeps them, but a silent clip teaches a label nothing). The usable clips are encoded once
(through :class:`~transferkit.common.features.FeatureCache`) and
:func:`~transferkit.common.audit.run_audit` does the rest. Files are only read, never written.

Example:
    >>> report = audit("clips/train", "packaged:speech_embedding", test="clips/test")  # doctest: +SKIP
    >>> report.write("audit-out")                  # audit.md, audit.html (with players), flagged.csv  # doctest: +SKIP
    >>> report.write_clean("train.clean.csv")      # fit("train.clean.csv") trains on the rest  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from transferkit.common import TransferClassifier, load_encoder
from transferkit.common.audit import AuditConfig, AuditReport, AuditSplit, run_audit
from transferkit.common.audit_report import data_uri
from transferkit.common.config import check_settings, setting
from transferkit.common.features import FeatureCache, fingerprint

from .data import AUDIO_EXTENSIONS, AudioDataset
from .decode import DEFAULT_MAX_CLIPPED_FRACTION, AudioDataError, load_audio, prepare_waveform
from .encoder import AudioCollator, default_feature_extractor, min_input_samples

__all__ = ["ClipChecks", "audit", "clip_problem"]

log = logging.getLogger(__name__)

FULL_SCALE = 0.999  # a sample at or above this magnitude counts as clipped, as the decoder counts it
PREVIEW_SECONDS = 10.0  # players in audit.html hold at most this much of a clip


@dataclass
class ClipChecks:
    """What makes a clip unusable beyond what the decoder refuses.

    Example:
        >>> ClipChecks(silence_db=-50).silence_db
        -50
    """

    silence_db: float = setting(-60.0, "Flag a clip as silent when its peak is below this, in dB full scale.", lt=0)
    max_clipped_fraction: float = setting(DEFAULT_MAX_CLIPPED_FRACTION, "Flag a clip as clipped when more than "
                                          "this fraction of its samples sit at full scale (the decoder's limit).",
                                          ge=0, le=1)

    def __post_init__(self) -> None:
        check_settings(self)


def clip_problem(err: AudioDataError, item: Any) -> tuple[str, str, float]:
    """The decoder's refusal as (reason, detail, score): unreadable, empty, corrupt or clipped."""
    prefix = f"{err.source}: "
    detail = str(err)[len(prefix):] if str(err).startswith(prefix) else str(err)
    is_file = isinstance(item, (str, os.PathLike))
    if err.reason == "unreadable or not audio":
        empty = is_file and os.path.isfile(item) and os.path.getsize(item) == 0
        return ("empty", "0 bytes", math.nan) if empty else ("unreadable", detail, math.nan)
    if err.reason.startswith("empty"):
        return "empty", detail, math.nan
    if err.reason == "clipped":
        wave = sf.read(item, dtype="float32")[0] if is_file else np.asarray(item, dtype=np.float32)
        return "clipped", detail, float(np.mean(np.abs(wave) >= FULL_SCALE))
    return "corrupt", detail, math.nan


def _hash(item: Any) -> str:
    h = hashlib.blake2b(digest_size=16)
    if isinstance(item, (str, os.PathLike)):
        with open(item, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    else:
        h.update(np.ascontiguousarray(item).tobytes())
    return h.hexdigest()


class _Clips:
    """Every clip of a source, undecoded: paths (or arrays at ``rates``) with labels; nothing dropped."""

    def __init__(self, items: list[Any], labels: list[str], *, rates: list[int] | None = None, origin: str = "memory",
                 notes: list[str] | None = None) -> None:
        self.items, self.labels, self.rates, self.origin = items, [str(x) for x in labels], rates, origin
        self.notes = notes or []
        self.files = rates is None

    def sources(self) -> list[str]:
        return [str(x) if self.files else f"<clip {i}>" for i, x in enumerate(self.items)]

    def decode(self, i: int, rate: int, checks: ClipChecks | None) -> np.ndarray:
        limit = checks.max_clipped_fraction if checks else 1.0
        if self.files:
            return load_audio(self.items[i], rate, max_clipped_fraction=limit)
        return prepare_waveform(np.asarray(self.items[i]), self.rates[i], rate, f"<clip {i}>", max_clipped_fraction=limit)


def _clips(data: Any, sampling_rate: int | None, rate: int) -> _Clips:
    if isinstance(data, AudioDataset):
        files = all(os.path.isfile(s) for s in data.sources)
        if files:
            return _Clips(list(data.sources), list(data.targets), origin="AudioDataset")
        return _Clips(list(data.waveforms), list(data.targets), rates=[data.sampling_rate] * len(data), origin="AudioDataset")
    if isinstance(data, tuple) and len(data) == 2:
        arrays, labels = list(data[0]), list(data[1])
        if len(arrays) != len(labels):
            raise ValueError(f"got {len(arrays)} clips but {len(labels)} labels")
        return _Clips(arrays, labels, rates=[sampling_rate or rate] * len(arrays))
    if not isinstance(data, (str, os.PathLike)):
        raise TypeError(f"cannot audit {type(data).__name__}; pass a folder, a CSV/TSV manifest, an AudioDataset "
                        "or (arrays, labels)")
    path = Path(data)
    if path.is_dir():
        return _folder(path)
    if path.suffix.lower() in (".csv", ".tsv", ".tab"):
        return _manifest(path)
    raise ValueError(f"{path}: expected a folder of label sub-folders or a .csv/.tsv manifest")


def _folder(root: Path) -> _Clips:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise AudioDataError(str(root), "no label sub-folders", "expected root/<label>/<clip>.wav")
    items, labels, other = [], [], 0
    for label in classes:
        for p in sorted(p for p in (root / label).rglob("*") if p.is_file() and not p.name.startswith(".")):
            if p.suffix.lower() in AUDIO_EXTENSIONS:
                items.append(str(p))
                labels.append(label)
            else:
                other += 1
    notes = [f"{root}: {other} file(s) without an audio extension left out"] if other else []
    return _Clips(items, labels, origin=str(root), notes=notes)


def _manifest(path: Path) -> _Clips:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t" if path.suffix.lower() in (".tsv", ".tab") else ","))
    columns = list(rows[0]) if rows else []
    if "path" not in columns or "label" not in columns:
        raise ValueError(f"{path}: an audit manifest needs 'path' and 'label' columns; it has {columns}")
    items = [r["path"] if os.path.isabs(r["path"]) else str(path.parent / r["path"]) for r in rows]
    missing = [p for p in items if not os.path.exists(p)]
    keep = [i for i, p in enumerate(items) if os.path.exists(p)]
    notes = [f"{path}: {len(missing)} listed file(s) missing, e.g. {missing[0]}"] if missing else []
    return _Clips([items[i] for i in keep], [rows[i]["label"] for i in keep], origin=str(path), notes=notes)


def _encoder(spec: Any) -> Any:
    enc = spec.encoder if isinstance(spec, TransferClassifier) else load_encoder(
        spec, task="audio", **({"feature_dim": int(spec.feature_dim)}
                               if isinstance(spec, torch.nn.Module) and hasattr(spec, "feature_dim") else {}))
    if enc.processor is None:
        enc.processor = default_feature_extractor()
    return enc


def _split(clips: _Clips, encoder: Any, rate: int, checks: ClipChecks, cache: FeatureCache, batch_size: int,
           progress: bool) -> AuditSplit:
    waves, hashes, problems = {}, [], {}
    floor = 10 ** (checks.silence_db / 20)
    for i, item in enumerate(clips.items):
        try:
            wave = clips.decode(i, rate, checks)
        except AudioDataError as err:
            problems[i] = clip_problem(err, item)
            hashes.append(None)
            continue
        hashes.append(_hash(item))
        peak = float(np.abs(wave).max())
        if peak < floor:
            db = 20 * math.log10(peak) if peak > 0 else -math.inf
            problems[i] = ("silent", f"peak {db:.1f} dB full scale (threshold {checks.silence_db:g})", db)
            continue
        waves[i] = wave
    usable = sorted(waves)
    hf = getattr(encoder, "hf_model", None)
    min_samples = min_input_samples(hf.config, 0, encoder.processor) if hf is not None else 0
    # Shortest first, so that little padding enters a batch (group-norm front ends normalise over it too).
    order = sorted(usable, key=lambda i: len(waves[i]))
    ds = AudioDataset([waves[i] for i in order], [clips.labels[i] for i in order], rate).with_options(min_samples=min_samples)
    if usable:
        processor = encoder.processor
        prep = fingerprint(type(processor).__name__, processor.to_dict() if hasattr(processor, "to_dict") else None)
        feats, _ = cache.get_or_compute(encoder, ds, collate_fn=AudioCollator(processor, rate, targets=lambda t: 0),
                                        key_parts=("audit", encoder.fingerprint(), ds.fingerprint(), prep),
                                        batch_size=batch_size, progress=progress)
        position = {i: k for k, i in enumerate(usable)}
        back = np.empty(len(order), dtype=np.int64)
        back[[position[i] for i in order]] = np.arange(len(order))
        features = feats.numpy()[back]
    else:
        features = np.zeros((0, encoder.feature_dim), np.float32)
    return AuditSplit(clips.sources(), clips.labels, features, usable, hashes, problems, files=clips.files,
                      origin=clips.origin, notes=clips.notes)


def _preview(sets: dict[str, _Clips], rate: int):
    def show(split: str, index: int) -> str:
        try:  # clipped clips are previewed too: the player lets one hear the distortion
            wave = sets[split].decode(index, rate, None)
        except AudioDataError:
            return ""
        buf = io.BytesIO()
        sf.write(buf, wave[: int(PREVIEW_SECONDS * rate)], rate, format="WAV", subtype="PCM_16")
        return f'<audio controls preload="none" src="{data_uri(buf.getvalue(), "audio/wav")}"></audio>'

    return show


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
    checks = checks or ClipChecks()
    encoder = _encoder(encoder_or_model_spec)
    rate = int(getattr(encoder.processor, "sampling_rate", 16_000))
    sets = {"train": _clips(data, sampling_rate, rate)}
    if test is not None:
        sets["test"] = _clips(test, sampling_rate, rate)
    with tempfile.TemporaryDirectory(prefix="tk-audit-") as tmp:
        cache = FeatureCache(cache_dir or tmp)
        splits = {name: _split(c, encoder, rate, checks, cache, batch_size, progress) for name, c in sets.items()}
    return run_audit(splits["train"], splits.get("test"), config, preview=_preview(sets, rate))
