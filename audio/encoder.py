"""Speech-encoder specifics on top of ``common.Encoder``.

Three things set speech encoders apart: the convolutional feature encoder that turns raw
samples into frames is kept frozen by default (Hugging Face's ``--freeze_feature_encoder``,
SpeechBrain's ``freeze_wav2vec_extractor``); batches carry an attention mask so padding never
leaks into pooled features; and some regularisers (SpecAugment masking, layerdrop) are config
attributes that a user tunes per run.

Two families read log-mel spectrograms that their feature extractor computes outside the model
instead: AST (``input_values`` of ``max_length`` frames) and Whisper's encoder
(``input_features`` of exactly ``2 * max_source_positions`` frames, 3000 for 30 s). They have no
waveform front end to freeze and no SpecAugment on CNN frames; the helpers here leave them alone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from transferkit.common.encoders import Encoder, register_hf_task

from .data import receptive_field

log = logging.getLogger(__name__)


def _claims_audio(config: Any) -> bool:
    return hasattr(config, "conv_dim") or "audio" in type(config).__name__.lower() or hasattr(config, "num_mel_bins")


register_hf_task("audio", "AutoModelForAudioClassification", "AutoFeatureExtractor", _claims_audio)

# Module names of the waveform front end in the wav2vec2 family (wav2vec2, HuBERT, WavLM, data2vec-audio).
FRONT_END_NAMES = ("feature_extractor",)
# Modules that are never trained: Whisper's sinusoidal position table (a buffer in OpenAI's code;
# transformers builds it frozen, but from_pretrained in transformers 5 hands it back trainable).
FIXED_NAMES = ("embed_positions",)


class AudioEncoder(Encoder):
    """An :class:`~transferkit.common.Encoder` whose waveform front end can stay frozen under every strategy.

    With ``freeze_front_end`` the front end's parameters are pinned frozen (see
    :meth:`~transferkit.common.Encoder.pin_frozen`): no strategy can switch them back on, and the
    model's own flag stops gradients from reaching the raw-waveform convolutions at all (on CPUs
    that backward pass dominates the step). Whisper's sinusoidal ``embed_positions`` stay pinned
    under every strategy (see ``FIXED_NAMES``). AST and Whisper have no front end
    in the model (their mel spectrogram is computed by the feature extractor), so there the flag
    changes nothing.

    Example:
        >>> from transformers import Wav2Vec2Config, Wav2Vec2ForSequenceClassification
        >>> model = Wav2Vec2ForSequenceClassification(Wav2Vec2Config(hidden_size=32, num_hidden_layers=1,
        ...     num_attention_heads=2, intermediate_size=32, conv_dim=(8,), conv_kernel=(10,), conv_stride=(5,)))
        >>> enc = AudioEncoder.wrap(Encoder(model.wav2vec2, 32))
        >>> any("feature_extractor" in n for n, _ in enc.learnable_parameters())
        False
    """

    _fixed: tuple[nn.Module, ...] = ()  # pinned whatever the front end does (see FIXED_NAMES)

    @classmethod
    def wrap(cls, encoder: Encoder, freeze_front_end: bool = True) -> AudioEncoder:
        new = cls(encoder.module, encoder.feature_dim, processor=encoder.processor, forward_fn=encoder._forward_fn,
                  layers=encoder._layers, spec=encoder.spec, hf_model=encoder.hf_model)
        new._fixed = tuple(m for n, m in new.module.named_modules() if n.rsplit(".", 1)[-1] in FIXED_NAMES)
        new.set_front_end_frozen(freeze_front_end)
        return new

    def front_end(self) -> nn.Module | None:
        for name, module in self.module.named_modules():
            if name.rsplit(".", 1)[-1] in FRONT_END_NAMES:
                return module
        return None

    def set_front_end_frozen(self, frozen: bool) -> None:
        front = self.front_end()
        self.pin_frozen(None)
        for module in self._fixed:
            self.pin_frozen(module)
        if front is None:  # AST, Whisper: the mel spectrogram is computed outside the model
            return
        if frozen:
            self.pin_frozen(front)
        else:
            front.requires_grad_(True)
        if hasattr(front, "_requires_grad"):  # transformers' own switch: no input gradients either
            front._requires_grad = not frozen

    @property
    def front_end_frozen(self) -> bool:
        front = self.front_end()
        return front is not None and any(id(p) in self._pinned for p in front.parameters())


def default_feature_extractor(sampling_rate: int = 16_000) -> Any:
    """Zero-mean unit-variance normalisation per clip, attention masks on: wav2vec2's large-model recipe."""
    from transformers import Wav2Vec2FeatureExtractor

    return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=sampling_rate, padding_value=0.0,
                                    do_normalize=True, return_attention_mask=True)


def min_input_samples(config: Any, mask_time_length: int = 0, feature_extractor: Any = None) -> int:
    """Shortest clip the model accepts: one frame, or enough frames for one SpecAugment time mask.

    Hugging Face's masking fails on clips barely longer than the mask; padding every clip to
    this length makes that impossible. That is the wav2vec2 family (a CNN with ``conv_kernel``).
    Kaldi-style filter-bank extractors (AST's; they have ``num_mel_bins``) need one 25 ms window
    or they fail; Whisper's pads every clip to its 30 s window itself.
    """
    if hasattr(config, "conv_kernel"):
        return receptive_field(config, frames=max(1, mask_time_length + 1))
    if hasattr(feature_extractor, "num_mel_bins") and not getattr(feature_extractor, "n_samples", None):
        return round(0.025 * feature_extractor.sampling_rate)
    return 0


def set_regularisation(config: Any, **settings: Any) -> None:
    """Set SpecAugment / layerdrop attributes (``mask_time_prob``, ``layerdrop``, ...) that the
    wav2vec2 family reads at forward time; unknown names raise instead of being ignored."""
    for name, value in settings.items():
        if value is None:
            continue
        if not hasattr(config, name):
            raise ValueError(f"{type(config).__name__} has no setting {name!r}")
        setattr(config, name, value)


def warn_if_masks_hide_clips(model: nn.Module, lengths: Sequence[int]) -> bool:
    """Log a warning (and return True) when SpecAugment time masks would hide half of a median clip.

    transformers applies at least ``mask_time_min_masks`` (2) spans of ``mask_time_length`` (10)
    frames whenever ``mask_time_prob > 0``: 400 ms at wav2vec2's 20 ms frames, a whole spoken word.
    On the demo's 0.4 s words this kept a from-scratch model at 18% where it reached 92% unmasked.
    """
    cfg = getattr(model, "config", None)
    # Only the wav2vec2 family masks its CNN's frames; Whisper's config has mask_time_prob too, but
    # its classifier never masks (and its frames are mel frames, not conv_kernel outputs).
    if cfg is None or not hasattr(cfg, "conv_kernel") or not getattr(cfg, "mask_time_prob", 0) or not len(lengths):
        return False
    frames = int(model._get_feat_extract_output_lengths(torch.tensor(int(np.median(lengths)))))
    masked = getattr(cfg, "mask_time_min_masks", 2) * cfg.mask_time_length
    if masked < frames / 2:
        return False
    log.warning("time masking hides at least %d of the %d frames of a median clip; pass mask_time_prob=0 "
                "to from_pretrained for clips this short", masked, frames)
    return True


def enable_layer_sum(model: nn.Module) -> None:
    """Turn on a learned softmax-weighted sum of all hidden layers (the SUPERB probing protocol).

    ``*ForSequenceClassification`` models read ``config.use_weighted_layer_sum`` at forward time and
    own ``layer_weights``; adding them after loading keeps any checkpoint usable.
    """
    config = model.config
    if not hasattr(config, "use_weighted_layer_sum"):
        # The flag would be set and silently ignored (AST pools its last layer only).
        raise ValueError(f"layer_sum needs a model that supports use_weighted_layer_sum (the wav2vec2 family, "
                         f"Whisper); {type(model).__name__} does not")
    for name in ("layerdrop", "encoder_layerdrop"):  # Whisper calls it encoder_layerdrop
        if getattr(config, name, 0.0):
            # transformers drops a skipped layer's hidden state, so the weighted sum would get fewer
            # layers than it has weights and fail mid-training: layerdrop and layer_sum exclude each other.
            log.warning("layer_sum turns %s (%s) off: a dropped layer has no hidden state to weight",
                        name, getattr(config, name))
            setattr(config, name, 0.0)
    if not hasattr(model, "layer_weights") or model.layer_weights is None:
        n = config.num_hidden_layers + 1  # the embedding output counts as a layer
        model.layer_weights = nn.Parameter(torch.ones(n) / n)
    config.use_weighted_layer_sum = True


def extractor_options(feature_extractor: Any) -> dict[str, Any]:
    """How to call ``feature_extractor`` on a batch so that its output is what the model takes.

    wav2vec2-style extractors pad to the longest clip and return an attention mask. Whisper's
    works on a fixed window (``n_samples``) and its encoder accepts exactly that many frames, so
    it pads to it ("max_length", as ``pipeline`` does); it lists no attention mask among its
    model inputs, so none is asked for. AST's pads every clip to its ``max_length`` frames itself.
    """
    names = getattr(feature_extractor, "model_input_names", None) or ["attention_mask"]
    return {"padding": "max_length" if getattr(feature_extractor, "n_samples", None) else True,
            "return_attention_mask": "attention_mask" in names}


class AudioCollator:
    """Pads a list of dataset rows into model inputs with the encoder's feature extractor
    (see :func:`extractor_options`).

    ``targets`` maps a row's target to what the loss needs: a label id (classification) or a
    list of token ids (CTC, padded here with -100).

    Example:
        >>> collate = AudioCollator(default_feature_extractor(), 16_000, targets={"no": 0, "yes": 1}.get)
        >>> batch = collate([{"input_values": np.zeros(800), "target": "yes"},
        ...                  {"input_values": np.ones(400), "target": "no"}])
        >>> batch["input_values"].shape, batch["attention_mask"][1].sum().item(), batch["labels"].tolist()
        (torch.Size([2, 800]), 400, [1, 0])
    """

    def __init__(self, feature_extractor: Any, sampling_rate: int, targets: Any = None, ctc: bool = False) -> None:
        self.feature_extractor = feature_extractor
        self.sampling_rate = sampling_rate
        self.targets = targets
        self.ctc = ctc

    def __call__(self, rows: Sequence[dict]) -> dict[str, torch.Tensor]:
        waves = [np.asarray(r["input_values"], dtype=np.float32) for r in rows]
        feats = self.feature_extractor(waves, sampling_rate=self.sampling_rate, return_tensors="pt",
                                       **extractor_options(self.feature_extractor))
        batch = {k: v for k, v in feats.items() if torch.is_tensor(v)}
        if self.targets is not None:
            ys = [self.targets(r["target"]) for r in rows]
            if self.ctc:
                width = max(len(y) for y in ys)
                batch["labels"] = torch.tensor([list(y) + [-100] * (width - len(y)) for y in ys], dtype=torch.long)
            else:
                batch["labels"] = torch.tensor(ys, dtype=torch.long)
        return batch
