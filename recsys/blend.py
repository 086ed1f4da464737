"""A model blended with the popularity prior: what is recent matters in a new period.

``score(u) = z(model(u)) + weight * z(prior)``, each z-scored over the items for that user, where the
prior is recent item popularity (decayed by a half-life, optionally counting only events above a
weight such as ratings >= 4). A user the model has no signal for - no history at all - is ranked by
the prior alone; a user with a short history leans on it through the weight. The weight and the
prior's half-life are chosen by :func:`fit_blend` on a dev slice carved from the end of the training
period, never on the test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .base import OnUnknown, Recommender, UserScores
from .baselines import item_popularity
from .config import BlendConfig
from .data import Interactions, duration_seconds
from .splits import Split, dev_split
from .tuning import DevSelection, dev_trials

__all__ = ["PopularityBlend", "fit_blend"]


def _standardise(scores: np.ndarray) -> np.ndarray:
    """Each row to mean 0 and standard deviation 1 (a constant row to 0), so two models' scores add."""
    scores = np.asarray(scores, dtype=np.float64)
    centred = scores - scores.mean(axis=1, keepdims=True)
    std = centred.std(axis=1, keepdims=True)
    return centred / np.where(std > 0, std, 1.0)


class PopularityBlend(Recommender):
    """``model`` plus ``weight`` times the popularity prior of ``interactions``, in z-scores.

    Args:
        model: any recsys model (tables, :class:`~transferkit.recsys.ItemKNN`, :class:`~transferkit.recsys.EASE`).
        interactions: the events the prior counts (usually the training events, raw weights).
        weight: how much the prior counts against the model (0: the model alone, with the prior as
            the cold-user fallback).
        half_life: each event counts ``0.5 ** (age / half_life)`` (None or inf: all count 1).
        min_weight: only events with weight >= this count (e.g. 4 for "rated 4 or 5").
        now: the time ages are measured from (default: the latest event of ``interactions``).

    Example:
        >>> from transferkit.recsys import EASE, Interactions
        >>> inter = Interactions.from_arrays(["a", "a", "b", "c"], ["x", "y", "x", "z"], times=[0, 1, 2, 3])
        >>> blend = PopularityBlend(EASE(regularization=1.0).fit(inter), inter, weight=0.5, half_life=1.0)
        >>> blend.recommend(["newcomer"], N=1, unknown="cold_start")[0].tolist()  # the most recent item
        [['z']]
    """

    def __init__(self, model: Recommender, interactions: Interactions, weight: float = 1.0,
                 half_life: Any = None, min_weight: float | None = None, now: Any = None) -> None:
        if not weight >= 0:
            raise ValueError(f"weight must be >= 0, got {weight!r}")
        if half_life is not None and duration_seconds(half_life, "half_life") == np.inf:
            half_life = None  # an infinite half-life is no decay
        prior = item_popularity(interactions, half_life=half_life, min_weight=min_weight, now=now)
        cols = np.array([interactions.item_index.get(i, -1) for i in model.item_ids], dtype=np.int64)
        self.model, self.weight = model, float(weight)
        self.prior = np.where(cols >= 0, prior[np.maximum(cols, 0)], 0.0).astype(np.float32)
        self.user_ids, self.item_ids = model.user_ids, model.item_ids
        self.user_counts, self.item_counts, self.history = model.user_counts, model.item_counts, model.history
        self.meta = {**getattr(model, "meta", {}), "blend_weight": self.weight,
                     "prior_half_life": None if half_life is None else duration_seconds(half_life, "half_life"),
                     "prior_min_weight": min_weight}
        self.selection: DevSelection | None = None

    def __repr__(self) -> str:
        return f"PopularityBlend({type(self.model).__name__}, weight={self.weight})"

    def popularity(self) -> np.ndarray:
        return self.prior

    def _scorer(self, users: list, history: Interactions | None, unknown: OnUnknown) -> UserScores:
        inner = self.model._scorer(users, history, unknown)
        prior = _standardise(self.prior[None, :])

        def block(start: int, stop: int) -> np.ndarray:
            return _standardise(inner.block(start, stop)) + self.weight * prior

        # users the model has no signal for are ranked by the prior (self.popularity) alone
        return UserScores(block, inner.seen, inner.fallback)


def fit_blend(fit_model: Callable[[Interactions], Recommender], train: Interactions,
              config: BlendConfig | None = None, dev: Split | None = None, metric: str = "ndcg@10",
              **evaluate_kwargs: Any) -> PopularityBlend:
    """Choose the blend's weight, prior half-life and threshold on a dev slice, then fit on all of ``train``.

    The last ``config.dev_fraction`` of ``train``'s events (by time) is the dev slice:
    ``fit_model`` is called on the events before it, every combination of ``config.weights``,
    ``config.half_lives`` and ``config.min_weights`` is scored on it, and the best is refitted on the
    whole of ``train``. Nothing outside ``train`` is read - pass the training period only.

    Args:
        fit_model: events -> fitted model (apply confidence weighting inside it, so the prior
            counts the raw events).
        train: the training period, with timestamps.
        config: the candidates (:class:`BlendConfig`; its defaults without one).
        dev: a (before, slice) split of ``train`` to choose on instead of the last
            ``config.dev_fraction`` - e.g. :func:`~transferkit.recsys.half_known_split` of the new
            period's known events, to mirror a half-known test. Its events must all be ``train``'s.
        metric: what the dev slice maximises (a key of :func:`~transferkit.recsys.evaluate`'s result).
        **evaluate_kwargs: ``k``, ``positive_threshold``, ``filter_seen`` - as the test will be scored.

    Returns:
        the blend refitted on ``train``; ``blend.selection`` holds the chosen settings and every trial.
    """
    config = config or BlendConfig()
    split = dev_split(train, config.dev_fraction) if dev is None else dev
    model = fit_model(split.train)
    grid = {"weight": config.weights, "half_life": config.half_lives, "min_weight": config.min_weights}
    selection = dev_trials(lambda **p: PopularityBlend(model, split.train, **p), grid, split, metric,
                           **evaluate_kwargs)
    blend = PopularityBlend(fit_model(train), train, **selection.params)
    blend.selection = selection
    blend.meta["dev"] = {"split": split.info["split"], "cutoff": split.info["cutoff"], metric: selection.score}
    return blend
