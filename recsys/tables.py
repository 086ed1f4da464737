"""EmbeddingTables: user and item factors with their id maps - the "pretrained encoder" of recsys."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from .base import OnUnknown, Recommender, UserScores
from .data import Interactions, plain_id
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
_MODEL_NAMES = {"als": "implicit AlternatingLeastSquares", "bpr": "implicit BayesianPersonalizedRanking",
                "lmf": "implicit LogisticMatrixFactorization", "torch": "transferkit EmbeddingModel"}


def _check_ids(ids: Sequence, name: str) -> list:
    ids = [plain_id(i) for i in ids]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{name} ids are not unique")
    return ids


@dataclass(eq=False)
class EmbeddingTables(Recommender):
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

    # -- scoring --------------------------------------------------------------------------------------
    def popularity(self) -> np.ndarray:
        """Item popularity used for cold users: training counts, or the item bias when counts are 0.

        Popularity tables rank everyone by their own item column (e.g. recent or decayed counts).
        """
        if self.model == "popularity":
            return self.item_factors[:, 0].copy()
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

    def _scorer(self, users: list, history: Interactions | None, unknown: OnUnknown) -> UserScores:
        """User rows (folded in from ``history`` when cold) times the item table."""
        rows, cold = self._user_rows(users, unknown)
        vectors = np.zeros((len(users), self.user_factors.shape[1]), dtype=np.float32)
        vectors[rows >= 0] = self.user_factors[rows[rows >= 0]]
        seen = self._seen_matrix(users, history)
        folded = cold & (np.diff(seen.indptr) > 0)
        if folded.any():
            vectors[folded] = solve_rows(
                self.item_factors, seen[folded], self.meta.get("regularization", 0.01),
                self.meta.get("alpha", 1.0), BIAS_COLUMNS[self.model]["user"],
            )
        return UserScores(lambda a, b: vectors[a:b] @ self.item_factors.T, seen, cold & ~folded)

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
        arrays = {"user_factors": self.user_factors, "item_factors": self.item_factors,
                  "user_counts": self.user_counts, "item_counts": self.item_counts}
        info = {
            "format": "transferkit.recsys.EmbeddingTables/1",
            "model": self.model,
            "factors": self.factors,
            "bias_columns": {k: {str(c): v for c, v in d.items()} for k, d in BIAS_COLUMNS[self.model].items()},
            "meta": self.meta,
        }
        return self._save_files(folder, "tables", arrays, info)

    @classmethod
    def load(cls, folder: str | Path) -> EmbeddingTables:
        """Load tables written by :meth:`save` (safetensors + JSON; no pickle involved)."""
        info, arrays = cls._load_files(folder, "tables", "EmbeddingTables.save")
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
