"""The audio modality: how clips enter the one classification flow (reading, decoding at the encoder's
rate, the audit's silence and clipping checks, players in the audit page, the MFCC reference), and the
clip helpers the classifier and the speech recognizer share."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile as sf
import torch

from transferkit.common.audit_report import data_uri
from transferkit.common.classifier import PREDICT_WORKERS
from transferkit.common.config import check_settings, setting
from transferkit.common.modality import Modality
from transferkit.common.sources import LabelledSource, is_dataset

from .data import AUDIO_EXTENSIONS, AudioDataset
from .decode import DEFAULT_MAX_CLIPPED_FRACTION, AudioDataError, load_audio, prepare_waveform
from .encoder import AudioCollator, default_feature_extractor, min_input_samples

__all__ = ["AudioModality", "ClipChecks", "SpeechProcessor", "TokenizedClips", "as_clips", "clip_problem", "min_samples"]

FULL_SCALE = 0.999  # a sample at or above this magnitude counts as clipped, as the decoder counts it
PREVIEW_SECONDS = 10.0  # players in audit.html hold at most this much of a clip


@dataclass
class ClipChecks:
    """What makes a clip unusable beyond what the decoder refuses.

    Example:
        >>> ClipChecks(silence_db=-50).silence_db
        -50
    """

    silence_db: float = setting(-60.0, "Flag a clip as silent when its peak is below this, in dB full scale.", lt=0)
    max_clipped_fraction: float = setting(DEFAULT_MAX_CLIPPED_FRACTION, "Flag a clip as clipped when more than "
                                          "this fraction of its samples sit at full scale (the decoder's limit).",
                                          ge=0, le=1)

    def __post_init__(self) -> None:
        check_settings(self)


def min_samples(model_config: Any, processor: Any = None, *, training: bool = False) -> int:
    """The shortest clip the model takes: one frame, or enough frames for one SpecAugment time mask
    when training with masks on (see :func:`~transferkit.audio.encoder.min_input_samples`)."""
    if model_config is None:
        return 0
    mask = getattr(model_config, "mask_time_length", 0) if training and getattr(model_config, "mask_time_prob", 0) > 0 else 0
    return min_input_samples(model_config, mask, processor)


def as_clips(clips: Any, rate: int, sampling_rate: int | None = None, *, workers: int | None = None) -> list[np.ndarray]:
    """A path, an array at ``sampling_rate`` (default ``rate``), an :class:`AudioDataset` or a list of
    them -> waveforms at ``rate``; files are decoded by ``workers`` threads (default
    :data:`~transferkit.common.classifier.PREDICT_WORKERS`, 0: in this thread), in order."""
    if isinstance(clips, AudioDataset):
        return clips.waveforms if clips.sampling_rate == rate else [
            prepare_waveform(np.asarray(w), clips.sampling_rate, rate) for w in clips.waveforms]
    if isinstance(clips, (str, os.PathLike)) or (isinstance(clips, np.ndarray) and clips.ndim == 1):
        clips = [clips]
    def one(c: Any) -> np.ndarray:
        return load_audio(c, rate) if isinstance(c, (str, os.PathLike)) else prepare_waveform(
            np.asarray(c), sampling_rate or rate, rate)

    clips = list(clips)
    workers = PREDICT_WORKERS if workers is None else workers
    if workers <= 0 or len(clips) <= 1:
        return [one(c) for c in clips]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="transferkit-decode") as pool:
        return list(pool.map(one, clips))


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The Hugging Face model under a distributed wrapper (``.module``), or ``model`` itself."""
    return model.module if hasattr(model, "module") and not hasattr(model, "config") else model


def clip_problem(err: AudioDataError, item: Any) -> tuple[str, str, float]:
    """The decoder's refusal as (reason, detail, score): unreadable, empty, corrupt or clipped."""
    prefix = f"{err.source}: "
    detail = str(err)[len(prefix):] if str(err).startswith(prefix) else str(err)
    is_file = isinstance(item, (str, os.PathLike))
    if err.reason == "unreadable or not audio":
        empty = is_file and os.path.isfile(item) and os.path.getsize(item) == 0
        return ("empty", "0 bytes", math.nan) if empty else ("unreadable", detail, math.nan)
    if err.reason.startswith("empty"):
        return "empty", detail, math.nan
    if err.reason == "clipped":
        wave = sf.read(item, dtype="float32")[0] if is_file else np.asarray(item, dtype=np.float32)
        return "clipped", detail, float(np.mean(np.abs(wave) >= FULL_SCALE))
    return "corrupt", detail, math.nan


class AudioModality(Modality):
    """Clips decoded to mono at the encoder's sampling rate (``input_rate``: Hz of in-memory arrays),
    padded to the shortest input the model takes; :class:`ClipChecks` adds the silence and clipping checks."""

    kind = "audio"
    extensions = AUDIO_EXTENSIONS
    decode_error = AudioDataError
    noun = "clip"
    checks_class = ClipChecks
    reasons = {
        "silent": ("the clip's peak is below the silence threshold", "peak, dB full scale"),
        "clipped": ("too many samples sit at full scale", "fraction of samples at full scale"),
    }

    def __init__(self, encoder: Any = None, *, checks: ClipChecks | None = None, input_rate: int | None = None) -> None:
        if encoder is not None and encoder.processor is None:
            encoder.processor = default_feature_extractor()
        super().__init__(encoder, checks=checks)
        self.input_rate = input_rate

    @property
    def rate(self) -> int:
        return int(getattr(self.processor, "sampling_rate", 16_000))

    def read(self, data: Any) -> LabelledSource:
        if isinstance(data, AudioDataset):
            if all(os.path.isfile(s) for s in data.sources):
                return LabelledSource(list(data.sources), list(data.targets), origin="AudioDataset")
            self.input_rate = data.sampling_rate
            return LabelledSource(list(data.waveforms), list(data.targets), origin="AudioDataset")
        if is_dataset(data) and self.kind in data.column_names and getattr(data.features[self.kind], "decode", False):
            from datasets import Audio

            data = data.cast_column(self.kind, Audio(decode=False))  # bytes and paths, decoded here with soundfile
        return super().read(data)

    def decode(self, item: Any, *, strict: bool = True) -> np.ndarray:
        limit = self.checks.max_clipped_fraction if strict and self.checks is not None else 1.0
        if isinstance(item, dict) and item.get("array") is not None:  # a datasets Audio value, decoded
            item, rate = item["array"], item["sampling_rate"]
            return prepare_waveform(np.asarray(item), rate, self.rate, "<clip>", max_clipped_fraction=limit)
        if isinstance(item, dict):  # a datasets Audio value left undecoded: its bytes or its file
            item = item.get("bytes") or item.get("path")
        if isinstance(item, (str, os.PathLike, bytes)):
            return load_audio(item, self.rate, max_clipped_fraction=limit)
        return prepare_waveform(np.asarray(item), self.input_rate or self.rate, self.rate, "<clip>",
                                max_clipped_fraction=limit)

    def collate(self, examples: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        hf = getattr(self.encoder, "hf_model", None)
        n = min_samples(hf.config if hf is not None else None, self.processor)
        rows = [{"input_values": np.pad(w, (0, max(0, n - len(w))))} for w in examples]
        return AudioCollator(self.processor, self.rate)(rows)

    def problem(self, err: Exception, item: Any) -> tuple[str, str, float]:
        return clip_problem(err, item)

    def check(self, example: np.ndarray) -> tuple[str, str, float] | None:
        silence_db = self.checks.silence_db if self.checks is not None else ClipChecks().silence_db
        peak = float(np.abs(example).max())
        if peak >= 10 ** (silence_db / 20):
            return None
        db = 20 * math.log10(peak) if peak > 0 else -math.inf
        return "silent", f"peak {db:.1f} dB full scale (threshold {silence_db:g})", db

    def length(self, example: np.ndarray) -> int:
        return len(example)

    def preview(self, item: Any) -> str:
        try:  # clipped clips are previewed too: the player lets one hear the distortion
            wave = self.decode(item, strict=False)
        except AudioDataError:
            return ""
        buf = io.BytesIO()
        sf.write(buf, wave[: int(PREVIEW_SECONDS * self.rate)], self.rate, format="WAV", subtype="PCM_16")
        return f'<audio controls preload="none" src="{data_uri(buf.getvalue(), "audio/wav")}"></audio>'

    def reference(self) -> Any:
        """MFCC statistics + logistic regression."""
        from .reference import MfccLogReg

        return MfccLogReg(self.rate)


class SpeechProcessor:
    """What the speech recognizers (CTC and Whisper) read off their Hugging Face ``processor``."""

    processor: Any

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    @property
    def sampling_rate(self) -> int:
        return int(self.processor.feature_extractor.sampling_rate)


class TokenizedClips(torch.utils.data.Dataset):
    """Clips whose transcripts were turned into token ids (bad ones already dropped): row ``i`` is the clip's
    row with ``"target"`` set to its ids."""

    def __init__(self, clips: AudioDataset, ids: list[list[int]]) -> None:
        self.clips, self.ids = clips, ids

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict:
        return {**self.clips[i], "target": self.ids[i]}
