"""CTC pieces: the loss in fp32, greedy decoding, and WER/CER evaluated batch by batch.

Evaluation keeps only decoded strings, never the logits of the whole set (the out-of-memory
complaint about ``Trainer`` evaluation), and the loss always runs in fp32 outside autocast
(fp16 CTC is where the NaN / WER=1.0 reports come from).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def ctc_loss_fp32(
    logits: torch.Tensor,
    labels: torch.Tensor,
    output_lengths: torch.Tensor,
    blank_id: int,
    zero_infinity: bool = True,
    reduction: str = "mean",
) -> torch.Tensor:
    """CTC loss computed in fp32 with autocast disabled.

    Args:
        logits: (batch, frames, vocab) in any precision.
        labels: (batch, max_label_len) token ids, padded with -100.
        output_lengths: valid frames per example.
        blank_id: id of the CTC blank (the pad token of wav2vec2 tokenizers).
        zero_infinity: zero the loss of examples too short for their labels instead of inf.
        reduction: ``"mean"`` divides each example's loss by its label length, then averages
            over the batch (what ``Wav2Vec2ForCTC`` does); ``"sum"`` adds them.
    """
    mask = labels >= 0
    target_lengths = mask.sum(-1)
    flat = labels.masked_select(mask)
    with torch.autocast(device_type=logits.device.type, enabled=False):
        log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # (T, B, V) for ctc_loss
        return F.ctc_loss(log_probs, flat, output_lengths.long(), target_lengths, blank=blank_id,
                          reduction=reduction, zero_infinity=zero_infinity)


def collapse(ids: Sequence[int], blank_id: int) -> list[int]:
    """Best-path CTC collapse: merge repeated ids, then drop blanks.

    Example:
        >>> collapse([0, 3, 3, 0, 3, 5, 5], blank_id=0)
        [3, 3, 5]
    """
    out, prev = [], None
    for i in ids:
        if i != prev and i != blank_id:
            out.append(int(i))
        prev = i
    return out


def ids_to_text(ids: Sequence[int], id2token: dict[int, str], delimiter: str = "|") -> str:
    """Join token strings, turning the word delimiter into spaces (runs collapse to one)."""
    text = "".join(" " if id2token[i] == delimiter else id2token[i] for i in ids)
    return " ".join(text.split())


def greedy_decode(
    logits: torch.Tensor | np.ndarray,
    tokenizer: Any = None,
    *,
    id2token: dict[int, str] | None = None,
    blank_id: int | None = None,
    lengths: Sequence[int] | torch.Tensor | None = None,
    delimiter: str = "|",
) -> list[str]:
    """Greedy (best-path) transcription of CTC logits.

    Args:
        logits: (batch, frames, vocab) or (frames, vocab) scores or log-probabilities.
        tokenizer: a ``Wav2Vec2CTCTokenizer``; or give ``id2token`` and ``blank_id`` instead.
        lengths: valid frames per example (padding frames are ignored).
        delimiter: the word-delimiter token.

    Example:
        >>> vocab = {"a": 0, "b": 1, "|": 2, "[PAD]": 3}
        >>> path = [3, 0, 0, 3, 0, 2, 1, 1]  # "a a | b" after collapsing
        >>> greedy_decode(np.eye(4)[path], id2token={i: s for s, i in vocab.items()}, blank_id=3)
        ['aa b']
    """
    if tokenizer is not None:
        id2token = {i: s for s, i in tokenizer.get_vocab().items()}
        blank_id = tokenizer.pad_token_id
        delimiter = getattr(tokenizer, "word_delimiter_token", delimiter)
    if id2token is None or blank_id is None:
        raise ValueError("pass a tokenizer, or both id2token and blank_id")
    t = torch.as_tensor(logits)
    if t.dim() == 2:
        t = t.unsqueeze(0)
    best = t.argmax(-1).cpu().numpy()
    if lengths is None:
        lengths = [best.shape[1]] * best.shape[0]
    return [ids_to_text(collapse(row[: int(n)], blank_id), id2token, delimiter) for row, n in zip(best, lengths)]


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
    """Corpus-level word and character error rates (jiwer): edits / reference words (characters).

    References that are empty carry no words to get wrong and are left out (jiwer cannot score them).
    """
    import jiwer

    if len(references) != len(hypotheses):
        raise ValueError(f"got {len(references)} references but {len(hypotheses)} hypotheses")
    pairs = [(r, h) for r, h in zip(references, hypotheses) if r.strip()]
    if not pairs:
        raise ValueError("no non-empty reference transcripts to score")
    refs, hyps = [r for r, _ in pairs], [h for _, h in pairs]
    return {"wer": float(jiwer.wer(refs, hyps)), "cer": float(jiwer.cer(refs, hyps))}


class StreamingCTCEval:
    """Accumulates decoded strings batch by batch; ``result()`` gives WER, CER and exact-match rate.

    Example:
        >>> ev = StreamingCTCEval()
        >>> ev.add(["one two"], ["one too"])
        >>> ev.result()["wer"]
        0.5
    """

    def __init__(self) -> None:
        self.references: list[str] = []
        self.hypotheses: list[str] = []

    def add(self, references: Iterable[str], hypotheses: Iterable[str]) -> None:
        self.references.extend(references)
        self.hypotheses.extend(hypotheses)

    def result(self) -> dict[str, float]:
        out = error_rates(self.references, self.hypotheses)
        out["exact_match"] = float(np.mean([r == h for r, h in zip(self.references, self.hypotheses)]))
        return out
