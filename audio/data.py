"""Audio sources -> validated mono waveforms at the encoder's sampling rate.

Every source (a folder with one sub-folder per label, a CSV/TSV manifest, a Hugging Face
``datasets.Dataset``, in-memory arrays) ends up as an :class:`AudioDataset`: a list of float32
mono waveforms at one sampling rate plus one target each (a label or a transcript). Bad
inputs never reach the model: each is skipped, counted in :class:`SkipReport` and logged with
its file name, or (``on_error="raise"``) raises :class:`AudioDataError` naming the file.

Decoding uses ``soundfile`` and resampling ``torchaudio.functional.resample``:
``torchaudio.load`` needs torchcodec/FFmpeg, which many machines lack.
"""

from __future__ import annotations

import csv
import functools
import io
import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import torchaudio

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif", ".au")
# A clip is "clipped" when its peak sits at full scale on more than this fraction of samples.
DEFAULT_MAX_CLIPPED_FRACTION = 0.01
_FULL_SCALE = 0.999


class AudioDataError(ValueError):
    """A clip that cannot be used; the message names the file and the reason.

    ``reason`` is a short fixed phrase (what skip reports count by); ``detail`` adds specifics.
    """

    def __init__(self, source: str, reason: str, detail: str = "") -> None:
        self.source, self.reason = source, reason
        super().__init__(f"{source}: {reason}{f' ({detail})' if detail else ''}")


@dataclass
class SkipReport:
    """Counts of clips skipped (or repaired) while building a dataset, by reason.

    ``skipped`` counts clips left out; ``repaired`` counts clips kept after a change the user
    should know about (downmixed, resampled, padded to the receptive field).
    """

    skipped: Counter = field(default_factory=Counter)
    repaired: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, source: str) -> None:
        self.skipped[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < 5:
            shown.append(source)
        log.warning("skipping %s: %s", source, reason)

    def repair(self, what: str) -> None:
        self.repaired[what] += 1

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def __str__(self) -> str:
        if not self.skipped and not self.repaired:
            return "no clips skipped or repaired"
        parts = [f"skipped {n} ({reason}; e.g. {', '.join(self.examples[reason][:2])})"
                 for reason, n in sorted(self.skipped.items())]
        parts += [f"{what}: {n}" for what, n in sorted(self.repaired.items())]
        return "; ".join(parts)


def receptive_field(config: Any, frames: int = 1) -> int:
    """Fewest input samples the conv front end of a wav2vec2-family config needs for ``frames`` outputs.

    Example:
        >>> from types import SimpleNamespace
        >>> receptive_field(SimpleNamespace(conv_kernel=[10, 3], conv_stride=[5, 2]))
        20
    """
    kernels, strides = list(config.conv_kernel), list(config.conv_stride)
    field_, jump = 1, 1
    for k, s in zip(kernels, strides):
        field_ += (k - 1) * jump
        jump *= s
    return field_ + (max(frames, 1) - 1) * jump


def to_mono(wave: np.ndarray, source: str = "<array>") -> np.ndarray:
    """Average the channels of a (frames, channels) or (channels, frames) array into one."""
    wave = np.asarray(wave)
    if wave.ndim == 1:
        return wave
    if wave.ndim != 2:
        raise AudioDataError(source, "not a 1-D or 2-D waveform", f"shape {wave.shape}")
    # soundfile returns (frames, channels); torch code tends to use (channels, frames). The channel
    # axis is the short one: no real recording has fewer samples than channels.
    axis = 1 if wave.shape[1] <= wave.shape[0] else 0
    return wave.mean(axis=axis)


def resample(wave: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample a mono float waveform with torchaudio's windowed-sinc filter."""
    if orig_sr == target_sr:
        return wave
    with torch.no_grad():
        out = _resampler(int(orig_sr), int(target_sr))(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)))
    return out.numpy()


@functools.lru_cache(maxsize=16)
def _resampler(orig_sr: int, target_sr: int) -> torchaudio.transforms.Resample:
    # The transform builds its sinc kernel once; the functional form rebuilds it on every call,
    # which made resampling cost more than synthesising a clip.
    return torchaudio.transforms.Resample(orig_sr, target_sr)


def check_waveform(wave: np.ndarray, source: str, max_clipped_fraction: float = DEFAULT_MAX_CLIPPED_FRACTION) -> None:
    """Raise :class:`AudioDataError` for an empty, non-finite, out-of-range or heavily clipped waveform."""
    if wave.size == 0:
        raise AudioDataError(source, "empty audio (zero samples)")
    if not np.isfinite(wave).all():
        raise AudioDataError(source, "NaN or infinite samples")
    peak = float(np.abs(wave).max())
    if peak > 1.0 + 1e-6:
        # Only float files can hold values past full scale; they mean a wrong scale, not loud speech.
        raise AudioDataError(source, "samples outside [-1, 1]", f"peak {peak:.3g}: float audio with the wrong scale?")
    if peak >= _FULL_SCALE:
        fraction = float(np.mean(np.abs(wave) >= _FULL_SCALE))
        if fraction > max_clipped_fraction:
            raise AudioDataError(source, "clipped", f"{fraction:.1%} of samples at full scale; limit {max_clipped_fraction:.1%}")


def prepare_waveform(
    wave: np.ndarray,
    orig_sr: int,
    target_sr: int,
    source: str = "<array>",
    *,
    max_clipped_fraction: float = DEFAULT_MAX_CLIPPED_FRACTION,
    report: SkipReport | None = None,
) -> np.ndarray:
    """Validate, downmix and resample one clip; returns float32 mono at ``target_sr``."""
    wave = np.asarray(wave)
    if np.issubdtype(wave.dtype, np.integer):
        # Integer PCM: scale by the type's range so that full scale maps to 1.0.
        wave = wave.astype(np.float32) / float(np.iinfo(wave.dtype).max + 1)
    wave = wave.astype(np.float32, copy=False)
    if wave.ndim == 2 and min(wave.shape) > 1 and report is not None:
        report.repair("downmixed to mono")
    wave = to_mono(wave, source)
    # Check before resampling: the filter would smear a NaN over the whole clip and hide clipping.
    check_waveform(wave, source, max_clipped_fraction)
    if orig_sr != target_sr and report is not None:
        report.repair(f"resampled {orig_sr} -> {target_sr} Hz")
    return np.ascontiguousarray(resample(wave, orig_sr, target_sr), dtype=np.float32)


def load_audio(
    path: str | os.PathLike | bytes,
    sampling_rate: int = 16_000,
    *,
    source: str | None = None,
    max_clipped_fraction: float = DEFAULT_MAX_CLIPPED_FRACTION,
    report: SkipReport | None = None,
) -> np.ndarray:
    """Decode an audio file (or its bytes) to float32 mono at ``sampling_rate``.

    Raises:
        AudioDataError: naming the file, when it is missing, unreadable, not audio, empty,
            holds NaN/inf or out-of-range samples, or is heavily clipped.

    Example:
        >>> wave = load_audio("clip.wav", 16_000)  # doctest: +SKIP
    """
    name = source or (str(path) if not isinstance(path, bytes) else "<bytes>")
    target = io.BytesIO(path) if isinstance(path, bytes) else path
    try:
        wave, sr = sf.read(target, dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as err:
        raise AudioDataError(name, "unreadable or not audio", str(err).replace(name, "").strip(" :")) from err
    return prepare_waveform(wave, sr, sampling_rate, name, max_clipped_fraction=max_clipped_fraction, report=report)


def pad_or_crop(
    wave: np.ndarray,
    min_samples: int = 0,
    max_samples: int | None = None,
    crop: str = "random",
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Zero-pad a clip to ``min_samples`` and crop it to ``max_samples`` (``crop``: random, center, start)."""
    if len(wave) < min_samples:
        wave = np.pad(wave, (0, min_samples - len(wave)))
    if max_samples is not None and len(wave) > max_samples:
        excess = len(wave) - max_samples
        if crop == "random":
            start = int((rng or np.random.default_rng()).integers(0, excess + 1))
        elif crop == "center":
            start = excess // 2
        elif crop == "start":
            start = 0
        else:
            raise ValueError(f"crop must be 'random', 'center' or 'start', got {crop!r}")
        wave = wave[start : start + max_samples]
    return wave


class AudioDataset(torch.utils.data.Dataset):
    """Validated mono clips at one sampling rate, each with a target (a label or a transcript).

    Build one with :meth:`from_folder`, :meth:`from_manifest`, :meth:`from_hf` or
    :meth:`from_arrays`. Items are dicts ``{"input_values", "target", "source"}``; ``transform``
    (e.g. :class:`~transferkit.audio.augment.WaveAugment`) and ``max_seconds`` (a random crop,
    as in Hugging Face's ``run_audio_classification``) apply when an item is read.

    Args:
        waveforms: float32 mono arrays at ``sampling_rate``.
        targets: one label or transcript per waveform.
        sampling_rate: Hz of every waveform.
        sources: a name per clip for messages (file paths).
        report: what was skipped or repaired while building.

    Example:
        >>> ds = AudioDataset.from_arrays([np.zeros(8000)], ["yes"], sampling_rate=8000, target_rate=16000)
        >>> len(ds), ds[0]["input_values"].shape
        (1, (16000,))
    """

    def __init__(
        self,
        waveforms: Sequence[np.ndarray],
        targets: Sequence[Any],
        sampling_rate: int,
        sources: Sequence[str] | None = None,
        report: SkipReport | None = None,
    ) -> None:
        if len(waveforms) != len(targets):
            raise ValueError(f"got {len(waveforms)} waveforms but {len(targets)} targets")
        self.waveforms = list(waveforms)
        self.targets = list(targets)
        self.sampling_rate = int(sampling_rate)
        self.sources = list(sources) if sources is not None else [f"<clip {i}>" for i in range(len(self.waveforms))]
        self.report = report or SkipReport()
        self.transform: Callable[[np.ndarray], np.ndarray] | None = None
        self.min_samples = 0
        self.max_samples: int | None = None
        self.crop = "random"
        self._rng = np.random.default_rng(0)

    # ----------------------------------------------------------------- item access
    def __len__(self) -> int:
        return len(self.waveforms)

    def __getitem__(self, i: int) -> dict[str, Any]:
        wave = self.waveforms[i]
        if self.transform is not None:
            wave = self.transform(wave)
        wave = pad_or_crop(wave, self.min_samples, self.max_samples, self.crop, self._rng)
        return {"input_values": wave, "target": self.targets[i], "source": self.sources[i]}

    @property
    def lengths(self) -> list[int]:
        """Samples per clip after padding/cropping: what length-grouped batching sorts by."""
        cap = self.max_samples or math.inf
        return [int(min(max(len(w), self.min_samples), cap)) for w in self.waveforms]

    def fingerprint(self) -> str:
        """Hash of the clips, targets and read-time options: keys the feature cache."""
        from transferkit.common.features import fingerprint

        h = [self.sampling_rate, [str(t) for t in self.targets], self.min_samples, self.max_samples, self.crop]
        return fingerprint(*h, *self.waveforms)

    @property
    def durations(self) -> np.ndarray:
        return np.array([len(w) / self.sampling_rate for w in self.waveforms])

    def with_options(
        self,
        *,
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
        min_samples: int | None = None,
        max_seconds: float | None = None,
        crop: str | None = None,
        seed: int = 0,
    ) -> AudioDataset:
        """A view sharing the clips with other read-time options (augmentation, padding, crop)."""
        view = AudioDataset(self.waveforms, self.targets, self.sampling_rate, self.sources, self.report)
        view.transform = transform if transform is not None else self.transform
        view.min_samples = self.min_samples if min_samples is None else int(min_samples)
        view.max_samples = self.max_samples if max_seconds is None else int(max_seconds * self.sampling_rate)
        view.crop = crop or self.crop
        view._rng = np.random.default_rng(seed)
        return view

    def subset(self, indices: Iterable[int]) -> AudioDataset:
        idx = list(indices)
        sub = AudioDataset([self.waveforms[i] for i in idx], [self.targets[i] for i in idx],
                           self.sampling_rate, [self.sources[i] for i in idx], self.report)
        sub.transform, sub.min_samples, sub.max_samples, sub.crop = self.transform, self.min_samples, self.max_samples, self.crop
        return sub

    def filter_duration(self, min_seconds: float | None = None, max_seconds: float | None = None) -> AudioDataset:
        """Drop (and count) clips outside [min_seconds, max_seconds], as run_speech_recognition_ctc does."""
        keep = []
        for i, d in enumerate(self.durations):
            if min_seconds is not None and d < min_seconds:
                self.report.skip(f"shorter than min_seconds={min_seconds}", self.sources[i])
            elif max_seconds is not None and d > max_seconds:
                self.report.skip(f"longer than max_seconds={max_seconds}", self.sources[i])
            else:
                keep.append(i)
        return self.subset(keep)

    def chunk(self, seconds: float, min_fraction: float = 0.5) -> AudioDataset:
        """Split long clips into consecutive windows of ``seconds`` (each keeps the clip's label).

        A trailing window shorter than ``min_fraction`` of ``seconds`` is dropped.
        """
        size = int(seconds * self.sampling_rate)
        waves, targets, sources = [], [], []
        for w, t, s in zip(self.waveforms, self.targets, self.sources):
            starts = range(0, max(len(w), 1), size)
            for k, start in enumerate(starts):
                piece = w[start : start + size]
                if k > 0 and len(piece) < min_fraction * size:
                    continue
                waves.append(piece)
                targets.append(t)
                sources.append(f"{s}#{k}" if len(w) > size else s)
        return AudioDataset(waves, targets, self.sampling_rate, sources, self.report)

    # ----------------------------------------------------------------- sources
    @classmethod
    def from_arrays(
        cls,
        arrays: Sequence[np.ndarray],
        targets: Sequence[Any],
        *,
        sampling_rate: int | Sequence[int],
        target_rate: int = 16_000,
        on_error: str = "skip",
        max_clipped_fraction: float = DEFAULT_MAX_CLIPPED_FRACTION,
        sources: Sequence[str] | None = None,
    ) -> AudioDataset:
        """Clips already in memory (each at ``sampling_rate``, or one rate per clip)."""
        rates = [sampling_rate] * len(arrays) if isinstance(sampling_rate, (int, np.integer)) else list(sampling_rate)
        names = list(sources) if sources is not None else [f"<array {i}>" for i in range(len(arrays))]

        def decode(i: int, report: SkipReport) -> np.ndarray:
            return prepare_waveform(arrays[i], rates[i], target_rate, names[i],
                                    max_clipped_fraction=max_clipped_fraction, report=report)

        return cls._build(range(len(arrays)), decode, targets, names, target_rate, on_error)

    @classmethod
    def from_files(
        cls,
        paths: Sequence[str | os.PathLike],
        targets: Sequence[Any],
        *,
        target_rate: int = 16_000,
        on_error: str = "skip",
        max_clipped_fraction: float = DEFAULT_MAX_CLIPPED_FRACTION,
    ) -> AudioDataset:
        """Audio files with one target each."""
        names = [str(p) for p in paths]

        def decode(i: int, report: SkipReport) -> np.ndarray:
            return load_audio(names[i], target_rate, max_clipped_fraction=max_clipped_fraction, report=report)

        return cls._build(range(len(names)), decode, targets, names, target_rate, on_error)

    @classmethod
    def from_folder(cls, root: str | os.PathLike, **kwargs: Any) -> AudioDataset:
        """A folder with one sub-folder per label (``root/yes/001.wav``); other files are ignored."""
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"audio folder {root} does not exist")
        classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not classes:
            raise AudioDataError(str(root), "no label sub-folders", "expected root/<label>/<clip>.wav")
        paths, labels = [], []
        for label in classes:
            files = sorted(p for p in (root / label).rglob("*") if p.is_file() and not p.name.startswith("."))
            if not files:
                log.warning("label folder %s is empty", root / label)
            for p in files:
                if p.suffix.lower() not in AUDIO_EXTENSIONS:
                    log.info("ignoring %s: not an audio extension", p)
                paths.append(p)
                labels.append(label)
        return cls.from_files(paths, labels, **kwargs)

    @classmethod
    def from_manifest(
        cls,
        path: str | os.PathLike,
        *,
        path_column: str = "path",
        target_column: str | None = None,
        **kwargs: Any,
    ) -> AudioDataset:
        """A CSV or TSV manifest with a header: ``path,label`` or ``path,transcript``.

        Relative paths resolve against the manifest's folder. ``target_column`` defaults to the
        first of ``label``, ``transcript``, ``text``, ``sentence`` present.
        """
        path = Path(path)
        delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter=delimiter))
        columns = list(rows[0].keys()) if rows else []
        if target_column is None:
            target_column = next((c for c in ("label", "transcript", "text", "sentence") if c in columns), None)
        for col in (path_column, target_column):
            if col is None or col not in columns:
                raise ValueError(f"{path}: manifest needs a {col or 'label/transcript'!r} column; it has {columns}")
        files = [p if os.path.isabs(p) else str(path.parent / p) for p in (r[path_column] for r in rows)]
        return cls.from_files(files, [r[target_column] for r in rows], **kwargs)

    @classmethod
    def from_hf(
        cls,
        dataset: Any,
        *,
        audio_column: str = "audio",
        target_column: str = "label",
        **kwargs: Any,
    ) -> AudioDataset:
        """A Hugging Face ``datasets.Dataset`` with an ``Audio`` column (decoded here with soundfile).

        Integer ``ClassLabel`` targets become their names.
        """
        from datasets import Audio

        if audio_column not in dataset.column_names or target_column not in dataset.column_names:
            raise ValueError(f"dataset needs columns {audio_column!r} and {target_column!r}; it has {dataset.column_names}")
        feature = dataset.features[audio_column]
        if isinstance(feature, Audio) and feature.decode:
            # datasets decodes Audio through torchcodec; take the raw bytes/paths and decode them here.
            dataset = dataset.cast_column(audio_column, Audio(decode=False))
        targets = list(dataset[target_column])
        names_of = getattr(dataset.features[target_column], "names", None)
        if names_of is not None:
            targets = [names_of[t] for t in targets]
        target_rate = kwargs.pop("target_rate", 16_000)
        on_error = kwargs.pop("on_error", "skip")
        max_clipped = kwargs.pop("max_clipped_fraction", DEFAULT_MAX_CLIPPED_FRACTION)
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        audio = list(dataset[audio_column])
        names = [(a.get("path") if isinstance(a, dict) else None) or f"<row {i}>" for i, a in enumerate(audio)]

        def decode(i: int, report: SkipReport) -> np.ndarray:
            a = audio[i]
            if isinstance(a, dict) and a.get("array") is not None:
                return prepare_waveform(np.asarray(a["array"]), a["sampling_rate"], target_rate, names[i],
                                        max_clipped_fraction=max_clipped, report=report)
            data = a.get("bytes") if isinstance(a, dict) else None
            return load_audio(data if data else a.get("path") if isinstance(a, dict) else a, target_rate,
                              source=names[i], max_clipped_fraction=max_clipped, report=report)

        return cls._build(range(len(audio)), decode, targets, names, target_rate, on_error)

    @classmethod
    def _build(cls, indices, decode, targets, names, rate, on_error) -> AudioDataset:
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        if len(targets) != len(names):
            raise ValueError(f"got {len(names)} clips but {len(targets)} targets")
        report = SkipReport()
        waves, kept_targets, kept_names = [], [], []
        for i in indices:
            try:
                wave = decode(i, report)
            except AudioDataError as err:
                if on_error == "raise":
                    raise
                report.skip(err.reason, names[i])
                continue
            waves.append(wave)
            kept_targets.append(targets[i])
            kept_names.append(names[i])
        if report.n_skipped:
            log.warning("%d of %d clips skipped: %s", report.n_skipped, len(names), report)
        if not waves:
            raise AudioDataError(f"all {len(names)} clips", "no usable clips", str(report))
        return cls(waves, kept_targets, rate, kept_names, report)


def as_audio_dataset(data: Any, sampling_rate: int = 16_000, **kwargs: Any) -> AudioDataset:
    """Accept any supported source: an :class:`AudioDataset`, a folder, a CSV/TSV manifest,
    a ``datasets.Dataset``, or a pair ``(arrays, targets)`` of clips already at ``sampling_rate``."""
    if isinstance(data, AudioDataset):
        if data.sampling_rate != sampling_rate:
            return AudioDataset.from_arrays(data.waveforms, data.targets, sampling_rate=data.sampling_rate,
                                            target_rate=sampling_rate, sources=data.sources)
        return data
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if path.is_dir():
            return AudioDataset.from_folder(path, target_rate=sampling_rate, **kwargs)
        if path.suffix.lower() in (".csv", ".tsv", ".tab"):
            return AudioDataset.from_manifest(path, target_rate=sampling_rate, **kwargs)
        raise ValueError(f"{path}: expected a folder of label sub-folders or a .csv/.tsv manifest")
    if hasattr(data, "column_names") and hasattr(data, "features"):
        return AudioDataset.from_hf(data, target_rate=sampling_rate, **kwargs)
    if isinstance(data, tuple) and len(data) == 2:
        arrays, targets = data
        return AudioDataset.from_arrays(list(arrays), list(targets), sampling_rate=sampling_rate,
                                        target_rate=sampling_rate, **kwargs)
    raise TypeError(f"cannot read audio data from {type(data).__name__}; pass a folder, a manifest, "
                    "a datasets.Dataset, an AudioDataset or (arrays, targets)")
