"""Splits of Interactions into train and test, each recording how it was made.

``split_by_time``, ``random_split`` and ``leave_k_out`` are the usual three. ``half_known_split`` is
the serving-time protocol of a new period: each user's new events split in half by time, the first
half known when the recommendation is made, the second half scored. ``dev_split`` carves a
development slice off the end of a training period, for choosing settings without the test.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .data import Interactions, to_seconds

log = logging.getLogger(__name__)

__all__ = ["Split", "dev_split", "half_known_split", "leave_k_out", "random_split", "split_by_time"]


@dataclass
class Split:
    """A train/test pair in one id space and how it was made (recorded beside every result)."""

    train: Interactions
    test: Interactions
    info: dict

    def __iter__(self):  # allows ``train, test = split_by_time(...)``
        return iter((self.train, self.test))


def _cutoff(inter: Interactions, test_fraction: float, cutoff, caller: str) -> float:
    if inter.times is None:
        raise ValueError(f"{caller} needs timestamps: build Interactions with time='<column>'")
    if cutoff is None:
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        return float(np.quantile(inter.times, 1.0 - test_fraction))
    if not isinstance(cutoff, (int, float, np.floating, np.integer)):
        return float(to_seconds([cutoff])[0])
    return float(cutoff)


def split_by_time(
    inter: Interactions, test_fraction: float = 0.2, cutoff: float | None = None
) -> Split:
    """Events at or after ``cutoff`` (default: the ``1 - test_fraction`` time quantile) go to test."""
    cutoff = _cutoff(inter, test_fraction, cutoff, "split_by_time")
    test = inter.times >= cutoff
    info = {"split": "time", "cutoff": cutoff, "seed": None}
    return Split(inter.subset(~test), inter.subset(test), info)


def half_known_split(inter: Interactions, test_fraction: float = 0.2, cutoff: float | None = None) -> Split:
    """A new period served as it happens: each user's new events split in half by time.

    Events before ``cutoff`` (default: the ``1 - test_fraction`` time quantile) are history. Of each
    user's events at or after it, the earlier ceil(n/2) join train - known at serving time, to fold
    in or score from - and the rest are test. A user with one new event has nothing left to score.

    Example:
        >>> inter = Interactions.from_arrays(["a"] * 5, [1, 2, 3, 4, 5], times=[0, 1, 2, 3, 4])
        >>> train, test = half_known_split(inter, cutoff=2)
        >>> sorted(train.times.tolist()), test.times.tolist()
        ([0.0, 1.0, 2.0, 3.0], [4.0])
    """
    cutoff = _cutoff(inter, test_fraction, cutoff, "half_known_split")
    new = np.flatnonzero(inter.times >= cutoff)
    order = new[np.lexsort((inter.times[new], inter.users[new]))]
    per_user = np.bincount(inter.users[order], minlength=inter.n_users)
    starts = np.cumsum(per_user) - per_user
    rank = np.arange(len(order)) - starts[inter.users[order]]  # 0 for each user's first new event
    test = np.zeros(len(inter), dtype=bool)
    test[order] = rank >= (per_user[inter.users[order]] + 1) // 2
    info = {"split": "half-known: each user's events after the cutoff, first ceil(n/2) known, rest test",
            "cutoff": cutoff, "seed": None}
    return Split(inter.subset(~test), inter.subset(test), info)


def dev_split(train: Interactions, fraction: float = 0.1) -> Split:
    """The last ``fraction`` of ``train``'s events by time as a development slice (never the test).

    Settings chosen on it (blend weights, half-lives, warm-start iterations) see only the training
    period, in the order time gives: the model is fitted before the slice and judged on it.
    """
    cutoff = _cutoff(train, fraction, None, "dev_split")
    dev = train.times >= cutoff
    if dev.all() or not dev.any():
        raise ValueError("dev_split: every event has the same time, so no dev slice can come after the rest")
    info = {"split": f"dev: the last {fraction:.0%} of the training events by time", "cutoff": cutoff, "seed": None}
    return Split(train.subset(~dev), train.subset(dev), info)


def random_split(inter: Interactions, test_fraction: float = 0.2, seed: int = 0) -> Split:
    """Each event goes to test with probability ``test_fraction`` (exact count, seeded)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    test = np.zeros(len(inter), dtype=bool)
    test[rng.permutation(len(inter))[: int(round(test_fraction * len(inter)))]] = True
    info = {"split": "random", "test_fraction": test_fraction, "seed": seed}
    return Split(inter.subset(~test), inter.subset(test), info)


def leave_k_out(inter: Interactions, k: int = 1, seed: int = 0, by_time: bool = False) -> Split:
    """Hold out ``k`` events per user (random, or the latest with ``by_time``).

    Users with ``k`` or fewer events stay whole in train (logged): holding out all of a user's
    history would leave nothing to recommend from.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if by_time and inter.times is None:
        raise ValueError("by_time=True needs timestamps: build Interactions with time='<column>'")
    rng = np.random.default_rng(seed)
    # sort by user, then by a per-event key (time, or a random number), and take the last k per user
    key = inter.times if by_time else rng.random(len(inter))
    order = np.lexsort((key, inter.users))
    counts = inter.user_counts()
    ends = np.cumsum(counts)
    rank_from_end = ends[inter.users[order]] - np.arange(len(order))  # 1 for each user's last event
    test = np.zeros(len(inter), dtype=bool)
    test[order] = (rank_from_end <= k) & (counts[inter.users[order]] > k)
    skipped = int(((counts > 0) & (counts <= k)).sum())
    if skipped:
        log.info("leave_k_out: %d users with <= %d events kept whole in train", skipped, k)
    info = {"split": f"leave_{k}_out" + ("_latest" if by_time else ""), "seed": None if by_time else seed}
    return Split(inter.subset(~test), inter.subset(test), info)
