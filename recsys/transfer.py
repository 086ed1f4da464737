"""Carry pretrained embedding tables into a new model: warm start, cross-domain, fold-in."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from .config import WarmStartConfig, model_config, reject_mixed
from .data import Interactions, confidence, duration_seconds, id_index
from .foldin import solve_rows
from .pretrain import IterationCallback, fit_tables
from .tables import BIAS_COLUMNS, EmbeddingTables

log = logging.getLogger(__name__)

__all__ = ["align", "cross_domain", "fold_in_users", "reindex", "warm_start"]


def reindex(inter: Interactions, user_ids: list, item_ids: list) -> Interactions:
    """``inter`` in the given id spaces (which must contain all of its ids); rows/columns move, data stays."""
    u_index, i_index = id_index(user_ids), id_index(item_ids)
    try:
        u_map = np.array([u_index[u] for u in inter.user_ids], dtype=np.int32)
        i_map = np.array([i_index[it] for it in inter.item_ids], dtype=np.int32)
    except KeyError as err:
        raise ValueError(f"id {err.args[0]!r} is missing from the target id space") from None
    return Interactions(
        u_map[inter.users] if len(inter) else inter.users, i_map[inter.items] if len(inter) else inter.items,
        inter.weights, list(user_ids), list(item_ids), inter.times, dict(inter.info),
    )


def _union(old: list, new: list) -> list:
    known = set(old)
    return list(old) + [i for i in new if i not in known]


def _counts_behind(new: np.ndarray, old: np.ndarray, index: dict, ids: list) -> np.ndarray:
    rows = np.array([index.get(i, -1) for i in ids], dtype=np.int64)
    old_aligned = np.where(rows >= 0, old[np.maximum(rows, 0)], 0)
    return np.where(new > 0, new, old_aligned)


def align(
    tables: EmbeddingTables,
    interactions: Interactions,
    reuse_users: bool = True,
    reuse_items: bool = True,
    keep_old: bool = True,
) -> tuple[EmbeddingTables, Interactions]:
    """Resize ``tables`` to the ids of ``interactions`` and fill the new rows by least-squares fold-in.

    Known rows start from the pretrained factors. New items are solved against the known users who
    interacted with them, then new users against all items, then any item still unsolved (touched
    only by new users) against all users - one ALS half-step each, no training.

    Args:
        tables: the pretrained tables.
        interactions: the new data (new period, or a target domain).
        reuse_users: start known users from their pretrained rows.
        reuse_items: start known items from their pretrained rows (False for a new domain's items).
        keep_old: keep pretrained users/items absent from ``interactions`` in the id space, so they
            can still be scored (their rows are kept as they were).

    Returns:
        (tables, interactions) in one shared id space: the aligned tables and ``interactions``
        re-indexed to it.
    """
    if not (reuse_users or reuse_items):
        raise ValueError("reuse_users and reuse_items are both False: there is nothing to transfer")
    users = (_union(tables.user_ids, interactions.user_ids) if keep_old else
             interactions.user_ids) if reuse_users else interactions.user_ids
    items = (_union(tables.item_ids, interactions.item_ids) if keep_old else
             interactions.item_ids) if reuse_items else interactions.item_ids
    inter = reindex(interactions, users, items)
    reg, alpha = tables.meta.get("regularization", 0.01), tables.meta.get("alpha", 1.0)
    width = tables.user_factors.shape[1]
    uf = np.zeros((len(users), width), dtype=np.float32)
    itf = np.zeros((len(items), width), dtype=np.float32)
    known_u = np.zeros(len(users), dtype=bool)
    known_i = np.zeros(len(items), dtype=bool)
    if reuse_users:
        rows = np.array([tables.user_index.get(u, -1) for u in users])
        known_u = rows >= 0
        uf[known_u] = tables.user_factors[rows[known_u]]
    if reuse_items:
        rows = np.array([tables.item_index.get(i, -1) for i in items])
        known_i = rows >= 0
        itf[known_i] = tables.item_factors[rows[known_i]]
    shared_u = reuse_users and any(u in tables.user_index for u in interactions.user_ids)
    shared_i = reuse_items and any(i in tables.item_index for i in interactions.item_ids)
    if not (shared_u or shared_i):
        raise ValueError(
            "the new interactions share no user or item ids with the tables: nothing can be "
            "transferred (check that ids have the same type and spelling as at pretraining)"
        )
    m = inter.matrix
    fixed_u, fixed_i = BIAS_COLUMNS[tables.model]["user"], BIAS_COLUMNS[tables.model]["item"]
    item_users = m.T.tocsr()
    # 1) new items from the known users who touched them
    new_i = ~known_i
    if new_i.any() and known_u.any():
        known_only = item_users[new_i].multiply(known_u[None, :].astype(np.float32)).tocsr()
        itf[new_i] = solve_rows(uf, known_only, reg, alpha, fixed_i)
    touched_by_known = np.asarray((item_users != 0).astype(np.float32) @ known_u.astype(np.float32)).ravel() > 0
    solved_i = known_i | (new_i & touched_by_known)
    # 2) new users from their items (only items solved so far carry signal)
    new_u = ~known_u
    if new_u.any():
        usable = m[new_u].multiply(solved_i[None, :].astype(np.float32)).tocsr()
        uf[new_u] = solve_rows(itf, usable, reg, alpha, fixed_u)
    # 3) items no known user touched: solve against everyone now that new users have rows
    late = new_i & ~solved_i
    if late.any():
        itf[late] = solve_rows(uf, item_users[late], reg, alpha, fixed_i)
    for col, value in fixed_u.items():
        uf[:, col] = value
    for col, value in fixed_i.items():
        itf[:, col] = value
    log.info("align: %d/%d users and %d/%d items reused, the rest folded in",
             int(known_u.sum()), len(users), int(known_i.sum()), len(items))
    meta = {**tables.meta, "aligned_from": {"users": int(known_u.sum()), "items": int(known_i.sum())}}
    # counts = the events behind each row: the new ones where the row will be trained on them, the
    # pretrained count where the row is kept as it was (so such a user still counts as known)
    user_counts, item_counts = inter.user_counts(), inter.item_counts()
    if reuse_users:
        user_counts = _counts_behind(user_counts, tables.user_counts, tables.user_index, users)
    if reuse_items:
        item_counts = _counts_behind(item_counts, tables.item_counts, tables.item_index, items)
    aligned = EmbeddingTables(
        uf, itf, users, items, model=tables.model, meta=meta,
        user_counts=user_counts, item_counts=item_counts, history=inter,
    )
    return aligned, inter


def warm_start(
    tables: EmbeddingTables,
    interactions: Interactions,
    iterations: int = 5,
    keep_old: bool = True,
    seed: int = 0,
    num_threads: int = 0,
    old_weight: float = 0.0,
    half_life: Any = None,
    history: Interactions | None = None,
    callback: IterationCallback | None = None,
    config: WarmStartConfig | None = None,
    **hyperparameters: Any,
) -> EmbeddingTables:
    """Continue training ``tables`` on new-period ``interactions`` (new users and items included).

    The tables are resized and new rows folded in (:func:`align`), then implicit trains from there
    for ``iterations``. Users and items without events in the training data keep their pretrained
    rows. Hyperparameters default to those the tables were trained with. The returned tables'
    ``history`` is the training data: pass ``history=`` to ``recommend`` to also filter older events.
    ``config`` (a :class:`WarmStartConfig`) may carry ``iterations`` ... ``half_life`` instead.

    By default only the new events train, and the old period survives only in the starting rows:
    ALS sweeps then re-solve every item from a few weeks of data and forget. With ``old_weight > 0``
    the old period's events (``history``, default the tables' own training events) train too, each
    counting ``old_weight``; ``half_life`` (time-column units, or ``"30D"``) decays every event by
    its age from the newest one (:func:`confidence`), so the old period fades smoothly rather than
    being cut.

    Example:
        >>> from transferkit.recsys import Interactions, pretrain, warm_start
        >>> old = pretrain(Interactions.from_arrays(["a", "b"], ["x", "y"]), factors=2, num_threads=1)
        >>> new = warm_start(old, Interactions.from_arrays(["b", "c"], ["y", "z"]), num_threads=1)
        >>> new.user_ids, new.item_ids
        (['a', 'b', 'c'], ['x', 'y', 'z'])
    """
    keywords = {"iterations": iterations, "keep_old": keep_old, "seed": seed, "num_threads": num_threads,
                "old_weight": old_weight, "half_life": None if half_life is None else duration_seconds(half_life, "half_life")}
    reject_mixed(warm_start, config, **keywords)
    config = WarmStartConfig(**keywords) if config is None else config
    return _transfer(tables, _training_events(tables, interactions, config, history), "warm_start", config,
                     callback, hyperparameters)


def _training_events(tables: EmbeddingTables, new: Interactions, config: WarmStartConfig,
                     history: Interactions | None) -> Interactions:
    """The new events, plus the old period's at ``old_weight``, all decayed by ``half_life``."""
    events = new
    if config.old_weight > 0:
        old = tables.history if history is None else history
        if old is None:
            raise ValueError(
                "old_weight > 0 trains on the old period's events too: pass history=<Interactions> "
                "(tables loaded from disk carry none)"
            )
        events = Interactions.concat([old.with_weights(old.weights * config.old_weight), new])
    if config.half_life is not None:
        events = confidence(events, "none", half_life=config.half_life)
    return events


def cross_domain(source: EmbeddingTables, target: Interactions, iterations: int = 0, keep_source_users: bool = True,
                 seed: int = 0, num_threads: int = 0, callback: IterationCallback | None = None,
                 **hyperparameters: Any) -> EmbeddingTables:
    """Tables for a target domain that shares users with ``source``.

    Target items are solved by least squares against the source user factors of the users they share;
    target-only users are folded in. With ``iterations=0`` (default) the user tower stays the
    source's: the usual choice when the target has little data, since ALS sweeps re-solve users from
    target data alone. With ``iterations > 0`` implicit continues from that start. With
    ``keep_source_users`` the source users without target events stay in the table, so they get
    target recommendations from their source behaviour alone.
    """
    config = WarmStartConfig(iterations=iterations, keep_old=keep_source_users, seed=seed, num_threads=num_threads)
    return _transfer(source, target, "cross_domain", config, callback, hyperparameters)


def _transfer(tables: EmbeddingTables, interactions: Interactions, mode: str, config: WarmStartConfig,
              callback: IterationCallback | None, hyperparameters: dict) -> EmbeddingTables:
    """Align ``tables`` to ``interactions`` (a target domain re-solves every item), then train on."""
    start = time.perf_counter()
    aligned, inter = align(tables, interactions, reuse_items=mode != "cross_domain", keep_old=config.keep_old)
    aligned.meta["align_seconds"] = round(time.perf_counter() - start, 4)
    aligned.meta["transfer"] = mode
    if mode == "warm_start":
        aligned.meta.update(old_weight=config.old_weight, half_life=config.half_life)
    hp = {k: tables.meta[k] for k in ("regularization", "alpha", "learning_rate") if k in tables.meta}
    hp.update(hyperparameters)
    factors = hp.pop("factors", tables.factors)
    if factors != tables.factors:
        raise ValueError(f"factors={factors} but the pretrained tables have {tables.factors}: they must match")
    if config.iterations == 0:
        aligned.meta["iterations"] = 0
        return aligned
    model_cfg, extra = model_config(tables.model, factors=tables.factors, iterations=config.iterations,
                                    seed=config.seed, num_threads=config.num_threads, **hp)
    trained = fit_tables(inter, model_cfg, init=aligned, callback=callback, **extra)
    for key in ("align_seconds", "transfer", "old_weight", "half_life"):
        if key in aligned.meta:
            trained.meta[key] = aligned.meta[key]
    return trained


def fold_in_users(tables: EmbeddingTables, history: Interactions, refresh: bool = False) -> EmbeddingTables:
    """Add the users of ``history`` to ``tables`` at serving time, without retraining.

    Each user's row is the least-squares solution against the fixed item factors (for ALS exactly the
    row a full refit's user step gives). Known users keep their rows unless ``refresh``. Events on
    items unknown to the tables are skipped (logged).
    """
    solved = tables.fold_in_users(history)
    user_ids = _union(tables.user_ids, history.user_ids)
    uf = np.concatenate(
        [tables.user_factors, np.zeros((len(user_ids) - len(tables.user_ids), solved.shape[1]), np.float32)]
    )
    counts = np.concatenate([tables.user_counts, np.zeros(len(uf) - len(tables.user_counts), np.int64)])
    index = id_index(user_ids)
    hist_counts = history.user_counts()
    for row, user in enumerate(history.user_ids):
        target = index[user]
        if target >= len(tables.user_ids) or refresh:
            uf[target] = solved[row]
            counts[target] = hist_counts[row]
    base = tables.history
    merged = history if base is None else Interactions.concat([base, history])
    return EmbeddingTables(
        uf, tables.item_factors, user_ids, tables.item_ids, model=tables.model,
        meta={**tables.meta, "folded_in_users": len(user_ids) - len(tables.user_ids)},
        user_counts=counts, item_counts=tables.item_counts, history=merged,
    )
