"""Strategies own their search space: a strategy registered here is searched with its own settings."""

from __future__ import annotations

import csv
from dataclasses import dataclass

import numpy as np
import pytest

pytest.importorskip("optuna", reason="the recipe search needs optuna (pip install optuna)")

import optuna  # noqa: E402

from transferkit.common import Strategy, StrategyConfig, load_encoder  # noqa: E402
from transferkit.common.config import setting  # noqa: E402
from transferkit.common.search import SearchConfig, suggest  # noqa: E402
from transferkit.common.strategies import head_groups, register_strategy, unregister_strategy  # noqa: E402
from transferkit.vision import ImageClassifier  # noqa: E402


@dataclass
class HeadScaleConfig(StrategyConfig):
    scale: float = setting(1.0, "Multiplier of the head's rate.", gt=0)


class HeadScale(Strategy):
    """A frozen encoder whose head learns at ``scale`` times its rate."""

    name = "toy_head_scale"
    config_class = HeadScaleConfig
    trains_encoder = False

    @classmethod
    def search_space(cls, trial):
        return {"scale": trial.suggest_float("scale", 0.5, 2.0)}

    def param_groups(self, encoder, head, config):
        encoder.set_trainable(False)
        return head_groups(head, config.replace(head_lr=config.head_lr * self.config.scale))


@pytest.fixture
def registered():
    register_strategy(HeadScale)
    yield
    unregister_strategy(HeadScale.name)


def test_suggest_asks_the_strategy_for_its_settings(registered):
    trial = optuna.trial.FixedTrial({"strategy": "toy_head_scale", "head_lr": 0.01, "scale": 1.5})
    assert suggest(trial, ["toy_head_scale"], None) == ("toy_head_scale", {"scale": 1.5}, {"head_lr": 0.01})
    trial = optuna.trial.FixedTrial({"strategy": "lora", "head_lr": 0.01, "lr": 1e-4, "r": 16})
    assert suggest(trial, ["lora"], None) == ("lora", {"r": 16}, {"head_lr": 0.01, "lr": 1e-4})


def test_a_registered_strategy_is_searched_with_its_settings(registered, tmp_path):
    from torch import nn
    from transformers import ViTImageProcessor

    body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 8), nn.Tanh())
    proc = ViTImageProcessor(size={"height": 8, "width": 8}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    clf = ImageClassifier(load_encoder(body, feature_dim=8, processor=proc), labels=["bright", "dark"], strategy="auto")
    rng = np.random.default_rng(0)
    images = [np.clip(rng.normal(190 if i % 2 == 0 else 60, 25, (8, 8, 3)), 0, 255).astype(np.uint8) for i in range(20)]
    data = (images, ["bright" if i % 2 == 0 else "dark" for i in range(20)])
    search = SearchConfig(n_trials=3, search_strategies=["toy_head_scale"])  # the search's settings as one object
    with pytest.raises(ValueError, match="not both"):
        clf.fit(data, output_dir=str(tmp_path), search=search, n_trials=2)
    clf.fit(data, output_dir=str(tmp_path), search=search, epochs=2, batch_size=8, progress=False, plot=False)
    rows = list(csv.DictReader(open(tmp_path / "trials.csv")))
    assert len(rows) == 3 and {r["strategy"] for r in rows} == {"toy_head_scale"}
    scales = [float(r["scale"]) for r in rows]
    assert all(0.5 <= s <= 2.0 for s in scales) and len(set(scales)) == 3  # searched, not the default 1.0
    assert clf.strategy.name == "toy_head_scale" and clf.strategy.config.scale == float(clf.train_info["recipe"]["scale"])
