"""Continued self-supervised pretraining: wav2vec2's own objective on the user's unlabelled audio.

Before fine-tuning on few labels, an encoder can first adapt to the target domain (a new
microphone, accent or noise) by continuing the contrastive task it was pretrained with
(Baevski et al. 2020): spans of frames are masked, and the model must pick the quantised
latent of each masked frame among sampled distractors, with a diversity loss that keeps the
codebook in use. This runs through the same :class:`~transferkit.common.Trainer` as everything else.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from transferkit.common import Callback, TrainConfig, Trainer, TrainResult

from .config import PretrainConfig
from .data import AudioDataset, as_audio_dataset
from .encoder import AudioCollator, default_feature_extractor, min_input_samples

log = logging.getLogger(__name__)


@dataclass
class PretrainResult:
    """Where the adapted encoder was saved (a Hugging Face folder) and how training went."""

    folder: str
    result: TrainResult
    final: dict


class _MaskingCollator(AudioCollator):
    """Pads clips, then draws the masked spans and the negatives for each batch."""

    def __init__(self, feature_extractor: Any, sampling_rate: int, model: nn.Module, mask_prob: float,
                 mask_length: int, num_negatives: int) -> None:
        super().__init__(feature_extractor, sampling_rate)
        self.model, self.mask_prob, self.mask_length, self.num_negatives = model, mask_prob, mask_length, num_negatives

    def __call__(self, rows):
        from transformers.models.wav2vec2.modeling_wav2vec2 import (
            _compute_mask_indices,
            _sample_negative_indices,
        )

        batch = super().__call__(rows)
        n_samples = batch["attention_mask"].sum(-1)
        frames = int(self.model._get_feat_extract_output_lengths(torch.tensor(batch["input_values"].shape[-1])))
        frame_mask = self.model._get_feature_vector_attention_mask(frames, batch["attention_mask"])
        shape = (len(rows), frames)
        # At least two masked spans per clip: a clip with none would contribute no loss at all.
        mask = _compute_mask_indices(shape, self.mask_prob, self.mask_length, attention_mask=frame_mask, min_masks=2)
        negatives = _sample_negative_indices(shape, self.num_negatives, mask)
        batch["mask_time_indices"] = torch.from_numpy(mask)
        batch["sampled_negative_indices"] = torch.from_numpy(negatives)
        batch["n_samples"] = n_samples
        return batch


def _core(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and not hasattr(model, "config") else model


class GumbelAnneal(Callback):
    """The quantiser's Gumbel-softmax temperature, annealed per training step; the step count is
    checkpointed, so a resumed run continues the schedule instead of restarting it."""

    def __init__(self, max_temp: float, min_temp: float, decay: float) -> None:
        self.max_temp, self.min_temp, self.decay, self.step = max_temp, min_temp, decay, 0

    @property
    def temperature(self) -> float:
        return max(self.max_temp * self.decay**self.step, self.min_temp)

    def on_batch_begin(self, trainer, model, batch) -> None:
        _core(model).set_gumbel_temperature(self.temperature)

    def on_batch_end(self, trainer, loss) -> None:
        self.step += 1

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])


class _ContrastiveLoss:
    """Per-masked-frame wav2vec2 loss; keeps the last batch's loss terms for the report."""

    def __init__(self) -> None:
        self.last: dict[str, float] = {}

    def __call__(self, model: nn.Module, batch: dict) -> torch.Tensor:
        # Through the wrapper Accelerate returned: under several processes it is what synchronises gradients.
        out = model(input_values=batch["input_values"], attention_mask=batch["attention_mask"],
                    mask_time_indices=batch["mask_time_indices"], sampled_negative_indices=batch["sampled_negative_indices"])
        n_masked = batch["mask_time_indices"].sum().clamp(min=1)
        # transformers returns the loss summed over masked frames; per-frame keeps the rate batch-independent.
        self.last = {"contrastive_loss": float(out.contrastive_loss.detach()) / float(n_masked),
                     "diversity_loss": float(out.diversity_loss.detach()) / float(n_masked),
                     "codevector_perplexity": float(out.codevector_perplexity.detach())}
        return out.loss / n_masked


def pretrain(
    unlabelled_audio: Any,
    encoder: str | os.PathLike,
    *,
    output_dir: str | os.PathLike = "transferkit-pretrain",
    eval_audio: Any = None,
    config: TrainConfig | None = None,
    pretrain_config: PretrainConfig | None = None,
    **options: Any,
) -> PretrainResult:
    """Continue wav2vec2's contrastive pretraining on unlabelled in-domain audio.

    Args:
        unlabelled_audio: a folder (every audio file below it), a manifest, a
            ``datasets.Dataset``, an :class:`AudioDataset`, a list of audio file paths, or a list
            of arrays at the encoder's rate.
        encoder: a Hub id or local folder of a wav2vec2-family model; a checkpoint without
            the quantiser (e.g. a fine-tuned classifier) gets a fresh one.
        output_dir: run folder; the adapted encoder is saved to ``output_dir/encoder``.
        eval_audio: held-out unlabelled audio; the epoch with the lowest loss on it is kept.
        config: the loop's :class:`TrainConfig`.
        pretrain_config: the recipe's :class:`~transferkit.audio.PretrainConfig` (masking,
            negatives, Gumbel annealing, crop length).
        options: fields of either (``epochs=3``, ``mask_time_prob=0.5``).

    Returns:
        :class:`PretrainResult`; pass ``result.folder`` to ``AudioClassifier.from_pretrained`` or
        ``SpeechRecognizer.from_pretrained``.

    Example:
        >>> res = pretrain("unlabelled_clips/", "facebook/wav2vec2-base", epochs=3)  # doctest: +SKIP
        >>> clf = AudioClassifier.from_pretrained(res.folder, labels=[...])  # doctest: +SKIP
    """
    import dataclasses

    from transformers import AutoFeatureExtractor, Wav2Vec2ForPreTraining

    from transferkit.common.encoders import quiet_transformers
    from transferkit.common.trainer import process_state

    recipe_fields = set(PretrainConfig.__dataclass_fields__)
    pc = dataclasses.replace(pretrain_config or PretrainConfig(), **{k: options.pop(k) for k in list(options) if k in recipe_fields})
    with quiet_transformers():
        model = Wav2Vec2ForPreTraining.from_pretrained(str(encoder), mask_time_prob=pc.mask_time_prob,
                                                       mask_time_length=pc.mask_time_length, num_negatives=pc.num_negatives)
    try:
        fe = AutoFeatureExtractor.from_pretrained(str(encoder))
    except (OSError, ValueError):
        fe = default_feature_extractor()
    rate = int(fe.sampling_rate)
    if pc.freeze_feature_encoder:
        model.freeze_feature_encoder()
    data = _unlabelled(unlabelled_audio, rate)
    min_samples = min_input_samples(model.config, pc.mask_time_length)
    train_set = data.with_options(min_samples=min_samples, max_seconds=pc.max_seconds, crop="random")
    eval_set = _unlabelled(eval_audio, rate).with_options(min_samples=min_samples, max_seconds=pc.max_seconds,
                                                          crop="center") if eval_audio is not None else None
    base = config or TrainConfig(lr=5e-5, metric_for_best="eval_loss", greater_is_better=False, group_by_length=True)
    cfg = base.replace(output_dir=str(output_dir), **options)
    if eval_set is None:
        cfg = cfg.replace(metric_for_best="eval_loss")
    loss = _ContrastiveLoss()
    anneal = GumbelAnneal(pc.max_gumbel_temperature, pc.min_gumbel_temperature, pc.gumbel_temperature_decay)
    collate = _MaskingCollator(fe, rate, model, pc.mask_time_prob, pc.mask_time_length, pc.num_negatives)
    trainer = Trainer(model, cfg, compute_loss=loss, callbacks=[anneal],
                      run_info={"task": "wav2vec2 continued pretraining", "base_model": str(encoder),
                                "pretrain_config": dataclasses.asdict(pc)})
    result = trainer.fit(train_set, eval_set, collate_fn=collate, lengths=train_set.lengths)
    folder = Path(output_dir) / "encoder"
    procs = process_state()
    if procs.is_main_process:  # under several processes the main one saves, the others wait for it
        with quiet_transformers():
            trainer.model.save_pretrained(folder, safe_serialization=True)
        fe.save_pretrained(folder)
    procs.wait_for_everyone()
    log.info("continued pretraining done: %s; encoder saved to %s", loss.last, folder)
    return PretrainResult(str(folder), result, {**loss.last, "gumbel_temperature_steps": anneal.step})


def _unlabelled(audio: Any, rate: int) -> AudioDataset:
    if isinstance(audio, (list, tuple)) and audio and isinstance(audio[0], np.ndarray):
        return AudioDataset.from_arrays(list(audio), [""] * len(audio), sampling_rate=rate, target_rate=rate)
    if isinstance(audio, (str, os.PathLike)) and Path(audio).is_dir():
        # Unlabelled audio need not sit in label sub-folders: take every audio file below the folder.
        from .data import AUDIO_EXTENSIONS

        audio = sorted(p for p in Path(audio).rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
        if not audio:
            raise FileNotFoundError("no audio files (.wav, .flac, ...) found in the unlabelled-audio folder")
    if isinstance(audio, (list, tuple)) and audio and isinstance(audio[0], (str, os.PathLike)):
        return AudioDataset.from_files(list(audio), [""] * len(audio), target_rate=rate)
    return as_audio_dataset(audio, rate)
