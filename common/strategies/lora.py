"""lora: low-rank adapters (PEFT) on the encoder's projections; the encoder's own weights stay frozen."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from torch import nn

from ..config import setting
from ..encoders import Encoder
from .base import Strategy, StrategyConfig, head_groups, split_decay

log = logging.getLogger(__name__)

# Attention projections adapted by default, per model family (ViT/BEiT, wav2vec2/DeiT-style, timm/Swin, T5-style).
_ATTENTION_TARGETS = (("query", "value"), ("q_proj", "v_proj"), ("qkv",), ("q", "v"))


@dataclass
class LoRAConfig(StrategyConfig):
    r: int = setting(16, "Rank of the update.", ge=1)
    alpha: int = setting(16, "Scaling numerator (scale = alpha / r).", gt=0)
    dropout: float = setting(0.1, "Dropout on the adapter input.", ge=0, lt=1)
    targets: list[str] | None = setting(
        None, "Module names to adapt (default: attention query/value; on CNNs the pointwise convolutions).")


def lora_targets(encoder: Encoder) -> list[str]:
    """The layers LoRA adapts by default: attention query/value projections; in a network without
    attention (a CNN), its pointwise (1x1) convolutions, or else its linear layers."""
    modules = list(encoder.module.named_modules())
    linear = {n.rsplit(".", 1)[-1] for n, m in modules if isinstance(m, nn.Linear)}
    for family in _ATTENTION_TARGETS:
        if set(family) <= linear:
            return list(family)
    pointwise = [n for n, m in modules if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1]
    full = [n for n, m in modules if isinstance(m, nn.Linear)]
    chosen = pointwise or full
    if not chosen:
        raise ValueError(f"found no attention projections, pointwise convolutions or linear layers in {encoder.spec}; "
                         "pass targets=[...] with the names of the layers to adapt")
    log.info("no attention projections in %s: LoRA adapts its %d %s", encoder.spec, len(chosen),
             "pointwise convolutions" if pointwise else "linear layers")
    return chosen


class LoRA(Strategy):
    """Low-rank adapters on the attention projections (or a CNN's pointwise convolutions) + the head."""

    name = "lora"
    config_class = LoRAConfig

    def param_groups(self, encoder, head, config):
        from peft import LoraConfig, inject_adapter_in_model

        encoder.set_trainable(False)
        if not has_lora(encoder):
            targets = self.config.targets or lora_targets(encoder)
            cfg = LoraConfig(r=self.config.r, lora_alpha=self.config.alpha, lora_dropout=self.config.dropout,
                             target_modules=targets, bias="none")
            inject_adapter_in_model(cfg, encoder.module)
        named = [(n, p) for n, p in encoder.learnable_parameters() if "lora_" in n]
        for _, p in named:
            p.requires_grad_(True)
        # Adapters are new weights, so they learn at the head's rate.
        return split_decay(named, config.head_lr, config.weight_decay, "lora") + head_groups(head, config)

    @classmethod
    def search_space(cls, trial):
        """The adapters' rank."""
        return {"r": trial.suggest_categorical("r", [4, 8, 16])}



def has_lora(module: nn.Module) -> bool:
    from peft.tuners.lora import LoraLayer

    return any(isinstance(m, LoraLayer) for m in module.modules())


def merge_lora(module: nn.Module) -> int:
    """Fold every LoRA update into its base weight and remove the adapter; returns how many merged."""
    from peft.tuners.lora import LoraLayer

    merged = 0
    for parent in list(module.modules()):
        for cname, child in list(parent.named_children()):
            if isinstance(child, LoraLayer):
                child.merge()
                setattr(parent, cname, child.get_base_layer())
                merged += 1
    return merged
