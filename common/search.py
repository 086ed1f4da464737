"""``strategy="auto"``: a budgeted recipe search with Optuna, on a dev split carved out of the training data.

Which strategy, which rates, which input size? Each Optuna trial (TPE sampler, successive-halving
pruner on the per-epoch dev metric) trains a fresh copy of the task on the training data minus a
stratified, seeded dev split and scores it there; the user's eval or test data is never seen. Probe
trials train on cached features (one cache for every trial), so they cost almost nothing. The study
lives in ``<output_dir>/search.db``: a killed search resumes without repeating finished trials.
Every trial is a row of ``trials.csv`` and a point of ``search.png``; the best trial's model is
kept, or with ``retrain=True`` the chosen recipe is trained again on all the training data; without
eval data that retrain runs for the epochs at which the best trial peaked on dev.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import TrainConfig, check_settings, setting
from .strategies import get_strategy, list_strategies, strategy_class
from .trainer import Callback

log = logging.getLogger(__name__)


@dataclass
class SearchConfig:
    """How ``strategy="auto"`` searches (its fields are ``fit`` keywords: ``time_budget=600``)."""

    time_budget: float = setting(600.0, "Seconds of search; no trial starts after this.", gt=0)
    n_trials: int | None = setting(None, "At most this many trials in the study (default: what the budget allows).", ge=1)
    dev_fraction: float = setting(0.2, "Share of each class held out of the training data to score trials.", gt=0, lt=1)
    search_strategies: list[str] | None = setting(None, "Strategies to choose from (default: every registered one).")
    # Kept trials scored higher than retrains on ants vs bees with ResNet-20 (0.778 vs 0.756) and MobileNetV2
    # (0.946 vs 0.922), lower with EfficientNet-Lite0 (0.924 vs 0.943; benchmarks/results/vision_transfer_auto_*.md):
    # without eval data a retrain can only guess its epochs.
    retrain: bool = setting(False, "Train the chosen recipe again on all training data (default: keep the best trial's "
                                   "model, trained on all but the dev split).")
    trial_patience: int = setting(3, "Early stopping of a trial after this many epochs without a better dev score.", ge=1)

    def __post_init__(self) -> None:
        check_settings(self)


SEARCH_FIELDS = frozenset(SearchConfig.__dataclass_fields__)
# The first trials try each strategy once, in the strategies' ``search_order``: cheapest and most often best
# with few labels first (a probe on cached features costs seconds; LP-FT reuses its cache), so that a tight
# budget still sees them.


def stratified_split(targets: Sequence[Any], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, dev) indices: ``fraction`` of each class (at least one) held out, chosen by ``seed``.

    Example:
        >>> tr, dev = stratified_split(["a"] * 5 + ["b"] * 5, 0.2, seed=0)
        >>> [int(i) for i in dev], len(tr)
        ([4, 8], 8)
    """
    rng = np.random.default_rng(seed)
    targets = np.asarray([str(t) for t in targets])
    dev = []
    for label in sorted(set(targets)):
        idx = np.flatnonzero(targets == label)
        if len(idx) < 2:
            raise ValueError(f"class {label!r} has {len(idx)} training example(s); a recipe search needs at least 2 "
                             "per class (one to train on, one to score): pass a strategy instead")
        dev += list(rng.choice(idx, size=max(1, int(round(fraction * len(idx)))), replace=False))
    dev_set = set(int(i) for i in dev)
    return np.array([i for i in range(len(targets)) if i not in dev_set]), np.array(sorted(dev_set))


class _Report(Callback):
    """Reports the final stage's per-epoch dev score to Optuna and prunes hopeless trials."""

    def __init__(self, trial: Any, stage: str, metric: str, prune: bool = True, deadline: float = math.inf) -> None:
        self.trial, self.stage, self.metric, self.prune, self.deadline, self.step = trial, stage, metric, prune, deadline, 0

    def on_epoch_end(self, trainer, row) -> None:
        import optuna

        if trainer.run_info.get("stage") != self.stage or self.metric not in row:
            return
        self.step += 1
        self.trial.report(row[self.metric], self.step)
        if self.prune and self.trial.should_prune():
            raise optuna.TrialPruned()
        if time.perf_counter() > self.deadline and _done(self.trial.study):
            raise optuna.TrialPruned("the search's time budget ran out")  # a trial never runs past the budget


def suggest(trial: Any, strategies: Sequence[str], config: TrainConfig) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """A recipe: the strategy, its settings (from the strategy's own
    :meth:`~transferkit.common.Strategy.search_space`), and the loop's rates (log-uniform around the usual
    values; ``lr`` only for a strategy that trains the encoder)."""
    name = trial.suggest_categorical("strategy", list(strategies))
    cls = strategy_class(name)
    loop = {"head_lr": trial.suggest_float("head_lr", 1e-4, 1e-1, log=True)}
    if cls.trains_encoder:
        loop["lr"] = trial.suggest_float("lr", 1e-5, 3e-3, log=True)
    return name, cls.search_space(trial), loop


def run_search(task: Any, train: Any, eval: Any, *, config: TrainConfig, search: SearchConfig,
               **options: Any) -> dict:
    """Search ``task``'s recipe on a dev split of ``train``; returns the fit results of the chosen recipe.

    ``task`` is a classifier: ``labelled(data)`` gives its examples and labels, ``search_space(trial)``
    the domain's own choices (augmentation, input size) as extra ``fit`` keywords.
    """
    import optuna
    from tqdm.auto import tqdm

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run_dir = Path(config.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    examples, targets = task.labelled(train)
    tr, dev = stratified_split(targets, search.dev_fraction, config.seed)
    fit_part = ([examples[i] for i in tr], [targets[i] for i in tr])
    dev_part = ([examples[i] for i in dev], [targets[i] for i in dev])
    strategies = search.search_strategies or list_strategies()
    for s in strategies:
        get_strategy(s)  # an unknown name fails before any trial
    pristine = copy.deepcopy(task.model)
    direction = "maximize" if config.greater_is_better else "minimize"
    study = optuna.create_study(
        storage=f"sqlite:///{(run_dir / 'search.db').resolve()}", study_name="recipe", load_if_exists=True,
        direction=direction, sampler=optuna.samplers.TPESampler(seed=config.seed, n_startup_trials=len(strategies)),
        # A trial's first epochs say little (warmup, 1/len(dev) steps of accuracy): rungs from a quarter of the epochs.
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, config.epochs // 4), reduction_factor=3))
    _requeue_interrupted(study)
    if not study.trials:  # start with each strategy once at the configured rates, so every one is tried
        usual = {"lr": min(max(config.lr, 1e-5), 3e-3), "head_lr": min(max(config.head_lr, 1e-4), 1e-1)}
        for s in sorted(strategies, key=lambda s: (strategy_class(s).search_order, s)):
            study.enqueue_trial({"strategy": s, **usual, **startup_settings(s, config), **task.search_defaults(s, config)},
                                skip_if_exists=True)
    # Queued trials (each strategy's first, and trials a killed search left unfinished) run to the end: pruned
    # against each other after an epoch or two, a fine-tune loses to a probe that has not learnt more.
    queued = {t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))}

    def objective(trial: Any) -> float:
        name, settings, loop = suggest(trial, strategies, config)
        if any(f.name == "feature_cache" for f in dataclasses.fields(get_strategy(name).config_class)):
            settings["feature_cache"] = str(run_dir / "features")  # one feature cache for every probe trial
        trial_task = task.clone(get_strategy(name, **settings), model=pristine)
        domain = task.search_space(trial, trial_task)
        cfg = config.replace(output_dir=str(run_dir / "trials" / f"{trial.number:03d}"), save_checkpoints=False,
                             plot=False, progress=False, resume=False,
                             early_stopping_patience=_patience(name, config, search), **loop)
        t0 = time.perf_counter()
        try:
            results = trial_task.fit(fit_part, dev_part, config=cfg,
                                     callbacks=[_Report(trial, trial_task.strategy.stages()[-1].name, config.metric_for_best,
                                                        prune=trial.number not in queued, deadline=deadline)],
                                     **{**domain, **options})
        finally:  # pruned and failed trials spent the budget too
            trial.set_user_attr("seconds", time.perf_counter() - t0)
        final = list(results.values())[-1]
        trial.set_user_attr("trainable", sum(p.numel() for p in trial_task.model.parameters() if p.requires_grad))
        trial.set_user_attr("best_epoch", final.best_epoch)
        if not search.retrain and _is_best(study, _key({**trial.user_attrs, "value": final.best_metric}, direction)):
            # keep the best trial
            task.model, task.strategy, task.results = trial_task.model, trial_task.strategy, results
            task.train_info = trial_task.train_info
        return float(final.best_metric)

    spent = sum(t.user_attrs.get("seconds", 0.0) for t in study.trials)
    budget_left = max(0.0, search.time_budget - spent)
    deadline = time.perf_counter() + budget_left  # trials past it end at their next epoch (once one trial completed)
    # Failed trials (an error, or an interrupt Optuna saw) do not count: the budget is in trials that ran.
    finished = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    trials_left = None if search.n_trials is None else max(0, search.n_trials - len(finished))
    bar = tqdm(total=trials_left, desc="recipe search", disable=not config.progress, dynamic_ncols=True)

    def progress(study: Any, trial: Any) -> None:
        bar.update(1)
        if any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
            bar.set_postfix(best=f"{study.best_value:.4f}", strategy=study.best_params.get("strategy"))

    if budget_left > 0 and trials_left != 0:
        study.optimize(objective, n_trials=trials_left, timeout=budget_left, callbacks=[progress],
                       catch=(ValueError, RuntimeError))
    bar.close()
    best = _best_trial(study, direction)
    _write_trials(study, run_dir)
    recipe = {"strategy": best.params["strategy"], **{k: v for k, v in best.params.items() if k != "strategy"},
              "dev_score": best.value, "dev_examples": len(dev), "trials": len(_ran(study)),
              "search_seconds": round(sum(t.user_attrs.get("seconds", 0.0) for t in study.trials), 1)}
    log.info("recipe search chose %s", recipe)
    task.auto = False
    if not search.retrain:
        task.recipe_info = {"recipe": recipe}
        task.train_info = {**task.train_info, "recipe": recipe}
        _keep_in_run_folder(task, config)
        return task.results
    # Train the chosen recipe on all the training data, the way a fixed strategy would train.
    trial = optuna.trial.FixedTrial(best.params)
    name, settings, loop = suggest(trial, strategies, config)
    if eval is None and best.user_attrs.get("best_epoch"):
        # Nothing to pick the epoch on: train as long as the best trial took to peak on dev.
        loop["epochs"] = int(best.user_attrs["best_epoch"])
        recipe["epochs"] = loop["epochs"]
        if name == "linear_probe":  # the probe's own epoch count is the final stage's
            settings["epochs"] = loop["epochs"]
    task.strategy = get_strategy(name, **settings)
    domain = task.search_space(trial, task)
    task.recipe_info = {"recipe": recipe}
    return task.fit(train, eval, config=config.replace(**loop), **{**domain, **options})


def startup_settings(strategy: str, config: TrainConfig) -> dict[str, Any]:
    """Optuna parameters of a strategy's first trial, as the strategy says (:meth:`Strategy.search_start`)."""
    return strategy_class(strategy).search_start(config)


def _patience(strategy: str, config: TrainConfig, search: SearchConfig) -> int | None:
    """Early stopping of a trial: the user's, else the search's, except that a linear probe trial runs
    every epoch: on cached features they cost next to nothing, and on a small dev split a probe's score
    often stays flat for a few epochs before it rises (stopped after 3, it kept its first epoch)."""
    if config.early_stopping_patience:
        return config.early_stopping_patience
    return None if strategy == "linear_probe" else search.trial_patience


def _keep_in_run_folder(task: Any, config: TrainConfig) -> None:
    """The kept trial's weights and run file in the search's own run folder, so ``from_run`` finds them
    there as after a retrain (the trial's own folder kept no checkpoint)."""
    from safetensors.torch import save_model

    run_dir = Path(config.output_dir)
    stages = task.strategy.stages()
    final = run_dir / stages[-1].name if len(stages) > 1 else run_dir
    (final / "checkpoints").mkdir(parents=True, exist_ok=True)
    save_model(task.model, str(final / "checkpoints" / "best.safetensors"))
    task._write_run_file(config)


def _requeue_interrupted(study: Any) -> None:
    """Trials a killed process left RUNNING are marked failed and queued again with their parameters."""
    from optuna.trial import TrialState

    for t in study.trials:
        if t.state == TrialState.RUNNING:
            study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
            study.enqueue_trial(t.params, skip_if_exists=False)


def _key(attrs: dict, direction: str) -> tuple:
    """Sort key of a trial: its score; among equal scores fewer trained parameters (the simpler recipe:
    with few labels it is the safer bet), then fewer seconds."""
    sign = 1 if direction == "maximize" else -1
    return sign * round(attrs["value"], 6), -attrs.get("trainable", 0), -attrs.get("seconds", 0.0)


def _done(study: Any) -> list:
    from optuna.trial import TrialState

    return [t for t in study.trials if t.state == TrialState.COMPLETE and t.value is not None]


def _ran(study: Any) -> list:
    """Trials that started (queued trials the budget never reached are left out)."""
    from optuna.trial import TrialState

    return [t for t in study.trials if t.state != TrialState.WAITING]


def _best_trial(study: Any, direction: str) -> Any:
    """The best completed trial by :func:`_key`."""
    done = _done(study)
    if not done:
        raise RuntimeError("no trial of the recipe search completed; raise time_budget or check the logs")
    return max(done, key=lambda t: _key({**t.user_attrs, "value": t.value}, direction))


def _is_best(study: Any, key: tuple) -> bool:
    direction = "maximize" if study.direction.name == "MAXIMIZE" else "minimize"
    return all(key > _key({**t.user_attrs, "value": t.value}, direction) for t in _done(study))


def _write_trials(study: Any, run_dir: Path) -> None:
    """``trials.csv`` (one row per trial that ran) and ``search.png`` (dev score per trial, by strategy)."""
    params = sorted({k for t in study.trials for k in t.params})
    rows = [{"trial": t.number, "state": t.state.name.lower(), "dev_score": t.value,
             "seconds": round(t.user_attrs.get("seconds", 0.0), 2), "best_epoch": t.user_attrs.get("best_epoch"),
             "trainable": t.user_attrs.get("trainable"),
             **{k: t.params.get(k) for k in params}} for t in _ran(study)]
    with open(run_dir / "trials.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["trial", "state", "dev_score", "seconds", "best_epoch", "trainable", *params])
        writer.writeheader()
        writer.writerows(rows)
    from .report import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name in sorted({r["strategy"] for r in rows if r.get("strategy")}):
        pts = [(r["trial"], r["dev_score"]) for r in rows if r.get("strategy") == name and r["dev_score"] is not None]
        if pts:
            ax.scatter(*zip(*pts), label=name, s=24)
    ax.set_xlabel("trial")
    ax.set_ylabel("dev score")
    ax.set_title("recipe search")
    ax.legend(fontsize=7)
    save_figure(fig, run_dir / "search.png")
