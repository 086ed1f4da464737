"""The fast paths keep the slow paths' results: the head-only probe loop, the decode caches."""

from __future__ import annotations

import json

import pytest
import torch

from transferkit.common import ClassificationModel, Encoder, TrainConfig, Trainer, get_strategy
from transferkit.common.classifier import _FeatureSet, classification_loss, evaluate_classification
from transferkit.common.head_loop import fit_head_on_features


def _features(n: int, seed: int) -> _FeatureSet:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 16, generator=g) + 1.5 * torch.nn.functional.one_hot(y, 16).float()  # separable-ish
    return _FeatureSet(x, y)


def _probe(tmp_path, name: str, head_only: bool, **cfg):
    model = ClassificationModel(Encoder(torch.nn.Linear(4, 16), 16), 3)
    config = TrainConfig(output_dir=str(tmp_path / name), epochs=6, batch_size=16, head_lr=5e-2, progress=False,
                         plot=False, mixed_precision="no", **cfg)
    model.encoder.requires_grad_(False)
    groups = get_strategy("linear_probe").param_groups(model.encoder, model.head, config)
    trainer = Trainer(model, config, compute_loss=classification_loss(), param_groups=groups,
                      evaluate=evaluate_classification(3))
    train, val = _features(90, 0), _features(40, 1)

    def rows(fs):  # the Trainer's side reads the same vectors row by row
        return [{"features": fs.features[i], "labels": fs.labels[i]} for i in range(len(fs))]

    def collate(batch):
        return {k: torch.stack([r[k] for r in batch]) for k in ("features", "labels")}

    result = (fit_head_on_features(trainer, train, val) if head_only
              else trainer.fit(rows(train), rows(val), collate_fn=collate))
    return model, result, tmp_path / name


@pytest.mark.parametrize("cfg", [{}, {"grad_accum_steps": 2, "max_grad_norm": 0.5}])
def test_head_only_loop_matches_the_trainer_on_cached_features(tmp_path, cfg):
    slow_model, slow, slow_dir = _probe(tmp_path, "trainer", False, **cfg)
    fast_model, fast, fast_dir = _probe(tmp_path, "head", True, **cfg)
    # Same order, optimizer, schedule and clipping: the same weights, epoch by epoch.
    torch.testing.assert_close(fast_model.head.weight, slow_model.head.weight, atol=1e-5, rtol=1e-4)
    assert fast.best_epoch == slow.best_epoch and fast.best_metric == pytest.approx(slow.best_metric)
    for a, b in zip(fast.history, slow.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["accuracy"] == pytest.approx(b["accuracy"])
    # The run folder holds what the Trainer's holds: config, metrics per epoch, best and last weights.
    lines = (fast_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == list(range(1, 7))
    assert (fast_dir / "checkpoints" / "best.safetensors").exists()
    assert (fast_dir / "checkpoints" / "last" / "model.safetensors").exists()
    assert json.loads((fast_dir / "config.json").read_text())["epochs"] == 6


def test_head_only_loop_restores_the_best_epoch_and_keeps_the_encoder(tmp_path):
    from safetensors.torch import load_file

    torch.manual_seed(3)
    model, result, run = _probe(tmp_path, "head", True)
    torch.manual_seed(3)
    untouched = ClassificationModel(Encoder(torch.nn.Linear(4, 16), 16), 3)
    best = load_file(str(run / "checkpoints" / "best.safetensors"))
    assert result.best_epoch is not None
    torch.testing.assert_close(best["head.weight"], model.head.weight)  # the model ends on its best epoch
    assert result.history[result.best_epoch - 1]["accuracy"] == result.best_metric
    torch.testing.assert_close(best["encoder.module.weight"], untouched.encoder.module.weight)  # frozen: never moved
