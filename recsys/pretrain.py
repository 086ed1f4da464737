"""Pretraining on implicit (ALS, BPR, LMF): interactions in, EmbeddingTables out."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from .config import MODEL_CONFIGS, FactorizationConfig, model_config, reject_mixed
from .data import Interactions
from .tables import BIAS_COLUMNS, EmbeddingTables

log = logging.getLogger(__name__)

__all__ = ["MODELS", "fit_tables", "pretrain"]

MODELS = tuple(MODEL_CONFIGS)

# called after each iteration with (iteration, training seconds so far, current tables)
IterationCallback = Callable[[int, float, EmbeddingTables], None]


def _build(config: FactorizationConfig, use_gpu: bool, hp: dict):
    import implicit

    shared = {"factors": config.factors, "iterations": config.iterations, "random_state": config.seed,
              "num_threads": config.num_threads, **hp}
    if config.model == "als":
        return implicit.als.AlternatingLeastSquares(use_gpu=use_gpu, **shared)
    if config.model == "bpr":
        # BPR on the GPU pads the factor width to the warp size, which would move the bias column;
        # it stays on the CPU so the tables keep implicit's CPU layout.
        return implicit.cpu.bpr.BayesianPersonalizedRanking(**shared)
    return implicit.cpu.lmf.LogisticMatrixFactorization(**shared)


def _to_numpy(factors) -> np.ndarray:
    return np.asarray(factors.to_numpy() if hasattr(factors, "to_numpy") else factors, dtype=np.float32)


def fit_tables(
    interactions: Interactions,
    config: FactorizationConfig,
    init: EmbeddingTables | None = None,
    keep_empty_rows: bool = True,
    callback: IterationCallback | None = None,
    show_progress: bool = False,
    **extra: Any,
) -> EmbeddingTables:
    """Train implicit's ``config.model`` on ``interactions`` and return tables in the same id spaces.

    With ``init`` (tables already aligned to ``interactions``' ids, e.g. from
    :func:`transferkit.recsys.transfer.align`), training continues from those factors instead of a
    random start - implicit only initialises factors that are unset. With ``keep_empty_rows``, users
    and items that have no events in ``interactions`` get their ``init`` rows back afterwards:
    ALS would otherwise solve them to zero and forget what the pretrained tables knew. ``extra``:
    further arguments of implicit's model (``use_cg``, ``neg_prop``, ...), recorded with the rest.
    """
    model = getattr(config, "model", None)
    if model not in MODELS:
        raise ValueError(f"config must be an ALSConfig, BPRConfig or LMFConfig, got {type(config).__name__}")
    if len(interactions) == 0:
        raise ValueError("no interactions to train on")
    hp = {**config.hyperparameters(), **extra}
    matrix = interactions.matrix
    use_gpu = getattr(config, "use_gpu", False)
    if use_gpu is None:
        import implicit.gpu

        use_gpu = bool(implicit.gpu.HAS_CUDA)
    empty_users = interactions.user_counts() == 0
    if empty_users.any() and init is None:
        log.warning("%d users have no interactions: their rows carry no signal", int(empty_users.sum()))
    # implicit runs its own threads; BLAS threads on top of them oversubscribe the cores
    with threadpool_limits(limits=1, user_api="blas"):
        est = _build(config, use_gpu, hp)
        if init is not None:
            _set_init(est, init, model, interactions, use_gpu)
        clock = {"train": 0.0, "last": time.perf_counter()}

        def snapshot(done: int) -> EmbeddingTables:
            tables = _tables(est, model, interactions, hp, done, seed=config.seed)
            tables.meta["train_seconds"] = round(clock["train"], 4)
            if init is not None:
                # rows without new events keep the pretrained rows, and with them their counts
                tables.user_counts = np.where(tables.user_counts > 0, tables.user_counts, init.user_counts)
                tables.item_counts = np.where(tables.item_counts > 0, tables.item_counts, init.item_counts)
                if keep_empty_rows:
                    tables.user_factors[empty_users] = init.user_factors[empty_users]
                    empty_items = interactions.item_counts() == 0
                    tables.item_factors[empty_items] = init.item_factors[empty_items]
            return tables

        def on_iteration(iteration, *_):
            # only time spent inside implicit counts as training time, not our evaluation
            clock["train"] += time.perf_counter() - clock["last"]
            if callback is not None:
                callback(iteration + 1, clock["train"], snapshot(iteration + 1))
            clock["last"] = time.perf_counter()

        est.fit(matrix, show_progress=show_progress, callback=on_iteration)
    return snapshot(config.iterations)


def _set_init(est, init: EmbeddingTables, model: str, interactions: Interactions, use_gpu: bool) -> None:
    if init.model != model:
        raise ValueError(f"init tables come from {init.model!r} but the model is {model!r}")
    if init.user_factors.shape != (interactions.n_users, est.factors + _width_extra(model)):
        raise ValueError(
            f"init user table has shape {init.user_factors.shape}, expected "
            f"({interactions.n_users}, {est.factors + _width_extra(model)}): align it first"
        )
    users, items = init.user_factors.copy(), init.item_factors.copy()
    # the constant bias columns must hold their constant, or BPR/LMF scores shift silently
    for col, value in BIAS_COLUMNS[model]["user"].items():
        users[:, col] = value
    for col, value in BIAS_COLUMNS[model]["item"].items():
        items[:, col] = value
    if use_gpu:
        import implicit.gpu

        users, items = implicit.gpu.Matrix(users), implicit.gpu.Matrix(items)
    est.user_factors, est.item_factors = users, items


def _jsonable(value):
    return value if isinstance(value, (bool, str, type(None))) else float(value)


def _width_extra(model: str) -> int:
    return {"als": 0, "bpr": 1, "lmf": 2}[model]


def _tables(est, model, interactions, hp, iterations, seed) -> EmbeddingTables:
    meta = {"factors": int(est.factors), "iterations": int(iterations), "seed": seed,
            **{k: _jsonable(v) for k, v in hp.items()}}
    return EmbeddingTables(
        _to_numpy(est.user_factors).copy(), _to_numpy(est.item_factors).copy(),
        interactions.user_ids, interactions.item_ids, model=model, meta=meta,
        user_counts=interactions.user_counts(), item_counts=interactions.item_counts(),
        history=interactions,
    )


def pretrain(
    interactions: Interactions,
    model: str = "als",
    factors: int = 64,
    iterations: int = 15,
    seed: int = 0,
    num_threads: int = 0,
    use_gpu: bool | None = None,
    callback: IterationCallback | None = None,
    show_progress: bool = False,
    config: FactorizationConfig | None = None,
    **hyperparameters: Any,
) -> EmbeddingTables:
    """Factorise ``interactions`` with implicit and return the learned :class:`EmbeddingTables`.

    Args:
        interactions: users x items events (weights are ALS confidences; BPR/LMF read them as binary).
        model: ``"als"``, ``"bpr"`` or ``"lmf"``.
        factors: latent dimension (BPR adds 1 bias column, LMF 2).
        iterations: ALS sweeps or BPR/LMF epochs.
        seed: random state of the initial factors (and of BPR/LMF sampling).
        num_threads: implicit's threads (0 = all cores); BLAS is held at 1 thread meanwhile.
        use_gpu: ALS on the GPU when CUDA is present (default); BPR and LMF run on the CPU.
        callback: ``fn(iteration, train_seconds, tables)`` after every iteration.
        config: the settings as one :class:`ALSConfig`, :class:`BPRConfig` or :class:`LMFConfig`,
            instead of ``model`` ... ``use_gpu`` and ``hyperparameters`` (not together with them).
        **hyperparameters: ``regularization``, ``alpha`` (ALS), ``learning_rate`` (BPR/LMF), and any
            other argument of implicit's model; unset ones take the model config's defaults.

    Example:
        >>> from transferkit.recsys import ALSConfig, Interactions, pretrain
        >>> inter = Interactions.from_arrays(["a", "a", "b"], ["x", "y", "x"])
        >>> tables = pretrain(inter, factors=2, iterations=3, num_threads=1)
        >>> tables.user_factors.shape, tables.item_ids
        ((2, 2), ['x', 'y'])
        >>> same = pretrain(inter, config=ALSConfig(factors=2, iterations=3, num_threads=1))
        >>> bool((same.user_factors == tables.user_factors).all())
        True
    """
    settings = {"factors": factors, "iterations": iterations, "seed": seed, "num_threads": num_threads,
                **hyperparameters}
    reject_mixed(pretrain, config, model=model, use_gpu=use_gpu, **settings)
    extra = {}
    if config is None:
        if model == "als":
            settings["use_gpu"] = use_gpu  # BPR and LMF always run on the CPU
        config, extra = model_config(model, **settings)
    return fit_tables(interactions, config, callback=callback, show_progress=show_progress, **extra)
