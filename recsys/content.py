"""Cold-start items from content: map content embeddings to collaborative item factors.

After van den Oord, Dieleman & Schrauwen (2013), who regressed audio features onto the item factors of
a trained matrix factorisation, and VBPR (He & McAuley 2016), which ties item factors to visual
features. Content embeddings come from any encoder: ``transferkit.vision`` / ``transferkit.audio``
pooled features, or a sentence encoder for titles.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np

from .tables import BIAS_COLUMNS, EmbeddingTables

log = logging.getLogger(__name__)

__all__ = ["ALPHAS", "ContentMapper", "embed_texts"]

ALPHAS = tuple(10.0**p for p in range(-2, 8))
MLP_ALPHAS = (1e-3, 1e-1, 10.0)


def _loo_alpha(z: np.ndarray, y: np.ndarray) -> float:
    """The ridge penalty in ``ALPHAS`` with the lowest exact leave-one-out squared error."""
    best = int(np.argmin(loo_errors(z, y, ALPHAS)))
    if best in (0, len(ALPHAS) - 1):
        log.info("ContentMapper: leave-one-out picked alpha=%g at the edge of the grid", ALPHAS[best])
    return ALPHAS[best]


def loo_errors(z: np.ndarray, y: np.ndarray, alphas: Sequence[float]) -> list[float]:
    """Exact leave-one-out squared error of ridge (no intercept) for each penalty, from one SVD.

    With Z = U S V', the hat matrix is U diag(s^2 / (s^2 + a)) U' and the leave-one-out residual of
    row i is (y_i - yhat_i) / (1 - H_ii), so every candidate costs one pass over U.
    """
    u, sv, _ = np.linalg.svd(z, full_matrices=False)
    uty = u.T @ y
    errors = []
    for a in alphas:
        shrink = sv**2 / (sv**2 + a)
        fitted = u @ (shrink[:, None] * uty)
        leverage = (u**2) @ shrink
        resid = (y - fitted) / np.maximum(1.0 - leverage, 1e-12)[:, None]
        errors.append(float((resid**2).sum()))
    return errors


class ContentMapper:
    """Learn ``content embedding -> item factor row`` on items that have both; predict for new items.

    Args:
        kind: ``"ridge"`` (closed form, standardised inputs) or ``"mlp"`` (one hidden layer,
            scikit-learn's MLPRegressor with early stopping).
        alpha: L2 penalty (ridge) or weight decay (mlp). ``"auto"`` picks it on the training items
            alone: from ``ALPHAS`` by exact leave-one-out error (ridge), from ``MLP_ALPHAS`` by the
            R^2 on the MLP's early-stopping hold-out (mlp).
        hidden: hidden width of the MLP.
        min_count: train only on items with at least this many interactions: rarely seen items
            have noisy factors that would teach the map noise.
        seed: seed of the MLP's initialisation and validation split.

    Example:
        >>> import numpy as np
        >>> from transferkit.recsys import ContentMapper, EmbeddingTables
        >>> t = EmbeddingTables(np.eye(3, dtype="float32"), np.eye(3, dtype="float32"),
        ...                     ["u0", "u1", "u2"], ["a", "b", "c"])
        >>> mapper = ContentMapper(alpha=1e-6).fit(t, ["a", "b", "c"], np.eye(3))
        >>> bigger = mapper.add_items(t, ["d"], np.array([[0.0, 0.0, 1.0]]))
        >>> bigger.recommend(["u2"], N=1, filter_seen=False, items=["a", "b", "d"])[0].tolist()
        [['d']]
    """

    def __init__(
        self,
        kind: Literal["ridge", "mlp"] = "ridge",
        alpha: float | Literal["auto"] = "auto",
        hidden: int = 256,
        min_count: int = 0,
        seed: int = 0,
    ) -> None:
        if kind not in ("ridge", "mlp"):
            raise ValueError(f"kind must be 'ridge' or 'mlp', got {kind!r}")
        if alpha != "auto" and alpha < 0:
            raise ValueError(f"alpha must be >= 0 or 'auto', got {alpha}")
        self.kind, self.alpha, self.hidden, self.min_count, self.seed = kind, alpha, hidden, min_count, seed
        self._fitted = False

    def fit(self, tables: EmbeddingTables, item_ids: Sequence, content: np.ndarray) -> ContentMapper:
        """Fit on the items of ``item_ids`` that the tables know (unknown ones are skipped, logged).

        Args:
            tables: trained tables whose item rows are the regression targets.
            item_ids: ids of the rows of ``content``.
            content: (len(item_ids), dim) content embeddings.
        """
        content = self._check(item_ids, content)
        rows = np.array([tables.item_index.get(i, -1) for i in item_ids], dtype=np.int64)
        use = rows >= 0
        if self.min_count:
            use &= tables.item_counts[np.maximum(rows, 0)] >= self.min_count
        if (rows < 0).any():
            log.info("ContentMapper.fit: %d items are not in the tables, skipped", int((rows < 0).sum()))
        if use.sum() < 2:
            raise ValueError("ContentMapper needs at least 2 items present in both the tables and content")
        x, y = content[use], tables.item_factors[rows[use]].astype(np.float64)
        # constant bias columns are not learned; they are re-set when rows are added
        self._fixed = BIAS_COLUMNS[tables.model]["item"]
        self._width = y.shape[1]
        self._mean, self._std = x.mean(0), x.std(0) + 1e-8
        z = (x - self._mean) / self._std
        self._y_mean = y.mean(0)
        if self.kind == "ridge":
            # dual form when there are fewer items than content dimensions: (ZZ' + aI)^-1 is smaller
            n, d = z.shape
            yc = y - self._y_mean
            self.alpha_ = _loo_alpha(z, yc) if self.alpha == "auto" else float(self.alpha)
            if n < d:
                self._coef = z.T @ np.linalg.solve(z @ z.T + self.alpha_ * np.eye(n), yc)
            else:
                self._coef = np.linalg.solve(z.T @ z + self.alpha_ * np.eye(d), z.T @ yc)
        else:
            self._mlp, self.alpha_ = self._fit_mlp(z, y - self._y_mean)
        self.n_train_ = int(use.sum())
        self._fitted = True
        return self

    def _fit_mlp(self, z: np.ndarray, y: np.ndarray):
        """One hidden layer; with alpha='auto' the weight decay with the best held-out R^2 wins."""
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPRegressor
        from threadpoolctl import threadpool_limits

        best = None
        for alpha in MLP_ALPHAS if self.alpha == "auto" else (float(self.alpha),):
            mlp = MLPRegressor(
                hidden_layer_sizes=(self.hidden,), alpha=alpha, early_stopping=len(z) >= 50, max_iter=300,
                random_state=self.seed, learning_rate_init=1e-3, batch_size=min(256, len(z)),
            )
            # matrices this small run fastest on one BLAS thread; more threads only contend
            with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                mlp.fit(z, y)
            if any(issubclass(w.category, ConvergenceWarning) for w in caught):
                log.info("ContentMapper(mlp, alpha=%g): stopped at max_iter before converging", alpha)
            score = mlp.best_validation_score_ if mlp.early_stopping else -mlp.loss_
            if best is None or score > best[0]:
                best = (score, mlp, alpha)
        return best[1], best[2]

    def predict(self, content: np.ndarray) -> np.ndarray:
        """Item factor rows (float32) for content embeddings of shape (n, dim)."""
        if not self._fitted:
            raise ValueError("ContentMapper is not fitted: call fit(tables, item_ids, content) first")
        content = np.asarray(content, dtype=np.float64)
        if content.ndim != 2 or content.shape[1] != len(self._mean):
            raise ValueError(f"content must have shape (n, {len(self._mean)}), got {content.shape}")
        z = (content - self._mean) / self._std
        out = (z @ self._coef if self.kind == "ridge" else self._mlp.predict(z).reshape(len(z), -1))
        out = out + self._y_mean
        for col, value in self._fixed.items():
            out[:, col] = value
        return out.astype(np.float32)

    def add_items(self, tables: EmbeddingTables, item_ids: Sequence, content: np.ndarray,
                  replace: bool = False) -> EmbeddingTables:
        """Tables with rows for ``item_ids`` predicted from content (new ids appended).

        Items already in the tables keep their learned rows unless ``replace``. The new items have
        zero interactions, so they are recommended on content alone.
        """
        content = self._check(item_ids, content)
        predicted = self.predict(content)
        ids = list(tables.item_ids)
        factors = [tables.item_factors]
        counts = list(tables.item_counts)
        index = dict(tables.item_index)
        extra = []
        item_factors = tables.item_factors.copy()
        for row, item in enumerate(item_ids):
            if item in index:
                if replace:
                    item_factors[index[item]] = predicted[row]
                continue
            index[item] = len(ids)
            ids.append(item)
            counts.append(0)
            extra.append(predicted[row])
        factors = [item_factors] + ([np.stack(extra)] if extra else [])
        return EmbeddingTables(
            tables.user_factors, np.concatenate(factors), tables.user_ids, ids, model=tables.model,
            meta={**tables.meta, "content_items": len(extra)}, user_counts=tables.user_counts,
            item_counts=np.array(counts, dtype=np.int64), history=tables.history,
        )

    @staticmethod
    def _check(item_ids: Sequence, content: np.ndarray) -> np.ndarray:
        content = np.asarray(content, dtype=np.float64)
        if content.ndim != 2 or content.shape[0] != len(item_ids):
            raise ValueError(
                f"content must have one row per item id: got shape {content.shape} for {len(item_ids)} ids"
            )
        if not np.all(np.isfinite(content)):
            bad = np.flatnonzero(~np.isfinite(content).all(1))
            raise ValueError(f"content has NaN or infinite values in rows {bad[:10].tolist()}")
        return content


def embed_texts(texts: Sequence[str], model: str, batch_size: int = 64, max_length: int = 64,
                normalize: bool = True) -> np.ndarray:
    """Sentence embeddings of item texts (titles, descriptions) with a Hugging Face encoder.

    Mean of the last hidden state over real tokens (the attention mask excludes padding), as
    sentence-transformers models such as all-MiniLM-L6-v2 were trained; L2-normalised by default.

    Args:
        texts: one string per item.
        model: a local folder in Hugging Face format (or a Hub id when online).
        batch_size, max_length: tokenisation batch and truncation length.
        normalize: scale each embedding to unit length.
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    encoder = AutoModel.from_pretrained(model).eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt")
            hidden = encoder(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out.append(pooled.float().numpy())
    return np.concatenate(out) if out else np.zeros((0, encoder.config.hidden_size), np.float32)
