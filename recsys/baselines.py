"""Reference recommenders with the EmbeddingTables interface: popularity (overall or recent), random."""

from __future__ import annotations

from typing import Any

import numpy as np

from .data import Interactions, decay, duration_seconds
from .tables import EmbeddingTables

__all__ = ["item_popularity", "popularity", "random_tables"]


def item_popularity(interactions: Interactions, since: float | None = None, half_life: Any = None,
                    min_weight: float | None = None, now: Any = None) -> np.ndarray:
    """How many users interacted with each item (float32, one value per ``interactions.item_ids``).

    Args:
        since: count only events at or after this time ("recent popularity").
        half_life: count each event ``0.5 ** (age / half_life)`` instead of 1 (:func:`decay`; age
            from ``now``, default the latest event): recent popularity without a hard cut.
        min_weight: count only events whose weight is at least this (e.g. ratings >= 4, when that is
            what relevant means).

    Example:
        >>> inter = Interactions.from_arrays(["a", "b", "b"], ["x", "x", "y"], times=[0, 10, 10])
        >>> item_popularity(inter).tolist(), item_popularity(inter, half_life=10).tolist()
        ([2.0, 1.0], [1.5, 1.0])
    """
    keep = np.ones(len(interactions), dtype=bool)
    if (since is not None or half_life is not None) and interactions.times is None:
        raise ValueError("popularity by time (since=, half_life=) needs timestamps: build Interactions with time=")
    if since is not None:
        keep &= interactions.times >= since
    if min_weight is not None:
        keep &= interactions.weights >= min_weight
    counts = np.ones(int(keep.sum()))
    if half_life is not None:
        counts = decay(interactions.times, half_life, now)[keep]
    return np.bincount(interactions.items[keep], weights=counts, minlength=interactions.n_items).astype(np.float32)


def popularity(interactions: Interactions, since: float | None = None, half_life: Any = None,
               min_weight: float | None = None) -> EmbeddingTables:
    """Rank every user's items by how many users interacted with them (:func:`item_popularity`).

    Expressed as one-column tables (users 1, items their count) so it is evaluated, filtered and
    served exactly like a learned model. ``since`` or ``half_life`` give "recent popularity" for
    drifting catalogues. Ties break by item order, deterministically.
    """
    counts = item_popularity(interactions, since, half_life, min_weight)
    return EmbeddingTables(
        np.ones((interactions.n_users, 1), np.float32), counts[:, None], interactions.user_ids,
        interactions.item_ids, model="popularity",
        meta={"since": since, "half_life": None if half_life is None else duration_seconds(half_life, "half_life"),
              "min_weight": min_weight},
        # every user counts as known: popularity needs no per-user signal
        user_counts=np.ones(interactions.n_users, np.int64), item_counts=interactions.item_counts(),
        history=interactions,
    )


def random_tables(user_ids: list, item_ids: list, dim: int = 32, seed: int = 0) -> EmbeddingTables:
    """Gaussian random tables: the chance-level reference (e.g. for items nobody has seen yet)."""
    rng = np.random.default_rng(seed)
    return EmbeddingTables(
        rng.standard_normal((len(user_ids), dim)).astype(np.float32),
        rng.standard_normal((len(item_ids), dim)).astype(np.float32),
        user_ids, item_ids, model="random", meta={"seed": seed},
    )
