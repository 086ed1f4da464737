"""Interactions: validated user-item events as a users x items CSR matrix, plus splits and weighting."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

log = logging.getLogger(__name__)

__all__ = ["Interactions", "confidence", "decay"]


def _id_kind(value: Any) -> str:
    # numpy scalars and Python scalars of the same family must count as one kind, bool must not
    # pass as int (True == 1 would silently merge two different ids).
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, (int, np.integer)):
        return "int"
    if isinstance(value, (str, np.str_)):
        return "str"
    if isinstance(value, (float, np.floating)):
        return "float"
    return type(value).__name__


def plain_id(value: Any) -> Hashable:
    """numpy scalar -> Python scalar, so ids compare and serialise the way the user wrote them."""
    return value.item() if isinstance(value, np.generic) else value


def _encode_ids(column: pd.Series, name: str) -> tuple[np.ndarray, list]:
    missing = np.flatnonzero(column.isna().to_numpy())
    if len(missing):
        raise ValueError(
            f"{name} column has {len(missing)} missing ids (rows {missing[:10].tolist()}); "
            "drop those rows or fill them before building Interactions"
        )
    codes, uniques = pd.factorize(column, sort=False)
    ids = [plain_id(v) for v in uniques]
    kinds = sorted({_id_kind(v) for v in ids})
    if len(kinds) > 1:
        raise ValueError(
            f"{name} ids mix types ({', '.join(kinds)}): '1' and 1 would become two different {name}s. "
            f"Convert the column to one type first, e.g. df[{name!r}] = df[{name!r}].astype(str)"
        )
    return codes.astype(np.int32), ids


def to_seconds(values: Any) -> np.ndarray:
    """Timestamps as float64 (seconds for datetimes) so splits can take quantiles of them."""
    series = pd.Series(values)
    if pd.api.types.is_datetime64_any_dtype(series):
        # datetime64 of any unit -> float seconds since the epoch
        return series.astype("datetime64[ns]").astype("int64").to_numpy() / 1e9
    return series.to_numpy(dtype=np.float64)


def _read_source(source: Any) -> pd.DataFrame:
    if isinstance(source, pd.DataFrame):
        return source
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path)
    if hasattr(source, "to_pandas"):  # datasets.Dataset, pyarrow.Table, polars
        return source.to_pandas()
    raise ValueError(
        f"cannot read interactions from {type(source).__name__}: pass a pandas DataFrame, a CSV or "
        "parquet path, or a datasets.Dataset"
    )


def id_index(ids: Sequence) -> dict:
    """id -> its position in ``ids``."""
    return {value: i for i, value in enumerate(ids)}


class IdSpaces:
    """Sizes and id -> position maps of the two id spaces, for a class that holds ``user_ids`` and ``item_ids``."""

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    # id -> position: the row of a table; the row (user) or column (item) of ``Interactions.matrix``
    user_index = cached_property(lambda self: id_index(self.user_ids))
    item_index = cached_property(lambda self: id_index(self.item_ids))


@dataclass(eq=False)
class Interactions(IdSpaces):
    """User-item events with the ids kept as given; ``matrix`` is users x items CSR (never transposed).

    Rows index ``user_ids`` and columns index ``item_ids``. Build it with :meth:`from_frame`, which
    validates every row, sums duplicate (user, item) pairs and keeps the latest timestamp of each pair.

    Example:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"user": ["a", "a", "b"], "item": [10, 11, 10], "clicks": [1, 2, 5]})
        >>> inter = Interactions.from_frame(df, weight="clicks")
        >>> inter.matrix.shape, inter.user_ids, inter.item_ids
        ((2, 2), ['a', 'b'], [10, 11])
    """

    users: np.ndarray  # int32 row index per event
    items: np.ndarray  # int32 column index per event
    weights: np.ndarray  # float32, > 0
    user_ids: list
    item_ids: list
    times: np.ndarray | None = None  # float64 (seconds for datetimes)
    info: dict = field(default_factory=dict)

    @classmethod
    def from_frame(
        cls,
        source: Any,
        user: str = "user",
        item: str = "item",
        weight: str | None = None,
        time: str | None = None,
    ) -> Interactions:
        """Validate a frame (pandas, CSV/parquet path, ``datasets.Dataset``) and build Interactions.

        Args:
            source: the events, one row each.
            user: column of user ids (any hashable of one type).
            item: column of item ids (any hashable of one type).
            weight: optional column of positive weights (counts, ratings, dwell time); 1 when absent.
            time: optional column of timestamps (numbers or datetimes) for time splits.

        Raises:
            ValueError: empty frame, missing column, missing or mixed-type ids, or weights that are
                NaN, infinite or negative (the message lists the offending row numbers, 0-based).
        """
        df = _read_source(source)
        if len(df) == 0:
            raise ValueError("no interactions: the frame is empty")
        for name in (user, item, weight, time):
            if name is not None and name not in df.columns:
                raise ValueError(f"column {name!r} not in the frame (columns: {list(df.columns)})")
        users, user_ids = _encode_ids(df[user], "user")
        items, item_ids = _encode_ids(df[item], "item")
        if weight is None:
            weights = np.ones(len(df), dtype=np.float64)
        else:
            weights = pd.to_numeric(df[weight], errors="coerce").to_numpy(dtype=np.float64)
            bad = np.flatnonzero(~np.isfinite(weights) | (weights < 0))
            if len(bad):
                raise ValueError(
                    f"weight column {weight!r} has {len(bad)} NaN, infinite or negative values "
                    f"(rows {bad[:10].tolist()}); implicit feedback needs weights >= 0 - drop or "
                    "fix those rows (encode dislikes as a separate signal, not a negative weight)"
                )
        times = None if time is None else to_seconds(df[time])
        if times is not None and not np.all(np.isfinite(times)):
            bad = np.flatnonzero(~np.isfinite(times))
            raise ValueError(f"time column {time!r} has missing values (rows {bad[:10].tolist()})")
        return cls._build(users, items, weights, user_ids, item_ids, times)

    @classmethod
    def from_arrays(cls, users: Sequence, items: Sequence, weights=None, times=None) -> Interactions:
        """Same as :meth:`from_frame` on parallel sequences of user ids, item ids (and weights, times)."""
        df = pd.DataFrame({"user": list(users), "item": list(items)})
        if weights is not None:
            df["weight"] = np.asarray(weights)
        if times is not None:
            df["time"] = np.asarray(times)
        return cls.from_frame(
            df, weight=None if weights is None else "weight", time=None if times is None else "time"
        )

    @classmethod
    def _build(cls, users, items, weights, user_ids, item_ids, times=None, info=None) -> Interactions:
        """Sum duplicate pairs, drop zero weights, and return a new Interactions (ids unchanged)."""
        n_items = max(len(item_ids), 1)
        key = users.astype(np.int64) * n_items + items.astype(np.int64)
        uniq, inverse = np.unique(key, return_inverse=True)
        if len(uniq) < len(key):
            log.info("summed %d duplicate (user, item) rows", len(key) - len(uniq))
        summed = np.bincount(inverse, weights=weights, minlength=len(uniq))
        latest = None
        if times is not None:
            latest = np.full(len(uniq), -np.inf)
            np.maximum.at(latest, inverse, times)
        keep = summed > 0
        if not keep.all():
            log.info("dropped %d (user, item) pairs whose weights sum to 0", int((~keep).sum()))
        uniq = uniq[keep]
        return cls(
            users=(uniq // n_items).astype(np.int32),
            items=(uniq % n_items).astype(np.int32),
            weights=summed[keep].astype(np.float32),
            user_ids=list(user_ids),
            item_ids=list(item_ids),
            times=None if latest is None else latest[keep],
            info=dict(info or {}),
        )

    # -- views --------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.weights)

    def __repr__(self) -> str:
        return f"Interactions({self.n_users} users x {self.n_items} items, {len(self)} pairs)"

    @cached_property
    def matrix(self) -> sp.csr_matrix:
        """users x items CSR of summed weights (float32)."""
        m = sp.csr_matrix(
            (self.weights, (self.users, self.items)), shape=(self.n_users, self.n_items), dtype=np.float32
        )
        m.sort_indices()
        return m

    def user_counts(self) -> np.ndarray:
        """Number of distinct items per user (0 for users present only in the id map)."""
        return np.bincount(self.users, minlength=self.n_users)

    def item_counts(self) -> np.ndarray:
        """Number of distinct users per item."""
        return np.bincount(self.items, minlength=self.n_items)

    def to_frame(self) -> pd.DataFrame:
        """One row per (user, item) pair with columns user, item, weight (and time)."""
        df = pd.DataFrame(
            {
                "user": pd.Series(self.user_ids, dtype=object).iloc[self.users].to_numpy(),
                "item": pd.Series(self.item_ids, dtype=object).iloc[self.items].to_numpy(),
                "weight": self.weights,
            }
        )
        if self.times is not None:
            df["time"] = self.times
        return df

    def subset(self, mask: np.ndarray, **info) -> Interactions:
        """The events where ``mask`` is true, in the same id space (rows/columns unchanged)."""
        return Interactions(
            self.users[mask], self.items[mask], self.weights[mask], self.user_ids, self.item_ids,
            None if self.times is None else self.times[mask], {**self.info, **info},
        )

    def with_weights(self, weights: np.ndarray, **info) -> Interactions:
        return Interactions(
            self.users, self.items, np.asarray(weights, dtype=np.float32), self.user_ids, self.item_ids,
            self.times, {**self.info, **info},
        )

    @classmethod
    def concat(cls, parts: Sequence[Interactions]) -> Interactions:
        """Union of several Interactions by id (new users/items appended in order of appearance)."""
        frames = [p.to_frame() for p in parts]
        has_time = all(p.times is not None for p in parts)
        df = pd.concat(frames, ignore_index=True)
        return cls.from_frame(df, weight="weight", time="time" if has_time else None)


# -- confidence weighting ---------------------------------------------------------------------------
def duration_seconds(value: Any, name: str) -> float:
    """A positive span in the time column's units: a number, or a timedelta / "14D" (-> seconds)."""
    if isinstance(value, (str, pd.Timedelta)) or hasattr(value, "total_seconds"):
        value = pd.Timedelta(value).total_seconds()
    value = float(value)
    if not value > 0:  # also false for NaN
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


def decay(times: np.ndarray, half_life: Any, now: Any = None) -> np.ndarray:
    """Exponential time decay ``0.5 ** ((now - t) / half_life)``: 1 at ``now``, 1/2 one half-life before.

    Args:
        times: event times (seconds for datetime columns, as :class:`Interactions` stores them).
        half_life: in the same units, or a timedelta / string such as ``"14D"`` (read as seconds).
        now: the reference time (default: the latest event).

    Example:
        >>> decay(np.array([0.0, 10.0, 20.0]), half_life=10).tolist()
        [0.25, 0.5, 1.0]
    """
    half_life = duration_seconds(half_life, "half_life")
    times = np.asarray(times, dtype=np.float64)
    now = float(times.max()) if now is None else float(to_seconds([now])[0])
    late = int((times > now).sum())
    if late:
        raise ValueError(f"{late} events are later than now={now}: pass a later now, or drop those events")
    return 0.5 ** ((now - times) / half_life)


def confidence(inter: Interactions, scheme: str = "bm25", half_life: Any = None, now: Any = None,
               **params: float) -> Interactions:
    """Re-weight interactions into ALS confidences, optionally decayed by age.

    Schemes:
        ``"bm25"``: BM25 term weighting (k1=100, b=0.8 by default): damps heavy users and very
        popular items. ``"log"``: ``1 + alpha * log(1 + w / eps)`` (Hu, Koren & Volinsky 2008).
        ``"linear"``: ``alpha * w``. ``"none"``: the weights as they are (for decay alone).

    With ``half_life`` every weight is then multiplied by :func:`decay` of its event's time: an event
    one half-life older than ``now`` (default: the latest event) counts half as much. In a new period
    what is recent matters; the old period still teaches, at a discount. A (user, item) pair summed
    from repeated events decays from its latest one (the time :class:`Interactions` keeps).
    """
    w = inter.weights.astype(np.float64)
    if scheme == "none":
        new = w
    elif scheme == "linear":
        new = params.get("alpha", 1.0) * w
    elif scheme == "log":
        new = 1.0 + params.get("alpha", 1.0) * np.log1p(w / params.get("eps", 1.0))
    elif scheme == "bm25":
        k1, b = params.get("k1", 100.0), params.get("b", 0.8)
        n_users = max(inter.n_users, 1)
        # idf floors at a small positive value: an item that every user touched would otherwise get
        # weight <= 0, which ALS reads as "disliked".
        idf = np.maximum(np.log(n_users) - np.log1p(inter.item_counts()), 1e-3)
        length = np.bincount(inter.users, weights=w, minlength=inter.n_users)
        norm = (1.0 - b) + b * length / max(length[length > 0].mean(), 1e-12)
        new = w * (k1 + 1.0) / (k1 * norm[inter.users] + w) * idf[inter.items]
    else:
        raise ValueError(f"unknown confidence scheme {scheme!r}: use 'bm25', 'log', 'linear' or 'none'")
    info = {"confidence": scheme}
    if half_life is not None:
        if inter.times is None:
            raise ValueError("half_life needs timestamps: build Interactions with time='<column>'")
        new = new * decay(inter.times, half_life, now)
        info["half_life"] = duration_seconds(half_life, "half_life")
    return inter.with_weights(new, **info)


_MOVED_TO_SPLITS = ("Split", "split_by_time", "random_split", "leave_k_out")


def __getattr__(name: str):
    # The splits moved to transferkit.recsys.splits; the old import path keeps working.
    if name in _MOVED_TO_SPLITS:
        from . import splits

        return getattr(splits, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# The names these helpers had before they became public (imported across modules).
_plain, _to_seconds, _duration = plain_id, to_seconds, duration_seconds
