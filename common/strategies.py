"""Which parameters learn, and how fast.

A strategy turns (encoder, head, config) into optimizer parameter groups and sets
``requires_grad`` so that exactly the intended parameters move. Strategies live in an explicit
registry; ``get_strategy("llrd")`` returns one.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from .config import TrainConfig
from .encoders import Encoder

_NO_DECAY_NAMES = ("bias", "norm", "position_embeddings", "cls_token", "pos_embed", "mask_token", "layer_weights")


def split_decay(named: Iterable[tuple[str, nn.Parameter]], lr: float, weight_decay: float, tag: str) -> list[dict]:
    """Two AdamW groups at one rate: weights with decay, biases/norms/embeddings without."""
    decay, no_decay = [], []
    for name, p in named:
        (no_decay if p.ndim <= 1 or any(k in name.lower() for k in _NO_DECAY_NAMES) else decay).append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "lr": lr, "weight_decay": weight_decay, "name": f"{tag}"})
    if no_decay:
        groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": f"{tag}.no_decay"})
    return groups


def _head_groups(head: nn.Module, config: TrainConfig) -> list[dict]:
    head.requires_grad_(True)
    return split_decay(head.named_parameters(), config.head_lr, config.weight_decay, "head")


class Strategy:
    """Base class. ``stages`` lists the strategies run in sequence (only lp_ft has two)."""

    name: str = ""
    uses_feature_cache: bool = False

    @property
    def stages(self) -> tuple[str, ...]:
        return (self.name,)

    def param_groups(self, encoder: Encoder, head: nn.Module, config: TrainConfig) -> list[dict]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class LinearProbe(Strategy):
    """Frozen encoder; only the head learns (on cached features when possible)."""

    name = "linear_probe"
    uses_feature_cache = True

    def param_groups(self, encoder, head, config):
        encoder.set_trainable(False)
        return _head_groups(head, config)


class FineTune(Strategy):
    """Everything learns: the encoder at ``lr``, the head at ``head_lr``."""

    name = "finetune"

    def param_groups(self, encoder, head, config):
        encoder.set_trainable(True)
        return split_decay(encoder.learnable_parameters(), config.lr, config.weight_decay, "encoder") + _head_groups(head, config)


class LPFT(FineTune):
    """Linear probe first, then fine-tune from the probed head (Kumar et al., 2022)."""

    name = "lp_ft"

    @property
    def stages(self):
        return ("linear_probe", "finetune")


class Partial(Strategy):
    """Only the top ``top_k_blocks`` encoder blocks learn (the final norm counts with the last layer)."""

    name = "partial"

    def param_groups(self, encoder, head, config):
        encoder.set_trainable(False)
        blocks = encoder.blocks()
        layer_idx = [i for i, b in enumerate(blocks) if b.name != "top"]
        first = layer_idx[-config.top_k_blocks] if len(layer_idx) >= config.top_k_blocks else 0
        named = [(n, p) for b in blocks[first:] for n, p in b.params.items()]
        for _, p in named:
            p.requires_grad_(True)
        return split_decay(named, config.lr, config.weight_decay, "encoder.top") + _head_groups(head, config)


class LLRD(Strategy):
    """Layer-wise learning-rate decay: block i of n learns at ``lr * llrd_decay ** (n - 1 - i)``."""

    name = "llrd"

    def param_groups(self, encoder, head, config):
        encoder.set_trainable(True)
        blocks = encoder.blocks()
        groups = []
        for i, block in enumerate(blocks):
            lr = config.lr * config.llrd_decay ** (len(blocks) - 1 - i)
            groups += split_decay(block.params.items(), lr, config.weight_decay, f"encoder.{block.name}")
        return groups + _head_groups(head, config)


# Attention projections that LoRA adapts by default, per model family (ViT/BEiT, wav2vec2/DeiT-style, timm/Swin, T5-style).
_LORA_DEFAULT_TARGETS = (("query", "value"), ("q_proj", "v_proj"), ("qkv",), ("q", "v"))


def lora_targets(encoder: Encoder) -> list[str]:
    """Names of the linear layers LoRA adapts by default: the attention query and value projections."""
    names = {n.rsplit(".", 1)[-1] for n, m in encoder.module.named_modules() if isinstance(m, nn.Linear)}
    for family in _LORA_DEFAULT_TARGETS:
        if set(family) <= names:
            return list(family)
    raise ValueError(
        f"found no attention projections {_LORA_DEFAULT_TARGETS} in {encoder.spec}; "
        "pass lora_targets=[...] with the names of the linear layers to adapt"
    )


class LoRA(Strategy):
    """Low-rank adapters (PEFT) on the attention projections; encoder weights stay frozen."""

    name = "lora"

    def param_groups(self, encoder, head, config):
        from peft import LoraConfig, inject_adapter_in_model

        encoder.set_trainable(False)
        if not has_lora(encoder):
            targets = config.lora_targets or lora_targets(encoder)
            cfg = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                             target_modules=targets, bias="none")
            inject_adapter_in_model(cfg, encoder.module)
        named = [(n, p) for n, p in encoder.learnable_parameters() if "lora_" in n]
        for _, p in named:
            p.requires_grad_(True)
        # Adapters are new weights, so they learn at the head's rate.
        return split_decay(named, config.head_lr, config.weight_decay, "lora") + _head_groups(head, config)


def has_lora(encoder: nn.Module) -> bool:
    from peft.tuners.lora import LoraLayer

    return any(isinstance(m, LoraLayer) for m in encoder.modules())


def merge_lora(encoder: nn.Module) -> int:
    """Fold every LoRA update into its base weight and remove the adapter; returns how many merged."""
    from peft.tuners.lora import LoraLayer

    merged = 0
    for parent in list(encoder.modules()):
        for cname, child in list(parent.named_children()):
            if isinstance(child, LoraLayer):
                child.merge()
                setattr(parent, cname, child.get_base_layer())
                merged += 1
    return merged


_REGISTRY: dict[str, Strategy] = {}


def register_strategy(strategy: Strategy) -> Strategy:
    """Add a strategy under its lower-case ``name``; a second one with the same name raises."""
    name = strategy.name
    if not name or name != name.lower():
        raise ValueError(f"strategy names are non-empty and lower-case, got {name!r}")
    if name in _REGISTRY:
        raise ValueError(f"a strategy named {name!r} is already registered")
    _REGISTRY[name] = strategy
    return strategy


def get_strategy(name: str | Strategy) -> Strategy:
    if isinstance(name, Strategy):
        return name
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(sorted(_REGISTRY))}") from None


def list_strategies() -> list[str]:
    return sorted(_REGISTRY)


for _s in (LinearProbe(), FineTune(), LPFT(), Partial(), LLRD(), LoRA()):
    register_strategy(_s)
