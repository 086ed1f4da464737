"""Scoring of sequence-to-sequence transcripts: one text normaliser, WER and CER through jiwer.

Whisper writes cased, punctuated text (" Five, three.") while references are often plain words,
so error rates are reported three ways: orthographic WER (the text as written, split on
whitespace), normalised WER and normalised CER.

The normaliser is transferkit's own, not Whisper's ``EnglishTextNormalizer``: that one rewrites
number words and joins digit sequences ("five three two" -> "532"), which turns a five-word
utterance into one word and makes word error rates of spoken digits meaningless; its basic
variant keeps every script but drops combining marks. Here: Unicode NFKC, case folding, every
punctuation or symbol character (Unicode categories P* and S*) becomes a space, whitespace is
collapsed. Letters and marks of every script are kept, so non-Latin text is never split apart.
``spoken_digits`` also spells each digit as its English word ("53" -> "five three"), for
references that spell digits out.

Example:
    >>> normalize(" Five, three...  TWO!")
    'five three two'
    >>> normalize("Call 53.", "spoken_digits")
    'call five three'
    >>> ev = Seq2SeqEval()
    >>> ev.add(["five three"], [" Five, 3."])
    >>> ev.result("spoken_digits")["wer"], ev.result("spoken_digits")["orthographic_wer"]
    (0.0, 1.0)
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

NORMALIZERS = ("basic", "spoken_digits")
_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def normalize(text: str, kind: str = "basic") -> str:
    """The normalised form of ``text`` (see the module docstring); ``kind`` is one of :data:`NORMALIZERS`."""
    if kind not in NORMALIZERS:
        raise ValueError(f"normalizer={kind!r}: choose one of {NORMALIZERS}")
    out = []
    for ch in unicodedata.normalize("NFKC", text).casefold():
        cat = unicodedata.category(ch)
        if kind == "spoken_digits" and "0" <= ch <= "9":
            out.append(f" {_DIGITS[int(ch)]} ")
        elif cat[0] in "PS" or cat[0] == "Z" or ch.isspace():
            out.append(" ")
        else:
            out.append(ch)
    return " ".join("".join(out).split())


class Seq2SeqEval:
    """Reference and hypothesis strings, batch by batch (strings only: no logits are kept)."""

    def __init__(self) -> None:
        self.references: list[str] = []
        self.hypotheses: list[str] = []

    def add(self, references: Iterable[str], hypotheses: Iterable[str]) -> None:
        self.references.extend(r.strip() for r in references)
        self.hypotheses.extend(h.strip() for h in hypotheses)

    def result(self, normalizer: str = "basic") -> dict[str, float]:
        """``wer`` and ``cer`` after :func:`normalize`, ``orthographic_wer`` on the text as written,
        ``exact_match`` of normalised text, and ``empty_references`` (left out of every rate)."""
        import jiwer

        pairs = [(r, h, normalize(r, normalizer), normalize(h, normalizer))
                 for r, h in zip(self.references, self.hypotheses)]
        kept = [p for p in pairs if p[2]]
        if not kept:
            raise ValueError("no non-empty reference transcripts to score")
        refs, hyps = [p[2] for p in kept], [p[3] for p in kept]
        return {"wer": float(jiwer.wer(refs, hyps)), "cer": float(jiwer.cer(refs, hyps)),
                "orthographic_wer": float(jiwer.wer([p[0] for p in kept], [p[1] for p in kept])),
                "exact_match": sum(r == h for r, h in zip(refs, hyps)) / len(kept),
                "empty_references": float(len(pairs) - len(kept))}
