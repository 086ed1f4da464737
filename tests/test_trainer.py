"""The training loop: exact resume, skipped non-finite steps, early stopping, logs, feature cache."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from transferkit.common import (
    ClassificationModel,
    TrainConfig,
    Trainer,
    load_encoder,
    resolve_mixed_precision,
)
from transferkit.common.classifier import evaluate_classification
from transferkit.common.precision import cpu_has_native_bf16
from transferkit.common.trainer import warmup_cosine


def _data(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] > 0).long()
    return [{"x": x[i], "labels": y[i]} for i in range(n)]


class _Noisy(nn.Module):
    """Dropout makes the result depend on the RNG state, which a resume must restore."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2))

    def forward(self, x):
        return self.net(x)


def _loss(model, batch):
    return nn.functional.cross_entropy(model(batch["x"]), batch["labels"])


def _cfg(tmp_path, **kw):
    return TrainConfig(output_dir=str(tmp_path), epochs=3, batch_size=5, lr=1e-2, progress=False, **kw)


def test_killed_after_epoch_one_and_resumed_matches_uninterrupted(tmp_path):
    torch.manual_seed(0)
    ref = _Noisy()
    init = {k: v.clone() for k, v in ref.state_dict().items()}
    Trainer(ref, _cfg(tmp_path / "ref"), compute_loss=_loss).fit(_data())

    model = _Noisy()
    model.load_state_dict(init)
    calls = {"n": 0}

    def dies_in_epoch_two(m, b):
        calls["n"] += 1
        if calls["n"] == 6:  # 24 examples / batch 5 = 5 steps per epoch: the first step of epoch 2
            raise KeyboardInterrupt
        return _loss(m, b)

    with pytest.raises(KeyboardInterrupt):
        Trainer(model, _cfg(tmp_path / "run"), compute_loss=dies_in_epoch_two).fit(_data())
    state = json.loads((tmp_path / "run/checkpoints/last/trainer_state.json").read_text())
    assert state["epoch"] == 1

    torch.manual_seed(123)  # a new process would start from another RNG state
    fresh = _Noisy()
    result = Trainer(fresh, _cfg(tmp_path / "run", resume=True), compute_loss=_loss).fit(_data())
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    for k, v in ref.state_dict().items():
        assert torch.equal(v, fresh.state_dict()[k]), k


def test_non_finite_loss_skips_the_step_and_counts_it(tmp_path):
    model = nn.Linear(6, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def nan_loss(m, b):
        return _loss(m, b) * float("nan")

    result = Trainer(model, _cfg(tmp_path, save_checkpoints=False).replace(epochs=1), compute_loss=nan_loss).fit(_data(10))
    assert result.skipped_steps == 2
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_logs_config_metrics_and_curve(tmp_path):
    model = nn.Linear(6, 2)

    def evaluate(m, loader):
        correct = sum((m(b["x"]).argmax(-1) == b["labels"]).sum().item() for b in loader)
        return {"accuracy": correct / 12}

    result = Trainer(model, _cfg(tmp_path), compute_loss=_loss, evaluate=evaluate).fit(_data(), _data(12, seed=1))
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2, 3]
    assert all("accuracy" in x and "train_loss" in x for x in lines)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["epochs"] == 3 and saved["resolved_mixed_precision"] in ("no", "bf16")
    assert (tmp_path / "learning_curve.png").stat().st_size > 1000
    assert result.best_metric == max(x["accuracy"] for x in lines)


def test_early_stopping_and_best_weights(tmp_path):
    model = nn.Linear(6, 2)
    scores = iter([0.5, 0.9, 0.6, 0.4, 0.3, 0.2])
    snapshots = []

    def evaluate(m, loader):
        snapshots.append({k: v.clone() for k, v in m.state_dict().items()})
        return {"accuracy": next(scores)}

    cfg = _cfg(tmp_path, early_stopping_patience=2).replace(epochs=6)
    result = Trainer(model, cfg, compute_loss=_loss, evaluate=evaluate).fit(_data(), _data(6))
    assert result.stopped_early and len(result.history) == 4
    assert result.best_epoch == 2
    for k, v in model.state_dict().items():  # the model ends with the best epoch's weights
        assert torch.equal(v, snapshots[1][k])


def test_an_accuracy_tie_goes_to_the_epoch_with_the_lower_eval_loss(tmp_path):
    model = nn.Linear(6, 2)
    rows = iter([(0.5, 0.9), (0.75, 0.8), (0.75, 0.6), (0.75, 0.7), (0.5, 0.4)])  # (accuracy, eval_loss)
    snapshots = []

    def evaluate(m, loader):
        snapshots.append({k: v.clone() for k, v in m.state_dict().items()})
        acc, loss = next(rows)
        return {"accuracy": acc, "eval_loss": loss}

    result = Trainer(model, _cfg(tmp_path).replace(epochs=5), compute_loss=_loss, evaluate=evaluate).fit(_data(), _data(6))
    assert (result.best_epoch, result.best_metric) == (3, 0.75)  # not epoch 2, the first to reach 0.75
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshots[2][k])


def test_unknown_metric_for_best_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="metric_for_best='f1'"):
        Trainer(nn.Linear(6, 2), _cfg(tmp_path, metric_for_best="f1"), compute_loss=_loss,
                evaluate=lambda m, loader: {"accuracy": 1.0}).fit(_data(), _data(4))


def test_warmup_then_cosine_schedule():
    f = warmup_cosine(total_steps=10, warmup_steps=2)
    rates = [f(s) for s in range(10)]
    assert rates[0] < rates[1] < rates[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(rates[2:], rates[3:]))
    assert f(10) == pytest.approx(0.0)


def test_auto_precision_is_fp32_on_cpus_without_native_bf16():
    if torch.cuda.is_available():
        pytest.skip("GPU present")
    assert resolve_mixed_precision("auto") == ("bf16" if cpu_has_native_bf16() else "no")
    assert resolve_mixed_precision("fp16") == "fp16"


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainConfig(mixed_precision="fp8")
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="unknown TrainConfig fields: lr_rate"):
        TrainConfig.from_dict({"lr_rate": 1})


def test_second_linear_probe_run_never_calls_the_encoder(vit_dir, tmp_path, images):
    from transferkit.vision import ImageClassifier

    calls = {"n": 0}
    cache = tmp_path / "features"
    accs = []
    for run in range(2):
        clf = ImageClassifier.from_pretrained(str(vit_dir), labels=["bright", "dark"], strategy="linear_probe")
        clf.encoder.module.register_forward_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
        clf.fit(images, eval=images, output_dir=str(tmp_path / f"run{run}"), feature_cache=str(cache),
                epochs=20, batch_size=8, head_lr=5e-2, progress=False)
        if run == 0:
            assert calls["n"] > 0
            calls["n"] = 0
        accs.append(clf.results["linear_probe"].best_metric)
    assert calls["n"] == 0
    assert accs[0] == accs[1] and accs[0] > 0.9  # bright vs dark is linearly separable in any features


def test_evaluate_classification_streams_a_confusion_matrix():
    model = nn.Linear(2, 2, bias=False)
    model.weight.data = torch.eye(2)
    batches = [{"x": torch.tensor([[1.0, 0.0], [0.0, 1.0]]), "labels": torch.tensor([0, 0])}]

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, x):
            return self.m(x)

    out = evaluate_classification(2)(Wrap(), batches)
    assert out["accuracy"] == 0.5
    assert out["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)


def test_classification_model_with_cached_features_skips_encoder(vit_dir):
    model = ClassificationModel(load_encoder(str(vit_dir)), 2)
    feats = torch.randn(3, model.encoder.feature_dim)
    assert torch.allclose(model(features=feats), model.head(feats))


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    torch.manual_seed(0)
    big, small = nn.Linear(6, 2), nn.Linear(6, 2)
    small.load_state_dict(big.state_dict())
    cfg = _cfg(tmp_path, save_checkpoints=False, warmup_ratio=0.0, max_grad_norm=None).replace(epochs=1, batch_size=8)
    Trainer(big, cfg, compute_loss=_loss).fit(_data(8))
    Trainer(small, cfg.replace(batch_size=4, grad_accum_steps=2, output_dir=str(tmp_path / "acc")),
            compute_loss=_loss).fit(_data(8))
    for k, v in big.state_dict().items():
        assert torch.allclose(v, small.state_dict()[k], atol=1e-6), k



def test_cached_probe_features_come_from_unaugmented_images(vit_dir, tmp_path, images):
    """Regression: the probe once cached features of randomly cropped training images."""
    from safetensors.torch import load_file

    from transferkit.vision import AugmentConfig, ImageClassifier
    from transferkit.vision.transforms import eval_transform

    clf = ImageClassifier.from_pretrained(str(vit_dir), labels=["bright", "dark"], strategy="linear_probe")
    clf.fit(images, augment=AugmentConfig(crop_scale=(0.1, 0.2)), output_dir=str(tmp_path), epochs=1,
            batch_size=8, progress=False)
    (cached,) = [load_file(str(f)) for f in (tmp_path / "features").glob("*.safetensors")]
    tf = eval_transform(clf.encoder.processor)
    from PIL import Image

    with torch.no_grad():
        expected = clf.encoder(pixel_values=torch.stack([tf(Image.fromarray(x)) for x in images[0]]))
    assert torch.allclose(cached["features"], expected, atol=1e-5)


def test_evaluation_batches_are_collated_outside_autocast(tmp_path):
    """Regression: evaluation ran its loader inside autocast, so a torch feature extractor in the
    collate function computed in bf16 (AST's Kaldi fbank failed outright)."""
    seen = []

    def collate(rows):
        seen.append(torch.is_autocast_enabled("cpu"))
        return {"x": torch.stack([r["x"] for r in rows]), "labels": torch.tensor([r["labels"] for r in rows])}

    calls = []

    def evaluate(model, loader):
        for _ in loader:
            calls.append(torch.is_autocast_enabled("cpu"))  # the model itself still runs under autocast
        return {"accuracy": 1.0}

    cfg = _cfg(tmp_path, mixed_precision="bf16", save_checkpoints=False, plot=False).replace(epochs=1)
    Trainer(nn.Linear(6, 2), cfg, compute_loss=_loss, evaluate=evaluate).fit(_data(10), _data(4), collate_fn=collate)
    assert seen and not any(seen) and calls and all(calls)


def test_frozen_batch_norm_keeps_its_running_statistics(tmp_path):
    """Regression: under partial/LoRA the frozen body's batch norms still updated their running
    statistics in train mode, so the "frozen" encoder drifted towards the new data."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 6), nn.BatchNorm1d(6), nn.Linear(6, 2))
    frozen_bn = model[1]
    for p in [*model[0].parameters(), *model[1].parameters()]:
        p.requires_grad_(False)
    before = frozen_bn.running_mean.clone()
    Trainer(model, _cfg(tmp_path, save_checkpoints=False, plot=False).replace(epochs=1), compute_loss=_loss).fit(_data(10))
    assert torch.equal(frozen_bn.running_mean, before)
    trained = nn.Sequential(nn.Linear(6, 6), nn.BatchNorm1d(6), nn.Linear(6, 2))
    start = trained[1].running_mean.clone()
    Trainer(trained, _cfg(tmp_path / "t", save_checkpoints=False, plot=False).replace(epochs=1), compute_loss=_loss).fit(_data(10))
    assert not torch.equal(trained[1].running_mean, start)  # a batch norm that trains still tracks its data


def test_learning_curve_draws_each_series_without_matplotlib(tmp_path):
    import subprocess
    import sys

    from PIL import Image

    from transferkit.common.report import nice_ticks, plot_learning_curve

    history = [{"epoch": e, "train_loss": 1 / e, "eval_loss": 1.2 / e, "accuracy": 0.5 + 0.04 * e} for e in range(1, 11)]
    png = plot_learning_curve(history, tmp_path / "curve.png", metric="accuracy")
    colors = {c for _, c in Image.open(png).convert("RGB").getcolors(1 << 20)}
    assert {(31, 119, 180), (23, 190, 207), (255, 127, 14)} <= colors  # train loss, eval loss, accuracy
    assert Image.open(png).size == (660, 385)
    assert nice_ticks(0.12, 0.93) == [0.2, 0.4, 0.6, 0.8] and nice_ticks(1, 30, 10) == [5, 10, 15, 20, 25, 30]
    # Drawing a run's curve never imports matplotlib (about 0.4 s of a fresh process).
    code = ("import sys; from transferkit.common.report import plot_learning_curve; "
            f"plot_learning_curve([{{'epoch': 1, 'train_loss': 0.5}}], {str(tmp_path / 'one.png')!r}); "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False" and (tmp_path / "one.png").exists()
