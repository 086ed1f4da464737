"""linear_probe: a frozen encoder; only the head learns, on cached features where the task can."""

from __future__ import annotations

from dataclasses import dataclass, field

from .base import Strategy, StrategyConfig, head_groups


@dataclass
class LinearProbeConfig(StrategyConfig):
    epochs: int | None = field(default=None, metadata={"help": "Epochs of the probe (default: the run's epochs)."})
    feature_cache: str | None = field(
        default=None, metadata={"help": "Folder for cached encoder features (default: <output_dir>/features)."})

    def __post_init__(self) -> None:
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")


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
