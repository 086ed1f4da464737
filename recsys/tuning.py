"""Choosing settings on a dev slice from the end of the training period, never on the test.

``select_on_dev`` fits one model per combination of settings on the training events before the
slice, scores each on the slice with :func:`~transferkit.recsys.evaluate`, and returns the best with
every trial, so a report can state what was chosen and what it was chosen over.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .data import Interactions
from .metrics import evaluate
from .splits import Split, dev_split

__all__ = ["DevSelection", "dev_trials", "select_on_dev"]


@dataclass
class DevSelection:
    """The chosen settings, their dev score, every trial ``(settings, score)`` and the dev split's info."""

    params: dict
    score: float
    trials: list = field(default_factory=list)
    info: dict = field(default_factory=dict)

    def table(self) -> str:
        """The trials as one line each, best first (for logs and reports)."""
        rows = sorted(self.trials, key=lambda t: -t[1])
        return "\n".join(f"{t[1]:.4f}  " + ", ".join(f"{k}={v}" for k, v in t[0].items()) for t in rows)


def dev_trials(make: Callable[..., Any], grid: Mapping[str, Sequence], split: Split, metric: str = "ndcg@10",
               **evaluate_kwargs: Any) -> DevSelection:
    """Evaluate ``make(**settings)`` for every combination in ``grid`` on ``split`` (train -> dev).

    Ties go to the earlier combination in grid order, so list the simplest candidate first.
    """
    if not grid:
        raise ValueError("grid is empty: give at least one setting with its candidates")
    names = list(grid)
    evaluate_kwargs.setdefault("unknown", "cold_start")
    evaluate_kwargs.setdefault("k", int(metric.split("@")[1]) if "@" in metric else 10)
    trials = []
    for values in itertools.product(*(list(grid[n]) for n in names)):
        params = dict(zip(names, values))
        result = evaluate(make(**params), split.train, split.test, split=split.info, **evaluate_kwargs)
        if metric not in result:
            raise ValueError(f"metric {metric!r} is not reported by evaluate (it gives {sorted(result)})")
        trials.append((params, float(result[metric])))
    best = max(range(len(trials)), key=lambda i: (trials[i][1], -i))
    return DevSelection(trials[best][0], trials[best][1], trials, dict(split.info))


def select_on_dev(fit: Callable[..., Any], train: Interactions, grid: Mapping[str, Sequence],
                  dev_fraction: float = 0.1, metric: str = "ndcg@10", **evaluate_kwargs: Any) -> DevSelection:
    """Pick the settings of ``fit(events, **settings) -> model`` on the last ``dev_fraction`` of ``train``.

    Args:
        fit: builds a model from training events and one combination of settings.
        train: the training period only; its latest events become the dev slice.
        grid: setting name -> candidates.
        metric: key of :func:`~transferkit.recsys.evaluate`'s result to maximise.
        **evaluate_kwargs: ``positive_threshold``, ``filter_seen``, ... (``unknown`` defaults to
            ``"cold_start"``: dev users may be new).

    Example:
        >>> from transferkit.recsys import Interactions, popularity
        >>> # x was popular early, y lately; the dev slice (the last two events) asks for y
        >>> inter = Interactions.from_arrays(["a", "b", "c", "d", "e", "a", "b"], list("xxxyyyy"),
        ...                                  times=[0, 1, 2, 3, 4, 5, 6])
        >>> chosen = select_on_dev(lambda events, since: popularity(events, since=since), inter,
        ...                        {"since": [0, 3]}, dev_fraction=0.3, filter_seen=False)
        >>> chosen.params, round(chosen.info["cutoff"], 2)
        ({'since': 3}, 4.2)
    """
    split = dev_split(train, dev_fraction)
    return dev_trials(lambda **params: fit(split.train, **params), grid, split, metric, **evaluate_kwargs)
