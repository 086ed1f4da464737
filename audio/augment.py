"""Waveform augmentation: additive noise at a chosen SNR, speed perturbation, gain.

These are the augmentations SpeechBrain's wav2vec2 recipes lean on (speed 95/100/105 %,
noise); they act on float32 mono numpy clips so they run inside ``Dataset.__getitem__``
(in data-loader workers), before padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torchaudio.functional as AF


def add_noise(
    wave: np.ndarray,
    snr_db: float,
    noise: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Add ``noise`` (white noise when None) scaled so that signal power / noise power = ``snr_db``.

    A noise clip shorter than ``wave`` is tiled; a longer one is cut at a random offset.

    Example:
        >>> w = np.sin(np.linspace(0, 100, 16000)).astype(np.float32)
        >>> out = add_noise(w, snr_db=10.0, rng=np.random.default_rng(0))
        >>> round(float(10 * np.log10(np.mean(w**2) / np.mean((out - w) ** 2))), 1)
        10.0
    """
    rng = rng or np.random.default_rng()
    if noise is None:
        noise = rng.standard_normal(len(wave)).astype(np.float32)
    else:
        noise = np.asarray(noise, dtype=np.float32)
        if len(noise) < len(wave):
            noise = np.tile(noise, int(np.ceil(len(wave) / max(len(noise), 1))))
        start = int(rng.integers(0, len(noise) - len(wave) + 1))
        noise = noise[start : start + len(wave)]
    signal_power = float(np.mean(wave.astype(np.float64) ** 2))
    noise_power = float(np.mean(noise.astype(np.float64) ** 2))
    if signal_power == 0.0 or noise_power == 0.0:
        return wave.copy()  # silence has no SNR to honour; adding noise would invent a signal
    scale = np.sqrt(signal_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    return (wave + scale * noise).astype(np.float32)


def speed_perturb(wave: np.ndarray, factor: float, sampling_rate: int = 16_000) -> np.ndarray:
    """Play ``wave`` ``factor`` times faster (pitch moves with it, as in Kaldi's speed perturbation).

    Resampling from ``sampling_rate * factor`` to ``sampling_rate`` shortens the clip by ``factor``.
    """
    if factor <= 0:
        raise ValueError(f"speed factor must be positive, got {factor}")
    if factor == 1.0:
        return wave
    # Rates must be integers for torchaudio; work at a 100 Hz grid so 0.95 / 1.05 stay exact.
    orig = int(round(sampling_rate * factor / 100)) * 100
    out = AF.resample(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)), orig, sampling_rate)
    return out.numpy()


def apply_gain(wave: np.ndarray, gain_db: float) -> np.ndarray:
    """Scale by ``gain_db`` decibels, clipped to [-1, 1] like a real recording chain."""
    return np.clip(wave * 10.0 ** (gain_db / 20.0), -1.0, 1.0).astype(np.float32)


@dataclass
class WaveAugment:
    """Random speed, gain and noise, applied per clip when a dataset item is read.

    Args:
        sampling_rate: Hz of the clips.
        speeds: speed factors drawn uniformly (SpeechBrain's 0.95/1.0/1.05 by default).
        gain_db: (low, high) range of a uniform random gain in dB; None disables.
        snr_db: (low, high) SNR range for additive noise; None disables.
        noise_prob: probability of adding noise to a clip.
        noises: optional noise clips to draw from (white noise when empty).
        seed: seeds this augmenter's random stream.

    Example:
        >>> aug = WaveAugment(16000, snr_db=(10, 30), seed=0)
        >>> aug(np.zeros(16000, dtype=np.float32)).dtype
        dtype('float32')
    """

    sampling_rate: int = 16_000
    speeds: Sequence[float] = (0.95, 1.0, 1.05)
    gain_db: tuple[float, float] | None = (-6.0, 6.0)
    snr_db: tuple[float, float] | None = (10.0, 40.0)
    noise_prob: float = 0.5
    noises: Sequence[np.ndarray] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        if any(s <= 0 for s in self.speeds):
            raise ValueError(f"speeds must be positive, got {self.speeds}")
        if not 0.0 <= self.noise_prob <= 1.0:
            raise ValueError(f"noise_prob must be in [0, 1], got {self.noise_prob}")
        self._rng = np.random.default_rng(self.seed)
        self._worker_seed: int | None = None

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        info = torch.utils.data.get_worker_info()
        if info is not None and info.seed != self._worker_seed:
            # Each loader worker starts with a copy of the same generator; without a reseed every
            # worker would draw the same "random" augmentations.
            self._worker_seed = info.seed
            self._rng = np.random.default_rng([self.seed, info.seed])
        rng = self._rng
        if self.speeds:
            wave = speed_perturb(wave, float(rng.choice(np.asarray(self.speeds))), self.sampling_rate)
        if self.gain_db is not None:
            wave = apply_gain(wave, float(rng.uniform(*self.gain_db)))
        if self.snr_db is not None and rng.random() < self.noise_prob:
            noise = self.noises[int(rng.integers(len(self.noises)))] if len(self.noises) else None
            wave = add_noise(wave, float(rng.uniform(*self.snr_db)), noise, rng)
        return wave.astype(np.float32, copy=False)
