"""Step checkpoints: a run killed inside an epoch resumes from its last step checkpoint, trains only
the batches it had not trained, and ends with the uninterrupted run's exact weights."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import noisy_collate, toy_loss, toy_model, toy_rows

from transferkit.common import Callback, TrainConfig, Trainer


def _cfg(path, **kw):
    return TrainConfig(output_dir=str(path), epochs=3, batch_size=5, lr=1e-2, progress=False, plot=False, **kw)


class _Count(Callback):
    """Counts trained batches; with ``kill_at`` it raises after that many, as a kill -9 would stop the run."""

    def __init__(self, kill_at=None):
        self.batches, self.kill_at = 0, kill_at

    def on_batch_end(self, trainer, loss):
        self.batches += 1
        if self.batches == self.kill_at:
            raise KeyboardInterrupt


def _fit(path, callbacks=(), evaluate=None, **kw):
    model = toy_model()
    trainer = Trainer(model, _cfg(path, **kw), compute_loss=toy_loss, callbacks=callbacks, evaluate=evaluate)
    result = trainer.fit(toy_rows(), toy_rows(6, seed=1) if evaluate else None, collate_fn=noisy_collate)
    return trainer.model, result


@pytest.mark.parametrize("accum, kill_at, resumed_batches", [
    # 24 examples / batch 5 = 5 batches per epoch, 15 in all. save_steps=3: step checkpoints after
    # batches 3, 6, 9...; killed after batch 8, the run resumes after batch 6 (epoch 2, batch 1).
    (1, 8, 15 - 6),
    # Two micro-batches per step: 3 optimizer steps per epoch (the last one at the epoch's end).
    # save_steps=2: step 2 is after batch 4, step 4 after batch 7 (epoch 2, batch 2); killed after 9.
    (2, 9, 15 - 7),
])
def test_killed_mid_epoch_resumes_from_the_step_checkpoint_and_matches(tmp_path, accum, kill_at, resumed_batches):
    save_steps = 3 if accum == 1 else 2
    ref_model, ref = _fit(tmp_path / "ref", grad_accum_steps=accum)

    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "run", [_Count(kill_at)], save_steps=save_steps, grad_accum_steps=accum)
    steps = sorted(d.name for d in (tmp_path / "run/checkpoints").iterdir())
    assert steps[-1] == f"step-{save_steps * 2}" and "last" in steps  # epoch 1's checkpoint, then the step ones

    torch.manual_seed(123)  # a new process starts from other generator states
    counter = _Count()
    model, result = _fit(tmp_path / "run", [counter], save_steps=save_steps, grad_accum_steps=accum, resume=True)
    assert counter.batches == resumed_batches  # only what the killed run had not trained
    assert result.steps == ref.steps == (15 if accum == 1 else 9)
    assert [h["train_loss"] for h in result.history] == [h["train_loss"] for h in ref.history]
    for k, v in ref_model.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k


def test_step_checkpoint_at_an_epoch_end_resumes_into_evaluation(tmp_path):
    """save_steps=5 with 5 batches per epoch: the step checkpoint is the epoch's last batch. A kill
    during that epoch's evaluation resumes with no batch left: evaluate, then go on."""
    scores = []

    def evaluate(model, loader):
        with torch.no_grad():
            acc = sum((model(b["x"]).argmax(-1) == b["labels"]).sum().item() for b in loader) / 6
        scores.append(acc)
        if len(scores) == kill_at_eval:
            raise KeyboardInterrupt
        return {"accuracy": acc}

    kill_at_eval = None
    ref_model, ref = _fit(tmp_path / "ref", evaluate=evaluate)
    scores.clear()
    kill_at_eval = 2
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "run", evaluate=evaluate, save_steps=5, save_checkpoints=False)
    counter = _Count()
    kill_at_eval = None
    model, result = _fit(tmp_path / "run", [counter], evaluate=evaluate, save_steps=5, save_checkpoints=False,
                         resume=True)
    assert counter.batches == 5  # epoch 3 only
    assert [h["accuracy"] for h in result.history] == [h["accuracy"] for h in ref.history]
    for k, v in ref_model.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k


def test_save_total_limit_keeps_the_newest_step_checkpoints_and_best_weights(tmp_path):
    calls = []

    def evaluate(model, loader):
        calls.append(1)
        return {"accuracy": 1.0 if len(calls) == 1 else 0.5}  # epoch 1 stays the best

    _fit(tmp_path, evaluate=evaluate, save_steps=2, save_total_limit=2)  # steps 2, 4, ..., 14 of 15
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["best.safetensors", "last", "step-12", "step-14"]
    state = json.loads((folder / "step-14/trainer_state.json").read_text())
    assert state["best_epoch"] == 1 and state["progress"]["batches"] == 4  # step 14: epoch 3, batch 4
    # A fresh run in the same folder drops the old step checkpoints: they must not win a later resume.
    _fit(tmp_path)
    assert not [p for p in folder.iterdir() if p.name.startswith("step-")] and (folder / "last").is_dir()


def test_step_settings_are_checked():
    with pytest.raises(ValueError, match="save_steps must be >= 1"):
        TrainConfig(save_steps=0)
    with pytest.raises(ValueError, match="save_total_limit must be >= 1"):
        TrainConfig(save_total_limit=0)


def test_pretraining_resumed_mid_epoch_anneals_the_gumbel_temperature_as_uninterrupted(tmp_path, monkeypatch):
    """wav2vec2 pretraining: masking draws from numpy, the quantiser's Gumbel noise from torch, and the
    temperature follows a step count kept in a callback; all three must continue where the kill hit."""
    import importlib

    from safetensors.torch import load_file
    from test_audio_models import tiny_wav2vec2, tones

    pretrain_module = importlib.import_module("transferkit.audio.pretrain")

    w2v = tiny_wav2vec2(tmp_path / "w2v")
    waves, _ = tones(8)
    temps, kill = [], {"after": None}
    begin, end = pretrain_module.GumbelAnneal.on_batch_begin, pretrain_module.GumbelAnneal.on_batch_end

    def record(self, trainer, model, batch):
        temps.append(self.temperature)
        begin(self, trainer, model, batch)

    def maybe_kill(self, trainer, loss):
        end(self, trainer, loss)
        if self.step == kill["after"]:
            raise KeyboardInterrupt

    monkeypatch.setattr(pretrain_module.GumbelAnneal, "on_batch_begin", record)
    monkeypatch.setattr(pretrain_module.GumbelAnneal, "on_batch_end", maybe_kill)
    # 8 clips / batch 2 = 4 steps per epoch, 8 in all; a step checkpoint every 3 steps.
    opts = {"num_negatives": 4, "mask_time_length": 2, "epochs": 2, "batch_size": 2, "lr": 1e-3, "progress": False,
            "plot": False, "save_steps": 3, "gumbel_temperature_decay": 0.9}
    ref = pretrain_module.pretrain(waves, w2v, output_dir=tmp_path / "ref", **opts)
    ref_temps = list(temps)
    assert len(ref_temps) == 8 and ref_temps[0] > ref_temps[-1]  # it does anneal

    kill["after"] = 7
    with pytest.raises(KeyboardInterrupt):
        pretrain_module.pretrain(waves, w2v, output_dir=tmp_path / "run", **opts)
    kill["after"], temps[:] = None, []
    res = pretrain_module.pretrain(waves, w2v, output_dir=tmp_path / "run", resume=True, **opts)
    assert temps == ref_temps[6:]  # resumed after step 6 (epoch 2, batch 2): steps 7 and 8, same temperatures
    assert res.final["gumbel_temperature_steps"] == ref.final["gumbel_temperature_steps"] == 8
    a, b = load_file(f"{ref.folder}/model.safetensors"), load_file(f"{res.folder}/model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("save_steps, resumed_batches", [(3, 15 - 6), (None, 15 - 5)])
def test_with_loader_workers_a_resume_matches_when_loading_is_deterministic(tmp_path, save_steps, resumed_batches):
    """Loader workers draw from their own generators; the main process's ones drive only dropout,
    and a resumed process hands them back after its loader took a seed from them. Killed after
    batch 8: resumed from the step checkpoint after batch 6, or from the end of epoch 1."""

    def fit(path, callbacks=(), **kw):
        model = toy_model()
        Trainer(model, _cfg(path, num_workers=1, **kw), compute_loss=toy_loss, callbacks=callbacks).fit(toy_rows())
        return model

    ref = fit(tmp_path / "ref")
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "run", [_Count(8)], save_steps=save_steps)
    counter = _Count()
    model = fit(tmp_path / "run", [counter], save_steps=save_steps, resume=True)
    assert counter.batches == resumed_batches
    for k, v in ref.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k
