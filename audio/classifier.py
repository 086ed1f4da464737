"""AudioClassifier: keyword spotting, sound events, speaker or language ID by transfer."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from transferkit.common import TrainConfig, TrainingData, TransferClassifier, load_encoder
from transferkit.common.features import fingerprint
from transferkit.common.streams import is_stream

from .augment import WaveAugment
from .config import DEFAULT_MAX_SECONDS, AudioModelConfig
from .data import as_audio_dataset, clip_windows, note_long_clips
from .encoder import (
    AudioCollator,
    AudioEncoder,
    default_feature_extractor,
    enable_layer_sum,
    set_regularisation,
    warn_if_masks_hide_clips,
)
from .modality import AudioModality, as_clips, min_samples

log = logging.getLogger(__name__)


class AudioClassifier(TransferClassifier):
    """Audio classification by transfer from a pretrained audio encoder (wav2vec2, HuBERT, WavLM, AST, Whisper...).

    The encoder is the Hugging Face audio-classification model with its final layer taken out:
    what fed that layer are the features (wav2vec2 and Whisper: projector + mean pooling; AST:
    the LayerNorm of its pooled tokens), a new linear head classifies them, and export puts the
    head back where the final layer was so that ``transformers.pipeline("audio-classification")``
    loads the folder.

    Args:
        encoder: from :func:`~transferkit.common.load_encoder` (``task="audio"``).
        labels: class names, in id order.
        strategy: any registered strategy (``linear_probe``, ``finetune``, ``lp_ft``, ``partial``,
            ``llrd``, ``lora``).
        freeze_feature_encoder: keep the convolutional waveform front end frozen (default, as in
            Hugging Face's run_audio_classification).

    Example:
        >>> clf = AudioClassifier.from_pretrained("facebook/wav2vec2-base", labels=["yes", "no"],
        ...                                       strategy="finetune")  # doctest: +SKIP
        >>> clf.fit("clips/train", eval="clips/val", epochs=5, lr=3e-5)  # doctest: +SKIP
        >>> clf.predict(["clip.wav"])[0]["label"]  # doctest: +SKIP
        >>> clf.save("kws-model")  # pipeline("audio-classification", model="kws-model")  # doctest: +SKIP
    """

    task = "audio-classification"
    encoder_task = "audio"
    modality = AudioModality

    def __init__(self, encoder: Any, labels: Sequence[str], strategy: Any = "finetune",
                 *, freeze_feature_encoder: bool = True) -> None:
        encoder = AudioEncoder.wrap(encoder, freeze_feature_encoder)
        if encoder.processor is None:
            encoder.processor = default_feature_extractor()
        super().__init__(encoder, labels, strategy)
        # Clips longer than this are scored in windows of this length (see logits); fit sets it to its crop.
        self.window_seconds: float | None = DEFAULT_MAX_SECONDS

    @classmethod
    def rebuild(cls, encoder: Any, labels: list[str], info: dict) -> AudioClassifier:
        if info.get("layer_sum") and encoder.hf_model is not None and not encoder.hf_model.config.use_weighted_layer_sum:
            enable_layer_sum(encoder.hf_model)
        clf = cls(encoder, labels, info.get("strategy", "finetune"),
                  freeze_feature_encoder=info.get("feature_encoder_frozen", True))
        clf.window_seconds = info.get("max_seconds", DEFAULT_MAX_SECONDS)
        return clf

    @property
    def encoder(self) -> AudioEncoder:
        return self.model.encoder

    @property
    def sampling_rate(self) -> int:
        return int(getattr(self.encoder.processor, "sampling_rate", 16_000))

    @property
    def hf_config(self) -> Any:
        hf = self.encoder.hf_model
        return hf.config if hf is not None else None

    @classmethod
    def from_pretrained(cls, spec: Any, labels: Sequence[str], strategy: Any = "finetune", *,
                        config: AudioModelConfig | None = None, **kwargs: Any) -> AudioClassifier:
        """Load the encoder (Hub id, local HF folder or nn.Module) and add a head for ``labels``.

        ``config`` (or its fields as keywords: ``layer_sum=True``, ``freeze_feature_encoder=False``,
        ``mask_time_prob=0``) sets the encoder up; other keywords go to ``load_encoder``.
        ``layer_sum=True`` pools a learned weighted sum of all hidden layers (SUPERB protocol)
        instead of the last layer. With ``linear_probe`` the layer weights stay uniform: they
        belong to the frozen encoder, and the features are cached once. ``mask_time_prob``
        overrides the checkpoint's SpecAugment time masking (transformers applies at least
        ``mask_time_min_masks`` masks of ``mask_time_length`` frames, which can hide a short word).
        """
        fields = set(AudioModelConfig.__dataclass_fields__)
        config = dataclasses.replace(config or AudioModelConfig(), **{k: kwargs.pop(k) for k in list(kwargs) if k in fields})
        encoder = load_encoder(spec, task="audio", **kwargs)
        if config.mask_time_prob is not None and encoder.hf_model is not None:
            set_regularisation(encoder.hf_model.config, mask_time_prob=config.mask_time_prob)
        if config.layer_sum:
            if encoder.hf_model is None:
                raise ValueError("layer_sum needs a Hugging Face audio model")
            enable_layer_sum(encoder.hf_model)
        return cls(encoder, labels, strategy, freeze_feature_encoder=config.freeze_feature_encoder)

    # -- hooks of TransferClassifier ----------------------------------------------------------
    def _min_samples(self, training: bool) -> int:
        return min_samples(self.hf_config, self.encoder.processor, training=training)

    def prepare_inputs(self, examples: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        n = self._min_samples(False)
        rows = [{"input_values": np.pad(w, (0, max(0, n - len(w))))} for w in examples]
        return AudioCollator(self.encoder.processor, self.sampling_rate)(rows)

    def logits(self, examples: Sequence[np.ndarray], batch_size: int = 64, *, workers: int | None = None) -> torch.Tensor:
        """Class scores per clip, batched shortest-first so that little padding enters any batch
        (group-norm front ends such as wav2vec2-base's normalise over padded samples too).

        A clip longer than :attr:`window_seconds` is scored in windows of that length (the last one
        ends with the clip) and its score is the mean of its windows' logits: memory stays that of
        one window, however long the recording.
        """
        windows, owner = clip_windows(examples, self._window_samples())
        order = np.argsort([len(w) for w in windows], kind="stable")
        scores = super().logits([windows[i] for i in order], batch_size, workers=workers)[torch.as_tensor(np.argsort(order))]
        if len(windows) == len(examples):
            return scores
        pooled = torch.zeros(len(examples), scores.shape[1]).index_add_(0, torch.as_tensor(owner), scores)
        return pooled / torch.bincount(torch.as_tensor(owner), minlength=len(examples)).clamp(min=1)[:, None]

    def _window_samples(self) -> int | None:
        return None if self.window_seconds is None else int(self.window_seconds * self.sampling_rate)

    def labelled(self, data: Any) -> tuple[Sequence[np.ndarray], Sequence[str]]:
        ds = as_audio_dataset(data, self.sampling_rate)
        return ds.waveforms, [str(t) for t in ds.targets]

    def card_data(self) -> dict[str, Any]:
        return super().card_data() | {"sampling rate": f"{self.sampling_rate} Hz"}

    def _collator(self) -> AudioCollator:
        return AudioCollator(self.encoder.processor, self.sampling_rate, targets=lambda t: self.label2id[str(t)])

    # -- training -----------------------------------------------------------------------------
    def fit(self, train: Any, eval: Any = None, *, config: TrainConfig | None = None,
            augment: WaveAugment | None = None, max_seconds: float | None = DEFAULT_MAX_SECONDS, **options: Any) -> dict:
        """Train on ``train`` (folder, manifest, datasets.Dataset, AudioDataset or ``(arrays, labels)``),
        keeping the best epoch on ``eval``.

        Args:
            augment: waveform augmentation of training clips (none by default; the linear-probe
                stage trains on cached features of un-augmented clips).
            max_seconds: random crop of longer training clips (run_audio_classification's
                ``max_length_seconds``, 20 s by default; None trains on whole clips, and one long
                recording then sets a batch's memory). The probe's cached features and the
                per-epoch evaluation read the middle ``max_seconds`` of longer clips (logged);
                :meth:`evaluate` and :meth:`predict` pool windows of that length over whole clips.
            options: :class:`TrainConfig` fields (``epochs=5, lr=3e-5``) and strategy settings.

        Returns each stage's :class:`~transferkit.common.TrainResult`.
        """
        return super().fit(train, eval, config=config, augment=augment, max_seconds=max_seconds, **options)

    def training_data(self, train: Any, eval: Any, config: TrainConfig, *, augment: WaveAugment | None = None,
                      max_seconds: float | None = DEFAULT_MAX_SECONDS) -> TrainingData:
        if is_stream(train) or is_stream(eval):
            return self._stream_data(train, eval, config, augment, max_seconds)
        # No length grouping by default: in keyword spotting a clip's length says much about its
        # word, so length-sorted batches hold few classes each and training stalled (measured).
        train_set = as_audio_dataset(train, self.sampling_rate)
        eval_set = as_audio_dataset(eval, self.sampling_rate) if eval is not None else None
        self.check_labels(train_set.targets, "the training data")
        if eval_set is not None:
            self.check_labels(eval_set.targets, "the evaluation data")
            eval_set = eval_set.with_options(min_samples=self._min_samples(False), max_seconds=max_seconds, crop="center")
            note_long_clips(eval_set, max_seconds, "evaluation clips are scored on their middle")
        if self.encoder.hf_model is not None:
            warn_if_masks_hide_clips(self.encoder.hf_model, train_set.lengths)
        self.start_training(config)
        fit_set = train_set.with_options(transform=augment, min_samples=self._min_samples(True),
                                         max_seconds=max_seconds, crop="random", seed=config.seed)
        processor = self.encoder.processor
        # The probe caches features once: of un-augmented clips (the middle max_seconds of longer ones), never of
        # random crops.
        probe_set = train_set.with_options(min_samples=self._min_samples(False), max_seconds=max_seconds, crop="center")
        note_long_clips(train_set, max_seconds, "training clips are randomly cropped (the probe's features: the middle)")
        self.window_seconds = max_seconds
        fps = {"preprocess": fingerprint(type(processor).__name__, processor.to_dict() if hasattr(processor, "to_dict") else None),
               "train": probe_set.fingerprint()}
        if eval_set is not None:
            fps["eval"] = eval_set.fingerprint()
        return TrainingData(
            train=fit_set, eval=eval_set, collate=self._collator(), eval_collate=self._collator(), lengths=fit_set.lengths,
            probe_train=probe_set, fingerprints=fps,
            info={"train_examples": len(train_set), "eval_examples": len(eval_set) if eval_set else 0,
                  "skipped_train_clips": train_set.report.n_skipped, "feature_encoder_frozen": self.encoder.front_end_frozen,
                  "layer_sum": bool(getattr(self.hf_config, "use_weighted_layer_sum", False)), "max_seconds": max_seconds})

    def _stream_data(self, train: Any, eval: Any, config: TrainConfig, augment: WaveAugment | None,
                     max_seconds: float | None) -> TrainingData:
        """A stream of clips: each decoded as it passes, a longer one cropped at random to ``max_seconds``."""
        if augment is not None:
            raise ValueError("waveform augmentation of a stream is not supported: pass augment=None, or a map-style set")
        modality = self.adapter()
        limit = int(max_seconds * self.sampling_rate) if max_seconds else None

        def prepare(item: Any) -> np.ndarray:
            wave = modality.decode(item)
            if limit and len(wave) > limit:  # torch's generator: a resumed run draws the same crops
                start = int(torch.randint(0, len(wave) - limit + 1, ()).item())
                wave = wave[start:start + limit]
            return wave

        return self.stream_data(train, eval, config, prepare=prepare)

    # -- inference ----------------------------------------------------------------------------
    def predict(self, clips: Any, *, sampling_rate: int | None = None, batch_size: int = 32,
                workers: int | None = None) -> list[dict]:
        """Label and class probabilities per clip: a path, an array at ``sampling_rate`` (default: the
        encoder's), or a list of them; ``workers`` threads decode the files and collate the next batches
        while the model runs one (0: all in this thread; the scores do not depend on it)."""
        return self._predict(as_clips(clips, self.sampling_rate, sampling_rate, workers=workers), batch_size, workers)
