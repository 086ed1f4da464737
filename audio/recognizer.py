"""SpeechRecognizer: CTC speech recognition by transfer from a pretrained speech encoder."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from transferkit.common import Encoder, TrainConfig, TrainingData, TrainResult, TransferTask
from transferkit.common.encoders import quiet_transformers

from .augment import WaveAugment
from .config import CTCConfig
from .ctc import StreamingCTCEval, ctc_loss_fp32, greedy_decode
from .data import SkipReport, as_audio_dataset
from .encoder import (
    AudioCollator,
    AudioEncoder,
    default_feature_extractor,
    warn_if_masks_hide_clips,
)
from .modality import SpeechProcessor, TokenizedClips, as_clips, min_samples, unwrap
from .vocab import build_vocab, encode_transcripts, make_processor

log = logging.getLogger(__name__)


def _pooled(module: nn.Module, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: Any) -> torch.Tensor:
    """Mean of the last hidden states over valid frames (the Encoder contract's pooled features)."""
    hidden = module(input_values, attention_mask=attention_mask).last_hidden_state
    if attention_mask is None:
        return hidden.mean(1)
    mask = module._get_feature_vector_attention_mask(hidden.shape[1], attention_mask).unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


class SpeechRecognizer(SpeechProcessor, TransferTask):
    """CTC transcription: a pretrained speech encoder plus a new character head.

    The vocabulary comes from the training transcripts (lower-cased, ``chars_to_ignore``
    dropped, ``|`` between words, ``[UNK]``, ``[PAD]`` as the CTC blank), or from an explicit
    ``vocab`` / ``processor``. The CTC loss always runs in fp32 outside autocast; a step with a
    non-finite loss is skipped and counted by the trainer.

    Args:
        model: a ``*ForCTC`` model whose head matches the processor's tokenizer.
        processor: a ``Wav2Vec2Processor`` (feature extractor + CTC tokenizer).
        strategy: any strategy (a name or an instance); ``lp_ft`` trains the head first, then everything.
        freeze_feature_encoder: keep the convolutional waveform front end frozen (default).
        ctc_config: the :class:`~transferkit.audio.CTCConfig` the model was set up with (kept so
            that ``from_run`` can set it up again).

    Example:
        >>> asr = SpeechRecognizer.from_pretrained("facebook/wav2vec2-base",
        ...                                        transcripts=["seven one", "two"])  # doctest: +SKIP
        >>> asr.fit("train.csv", eval="dev.csv", epochs=20, lr=1e-4)  # doctest: +SKIP
        >>> asr.transcribe(["clip.wav"])  # doctest: +SKIP
        >>> asr.save("asr-model")  # pipeline("automatic-speech-recognition", model="asr-model")  # doctest: +SKIP
    """

    task = "automatic-speech-recognition"

    def __init__(self, model: nn.Module, processor: Any, strategy: Any = "finetune", *,
                 freeze_feature_encoder: bool = True, spec: str | None = None, ctc_config: CTCConfig | None = None) -> None:
        vocab_size = len(processor.tokenizer)
        if model.config.vocab_size != vocab_size:
            raise ValueError(f"the CTC head has {model.config.vocab_size} outputs but the tokenizer has "
                             f"{vocab_size} tokens; load with from_pretrained(..., processor=...) to resize it")
        super().__init__(strategy)
        self.model, self.processor = model, processor
        self.ctc_config = ctc_config or CTCConfig(freeze_feature_encoder=freeze_feature_encoder)
        body = model.base_model
        self._encoder = AudioEncoder.wrap(
            Encoder(body, model.lm_head.in_features, processor=processor.feature_extractor, forward_fn=_pooled,
                    layers=getattr(getattr(body, "encoder", None), "layers", None), spec=spec or model.name_or_path,
                    hf_model=model),
            freeze_feature_encoder)
        self.skip_report = SkipReport()

    @property
    def encoder(self) -> AudioEncoder:
        return self._encoder

    @property
    def head(self) -> nn.Module:
        return self.model.lm_head

    @classmethod
    def from_pretrained(
        cls,
        spec: str | os.PathLike,
        *,
        transcripts: Sequence[str] | None = None,
        vocab: dict[str, int] | None = None,
        tokenizer: Any = None,
        processor: Any = None,
        strategy: Any = "finetune",
        config: CTCConfig | None = None,
        trust_remote_code: bool = False,
        **settings: Any,
    ) -> SpeechRecognizer:
        """Load an encoder (Hub id or local HF folder) with a CTC head for a vocabulary.

        The vocabulary is, in order of precedence: ``processor``, a CTC ``tokenizer``, ``vocab``,
        one built from ``transcripts``, or the tokenizer saved in ``spec`` (continuing a recognizer).
        ``config`` (a :class:`~transferkit.audio.CTCConfig`, or its fields as keywords:
        ``mask_time_prob=0.05, layerdrop=0.1``) sets text normalisation, masking and dropouts.
        """
        from transformers import AutoModelForCTC, Wav2Vec2Processor

        config = dataclasses.replace(config or CTCConfig(), **settings)
        spec = str(spec)
        if processor is None and tokenizer is not None:
            processor = Wav2Vec2Processor(feature_extractor=_feature_extractor(spec) or default_feature_extractor(),
                                          tokenizer=tokenizer)
        if processor is None:
            if vocab is None and transcripts is not None:
                vocab = build_vocab(transcripts, config.chars_to_ignore, config.lowercase)
            if vocab is not None:
                processor = make_processor(vocab, feature_extractor=_feature_extractor(spec),
                                           chars_to_ignore=config.chars_to_ignore, lowercase=config.lowercase)
            else:
                try:
                    processor = Wav2Vec2Processor.from_pretrained(spec)
                except (OSError, ValueError, TypeError) as err:
                    raise ValueError(f"{spec} has no CTC tokenizer: pass transcripts=, vocab= or processor=") from err
        tok = processor.tokenizer

        with quiet_transformers():  # "newly initialised lm_head" is the point of transfer
            model = AutoModelForCTC.from_pretrained(
                spec, vocab_size=len(tok), pad_token_id=tok.pad_token_id, ctc_loss_reduction="mean",
                ignore_mismatched_sizes=True, trust_remote_code=trust_remote_code, **config.model_kwargs())
        return cls(model, processor, strategy, freeze_feature_encoder=config.freeze_feature_encoder, spec=spec,
                   ctc_config=config)

    # -- data ---------------------------------------------------------------------------------
    def _min_samples(self, training: bool) -> int:
        return min_samples(self.model.config, training=training)

    def _dataset(self, data: Any, *, training: bool, min_seconds: float | None = None,
                 max_seconds: float | None = None) -> TokenizedClips:
        ds = as_audio_dataset(data, self.sampling_rate)
        if min_seconds is not None or max_seconds is not None:
            ds = ds.filter_duration(min_seconds, max_seconds)
        ids = encode_transcripts([str(t) for t in ds.targets], self.tokenizer, ds.sources, ds.report)
        min_samples = self._min_samples(training)
        keep = []
        for i, (y, n) in enumerate(zip(ids, ds.lengths)):
            if y is None:
                continue
            frames = int(self.model._get_feat_extract_output_lengths(torch.tensor(max(n, min_samples))))
            # CTC needs a frame per label plus a blank between repeated labels; anything less is infeasible.
            needed = len(y) + sum(a == b for a, b in zip(y, y[1:]))
            if frames < needed:
                ds.report.skip("transcript too long for the clip", ds.sources[i])
                continue
            keep.append(i)
        if not keep:
            raise ValueError(f"no usable (clip, transcript) pairs: {ds.report}")
        self.skip_report = ds.report
        sub = ds.subset(keep).with_options(min_samples=min_samples)
        return TokenizedClips(sub, [ids[i] for i in keep])

    def _collator(self) -> AudioCollator:
        return AudioCollator(self.processor.feature_extractor, self.sampling_rate, targets=lambda ids: ids, ctc=True)

    # -- training -----------------------------------------------------------------------------
    def ctc_loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        """The CTC loss of a batch, in fp32 outside autocast."""
        out = model(input_values=batch["input_values"], attention_mask=batch.get("attention_mask"))
        mask = batch.get("attention_mask")
        n = mask.sum(-1) if mask is not None else torch.full((len(batch["input_values"]),), batch["input_values"].shape[-1])
        frames = unwrap(model)._get_feat_extract_output_lengths(n)
        return ctc_loss_fp32(out.logits, batch["labels"], frames, blank_id=self.tokenizer.pad_token_id,
                             zero_infinity=bool(unwrap(model).config.ctc_zero_infinity))

    def _decode_batch(self, model: nn.Module, batch: dict) -> tuple[list[str], list[str]]:
        logits = model(input_values=batch["input_values"], attention_mask=batch.get("attention_mask")).logits
        mask = batch.get("attention_mask")
        lengths = unwrap(model)._get_feat_extract_output_lengths(mask.sum(-1)) if mask is not None else None
        hyps = greedy_decode(logits.float(), self.tokenizer, lengths=lengths)
        refs = []
        if "labels" in batch:
            labels = batch["labels"].masked_fill(batch["labels"] < 0, self.tokenizer.pad_token_id)
            refs = self.tokenizer.batch_decode(labels.tolist(), group_tokens=False, skip_special_tokens=True)
        return refs, hyps

    def evaluate_batches(self, model: nn.Module, loader: Any) -> dict:
        """WER, CER and exact match over a loader, keeping only decoded strings."""
        ev = StreamingCTCEval()  # strings only: the logits of one batch at a time
        gather = getattr(loader, "gather", lambda *v: v)  # the Trainer's loader: every process's examples
        for batch in loader:
            ev.add(*gather(*self._decode_batch(model, batch)))
        return ev.result()

    def default_config(self) -> TrainConfig:
        return TrainConfig(metric_for_best="wer", greater_is_better=False, group_by_length=True)

    def loss_fn(self, config):
        return self.ctc_loss

    def eval_fn(self):
        return self.evaluate_batches

    def fit(self, train: Any, eval: Any = None, *, config: TrainConfig | None = None,
            augment: WaveAugment | None = None, min_seconds: float | None = None,
            max_seconds: float | None = None, **options: Any) -> dict[str, TrainResult]:
        """Train on (clip, transcript) data, keeping the epoch with the lowest WER on ``eval``.

        Args:
            train: a CSV/TSV manifest ``path,transcript``, a ``datasets.Dataset``, an
                :class:`AudioDataset` with transcript targets, or ``(arrays, transcripts)``.
            augment: waveform augmentation of training clips (e.g. speed perturbation).
            min_seconds, max_seconds: duration filters; filtered clips are counted.
            options: :class:`TrainConfig` fields and strategy settings. Length-grouped batching is
                on by default.
        """
        return super().fit(train, eval, config=config, augment=augment, min_seconds=min_seconds,
                           max_seconds=max_seconds, **options)

    def training_data(self, train: Any, eval: Any, config: TrainConfig, *, augment: WaveAugment | None = None,
                      min_seconds: float | None = None, max_seconds: float | None = None) -> TrainingData:
        train_set = self._dataset(train, training=True, min_seconds=min_seconds, max_seconds=max_seconds)
        skipped = self.skip_report.n_skipped
        warn_if_masks_hide_clips(self.model, train_set.clips.lengths)
        eval_set = self._dataset(eval, training=False) if eval is not None else None
        if augment is not None:
            train_set.clips = train_set.clips.with_options(transform=augment, seed=config.seed)
        return TrainingData(train=train_set, eval=eval_set, collate=self._collator(), lengths=train_set.clips.lengths,
                            info={"train_examples": len(train_set), "eval_examples": len(eval_set) if eval_set else 0,
                                  "skipped_train_clips": skipped, "vocab_size": len(self.tokenizer),
                                  "feature_encoder_frozen": self.encoder.front_end_frozen})

    # -- inference ----------------------------------------------------------------------------
    @torch.no_grad()
    def transcribe(self, clips: Any, *, sampling_rate: int | None = None, batch_size: int = 16) -> list[str]:
        """Greedy transcription of clips (paths, or arrays at ``sampling_rate``)."""
        waves = as_clips(clips, self.sampling_rate, sampling_rate)
        self.model.eval()
        device = next(self.model.parameters()).device
        collate, min_samples, out = AudioCollator(self.processor.feature_extractor, self.sampling_rate), self._min_samples(False), []
        for start in range(0, len(waves), batch_size):
            rows = [{"input_values": np.pad(w, (0, max(0, min_samples - len(w))))} for w in waves[start:start + batch_size]]
            batch = {k: v.to(device) for k, v in collate(rows).items()}
            out += self._decode_batch(self.model, batch)[1]
        return out

    def predict(self, clips: Any, *, sampling_rate: int | None = None, batch_size: int = 16) -> list[dict]:
        """``[{"text": transcript}, ...]`` per clip: :meth:`transcribe` in the shape every task predicts."""
        return [{"text": t} for t in self.transcribe(clips, sampling_rate=sampling_rate, batch_size=batch_size)]

    @torch.no_grad()
    def evaluate(self, data: Any, *, out_dir: str | os.PathLike | None = None, batch_size: int = 16) -> dict:
        """WER, CER and exact-match rate of greedy transcriptions (streamed: strings only are kept).
        ``out_dir`` is accepted like a classifier's; a recognizer draws no figure there."""
        ds = self._dataset(data, training=False)
        loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, collate_fn=self._collator())
        device = next(self.model.parameters()).device
        self.model.eval()
        ev = StreamingCTCEval()
        for batch in loader:
            ev.add(*self._decode_batch(self.model, {k: v.to(device) for k, v in batch.items()}))
        return {**ev.result(), "examples": len(ds), "skipped": self.skip_report.n_skipped}

    # -- persistence -------------------------------------------------------------------------
    def save_files(self, folder: Path, kind: str) -> dict[str, Any]:
        """Export: the model, vocabulary and feature extractor (``pipeline("automatic-speech-recognition")``
        loads the folder). Run folder: the processor (its vocabulary) and the CTC settings."""
        ctc = {"ctc_config": dataclasses.asdict(self.ctc_config)}
        if kind == "run":
            self.processor.save_pretrained(folder / "processor")
            return {"vocab": self.tokenizer.get_vocab(), **ctc}
        with quiet_transformers():
            self.model.save_pretrained(folder, safe_serialization=True)
        self.processor.save_pretrained(folder)  # vocab.json travels with the weights, never apart
        return ctc

    @classmethod
    def load_files(cls, folder: Path, info: dict[str, Any], kind: str) -> SpeechRecognizer:
        from transformers import AutoModelForCTC, Wav2Vec2Processor

        if kind == "run":
            processor = Wav2Vec2Processor.from_pretrained(folder / "processor")
            return cls.from_pretrained(info["base_model"], processor=processor, strategy=info["strategy"],
                                       config=CTCConfig(**info["ctc_config"]))
        ctc = CTCConfig(**info["ctc_config"]) if "ctc_config" in info else None
        return cls(AutoModelForCTC.from_pretrained(folder), Wav2Vec2Processor.from_pretrained(folder),
                   info.get("strategy", "finetune"), freeze_feature_encoder=info.get("feature_encoder_frozen", True),
                   spec=info.get("base_model"), ctc_config=ctc)

    def card_data(self) -> dict[str, Any]:
        return {k: v for k, v in self.train_info.items() if k.endswith(("examples", "size"))} | {
            "sampling rate": f"{self.sampling_rate} Hz"}


def _feature_extractor(spec: str) -> Any:
    from transformers import AutoFeatureExtractor

    try:
        return AutoFeatureExtractor.from_pretrained(spec)
    except (OSError, ValueError):
        return None
