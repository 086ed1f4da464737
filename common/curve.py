"""Learning curves over the label budget: accuracy against labelled examples per class.

For each seed, nested subsets of the training data (the first k examples of each class in a seeded
order, so the 5-label subset holds the 2-label one) train a fresh copy of the task under each
strategy, and the task's simple reference (logistic regression on pixels or MFCC statistics) fits
the same subset; every point is scored on the same test data. A probe on cached features (a strategy
with a single stage that trains the head on the frozen encoder's outputs) encodes the training and
test data once for the whole curve: each of its points is a head trained on rows of that matrix by the
same head-only loop ``fit`` runs, and scored on the test rows, so probe points cost milliseconds.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .config import TrainConfig
from .report import markdown_table, pyplot, save_figure
from .strategies import get_strategy
from .task import LOOP_FIELDS

log = logging.getLogger(__name__)

DEFAULT_BUDGETS: tuple[int | None, ...] = (1, 2, 5, 10, 20, None)  # None: every label


def budget_subset(targets: Sequence[Any], per_class: int | None, seed: int) -> list[int]:
    """Indices of ``per_class`` examples of each class (all with None), nested across budgets for one seed.

    Example:
        >>> budget_subset(["a", "b", "a", "b", "a"], 1, seed=0) == sorted(budget_subset(["a", "b", "a", "b", "a"], 1, 0))
        True
        >>> len(budget_subset(["a", "b", "a", "b", "a"], 2, seed=0)), len(budget_subset(["a", "b", "a"], None, seed=0))
        (4, 3)
    """
    targets = np.asarray([str(t) for t in targets])
    rng = np.random.default_rng(seed)
    keep = []
    for label in sorted(set(targets)):
        idx = rng.permutation(np.flatnonzero(targets == label))
        keep += list(idx if per_class is None else idx[:per_class])
    return sorted(int(i) for i in keep)


def label_curve(task: Any, train: Any, test: Any, *, out_dir: str | Path, budgets: Sequence[int | None] = DEFAULT_BUDGETS,
                strategies: Sequence[str] = ("linear_probe", "lp_ft"), seeds: Sequence[int] = (0, 1, 2),
                reference: bool = True, config: TrainConfig | None = None, progress: bool = True,
                **fit_options: Any) -> list[dict]:
    """Accuracy on ``test`` for each (labels per class, strategy, seed); writes ``curve.md``, ``curve.png``
    and ``curve.csv`` to ``out_dir`` and returns the points (one dict each).

    ``task`` is an untrained classifier (copied for every point); ``fit_options`` go to each ``fit``
    (``epochs=10, lr=1e-4``). Budgets larger than a class's count take the whole class.
    """
    import csv

    from tqdm.auto import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    examples, targets = task.labelled(train)
    test_examples, test_targets = task.labelled(test)
    config = (config or task.default_config()).replace(save_checkpoints=False, plot=False, progress=False)
    pristine = copy.deepcopy(task.model)
    ref = task.reference() if reference else None
    probes = {m for m in strategies if _is_cached_probe(m)}
    encoded = _encode_once(task, train, test, config, out) if probes else None
    points = []
    jobs = [(seed, b, m) for seed in seeds for b in budgets for m in ([*strategies] + (["reference"] if ref is not None else []))]
    for seed, per_class, method in tqdm(jobs, desc="label curve", disable=not progress, leave=False):
        idx = budget_subset(targets, per_class, seed)
        part = ([examples[i] for i in idx], [targets[i] for i in idx])
        t0 = time.perf_counter()
        if method == "reference":
            model = copy.deepcopy(ref).fit(*part)
            acc = float(np.mean([p == str(t) for p, t in zip(model.predict(test_examples), test_targets)]))
        elif method in probes:
            acc = _probe_point(task, pristine, method, encoded, idx, config.replace(
                output_dir=str(out / "runs" / f"{method}-{per_class or 'all'}-seed{seed}"), seed=seed), fit_options)
        else:
            point = task.clone(method, model=pristine)
            run = out / "runs" / f"{method}-{per_class or 'all'}-seed{seed}"
            cache = {"feature_cache": str(out / "features")} if _has_setting(method, "feature_cache") else {}
            point.fit(part, config=config.replace(output_dir=str(run), seed=seed), **cache, **fit_options)
            acc = float(point.evaluate((test_examples, test_targets))["accuracy"])
        points.append({"labels_per_class": per_class or "all", "method": method, "seed": seed, "accuracy": acc,
                       "train_examples": len(idx), "seconds": round(time.perf_counter() - t0, 2)})
    with open(out / "curve.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(points[0]))
        writer.writeheader()
        writer.writerows(points)
    summary = summarise(points)
    (out / "curve.md").write_text(markdown_table(summary, ["labels_per_class", *dict.fromkeys(r["method"] for r in points)])
                                  + f"\n\nAccuracy on {len(test_examples)} test examples, mean ± std over seeds "
                                  f"{', '.join(map(str, seeds))}.\n")
    plot_curve(points, out / "curve.png")
    return points


def _has_setting(strategy: str, name: str) -> bool:
    return any(f.name == name for f in dataclasses.fields(get_strategy(strategy).config_class))


def _is_cached_probe(strategy: str) -> bool:
    stages = get_strategy(strategy).stages()
    return len(stages) == 1 and stages[0].uses_feature_cache


def _encode_once(task: Any, train: Any, test: Any, config: TrainConfig, out: Path) -> tuple[Any, Any]:
    """The training data as the task prepares it, and its feature sets (train, test) from the task's own
    cached stage: one pass of the frozen encoder over each, stored in ``out/features``."""
    first = task.clone()
    data = first.training_data(train, test, config)
    stage = get_strategy("linear_probe")
    sets = first.cached_stage(stage, data, stage.stage_config(config), out)
    if len(sets.train) != len(task.labelled(train)[0]):
        raise RuntimeError("the task's training data does not keep one row per example; probe points cannot "
                           "share its features")
    return data, sets


def _probe_point(task: Any, pristine: Any, method: str, encoded: tuple[Any, Any], idx: list[int], config: TrainConfig,
                 fit_options: dict) -> float:
    """One probe point: a fresh head trained by ``fit`` on the rows ``idx`` of the shared features."""

    import torch

    from .classifier import FeatureSet

    data, sets = encoded
    rows = torch.as_tensor(idx)
    subset = dataclasses.replace(sets, train=FeatureSet(sets.train.features[rows], sets.train.labels[rows]), eval=None)
    point = task.clone(method, model=pristine)
    config = config.replace(**{k: v for k, v in fit_options.items() if k in LOOP_FIELDS})  # the loop's fit keywords
    point.start_training(config)  # the new head from the point's seed, as training_data always does
    point.fit_prepared(dataclasses.replace(data, eval=None, info={**data.info, "train_examples": len(idx), "eval_examples": 0}),
                       config=config, features=subset)
    head = point.model.head
    with torch.no_grad():
        pred = head(sets.eval.features.to(head.weight.device, head.weight.dtype)).argmax(-1).cpu()
    return float((pred == sets.eval.labels).float().mean())


def summarise(points: Sequence[dict]) -> list[dict]:
    """One row per budget, one ``mean ± std`` cell per method."""
    rows: dict[Any, dict] = {}
    for budget in dict.fromkeys(p["labels_per_class"] for p in points):
        row = rows.setdefault(budget, {"labels_per_class": budget})
        for method in dict.fromkeys(p["method"] for p in points):
            accs = [p["accuracy"] for p in points if p["labels_per_class"] == budget and p["method"] == method]
            if accs:
                row[method] = f"{np.mean(accs):.3f} ± {np.std(accs):.3f}"
    return list(rows.values())


def plot_curve(points: Sequence[dict], path: str | Path) -> Path:
    plt = pyplot()
    budgets = list(dict.fromkeys(p["labels_per_class"] for p in points))
    x = {b: i for i, b in enumerate(budgets)}
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for method in dict.fromkeys(p["method"] for p in points):
        ms = [[p["accuracy"] for p in points if p["method"] == method and p["labels_per_class"] == b] for b in budgets]
        ax.errorbar([x[b] for b in budgets], [np.mean(m) for m in ms], yerr=[np.std(m) for m in ms], marker="o",
                    capsize=3, label=method, linestyle="--" if method == "reference" else "-")
    ax.set_xticks(range(len(budgets)), [str(b) for b in budgets])
    ax.set_xlabel("labelled examples per class")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
