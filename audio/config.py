"""Settings of the speech tasks, one dataclass per idea; the audio CLI is generated from them.

Every field is a :func:`~transferkit.common.config.setting`: help text and bounds, checked when the
dataclass is built (a bad value raises a ``ValueError`` that names the field).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from transferkit.common.config import check_settings, setting

from .vocab import DEFAULT_CHARS_TO_IGNORE

_FRONT_END = "Keep the convolutional waveform front end frozen."


class _Checked:
    def __post_init__(self) -> None:
        check_settings(self)


@dataclass
class AudioModelConfig(_Checked):
    """How a speech encoder is set up for classification (``AudioClassifier.from_pretrained``)."""

    layer_sum: bool = setting(False, "Pool a learned weighted sum of all hidden layers (SUPERB).")
    freeze_feature_encoder: bool = setting(True, _FRONT_END)
    mask_time_prob: float | None = setting(None, "SpecAugment time-mask probability (default: the checkpoint's).", ge=0, lt=1)


@dataclass
class CTCConfig(_Checked):
    """How a speech encoder becomes a CTC recognizer (``SpeechRecognizer.from_pretrained``).

    Defaults follow Hugging Face's run_speech_recognition_ctc: dropouts 0, ``mask_time_prob`` 0.05.
    """

    chars_to_ignore: str = setting(DEFAULT_CHARS_TO_IGNORE, "Characters removed from transcripts before building the vocabulary.")
    lowercase: bool = setting(True, "Lower-case transcripts.")
    freeze_feature_encoder: bool = setting(True, _FRONT_END)
    ctc_zero_infinity: bool = setting(True, "Zero the loss of clips too short for their transcript.")
    mask_time_prob: float = setting(0.05, "SpecAugment time-mask probability.", ge=0, lt=1)
    mask_time_length: int = setting(10, "Frames per time mask.", ge=1)
    mask_feature_prob: float = setting(0.0, "SpecAugment feature-mask probability.", ge=0, lt=1)
    layerdrop: float = setting(0.0, "Probability of skipping a transformer layer.", ge=0, lt=1)
    hidden_dropout: float = setting(0.0, "Dropout in the transformer layers.", ge=0, lt=1)
    attention_dropout: float = setting(0.0, "Dropout of attention weights.", ge=0, lt=1)
    activation_dropout: float = setting(0.0, "Dropout after the feed-forward activation.", ge=0, lt=1)
    feat_proj_dropout: float = setting(0.0, "Dropout after the feature projection.", ge=0, lt=1)
    final_dropout: float = setting(0.0, "Dropout before the CTC head.", ge=0, lt=1)

    def model_kwargs(self) -> dict:
        """The settings ``AutoModelForCTC.from_pretrained`` takes (everything but the text normalisation)."""
        skip = ("chars_to_ignore", "lowercase", "freeze_feature_encoder")
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}


@dataclass
class PretrainConfig(_Checked):
    """Continued wav2vec2 pretraining: the masking, negatives and Gumbel annealing of the recipe."""

    mask_time_prob: float = setting(0.65, "Fraction of frames that start a masked span.", ge=0, lt=1)
    mask_time_length: int = setting(10, "Frames per masked span.", ge=1)
    num_negatives: int = setting(100, "Distractors sampled per masked frame.", ge=1)
    max_gumbel_temperature: float = setting(2.0, "Gumbel-softmax temperature at the first step.", gt=0)
    min_gumbel_temperature: float = setting(0.5, "Lowest Gumbel-softmax temperature.", gt=0)
    gumbel_temperature_decay: float = setting(0.999995, "Temperature multiplier per training step.", gt=0, le=1)
    freeze_feature_encoder: bool = setting(True, _FRONT_END)
    max_seconds: float | None = setting(15.0, "Random crop of longer clips (memory grows with length).", gt=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.min_gumbel_temperature > self.max_gumbel_temperature:
            raise ValueError(f"min_gumbel_temperature ({self.min_gumbel_temperature}) must not exceed "
                             f"max_gumbel_temperature ({self.max_gumbel_temperature})")


# As Hugging Face's run_audio_classification (--max_length_seconds): attention memory grows with the
# square of a clip's length, so one long recording must not decide a batch's size.
DEFAULT_MAX_SECONDS = 20.0


@dataclass
class ClipCrop(_Checked):
    """Clip lengths for classification: longer training clips are randomly cropped; evaluation and
    prediction score longer clips in windows of this length and average the windows' scores."""

    max_seconds: float | None = setting(DEFAULT_MAX_SECONDS, "Random crop of longer training clips, and the "
                                        "window length in which longer clips are scored (None: whole clips).", gt=0)


@dataclass
class ClipFilter(_Checked):
    """Clip lengths for CTC: clips outside the range are dropped (and counted)."""

    min_seconds: float | None = setting(None, "Drop (and count) shorter clips.", ge=0)
    max_seconds: float | None = setting(None, "Drop (and count) longer clips.", gt=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.min_seconds is not None and self.max_seconds is not None and self.min_seconds > self.max_seconds:
            raise ValueError(f"min_seconds ({self.min_seconds}) is above max_seconds ({self.max_seconds})")
