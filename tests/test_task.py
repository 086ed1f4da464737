"""The task contract: one stage loop for every task, strategies as plug-ins, trainer hooks, common knows no domain."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from torch import nn

from transferkit.common import Callback, Strategy, StrategyConfig, TrainConfig, Trainer, register_strategy
from transferkit.common.strategies import get_strategy, head_groups, split_decay, unregister_strategy


@dataclass
class NormsConfig(StrategyConfig):
    lr_scale: float = field(default=1.0, metadata={"help": "Rate of the norms as a multiple of lr."})


class Norms(Strategy):
    """A toy strategy written in a test: only the encoder's normalisation layers (and the head) learn."""

    name = "toy_norms"
    config_class = NormsConfig

    def param_groups(self, encoder, head, config):
        encoder.set_trainable(False)
        named = [(n, p) for n, p in encoder.learnable_parameters() if "norm" in n.lower()]
        for _, p in named:
            p.requires_grad_(True)
        return split_decay(named, config.lr * self.config.lr_scale, 0.0, "norms") + head_groups(head, config)


@pytest.fixture()
def toy_strategy():
    register_strategy(Norms)
    yield "toy_norms"
    unregister_strategy("toy_norms")


def _changed(before: dict, model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}


def _expected(task) -> set[str]:
    enc_prefix = {id(p): n for n, p in task.model.named_parameters()}
    norms = {enc_prefix[id(p)] for n, p in task.encoder.learnable_parameters() if "norm" in n.lower()}
    head = {enc_prefix[id(p)] for p in task.head.parameters()}
    return norms | head


def test_a_strategy_registered_in_a_test_trains_a_classifier(toy_strategy, vit_dir, images, tmp_path):
    from transferkit.vision import ImageClassifier

    clf = ImageClassifier.from_pretrained(str(vit_dir), labels=["bright", "dark"], strategy=toy_strategy)
    before = {n: p.detach().clone() for n, p in clf.model.named_parameters()}
    clf.fit(images, output_dir=str(tmp_path), epochs=2, batch_size=8, lr=1e-2, progress=False, toy_norms_lr_scale=2.0)
    assert clf.strategy.config.lr_scale == 2.0  # the prefixed keyword reached the toy's own config
    expected = _expected(clf)
    assert any("norm" in n for n in expected)
    assert _changed(before, clf.model) == expected
    run = json.loads((tmp_path / "transferkit-run.json").read_text())
    assert run["strategy"] == {"name": "toy_norms", "lr_scale": 2.0}


def test_the_same_strategy_trains_the_speech_recognizer(toy_strategy, tmp_path):
    from test_audio_models import tiny_wav2vec2

    from transferkit.audio import SpeechRecognizer

    texts = ["ab", "ba", "a b", "b a"] * 2
    waves = [(0.3 * np.sin(np.arange(4000) * (0.05 + 0.01 * i))).astype(np.float32) for i in range(len(texts))]
    asr = SpeechRecognizer.from_pretrained(tiny_wav2vec2(tmp_path / "w2v"), transcripts=texts, strategy=toy_strategy,
                                           mask_time_prob=0.0)
    before = {n: p.detach().clone() for n, p in asr.model.named_parameters()}
    asr.fit((waves, texts), output_dir=str(tmp_path / "run"), epochs=2, batch_size=4, lr=1e-2, progress=False)
    expected = _expected(asr)
    assert any("norm" in n for n in expected) and not any("feature_extractor" in n for n in expected)
    assert _changed(before, asr.model) == expected


def test_an_unregistered_strategy_instance_works_too(vit_dir, images, tmp_path):
    from transferkit.vision import ImageClassifier

    clf = ImageClassifier.from_pretrained(str(vit_dir), labels=["bright", "dark"], strategy=Norms(lr_scale=0.5))
    clf.fit(images, output_dir=str(tmp_path), epochs=1, batch_size=8, progress=False)
    assert clf.strategy.name == "toy_norms" and clf.results["toy_norms"].history


def test_recognizer_runs_rebuild_from_their_folder(tmp_path):
    from test_audio_models import tiny_wav2vec2

    from transferkit.audio import SpeechRecognizer

    texts = ["ab", "ba"] * 4
    waves = [(0.3 * np.sin(np.arange(4000) * (0.05 + 0.01 * i))).astype(np.float32) for i in range(len(texts))]
    asr = SpeechRecognizer.from_pretrained(tiny_wav2vec2(tmp_path / "w2v"), transcripts=texts, strategy="lora",
                                           mask_time_prob=0.0)
    asr.fit((waves, texts), eval=(waves, texts), output_dir=str(tmp_path / "run"), epochs=2, batch_size=4, lr=1e-2,
            lora_r=2, progress=False)
    again = SpeechRecognizer.from_run(tmp_path / "run")
    assert again.strategy.config.r == 2
    assert again.tokenizer.get_vocab() == asr.tokenizer.get_vocab()
    with torch.no_grad():
        x = torch.as_tensor(np.stack(waves[:2]))
        assert torch.allclose(asr.model.eval()(x).logits, again.model.eval()(x).logits, atol=1e-5)


# -- trainer hooks --------------------------------------------------------------------------------
class _Counter(Callback):
    def __init__(self):
        self.batches, self.epochs = 0, 0

    def on_batch_end(self, trainer, loss):
        self.batches += 1

    def on_epoch_end(self, trainer, row):
        self.epochs += 1
        row["batches_so_far"] = self.batches

    def state_dict(self):
        return {"batches": self.batches, "epochs": self.epochs}

    def load_state_dict(self, state):
        self.batches, self.epochs = state["batches"], state["epochs"]


def _data(n=20):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    return [{"x": x[i], "y": int(x[i].sum() > 0)} for i in range(n)]


def _loss(model, batch):
    return nn.functional.cross_entropy(model(batch["x"]), batch["y"])


def test_callback_state_is_checkpointed_and_resumed(tmp_path):
    cfg = TrainConfig(output_dir=str(tmp_path), epochs=3, batch_size=5, progress=False, plot=False)
    calls = {"n": 0}

    def dies_in_epoch_three(m, b):
        calls["n"] += 1
        if calls["n"] == 9:  # 4 batches per epoch: the first of epoch 3
            raise KeyboardInterrupt
        return _loss(m, b)

    with pytest.raises(KeyboardInterrupt):
        Trainer(nn.Linear(4, 2), cfg, compute_loss=dies_in_epoch_three, callbacks=[_Counter()]).fit(_data())
    counter = _Counter()
    result = Trainer(nn.Linear(4, 2), cfg.replace(resume=True), compute_loss=_loss, callbacks=[counter]).fit(_data())
    assert (counter.batches, counter.epochs) == (12, 3)  # not 4 and 1: the count went on from the checkpoint
    assert [h["batches_so_far"] for h in result.history] == [4, 8, 12]


def test_evaluate_runs_every_epoch_without_an_eval_loader(tmp_path):
    seen = []

    def evaluate(model, loader):
        seen.append(loader)
        return {"score": -float(model.weight.norm())}

    cfg = TrainConfig(output_dir=str(tmp_path), epochs=3, batch_size=5, progress=False, plot=False, metric_for_best="score")
    result = Trainer(nn.Linear(4, 2), cfg, compute_loss=_loss, evaluate=evaluate).fit(_data())
    assert seen == [None, None, None]
    assert result.best_epoch is not None and all("score" in h for h in result.history)


def test_optimizer_and_scheduler_factories(tmp_path):
    made = {}

    def sgd(groups, config):
        made["optimizer"] = torch.optim.SGD(groups, lr=config.lr)
        return made["optimizer"]

    def constant(optimizer, total_steps, config):
        made["total_steps"] = total_steps
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)

    cfg = TrainConfig(output_dir=str(tmp_path), epochs=2, batch_size=5, lr=0.1, progress=False, plot=False)
    result = Trainer(nn.Linear(4, 2), cfg, compute_loss=_loss, optimizer=sgd, scheduler=constant).fit(_data())
    assert isinstance(made["optimizer"], torch.optim.SGD) and made["total_steps"] == 8
    assert [h["lr"] for h in result.history] == [0.1, 0.1]


# -- common knows no domain ---------------------------------------------------------------------------
def test_common_imports_no_domain():
    code = ("import sys, transferkit.common, transferkit.common.cli, transferkit.common.task; "
            "print(sorted(m for m in sys.modules if m.startswith('transferkit.') and not m.startswith('transferkit.common')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_encoder_specs_of_a_domain_load_it_on_demand():
    code = ("from torch import nn; from transferkit.common import load_encoder; import sys; "
            "enc = load_encoder('torchvision:resnet18'); print(enc.feature_dim, 'transferkit.vision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["512", "True"]


def test_get_strategy_builds_from_what_a_run_folder_recorded():
    s = get_strategy({"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0, "targets": None})
    assert (s.name, s.config.r, s.config.alpha) == ("lora", 4, 8)
