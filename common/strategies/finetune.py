"""finetune: everything learns; lp_ft: a linear probe first, then fine-tuning from the probed head."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import setting
from .base import Strategy, StrategyConfig, head_groups, split_decay
from .linear_probe import PROBE_EPOCHS, LinearProbe, suggest_probe_epochs


class FineTune(Strategy):
    """Everything learns: the encoder at ``lr``, the head at ``head_lr``."""

    name = "finetune"
    search_order = 2

    def param_groups(self, encoder, head, config):
        encoder.set_trainable(True)
        return split_decay(encoder.learnable_parameters(), config.lr, config.weight_decay, "encoder") + head_groups(head, config)


@dataclass
class LPFTConfig(StrategyConfig):
    probe_epochs: int = setting(30, "Epochs of the linear-probe stage (on cached features).", ge=0)
    feature_cache: str | None = setting(None, "Folder for cached encoder features (default: <output_dir>/features).")


class LPFT(Strategy):
    """Linear probe first, then fine-tune from the probed head (Kumar et al., 2022)."""

    name = "lp_ft"
    config_class = LPFTConfig
    search_order = 1

    def stages(self):
        probe = LinearProbe(epochs=max(1, self.config.probe_epochs), feature_cache=self.config.feature_cache)
        return [probe, FineTune()]

    def param_groups(self, encoder, head, config):
        return self.stages()[-1].param_groups(encoder, head, config)

    @classmethod
    def search_space(cls, trial):
        """The probe stage's epochs (the fine-tuning stage runs the loop's)."""
        return {"probe_epochs": suggest_probe_epochs(trial)}

    @classmethod
    def search_start(cls, config):
        return {"probe_epochs": max(PROBE_EPOCHS)}
