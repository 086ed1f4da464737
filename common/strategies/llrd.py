"""llrd: layer-wise learning-rate decay (rates fall block by block towards the input)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import setting
from .base import Strategy, StrategyConfig, head_groups, split_decay


@dataclass
class LLRDConfig(StrategyConfig):
    decay: float = setting(0.75, "Rate multiplier per block going down from the top.", gt=0, le=1)


class LLRD(Strategy):
    """Everything learns; block i of n at ``lr * decay ** (n - 1 - i)``."""

    name = "llrd"
    config_class = LLRDConfig

    def param_groups(self, encoder, head, config):
        encoder.set_trainable(True)
        blocks = encoder.blocks()
        groups = []
        for i, block in enumerate(blocks):
            lr = config.lr * self.config.decay ** (len(blocks) - 1 - i)
            groups += split_decay(block.params.items(), lr, config.weight_decay, f"encoder.{block.name}")
        return groups + head_groups(head, config)

    @classmethod
    def search_space(cls, trial):
        """The per-block decay."""
        return {"decay": trial.suggest_float("decay", 0.5, 0.95)}

