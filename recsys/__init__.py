"""Recommendation transfer: carry pretrained user/item embedding tables into new models."""

from transferkit.common.deprecation import renamed

from .audit import EventAudit, audit
from .base import Recommender
from .baselines import item_popularity, popularity, random_tables
from .blend import PopularityBlend, fit_blend
from .config import (
    ALSConfig,
    BlendConfig,
    BPRConfig,
    ConfidenceConfig,
    EASEConfig,
    EvaluateConfig,
    EventAuditConfig,
    FactorizationConfig,
    InteractionColumns,
    ItemKNNConfig,
    LMFConfig,
    RecommendConfig,
    WarmStartConfig,
)
from .content import ContentMapper, embed_texts
from .data import Interactions, confidence, decay
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
from .neighbors import EASE, ItemKNN
from .pretrain import pretrain
from .splits import Split, dev_split, half_known_split, leave_k_out, random_split, split_by_time
from .tables import EmbeddingTables
from .transfer import align, cross_domain, fold_in_users, reindex, warm_start
from .tuning import DevSelection, dev_trials, select_on_dev


def __getattr__(name: str):
    # EmbeddingModel and the sequential model need torch; importing it lazily keeps `import transferkit.recsys` light
    if name == "EmbeddingModel":
        from .model import EmbeddingModel

        return EmbeddingModel
    if name in ("SequentialConfig", "SequentialRecommender"):
        from . import sasrec, sequential

        return getattr(sequential if name == "SequentialRecommender" else sasrec, name)
    return _renamed(name)


__all__ = [
    "ALSConfig",
    "BPRConfig",
    "BlendConfig",
    "ConfidenceConfig",
    "ContentMapper",
    "DevSelection",
    "EASE",
    "EASEConfig",
    "EmbeddingModel",
    "EmbeddingTables",
    "EvaluateConfig",
    "EventAudit",
    "EventAuditConfig",
    "FactorizationConfig",
    "InteractionColumns",
    "Interactions",
    "ItemKNN",
    "ItemKNNConfig",
    "LMFConfig",
    "PopularityBlend",
    "RecommendConfig",
    "Recommender",
    "SequentialConfig",
    "SequentialRecommender",
    "Split",
    "WarmStartConfig",
    "align",
    "auc",
    "audit",
    "confidence",
    "coverage_at_k",
    "cross_domain",
    "decay",
    "dev_split",
    "dev_trials",
    "embed_texts",
    "evaluate",
    "fit_blend",
    "fold_in_users",
    "half_known_split",
    "item_popularity",
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
    "select_on_dev",
    "split_by_time",
    "warm_start",
]


_renamed = renamed(__name__, {"AuditConfig": ("EventAuditConfig", lambda: EventAuditConfig)})
