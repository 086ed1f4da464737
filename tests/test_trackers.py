"""Experiment trackers through Accelerate: what TensorBoard received is what metrics.jsonl says."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from torch import nn

from transferkit.common import TrainConfig, Trainer


def _data(n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return [{"x": x[i], "labels": (x[i, 0] > 0).long()} for i in range(n)]


def _loss(model, batch):
    return nn.functional.cross_entropy(model(batch["x"]), batch["labels"])


def _accuracy(model, loader):
    right = sum((model(b["x"]).argmax(-1) == b["labels"]).sum().item() for b in loader)
    return {"accuracy": right / 8}


def test_tensorboard_event_file_holds_the_logged_metrics(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = TrainConfig(output_dir=str(tmp_path / "run"), epochs=3, batch_size=5, lr=1e-2, progress=False, plot=False,
                      report_to="tensorboard")
    torch.manual_seed(0)
    Trainer(nn.Linear(6, 2), cfg, compute_loss=_loss, evaluate=_accuracy).fit(_data(), _data(8, seed=1))

    # Accelerate names the run after the output folder; hyperparameters go to a sub-folder of it.
    (events,) = (tmp_path / "run/tracking/run").glob("events.out.tfevents.*")
    acc = EventAccumulator(str(events.parent))
    acc.Reload()
    lines = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    for key in ("train_loss", "accuracy", "lr"):
        logged = acc.Scalars(f"epoch/{key}")
        # TensorBoard keeps float32; one point per epoch, at the optimizer step the epoch ended on.
        assert [e.step for e in logged] == [4, 8, 12]
        assert [e.value for e in logged] == [np.float32(x[key]) for x in lines], key
    steps = acc.Scalars("train/loss")
    assert [e.step for e in steps] == list(range(1, 13))  # 20 examples / batch 5 = 4 steps per epoch
    # Each epoch's mean of the per-step losses is its train_loss.
    for epoch, line in enumerate(lines):
        mean = np.mean([e.value for e in steps[4 * epoch:4 * epoch + 4]])
        assert mean == pytest.approx(line["train_loss"], rel=1e-6)


@pytest.mark.parametrize("tracker", ["wandb", "mlflow"])
def test_a_tracker_that_is_not_installed_says_how_to_install_it(tmp_path, monkeypatch, tracker):
    monkeypatch.setitem(sys.modules, tracker, None)  # absent, whatever this environment holds
    cfg = TrainConfig(output_dir=str(tmp_path), epochs=1, progress=False, report_to=tracker)
    with pytest.raises(ImportError, match=f"pip install {tracker}"):
        Trainer(nn.Linear(6, 2), cfg, compute_loss=_loss)


def test_unknown_tracker_is_refused():
    with pytest.raises(ValueError, match="report_to must be one of"):
        TrainConfig(report_to="comet")
