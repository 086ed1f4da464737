"""EmbeddingTables: user and item factors with their id maps - the "pretrained encoder" of recsys."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from safetensors.numpy import load_file, save_file

from .data import IdSpaces, Interactions, _plain
from .foldin import solve_rows

log = logging.getLogger(__name__)

__all__ = ["BIAS_COLUMNS", "EmbeddingTables"]

# Constant columns of each model's tables (implicit's layouts), as {column: value}. BPR appends one
# column: users hold 1, items hold the item bias. LMF appends two: users hold [1, user bias], items
# [item bias, 1]. In every layout score = user_row . item_row, which is what recommend relies on.
BIAS_COLUMNS: dict[str, dict[str, dict[int, float]]] = {
    "als": {"user": {}, "item": {}},
    "bpr": {"user": {-1: 1.0}, "item": {}},
    "lmf": {"user": {-2: 1.0}, "item": {-1: 1.0}},
    "torch": {"user": {}, "item": {}},
    "popularity": {"user": {}, "item": {}},
    "random": {"user": {}, "item": {}},
}
_EXTRA = {"als": 0, "bpr": 1, "lmf": 2, "torch": 0, "popularity": 0, "random": 0}
_JSON_IDS = (str, int)
_MODEL_NAMES = {"als": "implicit AlternatingLeastSquares", "bpr": "implicit BayesianPersonalizedRanking",
                "lmf": "implicit LogisticMatrixFactorization", "torch": "transferkit EmbeddingModel"}
OnUnknown = Literal["error", "cold_start"]


def _check_ids(ids: Sequence, name: str) -> list:
    ids = [_plain(i) for i in ids]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{name} ids are not unique")
    return ids


@dataclass(eq=False)
class EmbeddingTables(IdSpaces):
    """User and item factor tables, their ids, and how they were trained.

    ``score(u, i) = user_factors[u] . item_factors[i]`` for every model kind; BPR and LMF tables carry
    implicit's extra bias columns (see ``BIAS_COLUMNS``), and ``factors`` counts the rest.
    ``history`` (the training interactions) is kept in memory for ``filter_seen`` and fold-in but is
    never saved: tables on disk hold only factors, ids, counts and metadata.

    Example:
        >>> import numpy as np
        >>> t = EmbeddingTables(np.eye(2, dtype="float32"), np.eye(2, dtype="float32"),
        ...                     ["ann", "bob"], ["x", "y"], model="als")
        >>> ids, scores = t.recommend(["bob"], N=1, filter_seen=False)
        >>> ids[0].tolist()
        ['y']
    """

    user_factors: np.ndarray
    item_factors: np.ndarray
    user_ids: list
    item_ids: list
    model: str = "als"
    meta: dict = field(default_factory=dict)
    user_counts: np.ndarray | None = None  # events behind each row (0: no signal; popularity fallback)
    item_counts: np.ndarray | None = None
    history: Interactions | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.model not in BIAS_COLUMNS:
            raise ValueError(f"unknown model kind {self.model!r}: use one of {sorted(BIAS_COLUMNS)}")
        self.user_factors = np.ascontiguousarray(self.user_factors, dtype=np.float32)
        self.item_factors = np.ascontiguousarray(self.item_factors, dtype=np.float32)
        self.user_ids = _check_ids(self.user_ids, "user")
        self.item_ids = _check_ids(self.item_ids, "item")
        if self.user_factors.shape[0] != len(self.user_ids):
            raise ValueError(
                f"user_factors has {self.user_factors.shape[0]} rows but there are {len(self.user_ids)} user ids"
            )
        if self.item_factors.shape[0] != len(self.item_ids):
            raise ValueError(
                f"item_factors has {self.item_factors.shape[0]} rows but there are {len(self.item_ids)} item ids"
            )
        if self.user_factors.shape[1] != self.item_factors.shape[1]:
            raise ValueError(
                f"user and item factors differ in width ({self.user_factors.shape[1]} vs "
                f"{self.item_factors.shape[1]})"
            )
        for name in ("user_counts", "item_counts"):
            counts = getattr(self, name)
            n = len(self.user_ids if name == "user_counts" else self.item_ids)
            setattr(self, name, np.zeros(n, np.int64) if counts is None else np.asarray(counts, np.int64))

    # -- ids ------------------------------------------------------------------------------------------
    @property
    def factors(self) -> int:
        """Latent dimension without the bias columns."""
        return self.user_factors.shape[1] - _EXTRA[self.model]

    def _rows(self, ids: Iterable, index: dict, kind: str, unknown: str) -> np.ndarray:
        rows = np.array([index.get(_plain(i), -1) for i in ids], dtype=np.int64)
        if unknown == "error" and (rows < 0).any():
            missing = [i for i, r in zip(ids, rows) if r < 0][:5]
            raise ValueError(
                f"{int((rows < 0).sum())} {kind} ids are not in the tables (e.g. {missing}); pass "
                f"unknown='cold_start' to fold them in from their history or fall back to popularity"
            )
        return rows

    # -- scoring --------------------------------------------------------------------------------------
    def popularity(self) -> np.ndarray:
        """Item popularity used for cold users: training counts, or the item bias when counts are 0."""
        if self.item_counts.any():
            return self.item_counts.astype(np.float32)
        bias = {"bpr": -1, "lmf": -2}.get(self.model)
        return self.item_factors[:, bias].copy() if bias is not None else np.zeros(len(self.item_ids))

    def fold_in_users(self, history: Interactions, regularization: float | None = None) -> np.ndarray:
        """User rows for every user of ``history``, solved against these item factors (no training).

        Items of ``history`` unknown to the tables are skipped (their count is logged).
        """
        reg = self.meta.get("regularization", 0.01) if regularization is None else regularization
        alpha = self.meta.get("alpha", 1.0)
        cols = np.array([self.item_index.get(i, -1) for i in history.item_ids], dtype=np.int64)
        known = cols[history.items] >= 0
        if not known.all():
            log.info("fold-in: skipped %d events on items unknown to the tables", int((~known).sum()))
        m = sp.csr_matrix(
            (history.weights[known], (history.users[known], cols[history.items[known]])),
            shape=(history.n_users, len(self.item_ids)),
        )
        return solve_rows(self.item_factors, m, reg, alpha, BIAS_COLUMNS[self.model]["user"])

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
                interactions these tables carry).
            history: interactions to filter by and, for unknown users, to fold in from.
            items: optional candidate item ids to rank among (others are never returned).
            unknown: ``"error"`` raises on ids not in the tables (and on users with no training
                interactions); ``"cold_start"`` folds such users in from ``history`` when they have
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
                "(loaded tables carry none) or filter_seen=False"
            )
        vectors, popular, seen = self._user_vectors(users, history, unknown, filter_seen)
        candidates = None
        if items is not None:
            candidates = self._rows(items, self.item_index, "item", unknown)
            candidates = candidates[candidates >= 0]
        return self._topk(vectors, popular, seen if filter_seen else None, candidates, N, batch_size)

    def _user_vectors(self, users: list, history, unknown: str, need_seen: bool):
        """User rows (folded in or flagged for popularity when cold) and their seen-items matrix."""
        rows = self._rows(users, self.user_index, "user", unknown)
        trained = bool(self.user_counts.any())  # hand-built tables carry no counts
        empty = np.zeros(len(rows), dtype=bool)
        empty[rows >= 0] = trained & (self.user_counts[rows[rows >= 0]] == 0)
        if unknown == "error" and empty.any():
            bad = [u for u, e in zip(users, empty) if e][:5]
            raise ValueError(
                f"{int(empty.sum())} users had no interactions in training (e.g. {bad}); their "
                "factors carry no signal - pass unknown='cold_start' for the popularity fallback"
            )
        vectors = np.zeros((len(users), self.user_factors.shape[1]), dtype=np.float32)
        vectors[rows >= 0] = self.user_factors[rows[rows >= 0]]
        cold = (rows < 0) | empty
        seen = self._seen_matrix(users, history) if (need_seen or cold.any()) else None
        folded = np.zeros(len(users), dtype=bool)
        if cold.any():
            folded = cold & (np.diff(seen.indptr) > 0)
            if folded.any():
                vectors[folded] = solve_rows(
                    self.item_factors, seen[folded], self.meta.get("regularization", 0.01),
                    self.meta.get("alpha", 1.0), BIAS_COLUMNS[self.model]["user"],
                )
        return vectors, cold & ~folded, seen

    def score(self, users: Sequence, history: Interactions | None = None, unknown: OnUnknown = "error"):
        """Dense scores of ``users`` over all items: (scores, item_ids, per-user seen columns)."""
        users = list(users)
        history = self.history if history is None else history
        vectors, popular, seen = self._user_vectors(users, history, unknown, True)
        scores = vectors @ self.item_factors.T
        scores[popular] = self.popularity()
        return scores, self.item_ids, np.split(seen.indices, seen.indptr[1:-1])

    def _seen_matrix(self, users: list, history: Interactions | None) -> sp.csr_matrix:
        """len(users) x n_items CSR of ``history`` mapped into these tables' id spaces."""
        if history is None:
            return sp.csr_matrix((len(users), len(self.item_ids)), dtype=np.float32)
        hist_rows = np.array([history.user_index.get(_plain(u), -1) for u in users], dtype=np.int64)
        cols = np.array([self.item_index.get(i, -1) for i in history.item_ids], dtype=np.int64)
        m = history.matrix[np.maximum(hist_rows, 0)].tocoo()
        keep = (hist_rows[m.row] >= 0) & (cols[m.col] >= 0)
        return sp.csr_matrix(
            (m.data[keep], (m.row[keep], cols[m.col[keep]])), shape=(len(users), len(self.item_ids))
        )

    def _topk(self, vectors, popular, seen, candidates, N, batch_size):
        n_items = len(self.item_ids)
        pop = self.popularity()
        ids = np.empty((len(vectors), N), dtype=object)
        scores = np.full((len(vectors), N), -np.inf, dtype=np.float32)
        item_ids = np.array(self.item_ids + [None], dtype=object)  # index -1 -> None padding
        mask = None
        if candidates is not None:
            mask = np.ones(n_items, dtype=bool)
            mask[candidates] = False
        for start in range(0, len(vectors), batch_size):
            stop = min(start + batch_size, len(vectors))
            s = vectors[start:stop] @ self.item_factors.T
            s[popular[start:stop]] = pop
            if mask is not None:
                s[:, mask] = -np.inf
            if seen is not None:
                block = seen[start:stop].tocoo()
                s[block.row, block.col] = -np.inf
            k = min(N, n_items)
            top = np.argpartition(-s, k - 1, axis=1)[:, :k]
            top_scores = np.take_along_axis(s, top, axis=1)
            order = np.argsort(-top_scores, axis=1, kind="stable")
            top = np.take_along_axis(top, order, axis=1)
            top_scores = np.take_along_axis(top_scores, order, axis=1)
            top[~np.isfinite(top_scores)] = -1
            ids[start:stop, :k] = item_ids[top]
            scores[start:stop, :k] = top_scores
            if k < N:
                ids[start:stop, k:] = None
        return ids, scores

    def similar_items(self, item: Any, N: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Items with the highest cosine similarity of their latent factors (bias columns excluded)."""
        row = self._rows([item], self.item_index, "item", "error")[0]
        core = self.item_factors[:, : self.factors]
        norms = np.linalg.norm(core, axis=1) + 1e-12
        sims = core @ core[row] / (norms * norms[row])
        top = np.argsort(-sims, kind="stable")[:N]
        return np.array(self.item_ids, dtype=object)[top], sims[top]

    # -- persistence ----------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write ``tables.safetensors`` (factors, counts) and ``tables.json`` (ids, model, meta)."""
        folder = Path(folder)
        for name, ids in (("user", self.user_ids), ("item", self.item_ids)):
            bad = [i for i in ids if not isinstance(i, _JSON_IDS) or isinstance(i, bool)]
            if bad:
                raise ValueError(
                    f"{name} id {bad[0]!r} ({type(bad[0]).__name__}) cannot be saved as JSON: "
                    "only str and int ids round-trip exactly - map ids to str first"
                )
        folder.mkdir(parents=True, exist_ok=True)
        save_file(
            {
                "user_factors": self.user_factors,
                "item_factors": self.item_factors,
                "user_counts": self.user_counts,
                "item_counts": self.item_counts,
            },
            str(folder / "tables.safetensors"),
        )
        info = {
            "format": "transferkit.recsys.EmbeddingTables/1",
            "model": self.model,
            "factors": self.factors,
            "bias_columns": {k: {str(c): v for c, v in d.items()} for k, d in BIAS_COLUMNS[self.model].items()},
            "meta": self.meta,
            "user_ids": self.user_ids,
            "item_ids": self.item_ids,
        }
        (folder / "tables.json").write_text(json.dumps(info, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> EmbeddingTables:
        """Load tables written by :meth:`save` (safetensors + JSON; no pickle involved)."""
        folder = Path(folder)
        if not (folder / "tables.json").exists():
            raise ValueError(f"{folder} has no tables.json: is it a folder written by EmbeddingTables.save?")
        info = json.loads((folder / "tables.json").read_text())
        arrays = load_file(str(folder / "tables.safetensors"))
        return cls(
            arrays["user_factors"], arrays["item_factors"], info["user_ids"], info["item_ids"],
            model=info["model"], meta=info.get("meta", {}),
            user_counts=arrays.get("user_counts"), item_counts=arrays.get("item_counts"),
        )

    def write_card(self, folder: str | Path, metrics: dict | None = None, data: dict | None = None) -> Path:
        """Write ``README.md`` (Hub model card): what the tables are, how they were trained, metrics."""
        from transferkit.common.hub import write_model_card

        usage = (
            "## Use\n\n```python\nfrom transferkit.recsys import EmbeddingTables\n\n"
            "tables = EmbeddingTables.load(\"PATH\")  # safetensors + JSON, no pickle\n"
            "ids, scores = tables.recommend([USER_ID], N=10, filter_seen=True, history=INTERACTIONS)\n```\n\n"
            f"Scores are `user_factors @ item_factors.T`; bias columns: {BIAS_COLUMNS[self.model]}."
        )
        info = {"tables": f"{self.model} ({_MODEL_NAMES.get(self.model, self.model)})", "users": len(self.user_ids),
                "items": len(self.item_ids), "factors": self.factors,
                "interactions": int(self.user_counts.sum()), **(data or {})}
        # base_model goes into the card's Hub metadata, which only accepts a repo id: empty unless
        # these tables were started from tables that live on the Hub
        return write_model_card(
            folder, task="recommendation", base_model=self.meta.get("base_model") or None,
            strategy=str(self.meta.get("transfer", "pretrain")), data=info, metrics=metrics,
            config=self.meta, library_name="transferkit", extra=usage,
            title=f"{self.model.upper()} embedding tables for recommendation",
        )

    def push_to_hub(self, repo_id: str, folder: str | Path, token: str | None = None,
                    private: bool = False, metrics: dict | None = None) -> str:
        """Save into ``folder`` with a model card and upload it (``transferkit.common.hub.push_to_hub``).

        Offline (``HF_HUB_OFFLINE=1``) the upload raises ``HubUnavailableError``; the folder stays.
        """
        from transferkit.common.hub import push_to_hub

        self.save(folder)
        self.write_card(folder, metrics)
        return push_to_hub(folder, repo_id, token=token, private=private)
