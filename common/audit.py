"""Data audit: what in a labelled set would mislead training, found with the encoder's features.

The core knows no domain. A modality (through :func:`~transferkit.common.audit_driver.audit_data`) decodes
every file with its own decoder, hands over the ones that failed with the decoder's reason, a content
hash per item and one feature vector per usable item (:class:`AuditSplit`); :func:`run_audit` then finds

- **exact duplicates**: equal content hash (blake2b of the file's bytes);
- **near-duplicates**: a cosine distance of mean-centred features (centring removes the direction every
  feature shares, which otherwise puts unrelated items near 1) of at most ``near_duplicate`` (0.2) times
  the set's typical distance, the median distance of an item to its nearest other one: a copy sits far
  closer to its original than distinct items sit to each other, whatever the encoder's own scale. Within
  the training set and between training and test (**leakage**); a pair whose labels differ is marked
  ``conflict``;
- **likely label errors**: out-of-fold predicted probabilities of a cross-validated logistic-regression
  probe (on row-normalised features), handed to cleanlab's ``find_label_issues`` (confident learning; Northcutt et al., 2021);
- **outliers**: mean cosine distance to the ``neighbours`` nearest training items, flagged where its
  robust z-score (median and MAD, scaled by 1.4826; Iglewicz and Hoaglin, 1993) exceeds ``outlier_z``
  (in sets of at least 5 x ``neighbours`` usable items);
- **class balance**: items per label in each split.

Nearest neighbours come from faiss (exact inner-product search) or, where faiss is not installed,
scikit-learn's brute-force search; ``benchmarks/audit.py`` times both at 100K items.

Nothing here writes to the user's files: :meth:`AuditReport.write` fills an output folder and
:meth:`AuditReport.write_clean` writes a new manifest.

Example:
    >>> rng = np.random.default_rng(0)
    >>> feats = np.concatenate([rng.normal(0, 1, (20, 8)) + 6 * np.eye(8)[0], rng.normal(0, 1, (20, 8))])
    >>> feats = np.concatenate([feats, feats[:1] + 1e-3])      # item 40: a near copy of item 0
    >>> split = AuditSplit.from_features([f"{i}.png" for i in range(41)], ["a"] * 20 + ["b"] * 20 + ["a"], feats)
    >>> report = run_audit(split)
    >>> [(f.index, f.reason, f.partner) for f in report.flags]
    [(40, 'near_duplicate', 0)]
"""

from __future__ import annotations

import importlib.util
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .audit_report import AuditReport, write_outputs  # noqa: F401  (re-exported: the report of run_audit)
from .config import check_settings, setting

log = logging.getLogger(__name__)

# What each kind of flag means, and which kinds write_clean leaves out by default.
KINDS = {
    "file": "the decoder could not use the file, or the modality's own check refused it (unreadable, empty, corrupt, ...)",
    "duplicate": "an exact or near copy of an earlier training item (the earlier one is kept)",
    "leakage": "a training item that is an exact or near copy of a test item",
    "label": "a label that the out-of-fold probe and cleanlab find likely wrong",
    "outlier": "far from its nearest training items (kept by default: review it)",
}
REASON_KIND = {"exact_duplicate": "duplicate", "near_duplicate": "duplicate", "leakage": "leakage",
               "label_issue": "label", "outlier": "outlier"}
KNN_BACKENDS = ("auto", "faiss", "sklearn")


@dataclass
class AuditConfig:
    """Thresholds of the audit (written beside its report).

    Example:
        >>> AuditConfig(near_duplicate=0.1).drop
        ['file', 'duplicate', 'leakage', 'label']
    """

    near_duplicate: float = setting(0.2, "Two items are near-duplicates when the cosine distance of their mean-centred "
                                         "features is at most this fraction of the set's typical distance (the median "
                                         "distance of a training item to its nearest other one).", gt=0, lt=1)
    outlier_z: float = setting(3.5, "Robust z-score of the kNN distance above which an item is an outlier.", gt=0)
    neighbours: int = setting(10, "Nearest neighbours searched per item (outlier distance, duplicate candidates).", ge=1)
    folds: int = setting(5, "Cross-validation folds of the label probe (fewer when a class is smaller).", ge=2)
    probe_c: float = setting(1.0, "Inverse L2 strength of the logistic-regression probe (on rows scaled to length sqrt(dim)).", gt=0)
    knn: str = setting("auto", "Nearest-neighbour library: faiss, sklearn, or auto (faiss when installed).",
                       choices=KNN_BACKENDS)
    drop: list[str] = setting(["file", "duplicate", "leakage", "label"],
                              f"Kinds of flags write_clean leaves out (of {', '.join(KINDS)}).")
    seed: int = setting(0, "Seed of the probe's folds.")

    def __post_init__(self) -> None:
        check_settings(self)
        unknown = sorted(set(self.drop) - set(KINDS))
        if unknown:
            raise ValueError(f"drop has unknown kind(s) {unknown}; choose from {', '.join(KINDS)}")


@dataclass
class AuditSplit:
    """One split as a domain hands it over.

    Args:
        sources: a file path (or an in-memory name) per item.
        labels: a label per item.
        features: ``(len(usable), dim)`` encoder features of the usable items, in ``usable`` order.
        usable: indices of the items that decoded (and have features).
        hashes: a content hash per item (``None`` where there is none), for exact duplicates.
        problems: ``{index: (reason, detail, score)}`` of the items the decoder refused.
        files: whether ``sources`` are files (``write_clean`` needs them).
        origin: the folder or manifest the split was read from (never overwritten).
        notes: what the domain's reader left out before the audit saw it (skipped extensions, missing files).
    """

    sources: list[str]
    labels: list[str]
    features: np.ndarray
    usable: np.ndarray
    hashes: list[str | None] = field(default_factory=list)
    problems: dict[int, tuple[str, str, float]] = field(default_factory=dict)
    files: bool = True
    origin: str | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.labels = [str(x) for x in self.labels]
        self.usable = np.asarray(self.usable, dtype=np.int64)
        feats = np.asarray(self.features, dtype=np.float32)
        # No usable item (every file refused): an empty (0, dim) block, whatever shape came in.
        self.features = feats.reshape(len(self.usable), -1) if len(self.usable) else feats.reshape(0, feats.shape[-1] if feats.ndim == 2 else 0)
        if len(set(self.usable.tolist())) != len(self.usable) or (len(self.usable) and not 0 <= self.usable.min() <= self.usable.max() < len(self.sources)):
            raise ValueError(f"usable must hold distinct item indices in [0, {len(self.sources)})")
        if len(self.sources) != len(self.labels):
            raise ValueError(f"got {len(self.sources)} sources but {len(self.labels)} labels")
        if self.hashes and len(self.hashes) != len(self.sources):
            raise ValueError(f"got {len(self.sources)} sources but {len(self.hashes)} hashes")

    @classmethod
    def from_features(cls, sources: Sequence[str], labels: Sequence[str], features: np.ndarray, **kw) -> AuditSplit:
        """Every item usable, ``features`` in item order."""
        return cls(list(sources), list(labels), features, np.arange(len(sources)), **kw)

    def __len__(self) -> int:
        return len(self.sources)


@dataclass
class Flag:
    """One finding about one item.

    ``score`` is what the reason is measured by: cosine similarity for duplicates and leakage (1.0 for
    an exact copy), cleanlab's label quality (the probe's out-of-fold probability of the given label;
    low is suspicious) for label issues, the robust z-score for outliers, and the decoder's measure
    (or NaN) for file problems. ``partner`` is the other item of a duplicate or leakage pair.
    """

    index: int
    split: str
    source: str
    label: str
    reason: str
    score: float
    partner: int | None = None
    partner_split: str | None = None
    partner_source: str | None = None
    partner_label: str | None = None
    conflict: bool = False
    detail: str = ""

    @property
    def kind(self) -> str:
        return REASON_KIND.get(self.reason, "file")


# ---------------------------------------------------------------------------- nearest neighbours
def resolve_knn(backend: str = "auto") -> str:
    """``auto`` -> faiss when it is installed (the faster in ``benchmarks/audit.py``), else scikit-learn."""
    if backend not in KNN_BACKENDS:
        raise ValueError(f"knn must be one of {KNN_BACKENDS}, got {backend!r}")
    has_faiss = importlib.util.find_spec("faiss") is not None
    if backend == "faiss" and not has_faiss:
        raise ImportError("knn='faiss' needs faiss: pip install faiss-cpu (or pass knn='sklearn')")
    return "faiss" if backend == "faiss" or (backend == "auto" and has_faiss) else "sklearn"


def nearest(index: np.ndarray, queries: np.ndarray, k: int, backend: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of ``index`` most similar to each query, by cosine similarity: ``(similarities, ids)``,
    each ``(len(queries), k)``, most similar first. Exact search with either library."""
    k = min(k, len(index))
    index, queries = unit_rows(index), unit_rows(queries)
    if resolve_knn(backend) == "faiss":
        import faiss

        flat = faiss.IndexFlatIP(index.shape[1])
        flat.add(index)
        sims, ids = flat.search(queries, k)
        return sims, ids.astype(np.int64)
    from sklearn.neighbors import NearestNeighbors

    dist, ids = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(index).kneighbors(queries)
    return (1.0 - dist).astype(np.float32), ids.astype(np.int64)


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


# ---------------------------------------------------------------------------- the checks
def _pair_flag(split: AuditSplit, i: int, reason: str, score: float, other: AuditSplit, j: int, other_name: str,
               detail: str) -> Flag:
    return Flag(i, "train", split.sources[i], split.labels[i], reason, float(score), j, other_name,
                other.sources[j], other.labels[j], split.labels[i] != other.labels[j], detail)


@dataclass
class Neighbours:
    """Each usable training item's nearest training items (itself excluded), by cosine of centred features.

    ``typical`` is the median cosine distance to the nearest other item: how far apart items of this set
    and this encoder usually are. Near-duplicates are judged against it, because that scale differs
    widely between encoders: measured in ``benchmarks/audit.py``, distinct photos under MobileNetV2 had a
    nearest-neighbour cosine of at most 0.67, distinct takes of a spoken digit under the speech embedding
    up to 0.98.
    """

    sims: np.ndarray  # (n, k) most similar first
    ids: np.ndarray   # (n, k) rows of the usable items
    typical: float

    @classmethod
    def search(cls, centred: np.ndarray, k: int, backend: str) -> Neighbours:
        n = len(centred)
        if n < 2:
            return cls(np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64), math.nan)
        k = min(k, n - 1)
        sims, ids = nearest(centred, centred, k + 1, backend)
        # Drop each item's own row; an exact twin may come first, so look it up instead of assuming column 0.
        own = ids == np.arange(n)[:, None]
        own[~own.any(axis=1), -1] = True
        sims, ids = sims[~own].reshape(n, k), ids[~own].reshape(n, k)
        return cls(sims, ids, float(np.median(1.0 - sims[:, 0])))

    def cutoff(self, config: AuditConfig) -> float:
        """Cosine at or above which two items are near-duplicates (a pair needs at least the typical gap > 0)."""
        return 1.0 - config.near_duplicate * max(self.typical, 1e-6) if self.typical == self.typical else math.inf


def find_duplicates(train: AuditSplit, near: Neighbours, config: AuditConfig) -> list[Flag]:
    """Each later copy of an earlier training item: exact (same hash) first, else its most similar earlier neighbour."""
    flags, first_of, cutoff = [], {}, near.cutoff(config)
    for row, i in enumerate(train.usable.tolist()):
        h = train.hashes[i] if train.hashes else None
        if h is not None and h in first_of:
            flags.append(_pair_flag(train, i, "exact_duplicate", 1.0, train, first_of[h], "train", "same content hash"))
            continue
        if h is not None:
            first_of[h] = i
        earlier = [(s, train.usable[c]) for s, c in zip(near.sims[row], near.ids[row]) if c < row and s >= cutoff]
        if earlier:
            s, j = max(earlier)
            flags.append(_pair_flag(train, i, "near_duplicate", s, train, int(j), "train",
                                    f"cosine {s:.3f}; distance {1 - s:.3f} against a typical {near.typical:.3f}"))
    return flags


def find_leakage(train: AuditSplit, test: AuditSplit, centred: np.ndarray, test_centred: np.ndarray,
                 near: Neighbours, config: AuditConfig, backend: str) -> list[Flag]:
    """Training items that are exact or near copies of a test item (the test set is never changed)."""
    flags, cutoff = [], near.cutoff(config)
    test_hash = {h: j for j, h in reversed(list(enumerate(test.hashes or []))) if h is not None}
    sims, ids = nearest(test_centred, centred, 1, backend) if len(test_centred) and len(centred) else (None, None)
    for row, i in enumerate(train.usable.tolist()):
        h = train.hashes[i] if train.hashes else None
        if h is not None and h in test_hash:
            flags.append(_pair_flag(train, i, "leakage", 1.0, test, test_hash[h], "test", "same content hash as a test item"))
        elif sims is not None and sims[row, 0] >= cutoff:
            j = int(test.usable[ids[row, 0]])
            flags.append(_pair_flag(train, i, "leakage", sims[row, 0], test, j, "test",
                                    f"cosine {sims[row, 0]:.3f} to a test item; typical distance {near.typical:.3f}"))
    return flags


def probe_inputs(features: np.ndarray) -> np.ndarray:
    """Each row scaled to length sqrt(dim), so every feature sits near unit scale whatever the encoder.

    Rows, not columns: per-feature standardisation blew up features that one fold had almost never seen
    active (sparse ReLU outputs, empty spectral bands) into confident wrong predictions on clean items.
    """
    return unit_rows(features) * np.sqrt(max(features.shape[1], 1))


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, folds: int, c: float = 1.0,
                              seed: int = 0) -> np.ndarray:
    """``(n, classes)`` probabilities of a logistic-regression probe on :func:`probe_inputs`, each row
    predicted by the fold that did not train on it (``labels`` are integers 0..classes-1)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return cross_val_predict(LogisticRegression(C=c, max_iter=2000), probe_inputs(features), labels, cv=cv,
                             method="predict_proba")


def find_label_issues(train: AuditSplit, config: AuditConfig, notes: list[str]) -> tuple[list[Flag], np.ndarray | None]:
    """cleanlab's ``find_label_issues`` on the probe's out-of-fold probabilities; also returns those probabilities."""
    from cleanlab.filter import find_label_issues as cleanlab_issues
    from cleanlab.rank import get_label_quality_scores

    names = sorted({train.labels[i] for i in train.usable})
    counts = Counter(train.labels[i] for i in train.usable)
    smallest = min(counts.values(), default=0)
    if len(names) < 2 or smallest < 2:
        notes.append(f"label check skipped: it needs 2 classes with 2 usable items each (got {dict(counts)})")
        return [], None
    folds = min(config.folds, smallest)
    y = np.array([names.index(train.labels[i]) for i in train.usable])
    probs = out_of_fold_probabilities(train.features, y, folds, config.probe_c, config.seed)
    quality = get_label_quality_scores(y, probs)
    flags = []
    for row in cleanlab_issues(y, probs, return_indices_ranked_by="self_confidence"):
        i = int(train.usable[row])
        guess = names[int(np.argmax(probs[row]))]
        flags.append(Flag(i, "train", train.sources[i], train.labels[i], "label_issue", float(quality[row]),
                          detail=f"probe says {guess!r} ({probs[row].max():.2f})"))
    if folds < config.folds:
        notes.append(f"label probe used {folds} folds: the smallest class has {smallest} usable items")
    return flags, probs


def robust_z(x: np.ndarray) -> np.ndarray:
    """(x - median) / (1.4826 * MAD): a z-score that a few extreme values cannot inflate (zeros when MAD is 0).

    Example:
        >>> robust_z(np.array([1.0, 2.0, 3.0, 4.0, 100.0])).round(2).tolist()
        [-1.35, -0.67, 0.0, 0.67, 65.43]
    """
    med = np.median(x)
    mad = 1.4826 * np.median(np.abs(x - med))
    return np.zeros_like(x, dtype=np.float64) if mad == 0 else (x - med) / mad


def find_outliers(train: AuditSplit, near: Neighbours, config: AuditConfig, notes: list[str]) -> list[Flag]:
    """Items whose mean cosine distance to their nearest training neighbours is extreme.

    Needs at least ``5 * neighbours`` usable items: in smaller sets an item's ``neighbours`` nearest reach
    into other classes, and the robust z-score of those distances flagged clean items (measured on
    synthetic two-class sets of 23-24 clips: z up to 4.0).
    """
    if len(near.sims) < 5 * config.neighbours:
        notes.append(f"outlier check skipped: it needs {5 * config.neighbours} usable training items "
                     f"(5 x neighbours), got {len(near.sims)}")
        return []
    distance = 1.0 - near.sims.mean(axis=1)
    z = robust_z(distance)
    return [Flag(int(train.usable[r]), "train", train.sources[train.usable[r]], train.labels[train.usable[r]], "outlier",
                 float(z[r]), detail=f"mean cosine distance {distance[r]:.3f} to {near.sims.shape[1]} nearest")
            for r in np.flatnonzero(z > config.outlier_z)]


def file_flags(split: AuditSplit, name: str) -> list[Flag]:
    return [Flag(i, name, split.sources[i], split.labels[i], reason, float(score), detail=detail)
            for i, (reason, detail, score) in sorted(split.problems.items())]


def run_audit(train: AuditSplit, test: AuditSplit | None = None, config: AuditConfig | None = None, *,
              preview: Callable[[str, int], str] | None = None) -> AuditReport:
    """Every check on ``train`` (and leakage into ``test``); ``preview(split, index)`` renders an item in HTML."""
    config = config or AuditConfig()
    backend = resolve_knn(config.knn)
    notes, seconds = list(train.notes) + (list(test.notes) if test else []), {}
    clock = time.perf_counter()
    mean = train.features.mean(axis=0, keepdims=True) if len(train.features) else 0.0
    centred = unit_rows(train.features - mean) if len(train.features) else train.features
    near = Neighbours.search(centred, config.neighbours, backend)
    if near.typical == near.typical:
        notes.append(f"typical nearest-neighbour cosine distance {near.typical:.3f}: pairs at cosine "
                     f"{near.cutoff(config):.3f} or above count as near-duplicates")
    flags = file_flags(train, "train") + (file_flags(test, "test") if test else [])
    flags += find_duplicates(train, near, config)
    if test is not None:
        test_centred = unit_rows(test.features - mean) if len(test.features) else test.features
        flags += find_leakage(train, test, centred, test_centred, near, config, backend)
    seconds["neighbours"] = time.perf_counter() - clock
    clock = time.perf_counter()
    label_flags, probs = find_label_issues(train, config, notes)
    seconds["label probe"] = time.perf_counter() - clock
    flags += label_flags + find_outliers(train, near, config, notes)
    missing = sorted(set(test.labels) - set(train.labels)) if test else []
    if missing:
        notes.append(f"test labels absent from training: {missing}")
    return AuditReport(flags, train, test, config, backend, seconds, notes, probs, preview)
