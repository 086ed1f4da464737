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
from .sasrec import SASRecNet, SequentialConfig, gap_buckets, period_buckets
from .tables import EmbeddingTables

log = logging.getLogger(__name__)

__all__ = ["SequentialRecommender", "event_sequences", "sequences", "windows"]


def event_sequences(inter: Interactions, item_cols: np.ndarray | None = None) -> list[tuple[np.ndarray, ...]]:
    """Each user's (item columns, times, weights) in time order (ties by column), one per row of ``inter``.

    ``item_cols`` maps ``inter``'s item columns to another id space (-1: dropped).
    """
    if inter.times is None:
        raise ValueError("a sequential model needs the order of events: build Interactions with time='<column>'")
    items = inter.items.astype(np.int64) if item_cols is None else item_cols[inter.items]
    keep = items >= 0
    users, items, times = inter.users[keep], items[keep], inter.times[keep].astype(np.float64)
    weights = inter.weights[keep].astype(np.float64)
    order = np.lexsort((items, times, users))
    bounds = np.searchsorted(users[order], np.arange(inter.n_users + 1))
    cols = (items[order], times[order], weights[order])
    return [tuple(c[bounds[u]:bounds[u + 1]] for c in cols) for u in range(inter.n_users)]


def sequences(inter: Interactions, item_cols: np.ndarray | None = None) -> list[np.ndarray]:
    """Each user's item columns in time order (ties by column), one array per row of ``inter``.

    ``item_cols`` maps ``inter``'s item columns to another id space (-1: dropped).
    """
    return [events[0] for events in event_sequences(inter, item_cols)]


def windows(seqs: Sequence[np.ndarray], max_len: int, latest: bool = False,
            aligned: Sequence[Sequence[np.ndarray]] = ()) -> tuple[torch.Tensor, ...]:
    """(inputs, targets) of training: each sequence cut from its end into windows of ``max_len`` + 1
    items (only the last window with ``latest``); inputs are the window without its last item, targets
    shifted by one; 0 pads on the left.

    Each entry of ``aligned`` holds one array per sequence (same lengths, e.g. event times): it comes
    back as a float64 (windows, max_len) tensor holding the value at each target's position (0 where
    padded), after inputs and targets.
    """
    inputs, targets = [], []
    extra: list[list[np.ndarray]] = [[] for _ in aligned]
    for r, seq in enumerate(seqs):
        seq = np.asarray(seq, np.int64) + 1
        ends = range(len(seq), 1, -max_len)
        for end in ends[:1] if latest else ends:
            start = max(0, end - max_len - 1)
            chunk = seq[start:end]
            x, y = np.zeros(max_len, np.int64), np.zeros(max_len, np.int64)
            x[max_len - len(chunk) + 1:], y[max_len - len(chunk) + 1:] = chunk[:-1], chunk[1:]
            inputs.append(x)
            targets.append(y)
            for out, values in zip(extra, aligned):
                row = np.zeros(max_len, np.float64)
                row[max_len - len(chunk) + 1:] = np.asarray(values[r], np.float64)[start + 1:end]
                out.append(row)
    if not inputs:
        raise ValueError("no user has two or more events in order: nothing to learn a next item from")
    return (torch.from_numpy(np.stack(inputs)), torch.from_numpy(np.stack(targets)),
            *(torch.from_numpy(np.stack(out)) for out in extra))


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
        self.time_end: float | None = None  # the latest training event: where calendar periods count from
        # "now" for time models: a time; None: the later of time_end and a user's last event; "last_event": each
        # user's own last event (serving within a session: the request follows the latest event at once)
        self.serve_time: float | str | None = None

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
            if net.bias is not None:  # a new item starts at the mean offset: no events say it is better or worse
                net.bias = torch.nn.Parameter(torch.cat([net.bias.detach(), net.bias.detach().mean().repeat(len(new))]))
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
        tensors = self._training_windows(train, cols)
        self.user_ids = list(train.user_ids)
        self.__dict__.pop("user_index", None)
        self.user_counts = train.user_counts()
        counts = np.bincount(cols[train.items][cols[train.items] >= 0], minlength=len(self.item_ids))
        self.item_counts = counts.astype(np.int64)
        self.history = train
        trainer = Trainer(self.net, config, compute_loss=lambda net, batch: net(*batch), callbacks=callbacks,
                          run_info={"recsys_model": "sequential", "source": self.source,
                                    "sequential": asdict(self.config)})
        result = trainer.fit(torch.utils.data.TensorDataset(*tensors))
        self.net = trainer.model
        return result

    def _training_windows(self, train: Interactions, cols: np.ndarray) -> tuple[torch.Tensor, ...]:
        """The Trainer's tensors: inputs, targets (below ``target_threshold``: 0, not trained on) and, for
        time models, each target's gap and period buckets."""
        cfg = self.config
        events = event_sequences(train, cols)
        gaps = [np.diff(times, prepend=times[:1]) for _, times, _ in events]
        x, y, times, gap, weight = windows([e[0] for e in events], cfg.max_len, latest=cfg.train_windows == "latest",
                                           aligned=([e[1] for e in events], gaps, [e[2] for e in events]))
        if cfg.target_threshold > 0:
            kept = (y > 0) & (weight >= cfg.target_threshold)
            if not kept.any():
                raise ValueError(f"no event reaches target_threshold={cfg.target_threshold:g}: lower it, or pass "
                                 "Interactions whose weights are the ratings")
            y = torch.where(kept, y, torch.zeros_like(y))
        self.time_end = float(train.times.max())
        if cfg.time_features == "none":
            return x, y
        return (x, y, torch.from_numpy(gap_buckets(gap.numpy())),
                torch.from_numpy(period_buckets(times.numpy(), self.time_end, cfg.period_days, cfg.periods)))

    def _time_buckets(self, last: np.ndarray) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Gap and period buckets of the next event for users whose last events were at ``last``."""
        cfg = self.config
        if cfg.time_features == "none":
            return None, None
        if self.time_end is None:
            raise ValueError("this time model has not been trained: fit it, or load a saved one")
        if isinstance(self.serve_time, str) and self.serve_time != "last_event":
            raise ValueError(f"serve_time={self.serve_time!r}: pass a time, None (the end of training) or 'last_event'")
        if self.serve_time is None:
            now = np.maximum(self.time_end, last)
        elif self.serve_time == "last_event":
            now = last
        else:
            now = np.full(len(last), float(self.serve_time))
        periods = period_buckets(now, self.time_end, cfg.period_days, cfg.periods)
        return torch.from_numpy(gap_buckets(now - last)), torch.from_numpy(periods)

    # -- serving --------------------------------------------------------------------------------------
    def user_vectors(self, seqs: Sequence[np.ndarray], batch_size: int = 512,
                     last_times: np.ndarray | None = None) -> np.ndarray:
        """(len(seqs), dim) query vectors of item-column sequences (the latest ``max_len`` count);
        time models also need each sequence's last event time (``last_times``)."""
        if self.config.time_features != "none" and last_times is None:
            raise ValueError("this model reads time: pass last_times (each user's latest event time)")
        gaps, periods = self._time_buckets(np.asarray(last_times, np.float64)) if last_times is not None else (None, None)
        net, was_training = self.net, self.net.training
        net.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(seqs), batch_size):
                part = slice(start, start + batch_size)
                out.append(net.last_state(_left_pad(seqs[part], self.config.max_len),
                                          None if gaps is None else gaps[part],
                                          None if periods is None else periods[part]))
        net.train(was_training)
        return torch.cat(out).float().numpy() if out else np.zeros((0, self.config.dim), np.float32)

    def item_matrix(self) -> np.ndarray:
        with torch.no_grad():
            return self.net.item_vectors().detach().float().cpu().numpy()

    def _sequences_of(self, users: list, history: Interactions | None) -> list[tuple[np.ndarray, ...]]:
        """Each user's (items, times, weights) in ``history``; users with none there fall back to the
        training history."""
        empty = (np.zeros(0, np.int64), np.zeros(0), np.zeros(0))
        found: list[tuple[np.ndarray, ...]] = [empty] * len(users)
        for source in (history, self.history):
            if source is None:
                continue
            missing = [r for r, s in enumerate(found) if not len(s[0])]
            rows = [source.user_index.get(plain_id(users[r]), -1) for r in missing]
            if not any(row >= 0 for row in rows):
                continue
            cols = np.array([self.item_index.get(i, -1) for i in source.item_ids], dtype=np.int64)
            wanted = np.array(sorted({row for row in rows if row >= 0}))
            part = source.subset(np.isin(source.users, wanted))
            seqs = event_sequences(part, cols)
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
        empty = np.array([len(s[0]) == 0 for s in seqs], dtype=bool)
        vectors = np.zeros((len(users), self.config.dim), np.float32)
        idx = np.flatnonzero(~empty)
        if len(idx):
            vectors[idx] = self.user_vectors([seqs[i][0] for i in idx],
                                             last_times=np.array([seqs[i][1][-1] for i in idx]))
        items = self.item_matrix()
        bias = 0.0 if self.net.bias is None else self.net.bias.detach().float().cpu().numpy()
        return UserScores(lambda a, b: vectors[a:b] @ items.T + bias, self._seen_matrix(users, history), empty)

    # -- persistence ----------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """``sequential.safetensors`` (weights, counts) and ``sequential.json`` (ids, settings)."""
        arrays = {f"net.{k}": v.detach().cpu().contiguous().numpy() for k, v in self.net.state_dict().items()}
        arrays.update(user_counts=self.user_counts, item_counts=self.item_counts)
        info = {"format": "transferkit.recsys.SequentialRecommender/1", "config": asdict(self.config),
                "source": self.source, "mode": self.net.mode,
                "base_width": None if self.net.mode == "scratch" else int(self.net.base.shape[1]),
                "time_end": self.time_end}
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
        model.time_end = info.get("time_end")
        return model
