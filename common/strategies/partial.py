"""partial: only the top blocks of the encoder learn."""

from __future__ import annotations

from dataclasses import dataclass, field

from .base import Strategy, StrategyConfig, head_groups, split_decay


@dataclass
class PartialConfig(StrategyConfig):
    top_k_blocks: int = field(default=2, metadata={"help": "How many of the top encoder blocks learn."})

    def __post_init__(self) -> None:
        if self.top_k_blocks < 1:
            raise ValueError(f"top_k_blocks must be at least 1, got {self.top_k_blocks}")


class Partial(Strategy):
    """Only the top ``top_k_blocks`` encoder blocks learn (the final norm counts with the last layer)."""

    name = "partial"
    config_class = PartialConfig

    def param_groups(self, encoder, head, config):
        encoder.set_trainable(False)
        blocks = encoder.blocks()
        k = self.config.top_k_blocks
        layer_idx = [i for i, b in enumerate(blocks) if b.name != "top"]
        first = layer_idx[-k] if len(layer_idx) >= k else 0
        named = [(n, p) for b in blocks[first:] for n, p in b.params.items()]
        for _, p in named:
            p.requires_grad_(True)
        return split_decay(named, config.lr, config.weight_decay, "encoder.top") + head_groups(head, config)
