"""Recommendation transfer: carry pretrained user/item embedding tables into new models."""

from .baselines import popularity, random_tables
from .config import (
    ALSConfig,
    BPRConfig,
    EvaluateConfig,
    FactorizationConfig,
    InteractionColumns,
    LMFConfig,
    RecommendConfig,
    WarmStartConfig,
)
from .content import ContentMapper, embed_texts
from .data import Interactions, Split, confidence, leave_k_out, random_split, split_by_time
from .metrics import (
    auc,
    coverage_at_k,
    evaluate,
    map_at_k,
    ndcg_at_k,
    precision_at_k,
    precision_at_k_implicit,
    recall_at_k,
)
from .pretrain import pretrain
from .tables import EmbeddingTables
from .transfer import align, cross_domain, fold_in_users, reindex, warm_start


def __getattr__(name: str):
    # EmbeddingModel needs torch; importing it lazily keeps `import transferkit.recsys` light
    if name == "EmbeddingModel":
        from .model import EmbeddingModel

        return EmbeddingModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ALSConfig",
    "BPRConfig",
    "ContentMapper",
    "EmbeddingModel",
    "EmbeddingTables",
    "EvaluateConfig",
    "FactorizationConfig",
    "InteractionColumns",
    "Interactions",
    "LMFConfig",
    "RecommendConfig",
    "Split",
    "WarmStartConfig",
    "align",
    "auc",
    "confidence",
    "coverage_at_k",
    "cross_domain",
    "embed_texts",
    "evaluate",
    "fold_in_users",
    "leave_k_out",
    "map_at_k",
    "ndcg_at_k",
    "popularity",
    "precision_at_k",
    "precision_at_k_implicit",
    "pretrain",
    "random_split",
    "random_tables",
    "recall_at_k",
    "reindex",
    "split_by_time",
    "warm_start",
]
