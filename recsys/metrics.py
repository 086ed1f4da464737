"""Ranking metrics by their textbook definitions, and one evaluation that records how it was run.

All @k metrics take, per user, the recommended ids in rank order and the set of relevant ids, and
average over users with at least one relevant item. Binary relevance throughout.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata

from .data import Interactions

__all__ = [
    "auc",
    "coverage_at_k",
    "evaluate",
    "map_at_k",
    "ndcg_at_k",
    "precision_at_k",
    "precision_at_k_implicit",
    "recall_at_k",
]


def _pairs(recommended: Iterable[Sequence], relevant: Iterable[set], k: int):
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    for recs, rel in zip(recommended, relevant):
        if rel:
            top = [r for r in list(recs)[:k] if r is not None]
            yield np.array([r in rel for r in top], dtype=bool), rel


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def precision_at_k(recommended, relevant, k: int = 10) -> float:
    """|top-k ∩ relevant| / k."""
    return _mean([hits.sum() / k for hits, _ in _pairs(recommended, relevant, k)])


def precision_at_k_implicit(recommended, relevant, k: int = 10) -> float:
    """implicit's "precision@k": |top-k ∩ relevant| / min(k, |relevant|) - a variant, not precision.

    It equals recall@k whenever a user has at most k relevant items; reported under its own name so
    the two are never confused.
    """
    return _mean([hits.sum() / min(k, len(rel)) for hits, rel in _pairs(recommended, relevant, k)])


def recall_at_k(recommended, relevant, k: int = 10) -> float:
    """|top-k ∩ relevant| / |relevant|."""
    return _mean([hits.sum() / len(rel) for hits, rel in _pairs(recommended, relevant, k)])


def ndcg_at_k(recommended, relevant, k: int = 10) -> float:
    """DCG@k / ideal DCG@k with gains 1 and discount 1 / log2(rank + 1), ranks from 1."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    values = []
    for hits, rel in _pairs(recommended, relevant, k):
        ideal = discounts[: min(k, len(rel))].sum()
        values.append(float(discounts[: len(hits)][hits].sum() / ideal))
    return _mean(values)


def map_at_k(recommended, relevant, k: int = 10) -> float:
    """Mean over users of AP@k = sum_{i<=k} precision@i * rel_i / min(k, |relevant|)."""
    values = []
    for hits, rel in _pairs(recommended, relevant, k):
        precision_at_i = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        values.append(float((precision_at_i * hits).sum() / min(k, len(rel))))
    return _mean(values)


def coverage_at_k(recommended, n_items: int, k: int = 10) -> float:
    """Catalogue coverage: share of the ``n_items`` catalogue that appears in any user's top-k."""
    shown = {r for recs in recommended for r in list(recs)[:k] if r is not None}
    return len(shown) / n_items if n_items else float("nan")


def auc(scores: np.ndarray, positives: Sequence[np.ndarray], excluded: Sequence[np.ndarray] | None = None) -> float:
    """Mean per-user ROC AUC: P(score of a relevant item > score of a non-relevant one), ties count 1/2.

    Args:
        scores: (n_users, n_items) scores.
        positives: per user, column indices of relevant items.
        excluded: per user, columns left out of both groups (e.g. items seen in training).
    """
    values = []
    for u, pos in enumerate(positives):
        keep = np.ones(scores.shape[1], dtype=bool)
        if excluded is not None:
            keep[excluded[u]] = False
        is_pos = np.zeros(scores.shape[1], dtype=bool)
        is_pos[pos] = True
        is_pos &= keep
        n_pos, n_neg = int(is_pos.sum()), int((keep & ~is_pos).sum())
        if n_pos == 0 or n_neg == 0:
            continue
        ranks = rankdata(scores[u, keep])  # average ranks handle ties
        rank_sum = ranks[is_pos[keep]].sum()
        values.append((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return _mean(values)


def evaluate(
    model: Any,
    train: Interactions | None,
    test: Interactions,
    k: int = 10,
    positive_threshold: float = 0.0,
    filter_seen: bool = True,
    items: Sequence | None = None,
    unknown: str = "error",
    split: dict | None = None,
    with_auc: bool = False,
) -> dict:
    """Rank for every test user with a relevant item and report the metrics @k with their provenance.

    Args:
        model: anything with ``recommend(users, N, filter_seen, history, items, unknown)`` returning
            (ids, scores), such as :class:`EmbeddingTables`.
        train: what the users had seen (filtered when ``filter_seen``; folded in for cold users).
        test: held-out events; an item is relevant when its weight >= ``positive_threshold``
            (e.g. 4 for ratings of 4 and 5).
        items: optional candidate set (e.g. cold-start items); relevance is restricted to it too.
        unknown: passed to ``recommend`` ("error" or "cold_start").
        split: how train/test were made (``Split.info``), recorded in the result.
        with_auc: also compute per-user AUC (needs ``model.score``).

    Returns:
        dict of metrics (``ndcg@k``, ``recall@k``, ``precision@k``, ``map@k``,
        ``precision@k_implicit``, ``coverage@k``, optionally ``auc``) plus ``n_users``, ``split``,
        ``seed``, ``positive_threshold`` and ``filter_seen``.
    """
    positive = test.subset(test.weights >= positive_threshold)
    allowed = None if items is None else set(items)
    relevant_by_user: dict = {}
    for u, i in zip(positive.users, positive.items):
        item = positive.item_ids[i]
        if allowed is None or item in allowed:
            relevant_by_user.setdefault(positive.user_ids[u], set()).add(item)
    if not relevant_by_user:
        raise ValueError("no test user has a relevant item: check positive_threshold and the split")
    users = list(relevant_by_user)
    relevant = [relevant_by_user[u] for u in users]
    ids, _ = model.recommend(users, N=k, filter_seen=filter_seen, history=train, items=items, unknown=unknown)
    n_catalogue = len(items) if items is not None else len(getattr(model, "item_ids", [])) or 1
    result = {
        f"ndcg@{k}": ndcg_at_k(ids, relevant, k),
        f"recall@{k}": recall_at_k(ids, relevant, k),
        f"precision@{k}": precision_at_k(ids, relevant, k),
        f"map@{k}": map_at_k(ids, relevant, k),
        f"precision@{k}_implicit": precision_at_k_implicit(ids, relevant, k),
        f"coverage@{k}": coverage_at_k(ids, n_catalogue, k),
    }
    if with_auc:
        scores, cols, excluded = model.score(users, history=train, unknown=unknown)
        index = {it: c for c, it in enumerate(cols)}
        pos = [np.array([index[i] for i in rel if i in index], dtype=np.int64) for rel in relevant]
        result["auc"] = auc(scores, pos, excluded if filter_seen else None)
    info = dict(split or {})
    result.update(
        n_users=len(users), split=info.get("split", "unspecified"), seed=info.get("seed"),
        positive_threshold=positive_threshold, filter_seen=filter_seen,
    )
    return result
