"""Encoder + linear head classification, shared by the image and audio classifiers.

Domain packages supply data, collate functions and fingerprints; this module owns the
model shape, the loss, streaming evaluation, and running a strategy's stages (a linear probe
on cached features, then fine-tuning for lp_ft) through the one Trainer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .config import TrainConfig
from .encoders import Encoder
from .features import FeatureCache
from .metrics import ConfusionMatrix
from .strategies import get_strategy
from .trainer import Trainer, TrainResult


class ClassificationModel(nn.Module):
    """``head(encoder(inputs))``; pass ``features=`` to skip the encoder (cached features)."""

    def __init__(self, encoder: Encoder, num_labels: int) -> None:
        super().__init__()
        if num_labels < 2:
            raise ValueError(f"a classifier needs at least 2 labels, got {num_labels}")
        self.encoder = encoder
        self.head = nn.Linear(encoder.feature_dim, num_labels)
        self.reset_head(seed=0)
        self.head_trained = False

    def reset_head(self, seed: int) -> None:
        """Small random weights from ``seed`` alone, whatever ran before in the process."""
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(self.head.weight.shape, generator=g) * 0.01)
            self.head.bias.zero_()

    def forward(self, features: torch.Tensor | None = None, **inputs: Any) -> torch.Tensor:
        if features is None:
            features = self.encoder(**inputs)
        return self.head(features.to(self.head.weight.dtype))


def classification_loss(label_smoothing: float = 0.0) -> Callable[[nn.Module, dict], torch.Tensor]:
    """Cross-entropy on integer labels, or on soft targets (MixUp/CutMix) when labels are 2-D."""

    def loss(model: nn.Module, batch: dict) -> torch.Tensor:
        inputs = dict(batch)
        labels = inputs.pop("labels")
        logits = model(**inputs).float()
        if labels.dim() == 2:
            return -(labels * F.log_softmax(logits, dim=-1)).sum(-1).mean()
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)

    return loss


def evaluate_classification(num_labels: int) -> Callable[[nn.Module, Any], dict]:
    """Accuracy, macro-F1 and mean loss, aggregated batch by batch."""

    def evaluate(model: nn.Module, loader: Any) -> dict:
        cm, loss_sum, n = ConfusionMatrix(num_labels), 0.0, 0
        for batch in loader:
            inputs = dict(batch)
            labels = inputs.pop("labels")
            logits = model(**inputs).float()
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
            n += len(labels)
            cm.update(labels, logits.argmax(-1))
        return {**cm.metrics(), "eval_loss": loss_sum / max(1, n)}

    return evaluate


class _FeatureSet(torch.utils.data.Dataset):
    """Cached features; the loader fetches whole batches at once (``__getitems__``), not row by row."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        self.features, self.labels = features, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"features": self.features[i], "labels": self.labels[i]}

    def __getitems__(self, idx: list[int]) -> dict:
        idx_t = torch.as_tensor(idx)
        return {"features": self.features[idx_t], "labels": self.labels[idx_t]}


def _batched(batch: dict) -> dict:
    return batch


def _cached(cache: FeatureCache, encoder: Encoder, data: Sequence, key: tuple, kw: dict) -> _FeatureSet:
    return _FeatureSet(*cache.get_or_compute(encoder, data, key_parts=key, **kw))


def train_classifier(
    model: ClassificationModel,
    config: TrainConfig,
    train: Sequence,
    eval: Sequence | None = None,
    *,
    train_collate: Callable,
    eval_collate: Callable,
    fingerprints: dict[str, str],
    lengths: Sequence[int] | None = None,
    run_info: dict | None = None,
    probe_train: Sequence | None = None,
) -> dict[str, TrainResult]:
    """Run every stage of ``config.strategy`` and return each stage's result.

    Args:
        probe_train: the training examples without augmentation (prepared like ``eval``); the
            linear-probe stage caches their features. Defaults to ``train``, which must then be
            deterministic: features of randomly augmented examples must never be cached.
        fingerprints: ``{"train": ..., "eval": ..., "preprocess": ...}`` hashes that key the
            feature cache together with the encoder's own fingerprint.
    """
    strategy = get_strategy(config.strategy)
    if not model.head_trained:  # config.seed covers the new head's initialisation too
        model.reset_head(config.seed)
    model.head_trained = True
    out = Path(config.output_dir)
    results: dict[str, TrainResult] = {}
    n_labels = model.head.out_features
    evaluate = evaluate_classification(n_labels) if eval is not None else None
    for stage in strategy.stages:
        stage_strategy = get_strategy(stage) if len(strategy.stages) > 1 else strategy
        stage_dir = out / stage if len(strategy.stages) > 1 else out
        groups = stage_strategy.param_groups(model.encoder, model.head, config)
        if stage_strategy.uses_feature_cache:
            cache = FeatureCache(config.feature_cache or out / "features")
            enc_fp = model.encoder.fingerprint()
            kw = {"collate_fn": eval_collate, "batch_size": config.effective_eval_batch_size, "progress": config.progress}
            train_set = _cached(cache, model.encoder, probe_train if probe_train is not None else train, (enc_fp, fingerprints.get("train"), fingerprints.get("preprocess")), kw)
            eval_set = (_cached(cache, model.encoder, eval, (enc_fp, fingerprints.get("eval"), fingerprints.get("preprocess")), kw)
                        if eval is not None else None)
            epochs = config.probe_epochs if len(strategy.stages) > 1 else config.epochs
            stage_cfg = config.replace(output_dir=str(stage_dir), epochs=max(1, epochs))
            trainer = Trainer(model, stage_cfg, compute_loss=classification_loss(config.label_smoothing),
                              param_groups=groups, evaluate=evaluate, run_info={**(run_info or {}), "stage": stage})
            results[stage] = trainer.fit(train_set, eval_set, collate_fn=_batched)
        else:
            stage_cfg = config.replace(output_dir=str(stage_dir))
            trainer = Trainer(model, stage_cfg, compute_loss=classification_loss(config.label_smoothing),
                              param_groups=groups, evaluate=evaluate, run_info={**(run_info or {}), "stage": stage})
            results[stage] = trainer.fit(train, eval, collate_fn=train_collate, eval_collate_fn=eval_collate, lengths=lengths)
    return results
