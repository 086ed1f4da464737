"""Decoding and validating one clip: file or array -> float32 mono at the encoder's rate.

Decoding uses ``soundfile`` and resampling torchaudio's windowed-sinc filter: ``torchaudio.load``
needs torchcodec/FFmpeg, which many machines lack. A clip that cannot be used raises
:class:`AudioDataError` naming the file and a short reason that skip reports count by.
"""

from __future__ import annotations

import functools
import io
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soundfile as sf
import torch
import torchaudio

log = logging.getLogger(__name__)

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
    should know about (downmixed, resampled).

    Example:
        >>> report = SkipReport()
        >>> report.skip("empty audio (zero samples)", "clips/yes/001.wav")
        >>> report.n_skipped, str(report)
        (1, 'skipped 1 (empty audio (zero samples); e.g. clips/yes/001.wav)')
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
        if not _has_torchcodec():
            raise AudioDataError(name, "unreadable or not audio", str(err).replace(name, "").strip(" :")) from err
        wave, sr = _torchcodec_read(path, name)  # formats soundfile lacks (AAC in M4A, WebM): FFmpeg
    return prepare_waveform(wave, sr, sampling_rate, name, max_clipped_fraction=max_clipped_fraction, report=report)


def _torchcodec_read(path: str | os.PathLike | bytes, name: str) -> tuple[np.ndarray, int]:
    from torchcodec.decoders import AudioDecoder

    try:
        samples = AudioDecoder(path if isinstance(path, bytes) else str(path)).get_all_samples()
    except (RuntimeError, ValueError, OSError) as err:
        raise AudioDataError(name, "unreadable or not audio", str(err).splitlines()[0] if str(err) else "") from err
    return samples.data.numpy(), int(samples.sample_rate)


def decode_any(
    value: Any,
    sampling_rate: int = 16_000,
    *,
    source: str = "<audio>",
    max_clipped_fraction: float = DEFAULT_MAX_CLIPPED_FRACTION,
    report: SkipReport | None = None,
) -> np.ndarray:
    """One value of a ``datasets`` ``Audio`` column, whatever its form, to float32 mono at ``sampling_rate``.

    Accepted: a decoded ``{"array", "sampling_rate"}`` dict; an ``Audio(decode=False)`` dict
    ``{"bytes", "path"}`` (the bytes win when both are set); a path or bytes; a decoded
    ``AudioDecoder`` (``datasets`` 4+ with torchcodec, read through ``get_all_samples()``).
    Bytes and paths are read with soundfile, and with torchcodec (FFmpeg) when soundfile cannot
    read the format (AAC/M4A, for instance) and torchcodec is installed.

    Example:
        >>> decode_any({"array": np.zeros(800), "sampling_rate": 8000}, 16_000).shape
        (1600,)
    """
    kw = {"max_clipped_fraction": max_clipped_fraction, "report": report}
    if hasattr(value, "get_all_samples"):  # torchcodec's AudioDecoder, as datasets hands decoded columns over
        samples = value.get_all_samples()
        return prepare_waveform(samples.data.numpy(), int(samples.sample_rate), sampling_rate, source, **kw)
    if isinstance(value, dict):
        if value.get("array") is not None:
            return prepare_waveform(np.asarray(value["array"]), int(value["sampling_rate"]), sampling_rate, source, **kw)
        value = value.get("bytes") or value.get("path")
        if value is None:
            raise AudioDataError(source, "no audio", "the row has neither bytes nor a path")
    if not isinstance(value, (bytes, str, os.PathLike)):
        raise AudioDataError(source, "not audio", f"got {type(value).__name__}; expected a path, bytes, a dict "
                                                  "from an Audio column or an AudioDecoder")
    return load_audio(value, sampling_rate, source=source, **kw)


@functools.lru_cache(maxsize=1)
def _has_torchcodec() -> bool:
    try:
        import torchcodec.decoders  # noqa: F401  (needs FFmpeg's libraries: .ci/setup installs them)
    except (ImportError, OSError, RuntimeError):
        return False
    return True


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


