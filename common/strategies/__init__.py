"""Which parameters learn, and how fast: one file per strategy, one explicit registry.

``get_strategy("lora", r=8)`` builds a registered strategy with its settings. A new strategy is a
:class:`Strategy` subclass with its own settings dataclass, plus ``register_strategy(MyStrategy)``.

Example:
    >>> get_strategy("llrd", decay=0.5)
    LLRD(LLRDConfig(decay=0.5))
    >>> list_strategies()
    ['finetune', 'linear_probe', 'llrd', 'lora', 'lp_ft', 'partial']
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from ..config import TrainConfig
from ..registry import Registry
from .base import Strategy, StrategyConfig, head_groups, split_decay
from .finetune import LPFT, FineTune, LPFTConfig
from .linear_probe import LinearProbe, LinearProbeConfig
from .llrd import LLRD, LLRDConfig
from .lora import LoRA, LoRAConfig, has_lora, lora_targets, merge_lora
from .partial import Partial, PartialConfig

log = logging.getLogger(__name__)

_REGISTRY: Registry[type[Strategy]] = Registry("strategy")


def register_strategy(strategy: type[Strategy] | Strategy) -> Any:
    """Register a :class:`Strategy` subclass under its lower-case ``name``; a second one with the
    same name raises. Returns its argument, so it also works as a class decorator."""
    cls = strategy if isinstance(strategy, type) else type(strategy)
    _REGISTRY.register(cls.name, cls)
    return strategy


def unregister_strategy(name: str) -> None:
    _REGISTRY.unregister(name)


def get_strategy(name: str | Strategy, **settings: Any) -> Strategy:
    """A strategy by name (or the instance given), with ``settings`` applied to its config."""
    if isinstance(name, Strategy):
        return type(name)(name.config, **settings) if settings else name
    if isinstance(name, dict):  # what Strategy.to_dict wrote into a run folder
        name, settings = name["name"], {**{k: v for k, v in name.items() if k != "name"}, **settings}
    return _REGISTRY.get(name)(**settings)


def list_strategies() -> list[str]:
    return _REGISTRY.names()


def strategy_classes() -> list[type[Strategy]]:
    return [cls for _, cls in _REGISTRY.items()]


def strategy_class(name: str) -> type[Strategy]:
    """The registered strategy class called ``name``."""
    return _REGISTRY.get(name)


def _fields(cls: type[Strategy]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls.config_class)]


def pop_strategy_settings(strategy: Strategy, options: dict[str, Any]) -> dict[str, Any]:
    """Take the settings meant for strategies out of ``options`` and return those for ``strategy``.

    A setting is named ``<strategy>_<field>`` (``lora_r``, ``llrd_decay``, ``lp_ft_probe_epochs``) or,
    for the strategy in use, by its bare field name (``probe_epochs`` with lp_ft, ``top_k_blocks``
    with partial). Names of :class:`TrainConfig` fields are never taken.

    Raises:
        ValueError: a setting of another strategy (``lora_r=8`` with ``strategy="finetune"``), which
            would otherwise be silently without effect.
    """
    loop = {f.name for f in dataclasses.fields(TrainConfig)}
    own = _fields(type(strategy))
    mine: dict[str, Any] = {}
    for key in [k for k in options if k not in loop]:
        field = key.removeprefix(f"{strategy.name}_")
        if field in own:
            mine[field] = options.pop(key)
            continue
        owner = next((c.name for c in strategy_classes()
                      if any(key in (f, f"{c.name}_{f}") for f in _fields(c))), None)
        if owner is not None:
            raise ValueError(f"{key}={options[key]!r} is a setting of strategy {owner!r}, not of {strategy.name!r}: "
                             f"drop it, or train with strategy={owner!r}")
    return mine


for _cls in (LinearProbe, FineTune, LPFT, Partial, LLRD, LoRA):
    register_strategy(_cls)

__all__ = [
    "LLRD",
    "LLRDConfig",
    "LPFT",
    "LPFTConfig",
    "FineTune",
    "LinearProbe",
    "LinearProbeConfig",
    "LoRA",
    "LoRAConfig",
    "Partial",
    "PartialConfig",
    "Strategy",
    "StrategyConfig",
    "get_strategy",
    "has_lora",
    "head_groups",
    "list_strategies",
    "lora_targets",
    "merge_lora",
    "pop_strategy_settings",
    "register_strategy",
    "split_decay",
    "strategy_classes",
    "unregister_strategy",
]
