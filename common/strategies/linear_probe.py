"""linear_probe: a frozen encoder; only the head learns, on cached features where the task can."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import TrainConfig, setting
from .base import Strategy, StrategyConfig, head_groups

# Epochs a probe stage on cached features may take in the recipe search (they cost next to nothing, so it
# takes its own count; the run's epochs are sized for training the body); its first trial takes the longer.
PROBE_EPOCHS = (10, 30)


def suggest_probe_epochs(trial: Any) -> int:
    return trial.suggest_categorical("probe_epochs", list(PROBE_EPOCHS))


@dataclass
class LinearProbeConfig(StrategyConfig):
    epochs: int | None = setting(None, "Epochs of the probe (default: the run's epochs).", ge=1)
    feature_cache: str | None = setting(None, "Folder for cached encoder features (default: <output_dir>/features).")


class LinearProbe(Strategy):
    """Frozen encoder; only the head learns."""

    name = "linear_probe"
    config_class = LinearProbeConfig
    uses_feature_cache = True
    trains_encoder = False
    search_order = 0

    @classmethod
    def search_space(cls, trial):
        return {"epochs": suggest_probe_epochs(trial)}

    @classmethod
    def search_start(cls, config: TrainConfig) -> dict[str, Any]:
        """The longer probe; where the head rate is the loop's default, ten times it (frozen features)."""
        out: dict[str, Any] = {"probe_epochs": max(PROBE_EPOCHS)}
        if config.head_lr == TrainConfig.head_lr:
            out["head_lr"] = 10 * config.head_lr
        return out

    def stage_config(self, config):
        return config.replace(epochs=self.config.epochs) if self.config.epochs else config

    def param_groups(self, encoder, head, config):
        encoder.set_trainable(False)
        return head_groups(head, config)
