"""CTC vocabulary: characters from the training transcripts -> a ``Wav2Vec2Processor``.

Follows Hugging Face's ``run_speech_recognition_ctc``: transcripts are lower-cased, characters
in ``chars_to_ignore`` dropped, spaces become the word delimiter ``|``, and ``[UNK]`` plus
``[PAD]`` (the CTC blank) close the vocabulary. The vocabulary is saved with the model as part
of the processor, so the decoder can never disagree with the head's size.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .data import SkipReport

DEFAULT_CHARS_TO_IGNORE = ',?.!-;:"“”%‘’�—–…«»()[]{}'
WORD_DELIMITER = "|"
UNK, PAD = "[UNK]", "[PAD]"


def normalize_transcript(text: str, chars_to_ignore: str = DEFAULT_CHARS_TO_IGNORE, lowercase: bool = True) -> str:
    """Lower-case, drop ``chars_to_ignore`` and collapse runs of whitespace.

    Example:
        >>> normalize_transcript("  Hello,  World! ")
        'hello world'
    """
    if chars_to_ignore:
        text = re.sub(f"[{re.escape(chars_to_ignore)}]", "", text)
    if lowercase:
        text = text.lower()
    return " ".join(text.split())


def build_vocab(
    transcripts: Iterable[str],
    chars_to_ignore: str = DEFAULT_CHARS_TO_IGNORE,
    lowercase: bool = True,
) -> dict[str, int]:
    """Character vocabulary of the normalised transcripts, ``|`` for space, then ``[UNK]`` and ``[PAD]``.

    Example:
        >>> build_vocab(["ab a"])
        {'a': 0, 'b': 1, '|': 2, '[UNK]': 3, '[PAD]': 4}
    """
    chars: set[str] = set()
    for t in transcripts:
        chars.update(normalize_transcript(t, chars_to_ignore, lowercase))
    if not chars:
        raise ValueError("cannot build a vocabulary: every transcript is empty after normalisation")
    chars.discard(" ")
    symbols = sorted(chars) + [WORD_DELIMITER, UNK, PAD]
    return {s: i for i, s in enumerate(symbols)}


def make_processor(
    vocab: dict[str, int],
    sampling_rate: int = 16_000,
    feature_extractor: Any = None,
    *,
    chars_to_ignore: str = DEFAULT_CHARS_TO_IGNORE,
    lowercase: bool = True,
) -> Any:
    """A ``Wav2Vec2Processor`` (CTC tokenizer + feature extractor) for ``vocab``.

    ``chars_to_ignore`` and ``lowercase`` travel in the tokenizer's init kwargs so that a
    saved model normalises new transcripts exactly as its training data was.

    Example:
        >>> proc = make_processor(build_vocab(["hi there"]))
        >>> proc.tokenizer.decode(proc.tokenizer("hi there").input_ids)
        'hi there'
    """
    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2Processor

    missing = [s for s in (UNK, PAD, WORD_DELIMITER) if s not in vocab]
    if missing:
        raise ValueError(f"vocabulary lacks the special symbols {missing}; build it with build_vocab()")
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise ValueError("vocabulary ids must be 0..N-1 without gaps (the CTC head has one output per id)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vocab.json"
        path.write_text(json.dumps(vocab, ensure_ascii=False))
        # bos/eos off: CTC has no use for them, and they would silently grow the vocabulary by 2.
        tokenizer = Wav2Vec2CTCTokenizer(
            str(path), unk_token=UNK, pad_token=PAD, word_delimiter_token=WORD_DELIMITER,
            bos_token=None, eos_token=None, do_lower_case=False,
        )
    tokenizer.init_kwargs["transferkit_chars_to_ignore"] = chars_to_ignore
    tokenizer.init_kwargs["transferkit_lowercase"] = lowercase
    if feature_extractor is None:
        feature_extractor = Wav2Vec2FeatureExtractor(
            feature_size=1, sampling_rate=sampling_rate, padding_value=0.0,
            do_normalize=True, return_attention_mask=True,
        )
    return Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer)


def normalizer_of(tokenizer: Any) -> tuple[str, bool]:
    """The (chars_to_ignore, lowercase) a processor was built with (defaults for foreign tokenizers)."""
    kw = getattr(tokenizer, "init_kwargs", {})
    return kw.get("transferkit_chars_to_ignore", DEFAULT_CHARS_TO_IGNORE), kw.get("transferkit_lowercase", True)


def encode_transcripts(
    transcripts: list[str],
    tokenizer: Any,
    sources: list[str] | None = None,
    report: SkipReport | None = None,
) -> list[list[int] | None]:
    """Token ids per transcript; ``None`` (skipped, counted, logged) for empty or out-of-vocabulary ones.

    Training on ``[UNK]`` targets would teach the model to emit ``[UNK]``, and CTC on an empty
    target teaches silence; both are data errors worth surfacing rather than learning.
    """
    chars_to_ignore, lowercase = normalizer_of(tokenizer)
    vocab = tokenizer.get_vocab()
    delimiter = getattr(tokenizer, "word_delimiter_token", WORD_DELIMITER)
    report = report if report is not None else SkipReport()
    sources = sources or [f"<transcript {i}>" for i in range(len(transcripts))]
    out: list[list[int] | None] = []
    for text, source in zip(transcripts, sources):
        norm = normalize_transcript(text or "", chars_to_ignore, lowercase)
        if not norm:
            report.skip("empty transcript", source)
            out.append(None)
            continue
        unknown = sorted({c for c in norm if c != " " and c not in vocab})
        if unknown:
            report.skip("characters outside the vocabulary", f"{source} {unknown}")
            out.append(None)
            continue
        out.append([vocab[delimiter] if c == " " else vocab[c] for c in norm])
    return out
