"""Configs of the recsys verbs: one per implicit model (PEFT-style), the item-item models, warm start,
the popularity blend, recommend, evaluate.

Every field has a default and help text; the CLI is generated from these classes, and
``__post_init__`` rejects a bad value with a ``ValueError`` that names the field.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pandas as pd

from transferkit.common.deprecation import renamed

__all__ = [
    "ALSConfig",
    "AUDIT_REASONS",
    "BPRConfig",
    "BlendConfig",
    "ConfidenceConfig",
    "EASEConfig",
    "EvaluateConfig",
    "EventAuditConfig",
    "FactorizationConfig",
    "ITEM_ITEM_CONFIGS",
    "InteractionColumns",
    "ItemKNNConfig",
    "LMFConfig",
    "MODEL_CONFIGS",
    "RecommendConfig",
    "WarmStartConfig",
    "model_config",
    "reject_mixed",
]


def _check_at_least(config: Any, minimum: int, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not value >= minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value!r}")


def _check_positive(config: Any, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not value > 0:  # also false for NaN
            raise ValueError(f"{name} must be > 0, got {value!r}")


@dataclass
class InteractionColumns:
    """Which columns of an events table hold the user id, the item id, the weight and the time.

    Example:
        >>> InteractionColumns(user="user_id", item="sku", weight="clicks").weight
        'clicks'
    """

    user: str = field(default="user", metadata={"help": "User id column."})
    item: str = field(default="item", metadata={"help": "Item id column."})
    weight: str | None = field(default=None, metadata={"help": "Weight column (counts, ratings); 1 per row when absent."})
    time: str | None = field(default=None, metadata={"help": "Timestamp column (numbers or datetimes)."})

    def __post_init__(self) -> None:
        roles = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for role, column in roles.items():
            if column == "" or (column is None and role in ("user", "item")):
                raise ValueError(f"{role} must name a column, got {column!r}")
        named = [(role, column) for role, column in roles.items() if column is not None]
        for i, (role, column) in enumerate(named):
            for other, other_column in named[i + 1:]:
                if column == other_column:
                    raise ValueError(f"{role} and {other} both name column {column!r}: each needs its own")


@dataclass
class FactorizationConfig:
    """What every implicit model shares; pick the model with :class:`ALSConfig`, :class:`BPRConfig`
    or :class:`LMFConfig`, whose other fields are that model's hyperparameters."""

    model: ClassVar[str] = ""  # each model's config names its implicit model

    factors: int = field(default=64, metadata={"help": "Latent dimension (BPR adds 1 bias column, LMF 2)."})
    iterations: int = field(default=15, metadata={"help": "ALS sweeps or BPR/LMF epochs."})
    seed: int = field(default=0, metadata={"help": "Random state of the initial factors (and of BPR/LMF sampling)."})
    num_threads: int = field(default=0, metadata={"help": "implicit's threads (0 = all cores); BLAS holds 1 meanwhile."})

    def __post_init__(self) -> None:
        _check_at_least(self, 1, "factors", "iterations")
        _check_at_least(self, 0, "seed", "num_threads")
        # hyperparameters are checked by name, whichever models have them
        names = self.hyperparameters()
        _check_at_least(self, 0, *[n for n in ("regularization",) if n in names])
        _check_positive(self, *[n for n in ("alpha", "learning_rate") if n in names])

    def hyperparameters(self) -> dict[str, Any]:
        """The model's own settings, as implicit's constructor takes them (recorded in the tables' meta)."""
        shared = {f.name for f in dataclasses.fields(FactorizationConfig)} | {"use_gpu"}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in shared}


@dataclass
class ALSConfig(FactorizationConfig):
    """Alternating least squares (Hu, Koren & Volinsky 2008): weights are confidences ``c = alpha * r``.

    Example:
        >>> ALSConfig(factors=32).hyperparameters()
        {'regularization': 0.01, 'alpha': 1.0}
    """

    model: ClassVar[str] = "als"

    regularization: float = field(default=0.01, metadata={"help": "L2 penalty on the factors."})
    alpha: float = field(default=1.0, metadata={"help": "ALS confidence scale: c = alpha * weight."})
    use_gpu: bool | None = field(default=None, metadata={"help": "ALS on the GPU (None: when CUDA is present)."})


@dataclass
class BPRConfig(FactorizationConfig):
    """Bayesian personalised ranking (Rendle et al. 2009); weights are read as binary. Runs on the CPU
    so the tables keep implicit's CPU layout (the GPU version pads the factor width)."""

    model: ClassVar[str] = "bpr"

    regularization: float = field(default=0.01, metadata={"help": "L2 penalty on the factors."})
    learning_rate: float = field(default=0.01, metadata={"help": "SGD step size."})


@dataclass
class LMFConfig(FactorizationConfig):
    """Logistic matrix factorisation (Johnson 2014); weights are read as binary. Runs on the CPU."""

    model: ClassVar[str] = "lmf"

    regularization: float = field(default=0.6, metadata={"help": "L2 penalty on the factors."})
    learning_rate: float = field(default=1.0, metadata={"help": "Adagrad step size."})


# implicit's own defaults, except iterations for BPR/LMF (its 100/30 epochs are tuned for big data)
MODEL_CONFIGS: dict[str, type[FactorizationConfig]] = {"als": ALSConfig, "bpr": BPRConfig, "lmf": LMFConfig}


def model_config(model: str, **settings: Any) -> tuple[FactorizationConfig, dict[str, Any]]:
    """``model``'s config built from the settings that are its fields, and the settings left over
    (other implicit constructor arguments such as ``use_cg``, passed on as they are).

    Example:
        >>> config, rest = model_config("lmf", factors=8, use_cg=False)
        >>> config.factors, config.regularization, rest
        (8, 0.6, {'use_cg': False})
    """
    if model not in MODEL_CONFIGS:
        raise ValueError(f"unknown model {model!r}: use one of {tuple(MODEL_CONFIGS)}")
    cls = MODEL_CONFIGS[model]
    names = {f.name for f in dataclasses.fields(cls)}
    config = cls(**{k: v for k, v in settings.items() if k in names})
    return config, {k: v for k, v in settings.items() if k not in names}


@dataclass
class WarmStartConfig:
    """How pretrained tables continue on new-period interactions (hyperparameters: the tables' own)."""

    iterations: int = field(default=5, metadata={"help": "implicit iterations after the fold-in (0: fold-in only)."})
    keep_old: bool = field(default=True, metadata={"help": "Keep users/items absent from the new data (rows unchanged)."})
    seed: int = field(default=0, metadata={"help": "Random state of implicit's sampling."})
    num_threads: int = field(default=0, metadata={"help": "implicit's threads (0 = all cores); BLAS holds 1 meanwhile."})
    old_weight: float = field(default=0.0, metadata={
        "help": "Weight of the old period's events (the tables' own training events) in the warm start: "
                "0 trains on the new events only, 1 counts them as much as new ones."})
    half_life: float | None = field(default=None, metadata={
        "help": "Decay every training event by 0.5 ** (age / half_life), age from the newest event, in the "
                "time column's units (seconds for datetimes: 1209600 = 14 days); None: no decay."})

    def __post_init__(self) -> None:
        _check_at_least(self, 0, "iterations", "seed", "num_threads", "old_weight")
        if self.half_life is not None:
            _check_positive(self, "half_life")


@dataclass
class ConfidenceConfig:
    """How raw weights become training confidences (:func:`~transferkit.recsys.confidence`).

    Example:
        >>> ConfidenceConfig(confidence="bm25", half_life=1209600.0).half_life
        1209600.0
    """

    confidence: str = field(default="none", metadata={"help": "Weighting scheme: none, linear, log, bm25."})
    half_life: float | None = field(default=None, metadata={
        "help": "Decay each event by 0.5 ** (age / half_life), age from the newest event, in the time column's "
                "units (seconds for datetimes: 1209600 = 14 days); needs --time. None: no decay."})

    def __post_init__(self) -> None:
        if self.confidence not in CONFIDENCE_SCHEMES:
            raise ValueError(f"confidence must be one of {', '.join(CONFIDENCE_SCHEMES)}, got {self.confidence!r}")
        if self.half_life is not None:
            _check_positive(self, "half_life")


CONFIDENCE_SCHEMES = ("none", "linear", "log", "bm25")
NEIGHBOUR_KINDS = ("cosine", "bm25", "tfidf")


@dataclass
class ItemKNNConfig:
    """Item-item nearest neighbours through implicit (``CosineRecommender``, ``BM25Recommender``,
    ``TFIDFRecommender``): score(u, i) = sum of the similarities of i to the items u has.

    Example:
        >>> ItemKNNConfig(kind="bm25", neighbors=50).kind
        'bm25'
    """

    kind: str = field(default="cosine", metadata={"help": f"Similarity: {', '.join(NEIGHBOUR_KINDS)}."})
    neighbors: int = field(default=20, metadata={"help": "Neighbours kept per item (implicit's K)."})
    bm25_k1: float = field(default=1.2, metadata={"help": "BM25 term saturation (kind=bm25; implicit's K1)."})
    bm25_b: float = field(default=0.75, metadata={"help": "BM25 length normalisation in [0, 1] (kind=bm25; implicit's B)."})
    num_threads: int = field(default=0, metadata={"help": "implicit's threads (0 = all cores); BLAS holds 1 meanwhile."})

    def __post_init__(self) -> None:
        if self.kind not in NEIGHBOUR_KINDS:
            raise ValueError(f"kind must be one of {', '.join(NEIGHBOUR_KINDS)}, got {self.kind!r}")
        _check_at_least(self, 1, "neighbors")
        _check_at_least(self, 0, "num_threads", "bm25_k1")
        if not 0.0 <= self.bm25_b <= 1.0:
            raise ValueError(f"bm25_b must be in [0, 1], got {self.bm25_b!r}")


@dataclass
class EASEConfig:
    """EASE (Steck 2019): the closed-form item-item model ``B = I - P / diag(P)``, ``P = (X'X + lambda I)^-1``.

    Example:
        >>> EASEConfig().regularization
        500.0
    """

    regularization: float = field(default=500.0, metadata={
        "help": "lambda, the L2 penalty on the item-item weights (Steck's value for MovieLens 20M)."})

    def __post_init__(self) -> None:
        _check_positive(self, "regularization")


# the item-item models, by the name ``--model`` takes
ITEM_ITEM_CONFIGS: dict[str, type] = {"itemknn": ItemKNNConfig, "ease": EASEConfig}


@dataclass
class BlendConfig:
    """What the popularity blend may choose from, on a dev slice cut from the end of the training period.

    score = z(model) + weight * z(prior), each z-scored over the items per user; users the model has
    no signal for (no history at all) get the prior alone. The prior is recent popularity.

    Example:
        >>> BlendConfig(weights=[0.0, 1.0]).dev_fraction
        0.1
    """

    weights: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0], metadata={
        "help": "Candidate weights of the popularity prior (0: the model alone)."})
    half_lives: list[float] = field(default_factory=lambda: [7 * 86400.0, 14 * 86400.0, 30 * 86400.0, 60 * 86400.0],
                                    metadata={"help": "Candidate half-lives of the prior, in the time column's units "
                                                      "(default: 7, 14, 30, 60 days in seconds)."})
    min_weights: list[float] = field(default_factory=lambda: [0.0], metadata={
        "help": "Candidate thresholds: only events with weight >= this count toward the prior."})
    dev_fraction: float = field(default=0.1, metadata={"help": "Share of the training events (the latest) used as dev."})

    def __post_init__(self) -> None:
        for name in ("weights", "half_lives", "min_weights"):
            values = list(getattr(self, name))
            if not values:
                raise ValueError(f"{name} must list at least one candidate")
            if any(not v >= 0 for v in values):
                raise ValueError(f"{name} must be >= 0, got {values}")
        if any(not v > 0 for v in self.half_lives):
            raise ValueError(f"half_lives must be > 0, got {self.half_lives}")
        if not 0.0 < self.dev_fraction < 0.5:
            raise ValueError(f"dev_fraction must be in (0, 0.5), got {self.dev_fraction!r}")


@dataclass
class RecommendConfig:
    """How top-N lists are made for the ``recommend`` verb."""

    n: int = field(default=10, metadata={"help": "Items per user."})
    filter_seen: bool = field(default=True, metadata={"help": "Drop items the user has in --history (when given)."})
    cold_start: bool = field(default=False, metadata={
        "help": "Fold unknown users in from --history, or rank by popularity; otherwise they are an error."})

    def __post_init__(self) -> None:
        _check_at_least(self, 1, "n")


@dataclass
class EvaluateConfig:
    """How ranking metrics are computed on held-out events."""

    k: int = field(default=10, metadata={"help": "List length of every @k metric."})
    positive_threshold: float = field(default=0.0, metadata={"help": "A test event is relevant when its weight >= this."})
    filter_seen: bool = field(default=True, metadata={"help": "Drop training items from each user's list."})

    def __post_init__(self) -> None:
        _check_at_least(self, 1, "k")
        _check_at_least(self, 0, "positive_threshold")


# what recsys.audit flags, in the order audit.md lists them
AUDIT_REASONS = ("missing_id", "bad_weight", "unparseable_time", "time_out_of_range", "future_time",
                 "duplicate_event", "repeated_pair", "heavy_user", "heavy_item", "id_variant", "no_content")
AUDIT_DROP = ("missing_id", "bad_weight", "unparseable_time", "time_out_of_range", "future_time",
              "duplicate_event", "heavy_user")
TIME_UNITS = ("s", "ms", "us", "ns", "index")


@dataclass
class EventAuditConfig:
    """What :func:`~transferkit.recsys.audit` flags in an events table, and what a cleaned copy drops.

    A user (item) is heavy - a bot, a test account, a placeholder item - when the modified z-score
    of its log event count, ``(log n - median) / (1.4826 * MAD)`` over all users (items), exceeds
    ``heavy_z`` (Iglewicz & Hoaglin's 3.5), and it has at least ``heavy_min`` events; or, with
    ``heavy_share``, when it holds more than that share of all events.

    Example:
        >>> EventAuditConfig(heavy_z=5.0, drop=["duplicate_event"]).drop
        ['duplicate_event']
    """

    heavy_z: float = field(default=3.5, metadata={
        "help": "Flag a user or item whose modified z-score of log event count, (log n - median) / (1.4826 MAD), "
                "is above this."})
    heavy_min: int = field(default=20, metadata={"help": "Never flag a user or item with fewer events than this."})
    heavy_share: float | None = field(default=None, metadata={
        "help": "Also flag a user or item holding more than this share of all events (e.g. 0.05); None: off."})
    repeats: bool = field(default=False, metadata={
        "help": "Also flag a (user, item) pair repeated at another time (repeated_pair)."})
    min_time: str = field(default="1990-01-01", metadata={"help": "Earliest plausible timestamp (a date, UTC)."})
    now: str | None = field(default=None, metadata={
        "help": "Latest plausible timestamp (a date, UTC); None: the time of the audit."})
    time_unit: str = field(default="s", metadata={
        "help": f"Unit of numeric timestamps: {', '.join(TIME_UNITS[:-1])} since 1970-01-01, or index "
                "(ordinal numbers: no calendar check)."})
    drop: list[str] = field(default_factory=lambda: list(AUDIT_DROP), metadata={
        "help": "Reasons whose rows the cleaned copy drops (id variants are rewritten to one spelling, not dropped)."})
    examples: int = field(default=3, metadata={"help": "Examples per reason in audit.md."})

    def __post_init__(self) -> None:
        _check_positive(self, "heavy_z")
        _check_at_least(self, 1, "heavy_min")
        _check_at_least(self, 0, "examples")
        if self.heavy_share is not None and not 0.0 < self.heavy_share <= 1.0:
            raise ValueError(f"heavy_share must be in (0, 1] or None, got {self.heavy_share!r}")
        if self.time_unit not in TIME_UNITS:
            raise ValueError(f"time_unit must be one of {', '.join(TIME_UNITS)}, got {self.time_unit!r}")
        unknown = [r for r in self.drop if r not in AUDIT_REASONS or r == "id_variant"]
        if unknown:
            raise ValueError(f"drop: {unknown} are not reasons rows can be dropped for "
                             f"(choose from {', '.join(r for r in AUDIT_REASONS if r != 'id_variant')})")
        for name in ("min_time", "now"):
            value = getattr(self, name)
            if value is not None:
                try:
                    pd.Timestamp(value)
                except ValueError:
                    raise ValueError(f"{name} must be a date such as '1990-01-01', got {value!r}") from None


def reject_mixed(func: Callable, config: Any, **keywords: Any) -> None:
    """Refuse a ``config`` that comes with keyword settings of ``func`` other than their defaults
    (keywords ``func`` only takes through ``**kwargs`` always count): which should win would be a guess."""
    if config is None:
        return
    params = inspect.signature(func).parameters
    given = sorted(k for k, v in keywords.items() if k not in params or v != params[k].default)
    if given:
        raise ValueError(f"config and {', '.join(given)} were both given: set them in the config")


__getattr__ = renamed(__name__, {"AuditConfig": ("EventAuditConfig", lambda: EventAuditConfig)})
