"""linear_probe: a frozen encoder; only the head learns, on cached features where the task can."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import setting
from .base import Strategy, StrategyConfig, head_groups


@dataclass
class LinearProbeConfig(StrategyConfig):
    epochs: int | None = setting(None, "Epochs of the probe (default: the run's epochs).", ge=1)
    feature_cache: str | None = setting(None, "Folder for cached encoder features (default: <output_dir>/features).")


class LinearProbe(Strategy):
    """Frozen encoder; only the head learns."""

    name = "linear_probe"
    config_class = LinearProbeConfig
    uses_feature_cache = True

    def stage_config(self, config):
        return config.replace(epochs=self.config.epochs) if self.config.epochs else config

    def param_groups(self, encoder, head, config):
        encoder.set_trainable(False)
        return head_groups(head, config)
