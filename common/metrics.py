"""Classification metrics computed from a confusion matrix, so evaluation never keeps all outputs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class ConfusionMatrix:
    """Accumulates predictions batch by batch; metrics come from the counts alone."""

    def __init__(self, num_classes: int) -> None:
        self.counts = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, y_true: torch.Tensor | np.ndarray, y_pred: torch.Tensor | np.ndarray) -> None:
        t = np.asarray(torch.as_tensor(y_true).detach().cpu()).reshape(-1)
        p = np.asarray(torch.as_tensor(y_pred).detach().cpu()).reshape(-1)
        np.add.at(self.counts, (t, p), 1)

    def metrics(self) -> dict[str, float]:
        return metrics_from_confusion(self.counts)


def metrics_from_confusion(cm: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 (mean of per-class F1 over classes that occur in truth or predictions)."""
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    total = cm.sum()
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    present = (support + predicted) > 0
    return {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
    }


def per_class_report(cm: np.ndarray, labels: Sequence[str]) -> list[dict]:
    """Precision, recall, F1 and support of every class."""
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    rows = []
    for i, label in enumerate(labels):
        p = tp[i] / predicted[i] if predicted[i] else 0.0
        r = tp[i] / support[i] if support[i] else 0.0
        rows.append({"label": label, "precision": p, "recall": r,
                     "f1": 2 * p * r / (p + r) if p + r else 0.0, "support": int(support[i])})
    return rows
