"""Settings of the speech tasks, one dataclass per idea; the audio CLI is generated from them."""

from __future__ import annotations

from dataclasses import dataclass, field

from .vocab import DEFAULT_CHARS_TO_IGNORE


def _check_prob(**values: float | None) -> None:
    for name, v in values.items():
        if v is not None and not 0.0 <= v < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {v}")


@dataclass
class AudioModelConfig:
    """How a speech encoder is set up for classification (``AudioClassifier.from_pretrained``)."""

    layer_sum: bool = field(default=False, metadata={"help": "Pool a learned weighted sum of all hidden layers (SUPERB)."})
    freeze_feature_encoder: bool = field(default=True, metadata={"help": "Keep the convolutional waveform front end frozen."})
    mask_time_prob: float | None = field(
        default=None, metadata={"help": "SpecAugment time-mask probability (default: the checkpoint's)."})

    def __post_init__(self) -> None:
        _check_prob(mask_time_prob=self.mask_time_prob)


@dataclass
class CTCConfig:
    """How a speech encoder becomes a CTC recognizer (``SpeechRecognizer.from_pretrained``).

    Defaults follow Hugging Face's run_speech_recognition_ctc: dropouts 0, ``mask_time_prob`` 0.05.
    """

    chars_to_ignore: str = field(default=DEFAULT_CHARS_TO_IGNORE,
                                 metadata={"help": "Characters removed from transcripts before building the vocabulary."})
    lowercase: bool = field(default=True, metadata={"help": "Lower-case transcripts."})
    freeze_feature_encoder: bool = field(default=True, metadata={"help": "Keep the convolutional waveform front end frozen."})
    ctc_zero_infinity: bool = field(default=True, metadata={"help": "Zero the loss of clips too short for their transcript."})
    mask_time_prob: float = field(default=0.05, metadata={"help": "SpecAugment time-mask probability."})
    mask_time_length: int = field(default=10, metadata={"help": "Frames per time mask."})
    mask_feature_prob: float = field(default=0.0, metadata={"help": "SpecAugment feature-mask probability."})
    layerdrop: float = field(default=0.0, metadata={"help": "Probability of skipping a transformer layer."})
    hidden_dropout: float = field(default=0.0, metadata={"help": "Dropout in the transformer layers."})
    attention_dropout: float = field(default=0.0, metadata={"help": "Dropout of attention weights."})
    activation_dropout: float = field(default=0.0, metadata={"help": "Dropout after the feed-forward activation."})
    feat_proj_dropout: float = field(default=0.0, metadata={"help": "Dropout after the feature projection."})
    final_dropout: float = field(default=0.0, metadata={"help": "Dropout before the CTC head."})

    def __post_init__(self) -> None:
        _check_prob(mask_time_prob=self.mask_time_prob, mask_feature_prob=self.mask_feature_prob, layerdrop=self.layerdrop,
                    hidden_dropout=self.hidden_dropout, attention_dropout=self.attention_dropout,
                    activation_dropout=self.activation_dropout, feat_proj_dropout=self.feat_proj_dropout,
                    final_dropout=self.final_dropout)
        if self.mask_time_length < 1:
            raise ValueError(f"mask_time_length must be at least 1, got {self.mask_time_length}")

    def model_kwargs(self) -> dict:
        """The settings ``AutoModelForCTC.from_pretrained`` takes (everything but the text normalisation)."""
        skip = ("chars_to_ignore", "lowercase", "freeze_feature_encoder")
        return {k: v for k, v in self.__dict__.items() if k not in skip}


@dataclass
class PretrainConfig:
    """Continued wav2vec2 pretraining: the masking, negatives and Gumbel annealing of the recipe."""

    mask_time_prob: float = field(default=0.65, metadata={"help": "Fraction of frames that start a masked span."})
    mask_time_length: int = field(default=10, metadata={"help": "Frames per masked span."})
    num_negatives: int = field(default=100, metadata={"help": "Distractors sampled per masked frame."})
    max_gumbel_temperature: float = field(default=2.0, metadata={"help": "Gumbel-softmax temperature at the first step."})
    min_gumbel_temperature: float = field(default=0.5, metadata={"help": "Lowest Gumbel-softmax temperature."})
    gumbel_temperature_decay: float = field(default=0.999995, metadata={"help": "Temperature multiplier per training step."})
    freeze_feature_encoder: bool = field(default=True, metadata={"help": "Keep the convolutional waveform front end frozen."})
    max_seconds: float | None = field(default=15.0, metadata={"help": "Random crop of longer clips (memory grows with length)."})

    def __post_init__(self) -> None:
        _check_prob(mask_time_prob=self.mask_time_prob)
        if self.min_gumbel_temperature > self.max_gumbel_temperature:
            raise ValueError(f"min_gumbel_temperature ({self.min_gumbel_temperature}) must not exceed "
                             f"max_gumbel_temperature ({self.max_gumbel_temperature})")
        if self.num_negatives < 1 or self.mask_time_length < 1:
            raise ValueError("num_negatives and mask_time_length must be at least 1")


@dataclass
class ClipCrop:
    """Clip lengths for classification: longer training clips are randomly cropped."""

    max_seconds: float | None = field(default=None, metadata={"help": "Random crop of longer training clips."})


@dataclass
class ClipFilter:
    """Clip lengths for CTC: clips outside the range are dropped (and counted)."""

    min_seconds: float | None = field(default=None, metadata={"help": "Drop (and count) shorter clips."})
    max_seconds: float | None = field(default=None, metadata={"help": "Drop (and count) longer clips."})

    def __post_init__(self) -> None:
        if self.min_seconds is not None and self.max_seconds is not None and self.min_seconds > self.max_seconds:
            raise ValueError(f"min_seconds ({self.min_seconds}) is above max_seconds ({self.max_seconds})")
