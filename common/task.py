"""TransferTask: the one contract above the encoder, written once for every task.

A task is a pretrained encoder plus a new head, trained through the stages of a strategy. This
base class owns what does not depend on the kind of data or head: resolving the strategy and its
settings, running its stages through the :class:`~transferkit.common.Trainer` (with cached
features for a probe stage where the task can), the run folder, export with a model card,
``load``, ``from_run`` and ``push_to_hub``.

A subclass (the image and audio classifiers, the speech recognizer) supplies the hooks:

- :meth:`training_data`: the user's data -> :class:`TrainingData` (datasets, collate functions,
  fingerprints, facts for the model card);
- :meth:`loss_fn` and :meth:`eval_fn`: the loss of a batch and the per-epoch metrics;
- :attr:`encoder`, :attr:`head` and ``model``: what the strategy freezes or trains, and what the
  trainer trains;
- :meth:`cached_stage` (optional): the probe stage on cached encoder features;
- :meth:`predict` and :meth:`evaluate`: what the user and the CLI call on a trained task;
- :meth:`save_files` / :meth:`load_files`: the one pair of persistence hooks. ``kind="export"``: the
  trained model's files of an export folder (:meth:`save` / :meth:`load`); ``kind="run"``: what a run
  folder needs besides its checkpoints to rebuild the untrained task (:meth:`from_run`).

A subclass written against the hooks before them (``export`` / ``restore``, ``run_meta`` /
``write_run_assets`` / ``from_run_meta``) still works: defining them warns once (DeprecationWarning)
and the base adapts them to :meth:`save_files` / :meth:`load_files`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from torch import nn

from . import deprecation
from .config import TrainConfig
from .encoders import Encoder
from .hub import PushToHubMixin, write_model_card
from .prefix_cache import prefix_stage
from .strategies import Strategy, get_strategy, has_lora, merge_lora, pop_strategy_settings
from .streams import is_stream
from .trainer import EvalFn, LossFn, Trainer, TrainResult

RUN_FILE = "transferkit-run.json"
AUTO = "auto"  # strategy="auto": search the recipe (see transferkit.common.search)
INFO_FILE = "transferkit.json"
LOOP_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))  # fit keywords that set the loop
#: which folder :meth:`TransferTask.save_files` / :meth:`TransferTask.load_files` write or read
FolderKind = Literal["export", "run"]
#: the persistence hooks before save_files / load_files, still honoured with a DeprecationWarning
OLD_PERSISTENCE_HOOKS = ("export", "restore", "run_meta", "write_run_assets", "from_run_meta")


@dataclass
class TrainingData:
    """What :meth:`TransferTask.training_data` hands the stage loop.

    Args:
        train, eval: datasets of examples (``eval`` selects the best epoch).
        collate, eval_collate: examples -> a batch of model inputs (``eval_collate``: no augmentation).
        lengths: one length per training example, for length-grouped batches.
        probe_train: the training examples prepared like ``eval`` (un-augmented): a probe stage
            caches their features. Features of randomly augmented examples are never cached.
        fingerprints: ``{"train", "eval", "preprocess"}`` hashes that key the feature cache.
        info: facts about the data for the run file and the model card (example counts, skips).
        random_augment: whether ``collate``/``train`` change examples at random (augmentation, random
            crops); only without it may a stage train on cached frozen-block outputs.
    """

    train: Sequence
    eval: Sequence | None = None
    collate: Callable | None = None
    eval_collate: Callable | None = None
    lengths: Sequence[int] | None = None
    probe_train: Sequence | None = None
    fingerprints: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    random_augment: bool = True


@dataclass
class StageData:
    """Datasets of one stage when it does not train on :class:`TrainingData` directly (cached features)."""

    train: Sequence
    eval: Sequence | None
    collate: Callable | None
    #: rows are feature vectors and only the head learns: the stage runs the head-only loop
    #: (:func:`~transferkit.common.head_loop.fit_head_on_features`) instead of the Trainer
    head_only: bool = False


class TransferTask(PushToHubMixin, ABC):
    """Base class of every transfer task; see the module docstring for the hooks a subclass supplies.

    Args:
        strategy: a registered strategy's name, a :class:`~transferkit.common.Strategy` instance
            (registered or not) with its settings, or ``"auto"`` to search the recipe.
    """

    #: the pipeline tag (``"image-classification"``) and the model card's task
    task: ClassVar[str] = ""
    model: nn.Module

    def __init__(self, strategy: str | Strategy = "finetune") -> None:
        self.strategy = get_strategy("finetune")
        self.set_strategy(strategy)  # fail now, not after loading data
        self.results: dict[str, TrainResult] = {}
        self.train_info: dict[str, Any] = {}
        self.recipe_info: dict[str, Any] = {}  # what a recipe search chose, for the run file and model card

    # -- hooks -----------------------------------------------------------------------------------
    @property
    @abstractmethod
    def encoder(self) -> Encoder:
        """The pretrained body the strategy freezes or trains."""

    @property
    @abstractmethod
    def head(self) -> nn.Module:
        """The new layers, which learn under every strategy."""

    def default_config(self) -> TrainConfig:
        """The loop settings when ``fit`` gets no ``config`` (a recognizer selects on WER)."""
        return TrainConfig()

    def inference_batch_size(self) -> int | None:
        """Examples per forward pass of evaluation and feature extraction when ``TrainConfig.eval_batch_size``
        is unset, where the domain knows better than twice the training batch (None: it does not)."""
        return None

    @abstractmethod
    def training_data(self, train: Any, eval: Any, config: TrainConfig, **options: Any) -> TrainingData:
        """Read and check the user's data; ``options`` are the task's own ``fit`` keywords."""

    @abstractmethod
    def loss_fn(self, config: TrainConfig) -> LossFn:
        """The loss of a batch under the loop settings ``config``."""

    @abstractmethod
    def eval_fn(self) -> EvalFn:
        """The per-epoch metrics: ``evaluate(model, loader) -> dict``."""

    def cached_stage(self, stage: Strategy, data: TrainingData, config: TrainConfig, run_dir: Path) -> StageData | None:
        """Datasets of cached encoder features for a head-only stage, or None to run it on ``data``."""
        return None

    @abstractmethod
    def save_files(self, folder: Path, kind: FolderKind) -> dict[str, Any]:
        """Write this task's files into ``folder``; return JSON facts that :meth:`load_files` gets back.

        Args:
            folder: the export folder (``kind="export"``: every file the trained model needs), or the
                run folder (``kind="run"``: only what rebuilds the untrained task, such as a tokenizer;
                the weights are the run's checkpoints).
            kind: ``"export"`` or ``"run"``.

        Returns:
            Facts kept in ``transferkit.json`` (export) or ``transferkit-run.json`` (run).
        """

    @classmethod
    @abstractmethod
    def load_files(cls, folder: Path, info: dict[str, Any], kind: FolderKind, **kwargs: Any) -> TransferTask:
        """The task :meth:`save_files` wrote into ``folder``: trained (``kind="export"``) or with the
        untrained weights a run's checkpoint loads into (``kind="run"``).

        Args:
            folder: the export or run folder.
            info: its ``transferkit.json`` or ``transferkit-run.json`` (with the facts ``save_files`` returned).
            kind: ``"export"`` or ``"run"``.
            **kwargs: the subclass's own (a classifier's ``encoder=`` for a custom ``nn.Module`` encoder).
        """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        old = [name for name in OLD_PERSISTENCE_HOOKS if name in vars(cls)]
        if old and "save_files" not in vars(cls) and "load_files" not in vars(cls):
            deprecation.warn(f"{cls.__name__}'s hooks {', '.join(old)}",
                             "save_files(folder, kind) and load_files(folder, info, kind)")
            cls.save_files = old_save_files  # type: ignore[method-assign]
            cls.load_files = classmethod(old_load_files)  # type: ignore[method-assign,assignment]

    @abstractmethod
    def predict(self, inputs: Any, **kwargs: Any) -> list[dict]:
        """One dict per input (``{"label", "score", "scores"}``, ``{"text"}``)."""

    @abstractmethod
    def evaluate(self, data: Any, *, out_dir: str | os.PathLike | None = None, **kwargs: Any) -> dict:
        """The task's metrics on labelled ``data`` (figures, where the task draws any, go to ``out_dir``)."""

    def card_data(self) -> dict[str, Any]:
        """Lines of the model card about the data (and the recipe a search chose)."""
        return {k: v for k, v in self.train_info.items() if k.endswith("examples") or k == "recipe"}

    # -- training --------------------------------------------------------------------------------
    def fit(self, train: Any, eval: Any = None, *, config: TrainConfig | None = None, **options: Any) -> dict[str, TrainResult]:
        """Train on ``train`` through every stage of the strategy, keeping the best epoch on ``eval``.

        ``options`` are :class:`TrainConfig` fields (``epochs=5, lr=1e-4``), settings of the
        strategy (``lora_r=8``; ``probe_epochs=20`` for lp_ft) and the task's own keywords.
        Returns each stage's :class:`~transferkit.common.TrainResult`.
        """
        config = config or self.default_config()
        options = {**{k: v for k, v in config.legacy.items() if k != "strategy"}, **options}
        config = config.replace(**{k: options.pop(k) for k in list(options) if k in LOOP_FIELDS})
        if config.eval_batch_size is None and (batch := self.inference_batch_size()) is not None:
            config = config.replace(eval_batch_size=batch)
        if "strategy" in options:  # fit(..., strategy="lora") or strategy="auto"
            self.set_strategy(options.pop("strategy"))
        if self.auto:
            if is_stream(train):
                raise ValueError("strategy='auto' splits the training set into folds, which a stream cannot be: "
                                 "pass a map-style set, or name a strategy (finetune, lora, llrd, partial)")
            return self.search(train, eval, config=config, **options)
        settings = pop_strategy_settings(self.strategy, options)
        if settings:
            self.strategy = get_strategy(self.strategy, **settings)
        callbacks = options.pop("callbacks", ())
        data = self.training_data(train, eval, config, **options)
        return self.fit_prepared(data, config=config, callbacks=callbacks)

    def fit_prepared(self, data: TrainingData, *, config: TrainConfig, callbacks: Sequence = (),
                     features: StageData | None = None) -> dict[str, TrainResult]:
        """Train on data already prepared (by :meth:`training_data`), through every stage of the strategy.

        ``features``: encoder features computed once (a classifier's cached features): every stage
        that trains the head alone on a frozen encoder trains on them instead of encoding ``data``
        again, which is how a learning curve trains many probes on one pass of the encoder.
        """
        self.train_info = {"base_model": self.encoder.spec, "strategy": self.strategy.name, **self.recipe_info, **data.info}
        facts = self._save_run_files(config)
        self.results = self._run_stages(config, data, callbacks, features, facts)
        self._write_run_file(config, facts)
        return self.results

    def clone(self, strategy: str | Strategy | None = None, *, model: nn.Module | None = None) -> TransferTask:
        """A copy to try another recipe on: its own copy of the model (of ``model``, e.g. the untrained one
        kept aside, or else of this task's as it is now), no results, and ``strategy`` (default: this task's)."""
        import copy

        twin = copy.copy(self)
        twin.model = copy.deepcopy(model if model is not None else self.model)
        twin.results, twin.train_info, twin.recipe_info = {}, {}, {}
        twin.set_strategy(strategy if strategy is not None else self.strategy)
        return twin

    def set_strategy(self, strategy: str | Strategy) -> None:
        """Train with ``strategy`` from now on (a name, an instance, or ``"auto"`` to search the recipe)."""
        self.auto = strategy == AUTO
        if not self.auto:
            self.strategy = get_strategy(strategy)

    def search(self, train: Any, eval: Any = None, *, config: TrainConfig, **options: Any) -> dict[str, TrainResult]:
        """``strategy="auto"``: pick the recipe on a dev split of ``train``, then train it (classifiers)."""
        raise NotImplementedError(f"{type(self).__name__} has no recipe search; pass a strategy")

    def _save_run_files(self, config: TrainConfig) -> dict[str, Any]:
        """The run folder's own files, written before training (an interrupted run keeps them) by the main
        process; the facts :meth:`save_files` returned ({} on the other processes)."""
        from .trainer import process_state

        if not process_state().is_main_process:
            return {}
        run_dir = Path(config.output_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        return self.save_files(run_dir, "run")

    def _run_stages(self, config: TrainConfig, data: TrainingData, callbacks: Sequence = (),
                    features: StageData | None = None, facts: dict[str, Any] | None = None) -> dict[str, TrainResult]:
        stages = self.strategy.stages()
        run_dir = Path(config.output_dir)
        results: dict[str, TrainResult] = {}
        facts = facts or {}
        for stage in stages:
            cfg = stage.stage_config(config).replace(output_dir=str(run_dir / stage.name if len(stages) > 1 else run_dir))
            groups = stage.param_groups(self.encoder, self.head, cfg)
            cached = None
            if stage.uses_feature_cache:
                cached = features if features is not None else self.cached_stage(stage, data, cfg, run_dir)
            if cached is not None:  # epochs of a known number of feature rows; max_steps counts steps on the data
                cfg = cfg.replace(max_steps=None)
            # a stream is read once per pass: its frozen-prefix outputs are not kept (the probe's shards are)
            prefix = None if cached is not None or is_stream(data.train) else prefix_stage(self.encoder, stage, data, cfg, run_dir)
            cached, prefix = prefix if prefix is not None else (cached, None)
            trainer = Trainer(self.model, cfg, compute_loss=self.loss_fn(cfg), param_groups=groups, callbacks=callbacks,
                              evaluate=self.eval_fn() if data.eval is not None else None,
                              run_info={"stage": stage.name, "strategy": self.strategy.to_dict(),
                                        "base_model": str(self.encoder.spec), **facts})
            try:
                if cached is not None and cached.head_only:
                    from .head_loop import fit_head_on_features

                    results[stage.name] = fit_head_on_features(trainer, cached.train, cached.eval)
                elif cached is not None:
                    results[stage.name] = trainer.fit(cached.train, cached.eval, collate_fn=cached.collate)
                else:
                    results[stage.name] = trainer.fit(data.train, data.eval, collate_fn=data.collate,
                                                      eval_collate_fn=data.eval_collate, lengths=data.lengths)
            finally:
                if prefix is not None:  # the frozen blocks compute again after the stage
                    prefix.detach()
            self.model = trainer.model
        return results

    def _write_run_file(self, config: TrainConfig, facts: dict[str, Any] | None = None) -> None:
        """The run file; ``facts``: what :meth:`save_files` returned for this run folder (written again if None)."""
        from .trainer import process_state

        if not process_state().is_main_process:  # under several processes the main one writes the run folder
            return
        run_dir = Path(config.output_dir)
        stages = self.strategy.stages()
        final = run_dir / stages[-1].name if len(stages) > 1 else run_dir
        if facts is None:
            run_dir.mkdir(parents=True, exist_ok=True)
            facts = self.save_files(run_dir, "run")
        (run_dir / RUN_FILE).write_text(json.dumps(
            {**self.train_info, "task": type(self).__name__, "base_model": str(self.encoder.spec),
             "strategy": self.strategy.to_dict(), "final_stage_dir": str(final.resolve()), "config": config.to_dict(),
             **facts},
            indent=2, default=str) + "\n")

    # -- export ----------------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike, *, metrics: dict | None = None) -> Path:
        """Export a folder with the model files, ``transferkit.json`` and a model card; LoRA
        adapters are merged into the weights first. Where the folder has a ``config.json``,
        ``transformers.pipeline(task)`` loads it."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if has_lora(self.model):
            merge_lora(self.model)
        info = {"strategy": self.strategy.name, **self.train_info, **self.save_files(folder, "export")}
        (folder / INFO_FILE).write_text(json.dumps(info, indent=2, default=str) + "\n")
        hf = (folder / "config.json").exists()
        write_model_card(folder, task=self.task, base_model=str(self.encoder.spec), strategy=self.strategy.name,
                         data=self.card_data(), metrics=metrics, pipeline_tag=self.task if hf else None,
                         library_name="transformers" if hf else "transferkit")
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, **kwargs: Any) -> TransferTask:
        """Load an export written by :meth:`save`."""
        folder = Path(folder)
        info = json.loads((folder / INFO_FILE).read_text()) if (folder / INFO_FILE).exists() else {}
        task = cls.load_files(folder, info, "export", **kwargs)
        task.train_info = {k: v for k, v in info.items() if k != "labels"}
        return task

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, **kwargs: Any) -> TransferTask:
        """Rebuild the task of a ``fit`` run (finished or interrupted) from its best, or else last, checkpoint.

        ``kwargs`` go to :meth:`load_files` (a classifier takes ``encoder=`` for a run of a custom
        ``nn.Module`` encoder, as :meth:`load` does)."""
        from safetensors.torch import load_model

        meta_path = Path(run_dir) / RUN_FILE
        if not meta_path.exists():
            raise FileNotFoundError(f"{run_dir} is not a transferkit run folder (no {RUN_FILE})")
        meta = json.loads(meta_path.read_text())
        task = cls.load_files(Path(run_dir), meta, "run", **kwargs)
        task.strategy = get_strategy(meta["strategy"])
        # The final stage's groups put its new modules (LoRA adapters) in place before the weights load.
        task.strategy.stages()[-1].param_groups(task.encoder, task.head, TrainConfig.from_dict(meta["config"]))
        stage = Path(meta["final_stage_dir"])
        for ckpt in (stage / "checkpoints" / "best.safetensors", stage / "checkpoints" / "last" / "model.safetensors"):
            if ckpt.exists():
                load_model(task.model, str(ckpt))
                break
        else:
            raise FileNotFoundError(f"no checkpoint in {stage / 'checkpoints'}")
        task.train_info = {k: v for k, v in meta.items() if k.endswith("examples")}
        return task


def old_save_files(task: TransferTask, folder: Path, kind: FolderKind) -> dict[str, Any]:
    """:meth:`TransferTask.save_files` of a subclass written with the old hooks (``export``, ``run_meta``,
    ``write_run_assets``)."""
    if kind == "export":
        return task.export(folder)  # type: ignore[attr-defined]
    if hasattr(task, "write_run_assets"):
        task.write_run_assets(folder)
    return task.run_meta() if hasattr(task, "run_meta") else {}


def old_load_files(cls: type[TransferTask], folder: Path, info: dict[str, Any], kind: FolderKind,
                   **kwargs: Any) -> TransferTask:
    """:meth:`TransferTask.load_files` of a subclass written with the old hooks (``restore``, ``from_run_meta``)."""
    hook = "restore" if kind == "export" else "from_run_meta"
    if not hasattr(cls, hook):
        raise NotImplementedError(f"{cls.__name__} cannot read a {kind} folder: implement load_files(folder, info, kind)")
    return cls.restore(folder, info, **kwargs) if kind == "export" else cls.from_run_meta(info, folder, **kwargs)  # type: ignore[attr-defined]
