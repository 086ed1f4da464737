"""Audio sources -> validated mono waveforms at the encoder's sampling rate.

Every source (a folder with one sub-folder per label, a CSV/TSV manifest, a Hugging Face
``datasets.Dataset``, in-memory arrays) ends up as an :class:`AudioDataset`: a list of float32
mono waveforms at one sampling rate plus one target each (a label or a transcript). Bad
inputs never reach the model: each is skipped, counted in :class:`SkipReport` and logged with
its file name, or (``on_error="raise"``) raises :class:`AudioDataError` naming the file.

Decoding and checking a single clip live in :mod:`transferkit.audio.decode`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transferkit.common.sources import LabelledSource, read_folder, read_manifest

from .decode import (
    DEFAULT_MAX_CLIPPED_FRACTION,
    AudioDataError,
    SkipReport,
    decode_any,
    load_audio,
    pad_or_crop,
    prepare_waveform,
    receptive_field,
    resample,
)

__all__ = ["AUDIO_EXTENSIONS", "AudioDataError", "AudioDataset", "SkipReport", "as_audio_dataset", "clip_windows",
           "decode_any", "load_audio", "note_long_clips", "pad_or_crop", "prepare_waveform", "receptive_field", "resample"]

log = logging.getLogger(__name__)

# soundfile reads the first eight; the container formats of phones and browsers (AAC in M4A, WebM) go through
# torchcodec and FFmpeg (decode.decode_any)
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif", ".au", ".m4a", ".aac", ".webm")


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
    def labels(self) -> list[str]:
        """Sorted distinct targets (as :attr:`ImageSet.labels <transferkit.vision.ImageSet.labels>`)."""
        return sorted({str(t) for t in self.targets})

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
        cache: bool | str | os.PathLike = True,
    ) -> AudioDataset:
        """Audio files with one target each.

        ``cache``: the clips decoded and resampled the first time are stored as one float32 array
        (``True``: under ``$TRANSFERKIT_CACHE/decoded``, or a folder; keyed by the files' names, sizes
        and times, the rate and the checks) and memory-mapped by every later call; ``False`` decodes
        every time.
        """
        names = [str(p) for p in paths]

        def decode(i: int, report: SkipReport) -> np.ndarray:  # soundfile, then torchcodec for other formats
            return decode_any(names[i], target_rate, source=names[i], max_clipped_fraction=max_clipped_fraction,
                              report=report)

        def build() -> AudioDataset:
            return cls._build(range(len(names)), decode, targets, names, target_rate, on_error)

        if cache is False:
            return build()
        try:
            stats = [(n, os.stat(n).st_size, os.stat(n).st_mtime_ns) for n in names]
        except OSError:  # a missing file: the uncached build reports it by name
            return build()
        return cls._cached(build, stats, targets, names, (target_rate, on_error, max_clipped_fraction), cache)

    @classmethod
    def _cached(cls, build, stats, targets, names, options, cache) -> AudioDataset:
        from transferkit.common.decode_cache import DecodeCache

        def decoded() -> tuple[list[np.ndarray], dict]:
            ds = build()
            kept, j = [], 0
            for i, name in enumerate(names):  # the build keeps the clips in order
                if j < len(ds.sources) and ds.sources[j] == name:
                    kept.append(i)
                    j += 1
            r = ds.report
            return ([np.asarray(w, dtype=np.float32) for w in ds.waveforms],
                    {"kept": kept, "skipped": dict(r.skipped), "repaired": dict(r.repaired), "examples": r.examples})

        store = DecodeCache(None if cache is True else cache)
        waves, meta = store.ragged(("audio", stats, *options), decoded)
        report = SkipReport()
        report.skipped.update(meta["skipped"])
        report.repaired.update(meta["repaired"])
        report.examples.update(meta["examples"])
        kept = meta["kept"]
        return cls(waves, [targets[i] for i in kept], options[0], [names[i] for i in kept], report)

    @classmethod
    def from_folder(cls, root: str | os.PathLike, **kwargs: Any) -> AudioDataset:
        """A folder with one sub-folder per label (``root/yes/001.wav``), read by
        :func:`~transferkit.common.sources.read_folder`: files without an audio extension are skipped and counted."""
        return cls.from_source(read_folder(root, AUDIO_EXTENSIONS, "audio"), **kwargs)

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
        first of ``label``, ``transcript``, ``text``, ``sentence`` present; listed files that do not
        exist are skipped and counted (:func:`~transferkit.common.sources.read_manifest`).
        """
        return cls.from_source(read_manifest(path, path_column=path_column, target_column=target_column), **kwargs)

    @classmethod
    def from_source(cls, source: LabelledSource, **kwargs: Any) -> AudioDataset:
        """The files of a :class:`~transferkit.common.sources.LabelledSource`; its reader's skips join the report."""
        ds = cls.from_files(source.items, source.targets, **kwargs)
        for reason, n in source.skipped.items():
            if n:
                ds.report.skipped[reason] += n
                ds.report.examples.setdefault(reason, list(source.examples.get(reason, [])))
        return ds

    @classmethod
    def from_hf(
        cls,
        dataset: Any,
        *,
        audio_column: str = "audio",
        target_column: str = "label",
        **kwargs: Any,
    ) -> AudioDataset:
        """A Hugging Face ``datasets.Dataset`` with an ``Audio`` column, decoded or not (``Audio(decode=False)``:
        bytes or paths), or any column of values :func:`~transferkit.audio.decode.decode_any` reads.

        A decoded ``Audio`` column is read as ``decode=False`` and decoded here (soundfile, then
        torchcodec for formats soundfile lacks) and resampled to ``target_rate``, so that
        ``cast_column(audio, Audio(16000))`` and ``audiofolder`` datasets give the same clips as their files.
        Integer ``ClassLabel`` targets become their names.
        """
        from datasets import Audio

        if audio_column not in dataset.column_names or target_column not in dataset.column_names:
            raise ValueError(f"dataset needs columns {audio_column!r} and {target_column!r}; it has {dataset.column_names}")
        feature = dataset.features[audio_column]
        if isinstance(feature, Audio) and feature.decode and hasattr(dataset, "cast_column"):
            # Decoding here reads each file once, at the encoder's rate (datasets would decode, then we'd resample).
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
        audio = dataset[audio_column]
        names = [_audio_name(a, i) for i, a in enumerate(audio)]

        def decode(i: int, report: SkipReport) -> np.ndarray:
            return decode_any(audio[i], target_rate, source=names[i], max_clipped_fraction=max_clipped, report=report)

        return cls._build(range(len(names)), decode, targets, names, target_rate, on_error)

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


def clip_windows(clips: Sequence[np.ndarray], size: int | None) -> tuple[list[np.ndarray], list[int]]:
    """Clips longer than ``size`` samples cut into consecutive windows of ``size`` (the last one ends with
    the clip, overlapping the one before); returns the windows (views, no copies) and each one's clip index.

    Example:
        >>> windows, owner = clip_windows([np.arange(5), np.arange(2)], 2)
        >>> [w.tolist() for w in windows], owner
        ([[0, 1], [2, 3], [3, 4], [0, 1]], [0, 0, 0, 1])
    """
    windows, owner = [], []
    for i, clip in enumerate(clips):
        if size is None or len(clip) <= size:
            starts = [0]
        else:
            starts = [*range(0, len(clip) - size, size), len(clip) - size]
        windows += [clip[s:s + size] if size is not None else clip for s in starts]
        owner += [i] * len(starts)
    return windows, owner


def note_long_clips(data: AudioDataset, max_seconds: float | None, what: str) -> None:
    """Log how many clips of ``data`` are longer than ``max_seconds`` (what reading them does is ``what``)."""
    if max_seconds is None:
        return
    n = int((data.durations > max_seconds).sum())
    if n:
        log.warning("%d of %d clips are longer than max_seconds=%g s: %s %g s", n, len(data), max_seconds, what,
                    max_seconds)


def _audio_name(value: Any, i: int) -> str:
    """A clip's name for messages: its path where the row has one."""
    if isinstance(value, dict) and value.get("path"):
        return str(value["path"])
    if isinstance(value, (str, os.PathLike)):
        return str(value)
    return f"<row {i}>"


def as_audio_dataset(data: Any, sampling_rate: int = 16_000, **kwargs: Any) -> AudioDataset:
    """Accept any supported source: an :class:`AudioDataset`, a folder, a CSV/TSV manifest,
    a ``datasets.Dataset``, a pair ``(paths, targets)``, or a pair ``(arrays, targets)`` of clips already at
    ``sampling_rate``."""
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
        clips, targets = list(data[0]), list(data[1])
        if clips and all(isinstance(c, (str, os.PathLike)) for c in clips):  # (paths, targets)
            return AudioDataset.from_files(clips, targets, target_rate=sampling_rate, **kwargs)
        return AudioDataset.from_arrays(clips, targets, sampling_rate=sampling_rate, target_rate=sampling_rate, **kwargs)
    raise TypeError(f"cannot read audio data from {type(data).__name__}; pass a folder, a manifest, "
                    "a datasets.Dataset, an AudioDataset, (paths, targets) or (arrays, targets)")
