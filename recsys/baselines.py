"""Reference recommenders with the EmbeddingTables interface: popularity (overall or recent), random."""

from __future__ import annotations

import numpy as np

from .data import Interactions
from .tables import EmbeddingTables

__all__ = ["popularity", "random_tables"]


def popularity(interactions: Interactions, since: float | None = None) -> EmbeddingTables:
    """Rank every user's items by how many users interacted with them (at or after ``since``).

    Expressed as one-column tables (users 1, items their count) so it is evaluated, filtered and
    served exactly like a learned model. ``since`` gives "recent popularity" for drifting catalogues.
    Ties break by item order, deterministically.
    """
    events = interactions
    if since is not None:
        if interactions.times is None:
            raise ValueError("popularity(since=...) needs timestamps: build Interactions with time=")
        events = interactions.subset(interactions.times >= since)
    counts = events.item_counts().astype(np.float32)
    return EmbeddingTables(
        np.ones((interactions.n_users, 1), np.float32), counts[:, None], interactions.user_ids,
        interactions.item_ids, model="popularity", meta={"since": since},
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
