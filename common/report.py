"""Plots and markdown tables for run reports."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def plot_learning_curve(history: Sequence[dict], path: str | Path, metric: str | None = None) -> Path:
    """Training loss (and the evaluation metric, if logged) per epoch."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss", color="tab:blue")
    if "eval_loss" in history[0]:
        ax.plot(epochs, [h["eval_loss"] for h in history], "s--", label="eval loss", color="tab:cyan")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if metric and metric in history[0] and metric != "eval_loss":
        ax2 = ax.twinx()
        ax2.plot(epochs, [h[metric] for h in history], "^-", color="tab:orange", label=metric)
        ax2.set_ylabel(metric)
        ax2.legend(loc="center right")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_confusion(cm: np.ndarray, labels: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Confusion matrix with counts; rows are true labels, columns predictions."""
    plt = _pyplot()
    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    peak = cm.max() if cm.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if cm[i, j] > peak / 2 else "black")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_bars(rows: Sequence[dict], label_key: str, value_keys: Sequence[str], path: str | Path,
              title: str = "", ylabel: str = "") -> Path:
    """Grouped bars: one group per row, one bar per value key."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(rows) * len(value_keys)), 3.8))
    width = 0.8 / len(value_keys)
    x = np.arange(len(rows))
    for k, key in enumerate(value_keys):
        vals = [r.get(key, np.nan) for r in rows]
        ax.bar(x + k * width - 0.4 + width / 2, vals, width, label=key)
    ax.set_xticks(x, [str(r[label_key]) for r in rows], rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if title:
        ax.set_title(title)
    return _save(fig, path)


def markdown_table(rows: Sequence[dict], columns: Sequence[str], floatfmt: str = ".3f") -> str:
    """A GitHub markdown table of ``rows`` restricted to ``columns`` (missing cells stay blank)."""

    def cell(v: object) -> str:
        if isinstance(v, float):
            return format(v, floatfmt)
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
