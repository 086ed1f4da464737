"""transferkit.audio: keyword spotting / audio classification and CTC speech recognition by transfer.

Example:
    >>> from transferkit.audio import AudioClassifier, SpeechRecognizer  # doctest: +SKIP
"""

from . import (
    packaged,  # noqa: F401  (registers packaged:speech_embedding and packaged:speaker_encoder)
    whisper_weights,  # noqa: F401  (registers packaged:whisper_tiny_en and packaged:whisper_base)
)
from .audit import ClipChecks, audit
from .augment import WaveAugment
from .classifier import AudioClassifier
from .config import AudioModelConfig, ClipCrop, ClipFilter, CTCConfig, PretrainConfig
from .ctc import error_rates, greedy_decode
from .data import AudioDataError, AudioDataset, load_audio
from .pretrain import pretrain
from .recognizer import SpeechRecognizer
from .reference import MfccLogReg
from .vocab import build_vocab, make_processor
from .whisper import WhisperConfig, WhisperRecognizer

__all__ = [
    "AudioClassifier",
    "AudioDataError",
    "AudioDataset",
    "AudioModelConfig",
    "CTCConfig",
    "ClipChecks",
    "ClipCrop",
    "ClipFilter",
    "MfccLogReg",
    "PretrainConfig",
    "SpeechRecognizer",
    "WaveAugment",
    "WhisperConfig",
    "WhisperRecognizer",
    "audit",
    "build_vocab",
    "error_rates",
    "greedy_decode",
    "load_audio",
    "make_processor",
    "pretrain",
]
