"""The strategy contract: which parameters learn, at which rate, in which stages.

A strategy is a class with a ``name``, a settings dataclass (``config_class``, PEFT-style: the
settings live with the method, not in the training loop's config) and ``param_groups``, which
sets ``requires_grad`` so that exactly the intended parameters move and returns AdamW groups.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from ..config import TrainConfig, check_settings
from ..encoders import Encoder

_NO_DECAY_NAMES = ("bias", "norm", "position_embeddings", "cls_token", "pos_embed", "mask_token", "layer_weights")


@dataclass
class StrategyConfig:
    """Settings of one strategy. Subclasses add fields made with :func:`~transferkit.common.config.setting`
    (help text and bounds); a value out of bounds raises a ``ValueError`` that names the field."""

    def __post_init__(self) -> None:
        check_settings(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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


def head_groups(head: nn.Module, config: TrainConfig) -> list[dict]:
    """The new head always learns, at ``config.head_lr``."""
    head.requires_grad_(True)
    return split_decay(head.named_parameters(), config.head_lr, config.weight_decay, "head")


class Strategy:
    """Base class. Build one with its settings: ``LoRA(r=8)``, ``LoRA(LoRAConfig(r=8))``.

    Subclasses set ``name`` and ``config_class`` and implement :meth:`param_groups`; a strategy
    that runs in several stages (LP-FT) overrides :meth:`stages`.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type[StrategyConfig]] = StrategyConfig
    #: the stage trains the head alone on a frozen encoder, so tasks may train it on cached features
    uses_feature_cache: ClassVar[bool] = False
    #: the encoder learns (the recipe search then searches its rate ``lr`` too)
    trains_encoder: ClassVar[bool] = True
    #: where the search's first trials try this strategy: lower first (cheap strategies that often win with few labels)
    search_order: ClassVar[int] = 10

    def __init__(self, config: StrategyConfig | None = None, **settings: Any) -> None:
        if config is None:
            config = self.config_class(**settings)
        else:
            if not isinstance(config, self.config_class):
                raise TypeError(f"{type(self).__name__} takes a {self.config_class.__name__}, got {type(config).__name__}")
            config = dataclasses.replace(config, **settings)
        self.config = config

    def stages(self) -> list[Strategy]:
        """The strategies run one after the other; most strategies are a single stage."""
        return [self]

    def stage_config(self, config: TrainConfig) -> TrainConfig:
        """The loop settings of this stage (a probe stage may run its own number of epochs)."""
        return config

    def param_groups(self, encoder: Encoder, head: nn.Module, config: TrainConfig) -> list[dict]:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.config.to_dict()}

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        """This strategy's settings to try in one trial of ``strategy="auto"``, suggested on the Optuna
        ``trial`` (``{"r": trial.suggest_categorical("r", [4, 8, 16])}``); none by default."""
        return {}

    @classmethod
    def search_start(cls, config: TrainConfig) -> dict[str, Any]:
        """Optuna parameters of this strategy's first trial where they differ from ``config``'s."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"
