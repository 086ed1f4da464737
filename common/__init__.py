"""transferkit.common: the shared core (encoders, strategies, the training loop, caching, fusion, export)."""

from .classification import (
    ClassificationModel,
    classification_loss,
    evaluate_classification,
    train_classifier,
)
from .config import TrainConfig
from .encoders import Encoder, EncoderBlock, EncoderNotFoundError, load_encoder
from .features import FeatureCache, fingerprint
from .fusion import greedy_soup, uniform_soup, wise_ft
from .hub import HubUnavailableError, push_to_hub, write_model_card
from .metrics import ConfusionMatrix, metrics_from_confusion, per_class_report
from .precision import resolve_mixed_precision
from .strategies import Strategy, get_strategy, list_strategies, merge_lora, register_strategy
from .trainer import Trainer, TrainResult

__all__ = [
    "ClassificationModel",
    "ConfusionMatrix",
    "Encoder",
    "EncoderBlock",
    "EncoderNotFoundError",
    "FeatureCache",
    "HubUnavailableError",
    "Strategy",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "classification_loss",
    "evaluate_classification",
    "fingerprint",
    "get_strategy",
    "greedy_soup",
    "list_strategies",
    "load_encoder",
    "merge_lora",
    "metrics_from_confusion",
    "per_class_report",
    "push_to_hub",
    "register_strategy",
    "resolve_mixed_precision",
    "train_classifier",
    "uniform_soup",
    "wise_ft",
    "write_model_card",
]
