"""SequentialRecommender: what a user watched last, through self-attention, served like every model here.

A bag-of-items model (tables, item-item, EASE) scores a user from the set of items they touched; this
one reads them in time order (:mod:`transferkit.recsys.sasrec`), so "the next item follows from the
last one" is something it can learn. It trains through ``transferkit.common.Trainer`` and serves
through the shared ``recommend`` / ``evaluate`` contract: a user is represented by their latest
``max_len`` events in the history given at call time (or the training history), so an unknown user
is served with no refit, and a user with no events falls back to popularity.

Transfer: :meth:`SequentialRecommender.from_tables` starts the item vectors from EmbeddingTables rows
(ALS / BPR; matched by id, projected when widths differ), :meth:`from_content` from content
embeddings (e.g. :func:`transferkit.recsys.embed_texts` on titles), and :meth:`add_items` brings in
items that only have content.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import OnUnknown, Recommender, UserScores
from .data import Interactions, id_index, plain_id
from .sasrec import SASRecNet, SequentialConfig
from .tables import EmbeddingTables

log = logging.getLogger(__name__)

__all__ = ["SequentialRecommender", "sequences", "windows"]


def sequences(inter: Interactions, item_cols: np.ndarray | None = None) -> list[np.ndarray]:
    """Each user's item columns in time order (ties by column), one array per row of ``inter``.

    ``item_cols`` maps ``inter``'s item columns to another id space (-1: dropped).
    """
    if inter.times is None:
        raise ValueError("a sequential model needs the order of events: build Interactions with time='<column>'")
    items = inter.items.astype(np.int64) if item_cols is None else item_cols[inter.items]
    keep = items >= 0
    users, items, times = inter.users[keep], items[keep], inter.times[keep]
    order = np.lexsort((items, times, users))
    bounds = np.searchsorted(users[order], np.arange(inter.n_users + 1))
    ordered = items[order]
    return [ordered[bounds[u]:bounds[u + 1]] for u in range(inter.n_users)]


def windows(seqs: Sequence[np.ndarray], max_len: int, latest: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of training: each sequence cut from its end into windows of ``max_len`` + 1
    items (only the last window with ``latest``); inputs are the window without its last item, targets
    shifted by one; 0 pads on the left."""
    inputs, targets = [], []
    for seq in seqs:
        seq = np.asarray(seq, np.int64) + 1
        ends = range(len(seq), 1, -max_len)
        for end in ends[:1] if latest else ends:
            chunk = seq[max(0, end - max_len - 1):end]
            x, y = np.zeros(max_len, np.int64), np.zeros(max_len, np.int64)
            x[max_len - len(chunk) + 1:], y[max_len - len(chunk) + 1:] = chunk[:-1], chunk[1:]
            inputs.append(x)
            targets.append(y)
    if not inputs:
        raise ValueError("no user has two or more events in order: nothing to learn a next item from")
    return torch.from_numpy(np.stack(inputs)), torch.from_numpy(np.stack(targets))


def _left_pad(seqs: Sequence[np.ndarray], max_len: int) -> torch.Tensor:
    out = np.zeros((len(seqs), max_len), np.int64)
    for r, seq in enumerate(seqs):
        tail = np.asarray(seq[-max_len:], np.int64) + 1
        if len(tail):
            out[r, max_len - len(tail):] = tail
    return torch.from_numpy(out)


class SequentialRecommender(Recommender):
    """Self-attention over each user's latest items (SASRec), initialised from scratch, tables or content.

    Args:
        item_ids: the catalogue (columns of the scores).
        config: the architecture and how pretrained item rows train (:class:`SequentialConfig`).
        base: optional (len(item_ids), width) pretrained item rows.
        source: what ``base`` came from (recorded, e.g. ``"tables:als"``).

    Example:
        >>> inter = Interactions.from_arrays(["a", "a", "b", "b"], ["x", "y", "x", "y"], times=[1, 2, 1, 2])
        >>> model = SequentialRecommender(inter.item_ids, SequentialConfig(dim=8, heads=2, max_len=4))
        >>> result = model.fit(inter, epochs=1)
        >>> model.recommend(["new"], N=1, filter_seen=False, unknown="cold_start",
        ...                 history=Interactions.from_arrays(["new"], ["x"], times=[0]))[0].shape
        (1, 1)
    """

    def __init__(self, item_ids: Sequence, config: SequentialConfig | None = None,
                 base: np.ndarray | None = None, source: str = "scratch") -> None:
        self.config = config or SequentialConfig()
        self.item_ids = [plain_id(i) for i in item_ids]
        if len(set(self.item_ids)) != len(self.item_ids):
            raise ValueError("item_ids has duplicates: each item needs exactly one row")
        self.net = SASRecNet(len(self.item_ids), self.config, base)
        self.source = source
        self.user_ids: list = []
        self.user_counts = np.zeros(0, np.int64)
        self.item_counts = np.zeros(len(self.item_ids), np.int64)
        self.history: Interactions | None = None
        self.content_mapper: Any = None

    # -- transfer -------------------------------------------------------------------------------------
    @classmethod
    def from_tables(cls, tables: EmbeddingTables, item_ids: Sequence | None = None,
                    config: SequentialConfig | None = None, item_content: np.ndarray | None = None,
                    content_ids: Sequence | None = None) -> SequentialRecommender:
        """Item vectors start from the tables' item rows, matched by id (bias columns included).

        Args:
            tables: pretrained tables (ALS, BPR, ...).
            item_ids: the catalogue of the new model (default: the tables'); items the tables lack
                start from content when ``item_content`` is given, else from a zero row (logged).
            item_content: optional content rows of ``content_ids`` (default ``item_ids``): a
                ``ContentMapper`` (ridge) learns content -> table row on shared items and predicts
                the rows of items the tables lack, now and in :meth:`add_items`.
        """
        item_ids = list(tables.item_ids if item_ids is None else item_ids)
        rows = np.array([tables.item_index.get(plain_id(i), -1) for i in item_ids], dtype=np.int64)
        base = np.zeros((len(item_ids), tables.item_factors.shape[1]), np.float32)
        base[rows >= 0] = tables.item_factors[rows[rows >= 0]]
        mapper = None
        if item_content is not None:
            from .content import ContentMapper

            content_ids = list(item_ids if content_ids is None else content_ids)
            mapper = ContentMapper(kind="ridge").fit(tables, content_ids, np.asarray(item_content))
            index = id_index(content_ids)
            missing = [r for r in np.flatnonzero(rows < 0) if plain_id(item_ids[r]) in index]
            if missing:
                content = np.asarray(item_content)[[index[plain_id(item_ids[r])] for r in missing]]
                base[missing] = mapper.predict(content)
            rows[missing] = 0  # they have rows now
        if (rows < 0).any():
            log.info("from_tables: %d of %d items are not in the tables; they start from zero rows",
                     int((rows < 0).sum()), len(item_ids))
        model = cls(item_ids, config, base, source=f"tables:{tables.model}")
        model.content_mapper = mapper
        return model

    @classmethod
    def from_content(cls, item_ids: Sequence, content: np.ndarray,
                     config: SequentialConfig | None = None) -> SequentialRecommender:
        """Item vectors start from content embeddings (one row per item id), projected to ``dim``."""
        content = np.asarray(content, np.float32)
        if content.ndim != 2 or content.shape[0] != len(item_ids):
            raise ValueError(f"content must have one row per item id: got {content.shape} for {len(item_ids)} ids")
        return cls(item_ids, config, content, source="content")

    def add_items(self, item_ids: Sequence, content: np.ndarray) -> SequentialRecommender:
        """Append items that have only content (no events): their vectors come through the same
        projection as the pretrained rows (content models), or through the ContentMapper fitted in
        :meth:`from_tables`. Served at once; their residual rows start at zero."""
        net = self.net
        if net.mode == "scratch":
            raise ValueError("a model trained from scratch has no content path: build it with from_content or "
                             "from_tables(..., item_content=) to add items from content")
        content = np.asarray(content, np.float32)
        new = [plain_id(i) for i in item_ids]
        clash = set(new) & set(self.item_ids)
        if clash:
            raise ValueError(f"{len(clash)} items are already in the model (e.g. {sorted(map(str, clash))[:3]})")
        if content.shape[0] != len(new):
            raise ValueError(f"content must have one row per new item: got {content.shape[0]} for {len(new)}")
        if self.source == "content":
            rows = content
        elif self.content_mapper is not None:
            rows = self.content_mapper.predict(content)
        else:
            raise ValueError("these tables-initialised items have no content map: pass item_content= to from_tables")
        rows = torch.as_tensor(rows, dtype=torch.float32)
        if rows.shape[1] != net.base.shape[1]:
            raise ValueError(f"content width {rows.shape[1]} differs from the model's rows ({net.base.shape[1]})")
        with torch.no_grad():
            base = torch.cat([net.base.detach(), rows])
            if isinstance(net.base, torch.nn.Parameter):
                net.base = torch.nn.Parameter(base)
            else:
                net.base = base
            if net.delta is not None:
                net.delta = torch.nn.Parameter(torch.cat([net.delta.detach(), torch.zeros(len(new), net.delta.shape[1])]))
        self.item_ids = self.item_ids + new
        self.item_counts = np.concatenate([self.item_counts, np.zeros(len(new), np.int64)])
        self.__dict__.pop("item_index", None)  # the cached id map is stale
        return self

    # -- training -------------------------------------------------------------------------------------
    def fit(self, train: Interactions, config: Any = None, callbacks: Sequence = (), **loop: Any):
        """Train on ``train``'s events in time order through ``transferkit.common.Trainer``.

        Args:
            train: events with times; items outside this model's catalogue are skipped (logged).
            config: a ``TrainConfig`` (epochs, batch_size, lr, precision, save_steps, resume, ...).
            callbacks: Trainer callbacks (their state is checkpointed).
            **loop: without ``config``, TrainConfig fields to change from this model's defaults
                (20 epochs, batch 128, lr 1e-3, no weight decay, a temporary output folder).

        Returns:
            the Trainer's ``TrainResult``.
        """
        from transferkit.common import TrainConfig, Trainer

        if config is not None and loop:
            raise ValueError(f"pass a TrainConfig or keyword settings ({sorted(loop)}), not both")
        if config is None:
            from accelerate.utils import broadcast_object_list

            from transferkit.common.trainer import process_state

            procs = process_state()
            # under several processes they all write into the main process's temporary folder
            folder = [tempfile.mkdtemp(prefix="transferkit-seq-") if procs.is_main_process else None]
            if procs.num_processes > 1:
                broadcast_object_list(folder)
            defaults = {"output_dir": folder[0], "epochs": 20, "batch_size": 128,
                        "lr": 1e-3, "weight_decay": 0.0, "warmup_ratio": 0.0, "progress": False, "plot": False}
            config = TrainConfig(**{**defaults, **loop})
        cols = np.array([self.item_index.get(i, -1) for i in train.item_ids], dtype=np.int64)
        unknown = int((cols[train.items] < 0).sum())
        if unknown:
            log.info("fit: skipped %d events on items outside the model's catalogue", unknown)
        inputs, targets = windows(sequences(train, cols), self.config.max_len,
                                  latest=self.config.train_windows == "latest")
        self.user_ids = list(train.user_ids)
        self.__dict__.pop("user_index", None)
        self.user_counts = train.user_counts()
        counts = np.bincount(cols[train.items][cols[train.items] >= 0], minlength=len(self.item_ids))
        self.item_counts = counts.astype(np.int64)
        self.history = train
        trainer = Trainer(self.net, config, compute_loss=lambda net, batch: net(*batch), callbacks=callbacks,
                          run_info={"recsys_model": "sequential", "source": self.source,
                                    "sequential": asdict(self.config)})
        result = trainer.fit(torch.utils.data.TensorDataset(inputs, targets))
        self.net = trainer.model
        return result

    # -- serving --------------------------------------------------------------------------------------
    def user_vectors(self, seqs: Sequence[np.ndarray], batch_size: int = 512) -> np.ndarray:
        """(len(seqs), dim) query vectors of item-column sequences (the latest ``max_len`` count)."""
        net, was_training = self.net, self.net.training
        net.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(seqs), batch_size):
                out.append(net.last_state(_left_pad(seqs[start:start + batch_size], self.config.max_len)))
        net.train(was_training)
        return torch.cat(out).float().numpy() if out else np.zeros((0, self.config.dim), np.float32)

    def item_matrix(self) -> np.ndarray:
        with torch.no_grad():
            return self.net.item_vectors().detach().float().cpu().numpy()

    def _sequences_of(self, users: list, history: Interactions | None) -> list[np.ndarray]:
        """Each user's events in ``history``; users with none there fall back to the training history."""
        found: list[np.ndarray] = [np.zeros(0, np.int64)] * len(users)
        for source in (history, self.history):
            if source is None:
                continue
            missing = [r for r, s in enumerate(found) if not len(s)]
            rows = [source.user_index.get(plain_id(users[r]), -1) for r in missing]
            if not any(row >= 0 for row in rows):
                continue
            cols = np.array([self.item_index.get(i, -1) for i in source.item_ids], dtype=np.int64)
            wanted = np.array(sorted({row for row in rows if row >= 0}))
            part = source.subset(np.isin(source.users, wanted))
            seqs = sequences(part, cols)
            for r, row in zip(missing, rows):
                if row >= 0:
                    found[r] = seqs[row]
        return found

    def _scorer(self, users: list, history: Interactions | None, unknown: OnUnknown) -> UserScores:
        if self.history is None and not self.user_ids:
            self._rows(users, {}, "user", unknown)  # an untrained model knows no user
        else:
            self._user_rows(users, unknown)  # the unknown-user rule, as every model applies it
        seqs = self._sequences_of(users, history)
        empty = np.array([len(s) == 0 for s in seqs], dtype=bool)
        vectors = np.zeros((len(users), self.config.dim), np.float32)
        idx = np.flatnonzero(~empty)
        if len(idx):
            vectors[idx] = self.user_vectors([seqs[i] for i in idx])
        items = self.item_matrix()
        return UserScores(lambda a, b: vectors[a:b] @ items.T, self._seen_matrix(users, history), empty)

    # -- persistence ----------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """``sequential.safetensors`` (weights, counts) and ``sequential.json`` (ids, settings)."""
        arrays = {f"net.{k}": v.detach().cpu().contiguous().numpy() for k, v in self.net.state_dict().items()}
        arrays.update(user_counts=self.user_counts, item_counts=self.item_counts)
        info = {"format": "transferkit.recsys.SequentialRecommender/1", "config": asdict(self.config),
                "source": self.source, "mode": self.net.mode,
                "base_width": None if self.net.mode == "scratch" else int(self.net.base.shape[1])}
        return self._save_files(folder, "sequential", arrays, info)

    @classmethod
    def load(cls, folder: str | Path) -> SequentialRecommender:
        """A model written by :meth:`save` (no history: pass ``history=`` to ``recommend``)."""
        info, arrays = cls._load_files(folder, "sequential", "SequentialRecommender.save")
        config = SequentialConfig(**info["config"])
        n = len(info["item_ids"])
        base = None if info["mode"] == "scratch" else np.zeros((n, info["base_width"]), np.float32)
        model = cls(info["item_ids"], config, base, source=info["source"])
        state = {k[4:]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith("net.")}
        model.net.load_state_dict(state, strict=True)
        model.user_ids = info["user_ids"]
        model.user_counts, model.item_counts = arrays["user_counts"], arrays["item_counts"]
        return model
