"""The audio demo's built-in corpus: eSpeak words, with voices split so that tests use unseen voices.

Voices are ``<accent>+<variant>`` with a random rate and pitch per clip. The ~104 variants are
split three ways (source task / target training / target test), so the digits are always
evaluated on voice variants that neither pretraining nor fine-tuning heard.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transferkit.audio import AudioDataset
from transferkit.demos.espeak import DIGIT_WORDS, ENGLISH_BASES, ESpeak, Voice, synthesize

__all__ = ["DIGIT_WORDS", "SOURCE_WORDS", "VoiceSplit", "split_voices", "word_clips"]

# Everyday English words, none of them a digit word: the supervised source task.
SOURCE_WORDS = (
    "yes no up down left right on off stop go happy house bird cat dog tree wow bed marvin sheila "
    "follow learn forward backward visual apple banana orange water coffee music window garden river "
    "mountain yellow purple green black white red blue silver golden morning evening winter summer "
    "spring autumn monday friday sunday doctor teacher farmer pilot driver singer dancer winner "
    "paper pencil table chair kitchen bottle basket rocket planet island forest desert ocean thunder "
    "lightning rainbow shadow mirror button candle ladder pocket jacket hammer engine camera picture "
    "letter number market street bridge castle tower village city country family friend people "
    "language question answer problem system program machine animal monkey rabbit turtle spider "
    "chicken lemon pepper butter cheese bread sugar honey salad dinner lunch breakfast quickly slowly "
    "never always maybe almost really simple little"
).split()


@dataclass
class VoiceSplit:
    """Voice names (accent+variant) for each part of the corpus; the variant sets are disjoint."""

    source: list[str]
    target_train: list[str]
    target_test: list[str]


def split_voices(seed: int = 0, fractions: tuple[float, float] = (0.6, 0.2)) -> VoiceSplit:
    """Shuffle the variants, give ``fractions`` of them to source and target training, the rest to test."""
    engine = ESpeak.get()
    variants = engine.variants()
    rng = np.random.default_rng(seed)
    rng.shuffle(variants)
    a = int(fractions[0] * len(variants))
    b = a + int(fractions[1] * len(variants))

    def voices(vs: list[str]) -> list[str]:
        names = [f"{base}+{v}" for base in ENGLISH_BASES for v in vs]
        with engine._lock:
            return [n for n in names if engine.set_voice(n)]

    return VoiceSplit(voices(variants[:a]), voices(variants[a:b]), voices(variants[b:]))


def _draw_voices(names: list[str], n: int, rng: np.random.Generator) -> list[Voice]:
    return [Voice(str(rng.choice(names)), int(rng.integers(150, 211)), int(rng.integers(30, 71))) for _ in range(n)]


def word_clips(words: list[str], n: int, voices: list[str], *, max_words: int = 1, seed: int = 0,
               noise_snr_db: float | None = 30.0, sampling_rate: int = 16_000, per_word: bool = False,
               window_seconds: float | None = None) -> AudioDataset:
    """``n`` utterances of 1..``max_words`` words drawn from ``words``, spoken by random ``voices``.

    With ``per_word`` and ``max_words=1`` the words cycle, so every word gets the same count.
    ``window_seconds`` places each utterance at a random offset in a fixed-length window, as
    keyword-spotting corpora do (Speech Commands: 1 s clips). Targets are the transcripts.
    """
    rng = np.random.default_rng(seed)
    texts = []
    for i in range(n):
        if per_word and max_words == 1:
            texts.append(words[i % len(words)])
        else:
            k = int(rng.integers(1, max_words + 1))
            texts.append(" ".join(rng.choice(words, size=k)))
    clips = synthesize(texts, _draw_voices(voices, n, rng), sampling_rate, noise_snr_db=noise_snr_db, seed=seed)
    if window_seconds is not None:
        size = int(window_seconds * sampling_rate)
        placed = []
        for c in clips:
            c = c[:size]
            start = int(rng.integers(0, size - len(c) + 1))
            placed.append(np.pad(c, (start, size - len(c) - start)).astype(np.float32))
        clips = placed
    return AudioDataset(clips, texts, sampling_rate, sources=[f"<espeak {i}: {t}>" for i, t in enumerate(texts)])

