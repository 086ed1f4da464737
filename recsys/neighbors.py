"""Item-item models: nearest neighbours through implicit, and EASE in closed form.

Both score a user from their history row alone, ``score(u) = history(u) @ W`` with an items x items
matrix ``W``, so a user the model never saw is served from the history given at serving time,
without refitting - the fold-in comes free. They share the ``recommend`` / ``evaluate`` contract of
every recsys model (:class:`~transferkit.recsys.base.Recommender`), so they stand beside warm-started
tables in one table of results.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from .base import OnUnknown, Recommender, UserScores
from .config import EASEConfig, ItemKNNConfig, reject_mixed
from .data import Interactions

log = logging.getLogger(__name__)

__all__ = ["EASE", "ItemKNN", "load_item_item"]

FORMAT = "transferkit.recsys.ItemItem/1"
# EASE inverts a dense items x items matrix: beyond this many items it needs tens of GB
MAX_EASE_ITEMS = 30_000


class _ItemItem(Recommender):
    """Fit stores the id spaces and ``W``; recommend scores ``history rows @ W``."""

    config_class: type
    config: Any

    def __init__(self, config: Any, settings: dict) -> None:
        reject_mixed(type(self).__init__, config, **settings)
        self.config = self.config_class(**settings) if config is None else config
        self.user_ids: list = []
        self.item_ids: list = []
        self.user_counts = np.zeros(0, np.int64)
        self.item_counts = np.zeros(0, np.int64)
        self.history: Interactions | None = None
        self.weights_: Any = None

    def __repr__(self) -> str:
        state = f"{len(self.user_ids)} users x {len(self.item_ids)} items" if self.fitted else "not fitted"
        return f"{type(self).__name__}({self.config}, {state})"

    @property
    def fitted(self) -> bool:
        return self.weights_ is not None

    @property
    def meta(self) -> dict:
        """The settings, as tables record theirs (for reports and the blend)."""
        return {"model": type(self).__name__.lower(), **dataclasses.asdict(self.config)}

    def fit(self, interactions: Interactions):
        """Learn ``W`` from ``interactions`` (users x items; weights are used as given: pass
        :func:`~transferkit.recsys.confidence` output to decay or re-weight them first)."""
        if len(interactions) == 0:
            raise ValueError("no interactions to fit on")
        self.user_ids, self.item_ids = list(interactions.user_ids), list(interactions.item_ids)
        for name in ("user_index", "item_index"):  # the id maps are cached: a refit must rebuild them
            self.__dict__.pop(name, None)
        self.user_counts, self.item_counts = interactions.user_counts(), interactions.item_counts()
        self.history = interactions
        self.weights_ = self._item_matrix(interactions.matrix)
        return self

    def _item_matrix(self, matrix: sp.csr_matrix):
        raise NotImplementedError

    # -- persistence ----------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write ``neighbors.safetensors`` (W, counts) and ``neighbors.json`` (ids, model, settings)."""
        if not self.fitted:
            raise ValueError(f"{type(self).__name__} is not fitted: nothing to save")
        w = self.weights_
        arrays = {"data": w.data, "indices": w.indices, "indptr": w.indptr} if sp.issparse(w) else {"weights": w}
        info = {"format": FORMAT, "model": type(self).__name__, "config": dataclasses.asdict(self.config)}
        return self._save_files(folder, "neighbors", {**arrays, "user_counts": self.user_counts,
                                                      "item_counts": self.item_counts}, info)

    @classmethod
    def load(cls, folder: str | Path) -> _ItemItem:
        """Load a model written by :meth:`save` (safetensors + JSON; no pickle involved)."""
        info, arrays = cls._load_files(folder, "neighbors", "ItemKNN.save or EASE.save")
        kind = {"ItemKNN": ItemKNN, "EASE": EASE}[info["model"]]
        if cls is not _ItemItem and kind is not cls:
            raise ValueError(f"{folder} holds an {info['model']} model: load it with {info['model']}.load")
        model = kind(kind.config_class(**info["config"]))
        n = len(info["item_ids"])
        model.weights_ = (arrays["weights"] if "weights" in arrays else
                          sp.csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]), shape=(n, n)))
        model.user_ids, model.item_ids = info["user_ids"], info["item_ids"]
        model.user_counts, model.item_counts = arrays["user_counts"], arrays["item_counts"]
        return model

    def _scorer(self, users: list, history: Interactions | None, unknown: OnUnknown) -> UserScores:
        if not self.fitted:
            raise ValueError(f"{type(self).__name__} is not fitted: call fit(interactions) first")
        _, cold = self._user_rows(users, unknown)
        seen = self._seen_matrix(users, history)
        # every user is scored from the history row given now; only an empty row has no signal
        empty = np.diff(seen.indptr) == 0
        if (empty & ~cold).any():
            log.info("%d known users have no events in the history given: ranked by popularity",
                     int((empty & ~cold).sum()))

        def block(start: int, stop: int) -> np.ndarray:
            s = seen[start:stop] @ self.weights_
            return s.toarray() if sp.issparse(s) else np.asarray(s)

        return UserScores(block, seen, empty)


class ItemKNN(_ItemItem):
    """Item-item nearest neighbours: implicit's ``CosineRecommender``, ``BM25Recommender`` or
    ``TFIDFRecommender`` learn the similarity matrix; score(u, i) = history(u) . similarity[:, i].

    Args:
        config: an :class:`ItemKNNConfig`, or its fields as keywords (``kind``, ``neighbors``, ...).

    Example:
        >>> from transferkit.recsys import Interactions
        >>> inter = Interactions.from_arrays(["a", "a", "b", "b", "c"], ["x", "y", "x", "y", "x"])
        >>> knn = ItemKNN(kind="cosine", neighbors=5, num_threads=1).fit(inter)
        >>> knn.recommend(["c"], N=1)[0].tolist()  # c has x; y is x's neighbour
        [['y']]
    """

    config_class = ItemKNNConfig

    def __init__(self, config: ItemKNNConfig | None = None, **settings: Any) -> None:
        super().__init__(config, settings)

    def _item_matrix(self, matrix: sp.csr_matrix) -> sp.csr_matrix:
        from implicit import nearest_neighbours as nn
        from implicit.utils import ParameterWarning

        c = self.config
        if c.kind == "bm25":
            model = nn.BM25Recommender(K=c.neighbors, K1=c.bm25_k1, B=c.bm25_b, num_threads=c.num_threads)
        else:
            cls = nn.CosineRecommender if c.kind == "cosine" else nn.TFIDFRecommender
            model = cls(K=c.neighbors, num_threads=c.num_threads)
        # implicit re-weights our CSR into a COO matrix itself and then warns about its own COO
        with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
            warnings.simplefilter("ignore", ParameterWarning)
            model.fit(matrix, show_progress=False)
        return model.similarity.tocsr()


class EASE(_ItemItem):
    """EASE (Steck 2019, "Embarrassingly Shallow Autoencoders"): the items x items weights that
    best rebuild each user's row from their other items, in closed form:
    ``P = (X'X + lambda I)^-1``, ``B = -P / diag(P)`` with a zero diagonal.

    Args:
        config: an :class:`EASEConfig`, or ``regularization=`` (lambda) as a keyword.

    Example:
        >>> from transferkit.recsys import Interactions
        >>> inter = Interactions.from_arrays(["a", "a", "b", "b", "c"], ["x", "y", "x", "y", "x"])
        >>> EASE(regularization=1.0).fit(inter).recommend(["c"], N=1)[0].tolist()
        [['y']]
    """

    config_class = EASEConfig

    def __init__(self, config: EASEConfig | None = None, **settings: Any) -> None:
        super().__init__(config, settings)

    def _item_matrix(self, matrix: sp.csr_matrix) -> np.ndarray:
        n = matrix.shape[1]
        if n > MAX_EASE_ITEMS:
            raise ValueError(
                f"EASE inverts an items x items matrix: {n} items need {8 * n * n / 2**30:.0f} GiB; "
                f"use ItemKNN (sparse) or ALS tables for catalogues over {MAX_EASE_ITEMS} items"
            )
        gram = (matrix.T @ matrix).toarray().astype(np.float64)
        gram[np.diag_indices(n)] += self.config.regularization
        p = np.linalg.inv(gram)
        b = p / -np.diag(p)[None, :]
        b[np.diag_indices(n)] = 0.0
        return b.astype(np.float32)


def load_item_item(folder: str | Path) -> ItemKNN | EASE:
    """Whichever item-item model :meth:`ItemKNN.save` or :meth:`EASE.save` wrote into ``folder``."""
    return _ItemItem.load(folder)
