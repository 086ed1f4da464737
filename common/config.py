"""The training loop's settings, shared by every domain.

Only the loop lives here (epochs, batches, rates, schedule, precision, checkpoints); what a
strategy, a task or a model needs lives in its own dataclass. The CLI is generated from these
dataclasses and the resolved values are written beside every output, so a run can be repeated.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRECISIONS = ("auto", "no", "fp16", "bf16")


@dataclass
class TrainConfig:
    """How a transfer run trains.

    Example:
        >>> cfg = TrainConfig(output_dir="runs/ants", epochs=5)
        >>> cfg.head_lr
        0.001
    """

    output_dir: str = field(default="transferkit-run", metadata={"help": "Folder for checkpoints, metrics and exports."})
    epochs: int = field(default=10, metadata={"help": "Training epochs (the fine-tuning stage for lp_ft)."})
    batch_size: int = field(default=32, metadata={"help": "Examples per optimizer micro-step on each device."})
    eval_batch_size: int | None = field(default=None, metadata={"help": "Evaluation batch size (default: 2 x batch_size)."})
    lr: float = field(default=5e-5, metadata={"help": "Peak learning rate of the encoder."})
    head_lr: float = field(default=1e-3, metadata={"help": "Peak learning rate of the new head."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (never on biases and norms)."})
    warmup_ratio: float = field(default=0.1, metadata={"help": "Fraction of steps spent warming the rate up linearly."})
    grad_accum_steps: int = field(default=1, metadata={"help": "Micro-batches accumulated per optimizer step."})
    max_grad_norm: float | None = field(default=1.0, metadata={"help": "Clip the global gradient norm to this (None: off)."})
    label_smoothing: float = field(default=0.0, metadata={"help": "Label smoothing of the cross-entropy loss."})
    mixed_precision: str = field(default="auto", metadata={"help": "auto (bf16/fp16 on GPUs, fp32 on CPUs), no, fp16, bf16."})
    seed: int = field(default=0, metadata={"help": "Seed for the new head's initialisation, shuffling, augmentation and dropout."})
    num_workers: int | None = field(default=None, metadata={"help": "Data-loading processes (default: 0 on CPU, up to 8 on GPU)."})
    early_stopping_patience: int | None = field(default=None, metadata={"help": "Stop after this many epochs without a better metric."})
    metric_for_best: str = field(default="accuracy", metadata={"help": "Evaluation metric that selects the best checkpoint."})
    greater_is_better: bool = field(default=True, metadata={"help": "Whether a larger metric_for_best is better."})
    resume: bool = field(default=False, metadata={"help": "Continue from the last checkpoint in output_dir."})
    save_checkpoints: bool = field(default=True, metadata={"help": "Write an atomic checkpoint after every epoch."})
    group_by_length: bool = field(default=False, metadata={"help": "Batch examples of similar length together."})
    progress: bool = field(default=True, metadata={"help": "Show tqdm progress bars."})
    plot: bool = field(default=True, metadata={"help": "Write learning_curve.png beside metrics.jsonl."})

    def __post_init__(self) -> None:
        if self.mixed_precision not in PRECISIONS:
            raise ValueError(f"mixed_precision must be one of {PRECISIONS}, got {self.mixed_precision!r}")
        for name in ("epochs", "batch_size", "grad_accum_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.lr <= 0 or self.head_lr <= 0:
            raise ValueError(f"lr and head_lr must be positive, got lr={self.lr}, head_lr={self.head_lr}")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ValueError("early_stopping_patience must be >= 1 or None")

    @property
    def effective_eval_batch_size(self) -> int:
        return self.eval_batch_size or 2 * self.batch_size

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        new = dataclasses.replace(self, **changes)
        new.legacy = dict(self.legacy)
        return new

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | os.PathLike, **extra: Any) -> None:
        """Write the resolved config (plus any extra run facts) as JSON."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps({**self.to_dict(), **extra}, indent=2, default=str) + "\n")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)} | set(LEGACY_FIELDS)
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {', '.join(unknown)}")
        return cls(**values)


# Fields TrainConfig had before each strategy got its own settings dataclass. They are still
# accepted (with a DeprecationWarning) and handed to the strategy by the task's ``fit``.
LEGACY_FIELDS = ("strategy", "probe_epochs", "top_k_blocks", "llrd_decay", "lora_r", "lora_alpha", "lora_dropout",
                 "lora_targets", "feature_cache")
_dataclass_init = TrainConfig.__init__


def _init(self: TrainConfig, *args: Any, **kwargs: Any) -> None:
    legacy = {k: kwargs.pop(k) for k in list(kwargs) if k in LEGACY_FIELDS}
    _dataclass_init(self, *args, **kwargs)
    if legacy:
        warnings.warn(f"TrainConfig({', '.join(legacy)}=...) is deprecated: strategy settings belong to the "
                      "strategy (get_strategy('lora', r=8), or fit(..., lora_r=8))", DeprecationWarning, stacklevel=2)
    self.legacy = legacy


TrainConfig.__init__ = _init  # type: ignore[method-assign]
