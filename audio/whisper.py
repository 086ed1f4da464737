"""WhisperRecognizer: sequence-to-sequence speech recognition by transfer from a pretrained Whisper.

The task contract is :class:`~transferkit.common.TransferTask`'s: ``fit`` runs the strategy's stages
through the common Trainer, ``evaluate`` / ``predict`` / ``save`` / ``load`` / ``from_run`` / ``push``
behave as for every task. What is Whisper's own:

- The "encoder" the strategies see is the whole encoder-decoder (:class:`WhisperBody`); its blocks
  run from the audio side to the text side: ``encoder.stem``, ``encoder.layer<i>``, ``encoder.norm``,
  ``decoder.stem`` (token and position embeddings, tied to the output projection),
  ``decoder.layer<i>``, ``top``. So ``partial`` (top-k blocks) trains the top decoder layers on a
  frozen encoder, ``llrd`` decays rates from the text side down to the convolutions, ``lora``
  adapts the q/v projections of every attention (self and cross, encoder and decoder), merged on
  export. There is no new head: the pretrained vocabulary projection is kept.
- Labels are built once, from the prompt the model is decoded with: ``<|startoftranscript|>``
  (the decoder start, exactly once), then for a multilingual model ``<|lang|> <|task|>``, then
  ``<|notimestamps|>``, the text with a leading space, ``<|endoftext|>``. The prompt tokens are
  decoder inputs but not targets; padding is -100; the cross-entropy runs on fp32 logits.
- A multilingual model needs ``language=`` (automatic detection guesses wrong on short clips);
  language and task go into the generation config that the export saves, so ``pipeline`` decodes
  as ``predict`` does. An English-only model takes none.
- Clips longer than the window (30 s) are skipped and counted in training and refused with a
  message at inference, never cut; transcripts longer than the decoder's 448 positions are
  skipped and counted.
- Decoding: greedy (``num_beams`` optional), at most ``max_new_tokens``, and
  ``no_repeat_ngram_size`` against hallucinated loops; the best epoch is chosen by normalised WER.

Example:
    >>> asr = WhisperRecognizer.from_pretrained("packaged:whisper_tiny_en")  # doctest: +SKIP
    >>> asr.evaluate(("clips", "texts"))  # zero-shot first  # doctest: +SKIP
    >>> asr.fit(train, eval=dev, strategy="partial", epochs=3, lr=1e-4)  # doctest: +SKIP
    >>> asr.save("asr")  # pipeline("automatic-speech-recognition", model="asr")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from transferkit.common import Encoder, TrainConfig, TrainingData, TrainResult, TransferTask
from transferkit.common.config import check_settings, setting
from transferkit.common.encoders import EncoderBlock, quiet_transformers

from .data import as_audio_dataset
from .decode import SkipReport
from .modality import SpeechProcessor, TokenizedClips, as_clips, unwrap
from .seq2seq_text import NORMALIZERS, Seq2SeqEval

log = logging.getLogger(__name__)


@dataclass
class WhisperConfig:
    """How a Whisper model is prompted, decoded and scored."""

    language: str | None = setting(None, "Language code of the speech (multilingual models only; required there).")
    task: str = setting("transcribe", "transcribe, or translate into English (multilingual models).",
                        choices=("transcribe", "translate"))
    max_new_tokens: int = setting(128, "Cap on generated tokens per clip (a loop stops there).", ge=1, le=440)
    num_beams: int = setting(1, "Beam width at evaluation and prediction (1: greedy).", ge=1)
    no_repeat_ngram_size: int = setting(5, "Never generate an n-gram twice (against hallucinated repeats; 0: off).", ge=0)
    window_seconds: int | None = setting(None, "Shorten the encoder's 30 s window to this many seconds (a CPU "
                                         "speed-up: encoder cost falls with it); None keeps the checkpoint's.", ge=1, le=30)
    normalizer: str = setting("basic", "Text normaliser before WER/CER: basic, or spoken_digits (digits spelled "
                              "out as words).", choices=NORMALIZERS)

    def __post_init__(self) -> None:
        check_settings(self)


class WhisperBody(Encoder):
    """A Whisper encoder-decoder as the :class:`Encoder` strategies freeze and rate (see the module
    docstring for its blocks). ``forward`` gives the mean encoder state (features for a probe)."""

    def __init__(self, model: nn.Module, spec: str, processor: Any) -> None:
        super().__init__(model.model, model.config.d_model, processor=processor, forward_fn=_mean_encoder_state, spec=spec)
        self.pin_frozen(model.model.encoder.embed_positions)  # fixed sinusoids, never trained

    def blocks(self) -> list[EncoderBlock]:
        enc, dec = self.module.encoder, self.module.decoder
        names = {id(p): n for n, p in self.module.named_parameters()}

        def block(name: str, *modules: nn.Module) -> EncoderBlock:
            return EncoderBlock(name, {names[id(p)]: p for m in modules for p in m.parameters() if id(p) in names})

        blocks = [block("encoder.stem", enc.conv1, enc.conv2, enc.embed_positions),
                  *[block(f"encoder.layer{i}", layer) for i, layer in enumerate(enc.layers)],
                  block("encoder.norm", enc.layer_norm), block("decoder.stem", dec.embed_tokens, dec.embed_positions),
                  *[block(f"decoder.layer{i}", layer) for i, layer in enumerate(dec.layers)], block("top", dec.layer_norm)]
        return self._without_pinned(blocks)


def shorten_window(model: nn.Module, processor: Any, seconds: int) -> None:
    """Make the encoder hear ``seconds`` instead of its checkpoint's window (30 s): the first
    ``50 * seconds`` position vectors are kept and the feature extractor pads to the new window.

    Whisper was trained on 30-s windows of speech followed by silence; a shorter window keeps the
    speech and drops most of that silence, so the encoder's cost falls about in proportion. The
    config and the feature extractor are both changed, so an export loads in ``pipeline`` with the
    same window. A window at least as long as the checkpoint's changes nothing.
    """
    from transformers import WhisperFeatureExtractor

    fe, enc = processor.feature_extractor, model.model.encoder
    positions = seconds * fe.sampling_rate // fe.hop_length // (enc.conv1.stride[0] * enc.conv2.stride[0])
    if positions >= model.config.max_source_positions:
        return
    table = nn.Embedding(positions, model.config.d_model)
    table.weight.data.copy_(enc.embed_positions.weight.data[:positions])
    table.requires_grad_(False)
    enc.embed_positions, enc.max_source_positions = table, positions
    model.config.max_source_positions = positions
    processor.feature_extractor = WhisperFeatureExtractor(
        feature_size=fe.feature_size, sampling_rate=fe.sampling_rate, hop_length=fe.hop_length, chunk_length=seconds,
        n_fft=fe.n_fft, padding_value=fe.padding_value)


def _mean_encoder_state(module: nn.Module, input_features: torch.Tensor, **_: Any) -> torch.Tensor:
    return module.encoder(input_features).last_hidden_state.mean(1)


class WhisperCollator:
    """Waveforms -> log-mel ``input_features`` of the model's window; token ids -> ``decoder_input_ids``
    (the sequence without its last token, padded with the pad id) and ``labels`` (without its first,
    the prompt's forced tokens and the padding set to -100)."""

    def __init__(self, feature_extractor: Any, pad_id: int, prompt_length: int) -> None:
        self.feature_extractor, self.pad_id, self.prompt_length = feature_extractor, pad_id, prompt_length

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        fe = self.feature_extractor
        waves = [np.asarray(r["input_values"], dtype=np.float32) for r in rows]
        batch = {"input_features": fe(waves, sampling_rate=fe.sampling_rate, return_tensors="pt").input_features}
        if rows and rows[0].get("target") is not None:
            seqs = [list(r["target"]) for r in rows]
            width = max(len(s) for s in seqs) - 1
            batch["decoder_input_ids"] = torch.tensor([s[:-1] + [self.pad_id] * (width - len(s) + 1) for s in seqs])
            labels = torch.tensor([s[1:] + [-100] * (width - len(s) + 1) for s in seqs])
            labels[:, : self.prompt_length - 1] = -100
            batch["labels"] = labels
        return batch


class WhisperRecognizer(SpeechProcessor, TransferTask):
    """Speech recognition by fine-tuning a pretrained Whisper (see the module docstring).

    Args:
        model: a ``WhisperForConditionalGeneration``.
        processor: its ``WhisperProcessor`` (feature extractor + tokenizer).
        strategy: ``finetune``, ``partial``, ``lora``, ``llrd`` (a name or an instance).
        spec: where the model came from (``packaged:whisper_tiny_en``, a folder), for model cards.
        config: a :class:`WhisperConfig` (language, task, decoding, normaliser).
    """

    task = "automatic-speech-recognition"

    def __init__(self, model: nn.Module, processor: Any, strategy: Any = "finetune", *, spec: str | None = None,
                 config: WhisperConfig | None = None) -> None:
        super().__init__(strategy)
        self.model, self.processor = model, processor
        self.asr_config = config or WhisperConfig()
        self.multilingual = bool(getattr(model.generation_config, "lang_to_id", None))
        if self.asr_config.window_seconds:
            shorten_window(model, processor, self.asr_config.window_seconds)
        self._set_generation()
        self._encoder = WhisperBody(model, spec or str(model.name_or_path), processor.feature_extractor)
        self._head = nn.ModuleDict()  # nothing new: the pretrained vocabulary projection is kept
        self.skip_report = SkipReport()

    @classmethod
    def from_pretrained(cls, spec: str | os.PathLike, *, strategy: Any = "finetune", config: WhisperConfig | None = None,
                        **settings: Any) -> WhisperRecognizer:
        """A packaged Whisper (``packaged:whisper_tiny_en``, ``packaged:whisper_base``) or a Hugging Face
        Whisper folder / Hub id; ``settings`` are :class:`WhisperConfig` fields (``language="de"``)."""
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        spec = str(spec)
        folder = spec
        if spec.startswith("packaged:"):
            from .whisper_weights import whisper_folder

            folder = str(whisper_folder(spec))
        with quiet_transformers():
            model = WhisperForConditionalGeneration.from_pretrained(folder)
        config = dataclasses.replace(config or WhisperConfig(), **settings)
        return cls(model, WhisperProcessor.from_pretrained(folder), strategy, spec=spec, config=config)

    # -- generation settings ----------------------------------------------------------------------
    def _set_generation(self) -> None:
        cfg, gen = self.asr_config, self.model.generation_config
        if self.multilingual and not cfg.language:
            raise ValueError("this Whisper is multilingual: pass language= (e.g. language='en'); automatic "
                             "language detection guesses wrong on short clips")
        if not self.multilingual and (cfg.language not in (None, "en", "english") or cfg.task != "transcribe"):
            raise ValueError(f"this Whisper is English-only: it takes no language={cfg.language!r} or "
                             f"task={cfg.task!r}; use a multilingual model (packaged:whisper_base)")
        gen.language = cfg.language if self.multilingual else None
        gen.task = cfg.task if self.multilingual else None
        gen.forced_decoder_ids = None
        # prompt + new tokens must fit the decoder's positions (448 for every released Whisper)
        gen.max_new_tokens = min(cfg.max_new_tokens, self.model.config.max_target_positions - len(self.prompt))
        gen.num_beams = cfg.num_beams
        gen.no_repeat_ngram_size = cfg.no_repeat_ngram_size
        gen.max_length = None  # max_new_tokens is the cap

    @property
    def prompt(self) -> list[int]:
        """The decoder's forced start: ``<|startoftranscript|> [<|lang|> <|task|>] <|notimestamps|>``."""
        gen = self.model.generation_config
        ids = [self.model.config.decoder_start_token_id]
        if self.multilingual:
            ids += [gen.lang_to_id[f"<|{self.asr_config.language}|>"], gen.task_to_id[self.asr_config.task]]
        return ids + [gen.no_timestamps_token_id]

    # -- hooks --------------------------------------------------------------------------------------
    @property
    def encoder(self) -> WhisperBody:
        return self._encoder

    @property
    def head(self) -> nn.Module:
        return self._head

    @property
    def window_samples(self) -> int:
        return int(self.processor.feature_extractor.n_samples)

    def default_config(self) -> TrainConfig:
        return TrainConfig(metric_for_best="wer", greater_is_better=False, batch_size=8, lr=1e-5, epochs=3)

    # -- data -----------------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """The whole token sequence of a transcript: prompt, text (leading space, as Whisper writes), end."""
        text_ids = self.tokenizer(" " + text.strip(), add_special_tokens=False).input_ids
        return self.prompt + text_ids + [self.model.config.eos_token_id]

    def _dataset(self, data: Any, *, training: bool) -> TokenizedClips:
        ds = as_audio_dataset(data, self.sampling_rate)
        limit, keep, ids = self.model.config.max_target_positions, [], []
        for i, (n, text) in enumerate(zip(ds.lengths, ds.targets)):
            if n > self.window_samples:
                if not training:
                    raise ValueError(self._too_long(ds.sources[i], n))
                ds.report.skip(f"longer than the {self.window_samples / self.sampling_rate:.0f} s window", ds.sources[i])
                continue
            if not str(text).strip():
                ds.report.skip("empty transcript", ds.sources[i])
                continue
            seq = self.encode(str(text))
            if len(seq) > limit:
                ds.report.skip(f"transcript over {limit} tokens", ds.sources[i])
                continue
            keep.append(i)
            ids.append(seq)
        if not keep:
            raise ValueError(f"no usable (clip, transcript) pairs: {ds.report}")
        self.skip_report = ds.report
        return TokenizedClips(ds.subset(keep), ids)

    def _too_long(self, source: str, samples: int) -> str:
        return (f"{source} lasts {samples / self.sampling_rate:.1f} s but Whisper hears "
                f"{self.window_samples / self.sampling_rate:.0f} s at a time: split it into shorter clips first "
                "(AudioDataset.chunk) so that no speech is cut off")

    def _collator(self) -> WhisperCollator:
        return WhisperCollator(self.processor.feature_extractor, self.model.config.pad_token_id, len(self.prompt))

    def fit(self, train: Any, eval: Any = None, *, config: TrainConfig | None = None, **options: Any) -> dict[str, TrainResult]:
        """Train on (clip, transcript) data, keeping the epoch with the lowest normalised WER on ``eval``.

        Args:
            train, eval: a CSV/TSV manifest ``path,transcript``, a ``datasets.Dataset``, an
                :class:`AudioDataset` with transcript targets, or ``(arrays, transcripts)`` at 16 kHz.
            options: :class:`TrainConfig` fields and strategy settings (``top_k_blocks=2``).
        """
        return super().fit(train, eval, config=config, **options)

    def training_data(self, train: Any, eval: Any, config: TrainConfig, **options: Any) -> TrainingData:
        if options:
            raise TypeError(f"WhisperRecognizer.fit got unknown options {sorted(options)}")
        train_set = self._dataset(train, training=True)
        skipped = self.skip_report.n_skipped
        eval_set = self._dataset(eval, training=False) if eval is not None else None
        return TrainingData(train=train_set, eval=eval_set, collate=self._collator(),
                            lengths=[len(s) for s in train_set.ids],
                            info={"train_examples": len(train_set), "eval_examples": len(eval_set) if eval_set else 0,
                                  "skipped_train_clips": skipped, "language": self.asr_config.language,
                                  "normalizer": self.asr_config.normalizer})

    # -- training and evaluation ------------------------------------------------------------------
    def seq2seq_loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        """Token cross-entropy on fp32 logits; prompt and padding positions are -100 and count for nothing."""
        logits = model(input_features=batch["input_features"], decoder_input_ids=batch["decoder_input_ids"]).logits
        return F.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten(), ignore_index=-100,
                               label_smoothing=self._label_smoothing)

    _label_smoothing = 0.0

    def loss_fn(self, config: TrainConfig):
        self._label_smoothing = config.label_smoothing
        return self.seq2seq_loss

    def generate_ids(self, model: nn.Module, input_features: torch.Tensor) -> torch.Tensor:
        """Token ids decoded with the generation config the export saves (prompt, caps, beams)."""
        model = unwrap(model)
        # quiet: transformers warns on every call that the pad token doubles as end token (no attention mask is
        # needed: every clip fills the window) and that max_new_tokens overrides a default max_length
        with quiet_transformers():
            return model.generate(input_features=input_features, generation_config=model.generation_config)

    def _decode(self, ids: torch.Tensor) -> list[str]:
        return [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    def evaluate_batches(self, model: nn.Module, loader: Any) -> dict:
        """Normalised WER and CER, orthographic WER and exact match of generated transcripts."""
        ev = Seq2SeqEval()
        gather = getattr(loader, "gather", lambda *v: v)
        for batch in loader:
            hyps = self._decode(self.generate_ids(model, batch["input_features"]))
            refs = self._decode(batch["labels"].masked_fill(batch["labels"] < 0, self.model.config.pad_token_id))
            ev.add(*gather(refs, hyps))
        return ev.result(self.asr_config.normalizer)

    def eval_fn(self):
        return self.evaluate_batches

    # -- inference --------------------------------------------------------------------------------------
    def _waves(self, clips: Any, sampling_rate: int | None) -> list[np.ndarray]:
        waves = as_clips(clips, self.sampling_rate, sampling_rate)
        for i, w in enumerate(waves):
            if len(w) > self.window_samples:
                raise ValueError(self._too_long(f"clip {i}", len(w)))
        return waves

    @torch.no_grad()
    def transcribe(self, clips: Any, *, sampling_rate: int | None = None, batch_size: int = 8) -> list[str]:
        """Transcripts of clips (paths, or arrays at ``sampling_rate``), decoded as the export's ``pipeline`` does."""
        waves = self._waves(clips, sampling_rate)
        self.model.eval()
        device = next(self.model.parameters()).device
        collate, out = self._collator(), []
        for start in range(0, len(waves), batch_size):
            feats = collate([{"input_values": w} for w in waves[start:start + batch_size]])["input_features"]
            out += self._decode(self.generate_ids(self.model, feats.to(device)))
        return out

    def predict(self, clips: Any, *, sampling_rate: int | None = None, batch_size: int = 8) -> list[dict]:
        """``[{"text": transcript}, ...]``, one per clip."""
        return [{"text": t} for t in self.transcribe(clips, sampling_rate=sampling_rate, batch_size=batch_size)]

    @torch.no_grad()
    def evaluate(self, data: Any, *, out_dir: str | os.PathLike | None = None, batch_size: int = 8) -> dict:
        """Normalised WER and CER, orthographic WER and exact match on labelled ``data`` (a clip over the
        window raises). Score the zero-shot model first with the same call: that is the baseline."""
        ds = self._dataset(data, training=False)
        loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, collate_fn=self._collator())
        self.model.eval()
        device = next(self.model.parameters()).device
        metrics = self.evaluate_batches(self.model, ({k: v.to(device) for k, v in b.items()} for b in loader))
        return {**metrics, "examples": len(ds), "skipped": self.skip_report.n_skipped}

    # -- persistence ----------------------------------------------------------------------------------
    def save_files(self, folder: Path, kind: str) -> dict[str, Any]:
        """Export: model, generation config (prompt, caps) and processor (``pipeline("automatic-speech-recognition")``
        loads the folder and decodes as :meth:`predict` does). Run folder: the Whisper settings."""
        facts = {"whisper_config": dataclasses.asdict(self.asr_config)}
        if kind == "export":
            with quiet_transformers():
                self.model.save_pretrained(folder, safe_serialization=True)
            self.processor.save_pretrained(folder)
        return facts

    @classmethod
    def load_files(cls, folder: Path, info: dict[str, Any], kind: str) -> WhisperRecognizer:
        if kind == "run":
            return cls.from_pretrained(info["base_model"], strategy=info["strategy"],
                                       config=WhisperConfig(**info["whisper_config"]))
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        config = WhisperConfig(**info["whisper_config"]) if "whisper_config" in info else None
        return cls(WhisperForConditionalGeneration.from_pretrained(folder), WhisperProcessor.from_pretrained(folder),
                   info.get("strategy", "finetune"), spec=info.get("base_model"), config=config)

    def card_data(self) -> dict[str, Any]:
        return {k: v for k, v in self.train_info.items() if k.endswith("examples")} | {
            "language": self.asr_config.language or "en (English-only model)", "normalizer": self.asr_config.normalizer}
