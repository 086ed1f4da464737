"""transferkit.common: the shared core (encoders, strategies, the task contract, the training loop,
caching, fusion, export). It knows no domain: vision, audio and recsys register themselves."""

from .audit import AuditConfig, AuditReport, AuditSplit, run_audit
from .audit_driver import audit_data
from .classifier import (
    ClassificationModel,
    TransferClassifier,
    classification_loss,
    evaluate_classification,
    train_classifier,
)
from .config import TrainConfig
from .encoders import (
    Encoder,
    EncoderBlock,
    EncoderNotFoundError,
    load_encoder,
    register_encoder_scheme,
    register_hf_task,
)
from .features import FeatureCache, fingerprint
from .fusion import greedy_soup, uniform_soup, wise_ft
from .hub import HubUnavailableError, push_to_hub, write_model_card
from .metrics import ConfusionMatrix, metrics_from_confusion, per_class_report
from .modality import Modality
from .packaged import PackagedWeights, list_packaged, register_packaged
from .precision import resolve_mixed_precision
from .sources import LabelledSource, read_labelled
from .strategies import (
    Strategy,
    StrategyConfig,
    get_strategy,
    list_strategies,
    merge_lora,
    register_strategy,
)
from .task import TrainingData, TransferTask
from .trainer import Callback, Trainer, TrainResult

__all__ = [
    "AuditConfig",
    "AuditReport",
    "AuditSplit",
    "Callback",
    "ClassificationModel",
    "ConfusionMatrix",
    "Encoder",
    "EncoderBlock",
    "EncoderNotFoundError",
    "FeatureCache",
    "HubUnavailableError",
    "LabelledSource",
    "Modality",
    "PackagedWeights",
    "Strategy",
    "StrategyConfig",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingData",
    "TransferClassifier",
    "TransferTask",
    "audit_data",
    "classification_loss",
    "evaluate_classification",
    "fingerprint",
    "get_strategy",
    "greedy_soup",
    "list_packaged",
    "list_strategies",
    "load_encoder",
    "merge_lora",
    "metrics_from_confusion",
    "per_class_report",
    "push_to_hub",
    "read_labelled",
    "register_encoder_scheme",
    "register_hf_task",
    "register_packaged",
    "register_strategy",
    "resolve_mixed_precision",
    "run_audit",
    "train_classifier",
    "uniform_soup",
    "wise_ft",
    "write_model_card",
]
