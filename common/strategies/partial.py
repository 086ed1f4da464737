"""partial: only the top blocks of the encoder learn."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import setting
from .base import Strategy, StrategyConfig, head_groups, split_decay


@dataclass
class PartialConfig(StrategyConfig):
    top_k_blocks: int = setting(2, "How many of the top encoder blocks learn.", ge=1)
    prefix_cache: bool = setting(True, "Without random augmentation, compute the frozen blocks' outputs once and "
                                 "train only the top on them (transferkit.common.prefix_cache).")


class Partial(Strategy):
    """Only the top ``top_k_blocks`` encoder blocks learn (the final norm counts with the last layer)."""

    name = "partial"
    config_class = PartialConfig

    def param_groups(self, encoder, head, config):
        named = _top_params(encoder.blocks(), self.config.top_k_blocks)
        encoder.set_trainable(False)
        for _, p in named:
            p.requires_grad_(True)
        return split_decay(named, config.lr, config.weight_decay, "encoder.top") + head_groups(head, config)

    @classmethod
    def search_space(cls, trial):
        """How many top blocks learn."""
        return {"top_k_blocks": trial.suggest_int("top_k_blocks", 1, 4)}



def _top_params(blocks, k: int) -> list:
    """Parameters of the last ``k`` layer blocks and everything after them (the top norm)."""
    layer_idx = [i for i, b in enumerate(blocks) if b.name != "top"]
    first = layer_idx[-k] if len(layer_idx) >= k else 0
    return [(n, p) for b in blocks[first:] for n, p in b.params.items()]
