"""The training loop's settings, shared by every domain.

Only the loop lives here (epochs, batches, rates, schedule, precision, checkpoints); what a
strategy, a task or a model needs lives in its own dataclass. The CLI is generated from these
dataclasses and the resolved values are written beside every output, so a run can be repeated.
"""

from __future__ import annotations

import dataclasses
import json
import math
import operator
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .deprecation import LEGACY_TRAIN_FIELDS, pop_legacy_train_fields

PRECISIONS = ("auto", "no", "fp16", "bf16")
TRACKERS = ("none", "tensorboard", "wandb", "mlflow")

_BOUNDS = {"ge": (operator.ge, ">="), "gt": (operator.gt, ">"), "le": (operator.le, "<="), "lt": (operator.lt, "<")}


def setting(default: Any, help: str, **rules: Any) -> Any:
    """A dataclass field with help text and the bounds :func:`check_settings` enforces:
    ``ge``/``gt``/``le``/``lt`` (a number, or None to skip) and ``choices``."""
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **rules})
    return field(default=default, metadata={"help": help, **rules})


def check_settings(obj: Any) -> None:
    """Raise a ``ValueError`` naming the first field of a dataclass that breaks its bounds."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is None:
            continue
        if "choices" in f.metadata and value not in f.metadata["choices"]:
            raise ValueError(f"{f.name} must be one of {tuple(f.metadata['choices'])}, got {value!r}")
        for key, (ok, word) in _BOUNDS.items():
            if key in f.metadata and (isinstance(value, float) and math.isnan(value) or not ok(value, f.metadata[key])):
                raise ValueError(f"{f.name} must be {word} {f.metadata[key]}, got {value!r}")


@dataclass
class TrainSettings:
    """The fields of :class:`TrainConfig` (use that class: it also accepts the deprecated strategy fields)."""

    output_dir: str = setting("transferkit-run", "Folder for checkpoints, metrics and exports.")
    epochs: int = setting(10, "Training epochs (the fine-tuning stage for lp_ft).", ge=1)
    max_steps: int | None = setting(None, "Train this many optimizer steps instead of counting epochs (required for "
                                    "a stream, whose length is unknown; on a map-style set it overrides epochs).", ge=1)
    shuffle_buffer: int = setting(1000, "Examples held in the seeded buffer a stream is shuffled through (0: read "
                                  "in order); a map-style set is shuffled whole.", ge=0)
    batch_size: int = setting(32, "Examples per optimizer micro-step on each device.", ge=1)
    eval_batch_size: int | None = setting(None, "Evaluation batch size (default: 2 x batch_size).", ge=1)
    lr: float = setting(5e-5, "Peak learning rate of the encoder.", gt=0)
    head_lr: float = setting(1e-3, "Peak learning rate of the new head.", gt=0)
    weight_decay: float = setting(0.01, "AdamW weight decay (never on biases and norms).", ge=0)
    warmup_ratio: float = setting(0.1, "Fraction of steps spent warming the rate up linearly.", ge=0, lt=1)
    grad_accum_steps: int = setting(1, "Micro-batches accumulated per optimizer step.", ge=1)
    max_grad_norm: float | None = setting(1.0, "Clip the global gradient norm to this (None: off).", gt=0)
    label_smoothing: float = setting(0.0, "Label smoothing of the cross-entropy loss.", ge=0, lt=1)
    mixed_precision: str = setting("auto", "auto (bf16/fp16 on GPUs, fp32 on CPUs), no, fp16, bf16.", choices=PRECISIONS)
    seed: int = setting(0, "Seed for the new head's initialisation, shuffling, augmentation and dropout.")
    num_workers: int | None = setting(None, "Data-loading processes (default: 0 on CPU, up to 8 on GPU).", ge=0)
    early_stopping_patience: int | None = setting(None, "Stop after this many epochs without a better metric.", ge=1)
    metric_for_best: str = setting("accuracy", "Evaluation metric that selects the best checkpoint.")
    greater_is_better: bool = setting(True, "Whether a larger metric_for_best is better.")
    resume: bool = setting(False, "Continue from the last checkpoint in output_dir.")
    save_checkpoints: bool = setting(True, "Write an atomic checkpoint after every epoch.")
    save_steps: int | None = setting(None, "Also write a checkpoint every N optimizer steps (a resume then "
                                     "continues mid-epoch).", ge=1)
    save_total_limit: int | None = setting(None, "Keep only the N newest step checkpoints (the epoch checkpoint "
                                           "and the best weights are never deleted).", ge=1)
    find_unused_parameters: bool = setting(True, "Under several processes, let DDP look for parameters a step did not "
                                           "use (wav2vec2's LayerDrop); off saves a graph walk per step.")
    report_to: str = setting("none", "Experiment tracker fed through Accelerate: none, tensorboard (logs in "
                             "output_dir/tracking), wandb or mlflow.", choices=TRACKERS)
    group_by_length: bool = setting(False, "Batch examples of similar length together.")
    progress: bool = setting(True, "Show tqdm progress bars.")
    plot: bool = setting(True, "Write learning_curve.png beside metrics.jsonl.")
    compile: bool = setting(False, "torch.compile the training step's loss (forward, hence backward); the first "
                            "step pays the compilation (minutes on a CPU; see benchmarks/compile_check.py).")
    channels_last: bool | None = setting(None, "Keep the model's weights in channels-last memory format (NHWC); "
                                         "None: on for convolutional networks (most weights in 2-D convolutions), "
                                         "where it measured faster (benchmarks/step_levers.py).")

    def __post_init__(self) -> None:
        check_settings(self)
        self.legacy: dict[str, Any] = getattr(self, "legacy", {})

    @property
    def effective_eval_batch_size(self) -> int:
        return self.eval_batch_size or 2 * self.batch_size

    def replace(self, **changes: Any) -> TrainSettings:
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
    def from_dict(cls, values: dict[str, Any]) -> TrainSettings:
        names = {f.name for f in dataclasses.fields(cls)} | set(LEGACY_FIELDS)
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {', '.join(unknown)}")
        return cls(**values)


class TrainConfig(TrainSettings):
    """How a transfer run trains.

    Strategy settings it used to hold (``TrainConfig(lora_r=8)``) are still accepted with a
    DeprecationWarning (:mod:`transferkit.common.deprecation`) and handed to the strategy by ``fit``.

    Example:
        >>> cfg = TrainConfig(output_dir="runs/ants", epochs=5)
        >>> cfg.head_lr
        0.001
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        legacy = pop_legacy_train_fields(kwargs)
        super().__init__(*args, **kwargs)
        self.legacy = legacy


LEGACY_FIELDS = LEGACY_TRAIN_FIELDS  # the name other modules know
