"""The contract every recsys model honours: ids in the user's own id space, (ids, scores) out.

``Recommender`` does the part that is the same for every model - id lookup, the unknown-user rule,
filtering seen items, candidate sets, batched top-N - and asks the model for one thing: dense scores
for a block of users (:meth:`Recommender._scorer`). Embedding tables, item-item neighbours, EASE
and the popularity blend all recommend, evaluate and fall back to popularity the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.sparse as sp
from safetensors.numpy import load_file, save_file

from .data import IdSpaces, Interactions, plain_id

__all__ = ["OnUnknown", "Recommender", "UserScores"]

OnUnknown = Literal["error", "cold_start"]


@dataclass
class UserScores:
    """What a model knows about the users of one ``recommend`` call.

    ``block(start, stop)`` returns dense scores (stop - start, n_items) for those users; rows of
    users in ``fallback`` (no signal of their own) are replaced by the model's popularity.
    ``seen`` is the users' history mapped to the model's item columns (len(users) x n_items CSR).
    """

    block: Callable[[int, int], np.ndarray]
    seen: sp.csr_matrix
    fallback: np.ndarray


class Recommender(IdSpaces):
    """Base of every model: subclasses hold ``user_ids``, ``item_ids``, ``user_counts``,
    ``item_counts`` (training events behind each id) and ``history`` (the training interactions, or
    None), and implement :meth:`_scorer`."""

    history: Interactions | None

    # -- what a subclass provides ---------------------------------------------------------------------
    def _scorer(self, users: list, history: Interactions | None, unknown: OnUnknown) -> UserScores:
        raise NotImplementedError

    def popularity(self) -> np.ndarray:
        """Item scores for users the model has no signal for: the training counts of each item."""
        return self.item_counts.astype(np.float32)

    # -- the shared contract --------------------------------------------------------------------------
    def recommend(
        self,
        users: Sequence,
        N: int = 10,
        filter_seen: bool = True,
        history: Interactions | None = None,
        items: Sequence | None = None,
        unknown: OnUnknown = "error",
        batch_size: int = 1024,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``N`` items for each user, as (ids, scores) arrays of shape (len(users), N).

        Args:
            users: user ids (as given at training).
            N: list length; rows are padded with ``None`` ids and ``-inf`` scores when fewer items
                are eligible.
            filter_seen: drop items the user interacted with in ``history`` (default: the training
                interactions the model carries).
            history: interactions to filter by and, for unknown users, to serve from (fold-in for
                tables, the history row itself for item-item models).
            items: optional candidate item ids to rank among (others are never returned).
            unknown: ``"error"`` raises on ids not in the model (and on users with no training
                interactions); ``"cold_start"`` serves such users from ``history`` when they have
                events there and otherwise ranks items by popularity; unknown candidate items are
                skipped.
            batch_size: users scored per matrix product.
        """
        if unknown not in ("error", "cold_start"):
            raise ValueError(f"unknown must be 'error' or 'cold_start', got {unknown!r}")
        if N < 1:
            raise ValueError(f"N must be >= 1, got {N}")
        users = list(users)
        history = self.history if history is None else history
        if filter_seen and history is None:
            raise ValueError(
                "filter_seen=True needs the users' history: pass history=<Interactions> "
                "(loaded models carry none) or filter_seen=False"
            )
        scores = self._scorer(users, history, unknown)
        candidates = None
        if items is not None:
            candidates = self._rows(items, self.item_index, "item", unknown)
            candidates = candidates[candidates >= 0]
        return self._topk(scores, scores.seen if filter_seen else None, candidates, N, batch_size)

    def score(self, users: Sequence, history: Interactions | None = None, unknown: OnUnknown = "error"):
        """Dense scores of ``users`` over all items: (scores, item_ids, per-user seen columns)."""
        users = list(users)
        history = self.history if history is None else history
        scores = self._scorer(users, history, unknown)
        dense = self._block(scores, 0, len(users))
        return dense, self.item_ids, np.split(scores.seen.indices, scores.seen.indptr[1:-1])

    # -- helpers for subclasses -----------------------------------------------------------------------
    def _save_files(self, folder: str | Path, name: str, arrays: dict, info: dict) -> Path:
        """``<name>.safetensors`` (arrays) and ``<name>.json`` (ids and settings) in ``folder``: the one
        on-disk layout of every model, with no pickle. Only str and int ids round-trip through JSON."""
        for kind, ids in (("user", self.user_ids), ("item", self.item_ids)):
            bad = [i for i in ids if not isinstance(i, (str, int)) or isinstance(i, bool)]
            if bad:
                raise ValueError(
                    f"{kind} id {bad[0]!r} ({type(bad[0]).__name__}) cannot be saved as JSON: "
                    "only str and int ids round-trip exactly - map ids to str first"
                )
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file(arrays, str(folder / f"{name}.safetensors"))
        (folder / f"{name}.json").write_text(json.dumps({**info, "user_ids": self.user_ids,
                                                         "item_ids": self.item_ids}, indent=1))
        return folder

    @staticmethod
    def _load_files(folder: str | Path, name: str, writer: str) -> tuple[dict, dict]:
        """(info, arrays) of a folder written by :meth:`_save_files`."""
        folder = Path(folder)
        if not (folder / f"{name}.json").exists():
            raise ValueError(f"{folder} has no {name}.json: is it a folder written by {writer}?")
        return json.loads((folder / f"{name}.json").read_text()), load_file(str(folder / f"{name}.safetensors"))

    def _rows(self, ids: Iterable, index: dict, kind: str, unknown: str) -> np.ndarray:
        rows = np.array([index.get(plain_id(i), -1) for i in ids], dtype=np.int64)
        if unknown == "error" and (rows < 0).any():
            missing = [i for i, r in zip(ids, rows) if r < 0][:5]
            raise ValueError(
                f"{int((rows < 0).sum())} {kind} ids are not in the model (e.g. {missing}); pass "
                f"unknown='cold_start' to serve them from their history or fall back to popularity"
            )
        return rows

    def _user_rows(self, users: list, unknown: str) -> tuple[np.ndarray, np.ndarray]:
        """(row of each user or -1, cold: unknown or without training interactions)."""
        rows = self._rows(users, self.user_index, "user", unknown)
        trained = bool(self.user_counts.any())  # hand-built models carry no counts
        empty = np.zeros(len(rows), dtype=bool)
        empty[rows >= 0] = trained & (self.user_counts[rows[rows >= 0]] == 0)
        if unknown == "error" and empty.any():
            bad = [u for u, e in zip(users, empty) if e][:5]
            raise ValueError(
                f"{int(empty.sum())} users had no interactions in training (e.g. {bad}); they carry "
                "no signal - pass unknown='cold_start' for the popularity fallback"
            )
        return rows, (rows < 0) | empty

    def _seen_matrix(self, users: list, history: Interactions | None) -> sp.csr_matrix:
        """len(users) x n_items CSR of ``history`` mapped into this model's id spaces."""
        if history is None:
            return sp.csr_matrix((len(users), len(self.item_ids)), dtype=np.float32)
        hist_rows = np.array([history.user_index.get(plain_id(u), -1) for u in users], dtype=np.int64)
        cols = np.array([self.item_index.get(i, -1) for i in history.item_ids], dtype=np.int64)
        m = history.matrix[np.maximum(hist_rows, 0)].tocoo()
        keep = (hist_rows[m.row] >= 0) & (cols[m.col] >= 0)
        return sp.csr_matrix(
            (m.data[keep], (m.row[keep], cols[m.col[keep]])), shape=(len(users), len(self.item_ids))
        )

    def _block(self, scores: UserScores, start: int, stop: int) -> np.ndarray:
        s = np.asarray(scores.block(start, stop), dtype=np.float32)
        fallback = scores.fallback[start:stop]
        if fallback.any():
            s[fallback] = self.popularity()
        return s

    def _topk(self, scores: UserScores, seen, candidates, N, batch_size):
        n_users, n_items = len(scores.fallback), len(self.item_ids)
        ids = np.empty((n_users, N), dtype=object)
        values = np.full((n_users, N), -np.inf, dtype=np.float32)
        item_ids = np.array(self.item_ids + [None], dtype=object)  # index -1 -> None padding
        mask = None
        if candidates is not None:
            mask = np.ones(n_items, dtype=bool)
            mask[candidates] = False
        k = min(N, n_items)
        for start in range(0, n_users, batch_size):
            stop = min(start + batch_size, n_users)
            s = self._block(scores, start, stop)
            if mask is not None:
                s[:, mask] = -np.inf
            if seen is not None:
                block = seen[start:stop].tocoo()
                s[block.row, block.col] = -np.inf
            top = np.argpartition(-s, k - 1, axis=1)[:, :k]
            top_scores = np.take_along_axis(s, top, axis=1)
            order = np.argsort(-top_scores, axis=1, kind="stable")
            top = np.take_along_axis(top, order, axis=1)
            top_scores = np.take_along_axis(top_scores, order, axis=1)
            top[~np.isfinite(top_scores)] = -1
            ids[start:stop, :k] = item_ids[top]
            values[start:stop, :k] = top_scores
            if k < N:
                ids[start:stop, k:] = None
        return ids, values
