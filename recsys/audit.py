"""Audit an events table before training on it: what a model would silently learn from bad rows.

Duplicated events, bots and test accounts with absurd counts, timestamps that cannot be read or
cannot be true, ids that differ only by case or whitespace (two rows of the embedding table for one
entity), and items that a content table has nothing for (a ``ContentMapper`` cannot place them).
The audit reads the table and never writes to it; :meth:`EventAudit.write_clean` writes a cleaned
copy elsewhere that :meth:`Interactions.from_frame` and ``transferkit recsys pretrain`` accept.
"""

from __future__ import annotations

import dataclasses
import json
import time as _time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .config import AUDIT_REASONS, EventAuditConfig, InteractionColumns

__all__ = ["EventAudit", "audit"]

MEANING = {
    "missing_id": "the user or item id is empty",
    "bad_weight": "the weight is not a finite number >= 0",
    "unparseable_time": "the timestamp is empty, or neither a number nor a date",
    "time_out_of_range": "the timestamp is before min_time",
    "future_time": "the timestamp is after now",
    "duplicate_event": "same user, item and time as an earlier row (all columns, without a time column)",
    "repeated_pair": "same user and item as an earlier row, at another time",
    "heavy_user": "a user with an absurd number of events (bot, test account)",
    "heavy_item": "an item with an absurd number of events (placeholder, test item)",
    "id_variant": "an id that differs from another only by case or whitespace; rewritten to one spelling",
    "no_content": "an item the content table has no row for, or only an empty one",
}
# A table where almost every user has the same count has MAD 0: without a floor on the scale (in log
# units), a user with one event more than the rest would be flagged. 0.5 keeps the smallest flagged
# count at exp(3.5 * 0.5) ~ 5.8x the median with the default heavy_z.
MIN_LOG_SCALE = 0.5
_UNIT_SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9, "index": 1.0}
FLAG_COLUMNS = ["row", "user", "item", "time", "reason", "detail"]


def _read_table(source: Any, what: str) -> pd.DataFrame:
    """A CSV (every column read as text, so ids and times come back exactly as written) or parquet file."""
    if isinstance(source, pd.DataFrame):
        return source.reset_index(drop=True)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{what} {path} does not exist")
        if path.suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype=str, sep="\t" if path.suffix == ".tsv" else ",")
    if hasattr(source, "to_pandas"):  # datasets.Dataset, pyarrow.Table, polars
        return source.to_pandas()
    raise ValueError(f"cannot read {what} from {type(source).__name__}: pass a DataFrame or a CSV or parquet path")


def _key(values: pd.Series) -> pd.Series:
    """The form two spellings of one id share: whitespace trimmed and collapsed, case folded."""
    return values.astype(str).str.split().str.join(" ").str.casefold()


def _is_text(values: pd.Series) -> np.ndarray:
    return values.map(lambda v: isinstance(v, str)).to_numpy(dtype=bool)


def _spellings(raw: pd.Series, preferred: dict | None = None) -> dict:
    """raw spelling -> the one spelling of its group, for text ids written more than one way.

    The spelling is the content table's (``preferred``: key -> spelling) when it has the id, otherwise
    the most frequent whitespace-tidy spelling in the events (the first seen on a tie).
    """
    text = raw[_is_text(raw) & raw.notna().to_numpy()]
    if text.empty:
        return {}
    tidy = text.str.split().str.join(" ")
    groups = pd.DataFrame({"key": tidy.str.casefold(), "tidy": tidy})
    counts = groups.groupby(["key", "tidy"], sort=False).size().reset_index(name="n")
    best = counts.loc[counts.groupby("key", sort=False)["n"].idxmax()]
    canonical = dict(zip(best["key"], best["tidy"]))
    canonical.update({k: v for k, v in (preferred or {}).items() if k in canonical})
    pairs = pd.DataFrame({"raw": text, "key": groups["key"]}).drop_duplicates("raw")
    return {r: canonical[k] for r, k in zip(pairs["raw"], pairs["key"]) if r != canonical[k]}


def _parse_times(values: pd.Series, unit: str) -> tuple[np.ndarray, np.ndarray]:
    """(Unix seconds, NaN where unreadable; whether each value was a number as written)."""
    if pd.api.types.is_datetime64_any_dtype(values):
        stamps = pd.to_datetime(values, utc=True)
        seconds = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(dtype=np.float64)
        return seconds, np.zeros(len(values), dtype=bool)
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    numeric = np.isfinite(numbers)
    seconds = np.where(numeric, numbers * _UNIT_SECONDS[unit], np.nan)
    rest = ~numeric & values.notna().to_numpy()
    if rest.any() and unit != "index":
        stamps = pd.to_datetime(values[rest].astype(str), errors="coerce", utc=True, format="mixed")
        seconds[rest] = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(dtype=np.float64)
    return seconds, numeric


def _date(seconds: float) -> str:
    return pd.Timestamp(seconds, unit="s", tz="UTC").strftime("%Y-%m-%d %H:%M:%S")


def _heavy(ids: pd.Series, kind: str, config: EventAuditConfig) -> tuple[dict, dict]:
    """(id -> detail for heavy ids, the threshold as measured) from the events per id."""
    counts = ids.value_counts()
    logs = np.log(counts.to_numpy(dtype=np.float64))
    median = float(np.median(logs))
    scale = max(1.4826 * float(np.median(np.abs(logs - median))), MIN_LOG_SCALE)
    z = (logs - median) / scale
    share = counts.to_numpy() / len(ids)
    heavy = z > config.heavy_z
    if config.heavy_share is not None:
        heavy |= share > config.heavy_share
    heavy &= counts.to_numpy() >= config.heavy_min
    info = {"median_events": round(float(np.exp(median)), 1), "log_scale": round(scale, 3),
            "flagged_above_events": round(max(float(np.exp(median + config.heavy_z * scale)), config.heavy_min - 1), 1),
            "max_events": int(counts.max()), "flagged": int(heavy.sum())}
    details = {i: f"{kind} {i!r}: {n} events, {s:.1%} of all (median {info['median_events']:g}, modified z {zi:.1f})"
               for i, n, s, zi, h in zip(counts.index, counts.to_numpy(), share, z, heavy) if h}
    return details, info


def _content(items: Any, item_column: str, items_id: str | None) -> tuple[set, set, dict]:
    """(keys with content, keys listed, key -> the content table's spelling) of the content given."""
    if isinstance(items, tuple) and len(items) == 2 and not isinstance(items[0], str):
        ids, content = items  # the (item_ids, embeddings) pair a ContentMapper takes
        content = np.asarray(content, dtype=np.float64)
        if content.ndim != 2 or len(content) != len(ids):
            raise ValueError(f"items=(ids, embeddings) needs one embedding row per id: got {content.shape} "
                             f"for {len(ids)} ids")
        keys = _key(pd.Series(list(ids), dtype=object))
        has = np.isfinite(content).all(axis=1)
        spelled = pd.Series(list(ids), dtype=object)
    elif isinstance(items, (pd.DataFrame, str, Path)) or hasattr(items, "to_pandas"):
        table = _read_table(items, "items table")
        column = items_id or item_column
        if column not in table.columns:
            raise ValueError(f"the items table has no column {column!r} (columns: {list(table.columns)}): pass "
                             "items_id='<its item id column>' (--items-id on the command line)")
        spelled = table[column]
        keys = _key(spelled)
        rest = table.drop(columns=[column])
        blank = rest.isna() | rest.apply(lambda c: c.map(lambda v: isinstance(v, str) and not v.strip()))
        has = ~blank.all(axis=1).to_numpy() if len(rest.columns) else np.ones(len(table), dtype=bool)
    elif isinstance(items, Sequence):
        spelled = pd.Series(list(items), dtype=object)
        keys = _key(spelled)
        has = np.ones(len(keys), dtype=bool)
    else:
        raise ValueError(f"items must be a content table (DataFrame or path), an (item_ids, embeddings) pair or "
                         f"a list of item ids, got {type(items).__name__}")
    text = _is_text(spelled)
    preferred = {k: " ".join(s.split()) for k, s, t in zip(keys, spelled, text) if t}
    return set(keys[has]), set(keys), preferred


@dataclass
class EventAudit:
    """What :func:`audit` found: one row of ``flagged`` per (row, reason), and how to clean.

    ``flagged`` has columns row (0-based among the data rows, as the loaders' errors count), user,
    item, time (as written), reason (one of :data:`~transferkit.recsys.config.AUDIT_REASONS`), detail.
    """

    frame: pd.DataFrame  # the events as read; never written back
    flagged: pd.DataFrame
    columns: InteractionColumns
    config: EventAuditConfig
    spellings: dict  # "user" / "item" -> {raw spelling: the one spelling}
    info: dict  # what was measured: sizes, time range, heavy thresholds
    clean_times: np.ndarray | None = None  # the time column as written in a cleaned copy

    def counts(self) -> dict[str, int]:
        """Flagged rows per reason (every reason, 0 when none)."""
        found = self.flagged["reason"].value_counts()
        return {r: int(found.get(r, 0)) for r in AUDIT_REASONS}

    def rows(self, reason: str) -> list[int]:
        """The rows flagged for ``reason``."""
        return sorted(self.flagged.loc[self.flagged["reason"] == reason, "row"].tolist())

    def clean(self) -> pd.DataFrame:
        """The events without the rows of the reasons in ``config.drop``, ids in one spelling each."""
        dropped = self.flagged.loc[self.flagged["reason"].isin(self.config.drop), "row"].unique()
        keep = np.ones(len(self.frame), dtype=bool)
        keep[dropped] = False
        out = self.frame.loc[keep].copy()
        for role in ("user", "item"):
            column, mapping = getattr(self.columns, role), self.spellings[role]
            if mapping:
                out[column] = out[column].map(lambda v, m=mapping: m.get(v, v) if isinstance(v, str) else v)
        if self.clean_times is not None:
            out[self.columns.time] = self.clean_times[keep]
        return out.reset_index(drop=True)

    def write_clean(self, path: str | Path) -> Path:
        """The cleaned events as a CSV at ``path`` (never over the audited files)."""
        path = Path(path)
        self._refuse_sources([path])
        out = self.clean()
        if out.empty:
            raise ValueError(f"every row is dropped (drop={self.config.drop}): nothing to write - check the "
                             "thresholds in audit.md or drop fewer reasons")
        path.parent.mkdir(parents=True, exist_ok=True)
        out.to_csv(path, index=False)
        return path

    def write(self, out: str | Path) -> Path:
        """``audit.md`` (summary by reason), ``flagged.csv`` and ``config.json`` (the settings) in ``out``."""
        out = Path(out)
        self._refuse_sources([out / "audit.md", out / "flagged.csv", out / "config.json"])
        out.mkdir(parents=True, exist_ok=True)
        (out / "audit.md").write_text(self.to_markdown())
        self.flagged.to_csv(out / "flagged.csv", index=False)
        resolved = {"columns": dataclasses.asdict(self.columns), **dataclasses.asdict(self.config),
                    "sources": self.info["sources"]}
        (out / "config.json").write_text(json.dumps(resolved, indent=2) + "\n")
        return out

    def summary(self) -> dict:
        """Sizes, flagged rows per reason and the rows a cleaned copy keeps, as plain JSON values."""
        clean_rows = len(self.frame) - int(self.flagged.loc[self.flagged["reason"].isin(self.config.drop), "row"].nunique())
        return {"rows": len(self.frame), "flagged_rows": int(self.flagged["row"].nunique()),
                "reasons": {r: n for r, n in self.counts().items() if n}, "clean_rows": clean_rows}

    def to_markdown(self) -> str:
        info, c = self.info, self.columns
        lines = ["# Events audit", "",
                 f"Source: `{info['sources']['events']}`" + (f", content: `{info['sources']['items']}`"
                                                             if info["sources"]["items"] else ""),
                 f"{info['rows']} rows, {info['users']} users, {info['items']} items (columns: user={c.user!r}, "
                 f"item={c.item!r}, time={c.time!r}, weight={c.weight!r}). {info['time']}", "",
                 "| reason | rows | ids | cleaned copy | what it means | examples |", "|---|---:|---:|---|---|---|"]
        for reason in AUDIT_REASONS:
            part = self.flagged[self.flagged["reason"] == reason]
            if part.empty:
                continue
            who = "user" if reason == "heavy_user" else "item" if reason in ("heavy_item", "no_content") else None
            ids = str(part[who].nunique()) if who else ""
            action = "dropped" if reason in self.config.drop else "rewritten" if reason == "id_variant" else "kept"
            examples = "; ".join(f"row {r}: {d}" for r, d in part.drop_duplicates("detail")[["row", "detail"]]
                                 .head(self.config.examples).itertuples(index=False))
            lines.append(f"| {reason} | {len(part)} | {ids} | {action} | {MEANING[reason]} | "
                         f"{examples.replace('|', '/')} |")
        if self.flagged.empty:
            lines.append("| (none) | 0 | | | nothing flagged | |")
        summary = self.summary()
        lines += ["", f"Flagged rows: {summary['flagged_rows']} of {info['rows']}; a cleaned copy keeps "
                      f"{summary['clean_rows']} rows (drops: {', '.join(self.config.drop)}).", "",
                  "Heavy users and items: modified z-score of the log event count, (log n - median) / "
                  f"max(1.4826 MAD, {MIN_LOG_SCALE}), above {self.config.heavy_z:g}, with at least "
                  f"{self.config.heavy_min} events" + (f", or more than {self.config.heavy_share:.1%} of all events"
                                                       if self.config.heavy_share else "") + ":", "",
                  "| | median events | flagged above | most events | flagged |", "|---|---:|---:|---:|---:|"]
        for kind in ("user", "item"):
            h = info["heavy"][kind]
            lines.append(f"| {kind}s | {h['median_events']:g} | {h['flagged_above_events']:g} | {h['max_events']} | "
                         f"{h['flagged']} |")
        return "\n".join(lines) + "\n"

    def _refuse_sources(self, targets: list[Path]) -> None:
        sources = [Path(s).resolve() for s in self.info["sources"].values() if s and Path(str(s)).exists()]
        for target in targets:
            if target.resolve() in sources:
                raise ValueError(f"{target} is a file the audit read: write the cleaned copy or the report elsewhere "
                                 "(the audit never modifies its input)")


def audit(
    events: Any,
    items: Any = None,
    *,
    user: str = "user",
    item: str = "item",
    time: str | None = None,
    weight: str | None = None,
    items_id: str | None = None,
    config: EventAuditConfig | None = None,
    **settings: Any,
) -> EventAudit:
    """Flag the rows of an events table that a recommender should not learn from as they are.

    Args:
        events: a DataFrame, a CSV / parquet path, or a ``datasets.Dataset``; read, never modified.
        items: optional content: a table (DataFrame or path) with one row per item, an
            ``(item_ids, embeddings)`` pair as :class:`ContentMapper` takes, or a list of item ids.
            Items of the events it has nothing for (or an empty row, a non-finite embedding) are flagged.
        user, item, time, weight: column names (``time`` and ``weight`` are checked when given).
        items_id: the item id column of the content table (default: ``item``).
        config: an :class:`EventAuditConfig`, or its fields as keywords (``heavy_z=5``), not both.

    Returns:
        an :class:`EventAudit`; ``.write(folder)`` writes audit.md and flagged.csv,
        ``.write_clean(path)`` a cleaned CSV.

    Example:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"user": ["a", "a", "b"], "item": ["x", "x", " X"], "t": [1e9, 1e9, 1.1e9]})
        >>> found = audit(df, time="t")
        >>> found.rows("duplicate_event"), found.rows("id_variant")
        ([1], [2])
    """
    if config is None:
        names = {f.name for f in dataclasses.fields(EventAuditConfig)}
        unknown = sorted(set(settings) - names)
        if unknown:
            raise ValueError(f"{unknown} are not audit settings (the settings: {sorted(names)})")
        config = EventAuditConfig(**settings)
    elif settings:
        raise ValueError(f"config and {', '.join(sorted(settings))} were both given: set them in the config")
    columns = InteractionColumns(user=user, item=item, weight=weight, time=time)
    df = _read_table(events, "events")
    if df.empty:
        raise ValueError("no events: the table is empty")
    for role, name in dataclasses.asdict(columns).items():
        if name is not None and name not in df.columns:
            raise ValueError(f"{role} column {name!r} is not in the events (columns: {list(df.columns)}): pass "
                             f"{role}='<column>' (--{role} on the command line)")
    flags: list[pd.DataFrame] = []

    def flag(mask: np.ndarray, reason: str, detail: Any) -> None:
        rows = np.flatnonzero(mask)
        if len(rows):
            detail = detail[rows] if isinstance(detail, np.ndarray) else detail
            flags.append(pd.DataFrame({"row": rows, "reason": reason, "detail": detail}))

    missing = (df[user].isna() | df[item].isna()).to_numpy()
    flag(missing, "missing_id", "empty user or item id")
    known = None
    preferred: dict = {}
    if items is not None:
        known, listed, preferred = _content(items, item, items_id)
    spellings = {"user": _spellings(df[user]), "item": _spellings(df[item], preferred)}
    ids = {}
    for role, column in (("user", user), ("item", item)):
        raw, mapping = df[column], spellings[role]
        ids[role] = raw.map(lambda v, m=mapping: m.get(v, v) if isinstance(v, str) else v)
        variant = raw.isin(list(mapping)).to_numpy() & _is_text(raw)
        flag(variant, "id_variant", np.array([f"{role} {v!r} -> {mapping.get(v)!r}" for v in raw], dtype=object))
    present = ~missing

    if weight is not None:
        w = pd.to_numeric(df[weight], errors="coerce").to_numpy(dtype=np.float64)
        flag(~(np.isfinite(w) & (w >= 0)), "bad_weight",
             np.array([f"weight {v!r}" for v in df[weight]], dtype=object))

    seconds, clean_times, time_note = None, None, "No time column: timestamps not checked."
    if time is not None:
        seconds, numeric = _parse_times(df[time], config.time_unit)
        readable = np.isfinite(seconds)
        flag(~readable, "unparseable_time",
             np.array([f"time {v!r} is neither a number nor a date" for v in df[time]], dtype=object))
        time_note = f"Times read as {config.time_unit}" + ("" if config.time_unit == "index" else " since 1970") + "."
        if config.time_unit != "index":
            lo = pd.Timestamp(config.min_time, tz="UTC").timestamp()
            now = _time.time() if config.now is None else pd.Timestamp(config.now, tz="UTC").timestamp()
            early, late = readable & (seconds < lo), readable & (seconds > now)
            if readable.any() and (early | late).sum() > readable.sum() / 2:
                raise ValueError(
                    f"{int((early | late).sum())} of {int(readable.sum())} timestamps fall outside {config.min_time} .. "
                    f"{_date(now)} read as {config.time_unit} since 1970: pass time_unit='ms', 'us' or 'ns' "
                    "(--time-unit) if that is their unit, or time_unit='index' for ordinal times")
            dates = np.array([_date(s) if np.isfinite(s) else "" for s in seconds], dtype=object)
            flag(early, "time_out_of_range", np.array([f"{d} is before {config.min_time}" for d in dates], dtype=object))
            flag(late, "future_time", np.array([f"{d} is after now ({_date(now)})" for d in dates], dtype=object))
            if readable.any():
                time_note += f" Range {_date(np.nanmin(seconds))} .. {_date(np.nanmax(seconds))}; now {_date(now)}."
            if not numeric[readable].all():
                # a CSV keeps datetimes as text, which the loaders cannot read: write them as numbers
                clean = seconds / _UNIT_SECONDS[config.time_unit]
                clean_times = np.array([(int(v) if v == int(v) else v) if np.isfinite(v) else raw
                                        for v, raw in zip(clean, df[time])], dtype=object)
                time_note += f" Dates written as numbers ({config.time_unit}) in a cleaned copy."

    keys = pd.DataFrame({"user": ids["user"], "item": ids["item"]})
    if seconds is not None:
        keys["time"] = seconds
    else:
        keys = pd.concat([keys, df.drop(columns=[user, item])], axis=1)
    first = keys[present].groupby(list(keys.columns), dropna=False, sort=False).ngroup()
    dup_of = pd.Series(np.arange(len(df)))[present].groupby(first.to_numpy()).transform("min")
    duplicate = np.zeros(len(df), dtype=bool)
    duplicate[present] = (dup_of.to_numpy() != np.flatnonzero(present))
    original = np.full(len(df), -1)
    original[present] = dup_of.to_numpy()
    flag(duplicate, "duplicate_event", np.array([f"same as row {r}" for r in original], dtype=object))
    if config.repeats:
        pair = keys[["user", "item"]][present].duplicated().to_numpy()
        repeated = np.zeros(len(df), dtype=bool)
        repeated[present] = pair
        flag(repeated & ~duplicate, "repeated_pair", "user and item seen in an earlier row")

    heavy_info = {}
    for role in ("user", "item"):
        details, heavy_info[role] = _heavy(ids[role][present], role, config)
        hit = ids[role].isin(list(details)).to_numpy() & present
        flag(hit, f"heavy_{role}", np.array([details.get(v, "") for v in ids[role]], dtype=object))

    if known is not None:
        item_keys = _key(ids["item"])
        lacking = present & ~item_keys.isin(known).to_numpy()
        listed_mask = item_keys.isin(listed).to_numpy()
        flag(lacking, "no_content", np.where(listed_mask, "its row in the content table is empty",
                                             "not in the content table").astype(object))

    order = {r: i for i, r in enumerate(AUDIT_REASONS)}
    flagged = pd.concat(flags, ignore_index=True) if flags else pd.DataFrame({"row": [], "reason": [], "detail": []})
    flagged["row"] = flagged["row"].astype(np.int64)
    flagged = flagged.sort_values(["row", "reason"], key=lambda s: s.map(order) if s.name == "reason" else s,
                                  kind="stable").reset_index(drop=True)
    rows = flagged["row"].to_numpy()
    for role, column in (("user", user), ("item", item), ("time", time)):
        flagged[role] = df[column].to_numpy(dtype=object)[rows] if column is not None else None
    info = {"rows": len(df), "users": int(ids["user"][present].nunique()), "items": int(ids["item"][present].nunique()),
            "time": time_note, "heavy": heavy_info,
            "sources": {"events": _name(events), "items": None if items is None else _name(items)}}
    return EventAudit(df, flagged[FLAG_COLUMNS], columns, config, spellings, info, clean_times)


def _name(source: Any) -> str:
    return str(source) if isinstance(source, (str, Path)) else f"<{type(source).__name__}>"
