"""The one training loop: Accelerate for devices and precision, exact resume, honest logs."""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .config import TrainConfig
from .memory_format import channels_last
from .precision import resolve_mixed_precision
from .resume import (
    STEP_PREFIX,
    RngTap,
    TappedCollate,
    TappedDataset,
    cpu_rng_json,
    rng_state,
    set_rng_state,
    step_dirs,
)
from .sampling import EpochSampler, LengthGroupedSampler
from .streams import StreamPass, StreamReader, is_stream

log = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, Any], torch.Tensor]
EvalFn = Callable[[nn.Module, Any], dict]


@dataclass
class TrainResult:
    """What a run did: per-epoch history, the best epoch and metric, and how many steps it skipped."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    best_metric: float | None = None
    skipped_steps: int = 0
    stopped_early: bool = False
    steps: int = 0  # optimizer steps over the whole run (a resumed run counts those before the resume too)
    seconds: float = 0.0
    output_dir: str = ""

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Multiplier of the peak rate: linear warmup, then cosine decay to zero."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _default_workers(requested: int | None) -> int:
    if requested is not None:
        return requested
    # On a CPU the loader would compete with the model for the same cores.
    return min(8, max(1, (os.cpu_count() or 2) // 2)) if torch.cuda.is_available() else 0


def _cpu_processes() -> bool:
    """Several processes and no GPU: Accelerate must be told, or each process trains alone on a CPU."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


def process_state() -> Any:
    """Accelerate's view of the processes of this run (``process_index``, ``is_main_process``,
    ``main_process_first()``...), set up as the Trainer sets it up: several CPU processes talk over gloo."""
    from accelerate import PartialState

    return PartialState(cpu=_cpu_processes())


def _make_accelerator(mixed_precision: str, grad_accum: int, report_to: str = "none", logging_dir: Path | None = None,
                      find_unused_parameters: bool = True):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    state = AcceleratorState._shared_state
    # One process may train several models with different precision (a demo, a test suite);
    # Accelerate keeps its state in a singleton, so reset it when a single process asks for a change.
    if state and state.get("_mixed_precision") not in (None, mixed_precision) and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    from accelerate.utils import DistributedDataParallelKwargs

    # Under several processes some parameters may sit out a step (wav2vec2's LayerDrop, its mask
    # embedding when no span is masked): DistributedDataParallel must look for them, or it fails.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)
    kw = {"mixed_precision": mixed_precision, "gradient_accumulation_steps": grad_accum, "cpu": _cpu_processes(),
          "kwargs_handlers": [ddp]}
    if report_to == "none":
        return Accelerator(**kw)
    from accelerate.utils import ProjectConfiguration

    return Accelerator(**kw, log_with=report_to,
                       project_config=ProjectConfiguration(project_dir=str(logging_dir), logging_dir=str(logging_dir)))


class Callback:
    """Hooks into the loop. State that must survive a resume goes in :meth:`state_dict`: the trainer
    writes it into every checkpoint and hands it back through :meth:`load_state_dict`.

    Example (a step counter that a killed run resumes from):
        >>> class CountSteps(Callback):
        ...     def __init__(self):
        ...         self.steps = 0
        ...     def on_batch_end(self, trainer, loss):
        ...         self.steps += 1
        ...     def state_dict(self):
        ...         return {"steps": self.steps}
        ...     def load_state_dict(self, state):
        ...         self.steps = state["steps"]
    """

    def on_train_begin(self, trainer: Trainer) -> None: ...

    def on_batch_begin(self, trainer: Trainer, model: nn.Module, batch: Any) -> None: ...

    def on_batch_end(self, trainer: Trainer, loss: float) -> None: ...

    def on_epoch_end(self, trainer: Trainer, row: dict) -> None:
        """``row`` is the epoch's metrics; a callback may add its own before they are written."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


OptimizerFactory = Callable[[list[dict], TrainConfig], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer, int, TrainConfig], Any]


def adamw(param_groups: list[dict], config: TrainConfig) -> torch.optim.Optimizer:
    """The default optimizer: AdamW over the strategy's groups (each group carries its rate and decay)."""
    return torch.optim.AdamW(param_groups, lr=config.lr)


def warmup_cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int, config: TrainConfig) -> Any:
    """The default schedule: ``config.warmup_ratio`` of the steps warming up linearly, then cosine to zero."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, int(config.warmup_ratio * total_steps)))


class Trainer:
    """Trains ``model`` with the groups a strategy chose.

    Args:
        model: the module to train; ``compute_loss(model, batch)`` returns a scalar loss.
        config: the run's :class:`TrainConfig` (output_dir, epochs, schedule, precision...).
        compute_loss: loss of one batch. Compute a loss that must stay in fp32 (CTC) outside
            autocast yourself; a non-finite loss skips the step and is counted.
        param_groups: optimizer groups with peak ``lr`` (default: all trainable parameters at ``lr``).
        evaluate: ``evaluate(model, loader) -> {metric: value}``, called in eval mode without
            gradients after every epoch; it should aggregate as it goes, never keep all outputs.
            Without eval data it is still called, with ``loader=None``, for metrics computed another
            way (ranking against a held-out matrix).
        optimizer: ``optimizer(param_groups, config)`` (default :func:`adamw`).
        scheduler: ``scheduler(optimizer, total_steps, config)`` stepped once per optimizer step
            (default :func:`warmup_cosine_schedule`).
        callbacks: :class:`Callback` objects; their ``state_dict()`` is checkpointed.

    Example:
        >>> import tempfile
        >>> model = nn.Linear(4, 2)
        >>> data = [{"x": torch.randn(4), "y": i % 2} for i in range(16)]
        >>> loss = lambda m, b: nn.functional.cross_entropy(m(b["x"]), b["y"])
        >>> cfg = TrainConfig(output_dir=tempfile.mkdtemp(), epochs=2, batch_size=8, progress=False, plot=False)
        >>> [row["epoch"] for row in Trainer(model, cfg, compute_loss=loss).fit(data).history]
        [1, 2]
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        *,
        compute_loss: LossFn,
        param_groups: list[dict] | None = None,
        evaluate: EvalFn | None = None,
        run_info: dict | None = None,
        optimizer: OptimizerFactory = adamw,
        scheduler: SchedulerFactory = warmup_cosine_schedule,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        self.model, self.config = model, config
        # compile=True: torch.compile traces the loss (the model's forward, hence its backward) on first use.
        self.compute_loss = torch.compile(compute_loss) if config.compile else compute_loss
        self.evaluate_fn = evaluate
        self.param_groups = param_groups or [
            {"params": [p for p in model.parameters() if p.requires_grad], "lr": config.lr, "weight_decay": config.weight_decay}
        ]
        if not any(p.requires_grad for g in self.param_groups for p in g["params"]):
            raise ValueError("no parameter is trainable: the strategy froze everything")
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.callbacks = list(callbacks)
        self.run_info = run_info or {}
        self.out = Path(config.output_dir)
        self.mixed_precision = resolve_mixed_precision(config.mixed_precision)
        self.accelerator = None
        _check_tracker(config.report_to)
        self._tap: RngTap | None = None
        self._resume_rng: tuple | None = None
        self._resumed = False

    # -- checkpoints -------------------------------------------------------------------------
    @property
    def _last(self) -> Path:
        return self.out / "checkpoints" / "last"

    def _save_checkpoint(self, state: dict, target: Path | None = None) -> None:
        """Write the checkpoint to a temporary folder, then swap it in: a kill never leaves half a checkpoint.

        Each process writes its own random-generator states and running sums (``rng-<rank>.json``);
        the main process writes the loop state and the callbacks' state (``trainer_state.json``) and
        swaps the folder in.
        """
        acc = self.accelerator
        target = target or self._last
        tmp, old = target.with_name(f".{target.name}.tmp"), target.with_name(f".{target.name}.old")
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp), safe_serialization=True)
        # This process's generators and, mid-epoch, its own running sums of the epoch.
        rng = {"rng": rng_state(), "progress": state.get("progress")}
        if state.get("progress") and self._tap is not None and self._tap.last is not None:
            # The loader already fetched the next batch (Accelerate reads one ahead): a mid-epoch resume
            # must fetch it again from the generators' state before that fetch.
            rng["next_batch_rng"] = cpu_rng_json(self._tap.last)
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / f"rng-{acc.process_index}.json").write_text(json.dumps(rng))
        acc.wait_for_everyone()
        if acc.is_main_process:
            extra = {"callbacks": [cb.state_dict() for cb in self.callbacks], "num_processes": acc.num_processes}
            (tmp / "trainer_state.json").write_text(json.dumps({**state, **extra}))
            if target.exists():
                os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()

    def _save_step_checkpoint(self, state: dict) -> None:
        """``checkpoints/step-<N>``, then drop the oldest step checkpoints beyond ``save_total_limit``."""
        self._save_checkpoint(state, self.out / "checkpoints" / f"{STEP_PREFIX}{state['global_step']}")
        limit = self.config.save_total_limit
        if limit and self.accelerator.is_main_process:
            # Only older ones go: the newest (what a resume reads), the epoch checkpoint and best weights stay.
            for d in step_dirs(self.out / "checkpoints")[:-limit]:
                shutil.rmtree(d, ignore_errors=True)
        self.accelerator.wait_for_everyone()

    def _resume_dir(self) -> Path | None:
        """The newest complete checkpoint: the epoch one (``last``, or ``.last.old`` if a kill hit the
        swap) or a step one, whichever trained further; at a tie the epoch one (it holds the evaluation)."""
        found = []
        for d in (self._last, self._last.with_name(".last.old"), *step_dirs(self.out / "checkpoints")):
            if (d / "trainer_state.json").exists():
                s = json.loads((d / "trainer_state.json").read_text())
                found.append(((s.get("global_step", 0), s["epoch"], not d.name.startswith(STEP_PREFIX)), d))
        return max(found, key=lambda x: x[0])[1] if found else None

    def _restore(self) -> dict:
        """The loop state of the newest checkpoint when resuming (weights, optimizer, RNG, callbacks), else a fresh one."""
        acc = self.accelerator
        state = {"epoch": 0, "history": [], "best_metric": None, "best_epoch": None, "bad_epochs": 0, "skipped": 0,
                 "global_step": 0, "progress": None}
        resume_from = self._resume_dir() if self.config.resume else None
        if resume_from is None:
            if self.config.resume:
                log.info("resume=True but %s holds no checkpoint: starting fresh", self.out / "checkpoints")
            elif acc.is_main_process:
                # A fresh run in an old folder: a stale step checkpoint must not win a later resume.
                for d in step_dirs(self.out / "checkpoints"):
                    shutil.rmtree(d, ignore_errors=True)
            acc.wait_for_everyone()
            return state
        saved = json.loads((resume_from / "trainer_state.json").read_text())
        if saved.get("progress") and saved.get("num_processes", acc.num_processes) != acc.num_processes:
            raise ValueError(f"{resume_from} was written mid-epoch by {saved['num_processes']} processes; resume it "
                             f"with the same number (this run has {acc.num_processes}), or from an epoch checkpoint")
        acc.load_state(str(resume_from))
        state = {**state, **saved}
        rng_file = resume_from / f"rng-{acc.process_index}.json"
        rng = json.loads(rng_file.read_text()) if rng_file.exists() else {"rng": state.pop("rng")}
        state.pop("rng", None)
        state.pop("num_processes", None)
        set_rng_state(rng["rng"])
        self._resumed = True
        state["progress"] = rng.get("progress", state["progress"])
        if state["progress"]:
            # Replayed around the first fetch of the resumed epoch (see RngTap).
            self._resume_rng = (rng.get("next_batch_rng"), rng["rng"])
        for cb, cb_state in zip(self.callbacks, state.pop("callbacks", [])):
            cb.load_state_dict(cb_state)
        log.info("resumed from %s: epoch %d done, %d optimizer steps", resume_from, state["epoch"], state["global_step"])
        return state

    def _save_best(self) -> None:
        from safetensors.torch import save_model

        if self.accelerator.is_main_process:
            path = self.out / "checkpoints" / "best.safetensors"
            path.parent.mkdir(parents=True, exist_ok=True)
            save_model(self.accelerator.unwrap_model(self.model), str(path.with_suffix(".tmp")))
            os.replace(path.with_suffix(".tmp"), path)

    def _load_best(self) -> None:
        from safetensors.torch import load_model

        path = self.out / "checkpoints" / "best.safetensors"
        if path.exists():
            load_model(self.accelerator.unwrap_model(self.model), str(path))

    # -- the loop ----------------------------------------------------------------------------
    def _loaders(self, train_dataset, eval_dataset, collate_fn, eval_collate_fn, lengths):
        cfg, acc = self.config, self.accelerator
        eval_collate_fn = eval_collate_fn or collate_fn
        if is_stream(train_dataset):
            # Read in this process, batch by batch, without reading ahead: the position a step checkpoint
            # saves is exactly the one after the last trained batch.
            if cfg.num_workers:
                log.info("a stream is read in the training process: num_workers=%d is not used", cfg.num_workers)
            train_loader = StreamReader(train_dataset, cfg.batch_size, collate_fn, cfg.seed, cfg.shuffle_buffer)
            sampler = None
        else:
            sampler, train_loader = self._map_loader(train_dataset, collate_fn, lengths)
        if is_stream(eval_dataset):
            eval_loader = StreamPass(StreamReader(eval_dataset, cfg.effective_eval_batch_size,
                                                   eval_collate_fn), acc.device)
        elif eval_dataset is not None:
            workers = _default_workers(cfg.num_workers)
            eval_loader = DataLoader(eval_dataset, batch_size=cfg.effective_eval_batch_size, shuffle=False,
                                     collate_fn=eval_collate_fn, num_workers=workers,
                                     pin_memory=acc.device.type == "cuda", persistent_workers=workers > 0)
        else:
            eval_loader = None
        return sampler, train_loader, eval_loader

    def _map_loader(self, train_dataset, collate_fn, lengths):
        cfg, acc = self.config, self.accelerator
        if cfg.group_by_length and lengths is not None:
            sampler = LengthGroupedSampler(lengths, cfg.batch_size, cfg.seed)
        else:
            sampler = EpochSampler(len(train_dataset), cfg.seed)
        workers = _default_workers(cfg.num_workers)
        if workers == 0:
            # Loading in this process draws from the same generators as dropout: the tap records their
            # state before each fetch, so that a mid-epoch resume fetches the next batch exactly again.
            self._tap = RngTap()
            train_dataset, collate_fn = TappedDataset(train_dataset, self._tap), TappedCollate(collate_fn, self._tap)
        loader_kw = {"num_workers": workers, "pin_memory": acc.device.type == "cuda", "persistent_workers": workers > 0}
        return sampler, DataLoader(train_dataset, batch_size=cfg.batch_size, sampler=sampler, collate_fn=collate_fn, **loader_kw)

    def fit(
        self,
        train_dataset: Dataset | Sequence,
        eval_dataset: Dataset | Sequence | None = None,
        *,
        collate_fn: Callable | None = None,
        eval_collate_fn: Callable | None = None,
        lengths: Sequence[int] | None = None,
    ) -> TrainResult:
        """Train for ``config.epochs`` epochs (or ``config.max_steps`` steps, or until early stopping) and
        keep the best weights.

        ``train_dataset`` and ``eval_dataset`` may be streams (iterables without a length, such as a
        ``datasets.IterableDataset``): a stream trains for ``config.max_steps`` steps, in passes (an epoch
        row, evaluation and checkpoint per pass and at the last step), shuffled through a seeded buffer of
        ``config.shuffle_buffer`` examples; see :mod:`transferkit.common.streams`.
        ``eval_collate_fn`` (default ``collate_fn``) prepares evaluation batches, without augmentation.
        ``lengths`` (one per example) enables length-grouped batches when ``config.group_by_length``.
        """
        cfg = self.config
        stream = is_stream(train_dataset)
        if stream and cfg.max_steps is None:
            raise ValueError("the training data is a stream (no length), so the number of epochs cannot be counted: "
                             "set TrainConfig.max_steps (fit(..., max_steps=N)) to the optimizer steps to train")
        if stream and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError("a stream trains in one process: launch without several processes, or pass a map-style set")
        if not stream and len(train_dataset) == 0:
            raise ValueError("the training set is empty")
        self._upcast_half_trainables()
        # Channels-last weights for the training steps only: fit hands the model back in the plain format (also
        # when it fails), so its predictions match a model loaded from its files exactly.
        with channels_last(self.model, cfg.channels_last):
            return self._fit(train_dataset, eval_dataset, collate_fn, eval_collate_fn, lengths, stream)

    def _fit(self, train_dataset, eval_dataset, collate_fn, eval_collate_fn, lengths, stream: bool) -> TrainResult:
        cfg = self.config
        acc = self.accelerator = _make_accelerator(self.mixed_precision, cfg.grad_accum_steps, cfg.report_to,
                                                   self.out / "tracking", cfg.find_unused_parameters)
        from accelerate.utils import set_seed

        set_seed(cfg.seed)  # torch, numpy and random: augmentation drawing from any of them repeats
        self.out.mkdir(parents=True, exist_ok=True)
        if acc.is_main_process:
            cfg.save(self.out / "config.json", resolved_mixed_precision=self.mixed_precision,
                     device=str(acc.device), num_processes=acc.num_processes, **self.run_info)

        sampler, train_loader, eval_loader = self._loaders(train_dataset, eval_dataset, collate_fn, eval_collate_fn, lengths)
        optimizer = self.optimizer_factory(self.param_groups, cfg)
        if stream:
            epochs: Any = itertools.count(1)  # passes until max_steps
            total_steps = cfg.max_steps
        else:
            steps_per_epoch = math.ceil(math.ceil(len(train_dataset) / cfg.batch_size / acc.num_processes) / cfg.grad_accum_steps)
            n_epochs = math.ceil(cfg.max_steps / steps_per_epoch) if cfg.max_steps else cfg.epochs
            epochs = range(1, n_epochs + 1)
            total_steps = cfg.max_steps or steps_per_epoch * cfg.epochs
        scheduler = self.scheduler_factory(optimizer, total_steps, cfg)
        # The schedule is stepped here, once per optimizer step: Accelerate's wrapper would step it once
        # per process, which makes N processes run through it N times faster than one.
        if stream:  # the reader stays ours: it knows its position in the stream
            model, optimizer = acc.prepare(self.model, optimizer)
        else:
            model, optimizer, train_loader = acc.prepare(self.model, optimizer, train_loader)
        acc.register_for_checkpointing(scheduler)
        if eval_loader is not None and not isinstance(eval_loader, StreamPass):
            eval_loader = acc.prepare(eval_loader)
        self.model = model
        # An evaluate function with no eval data scores the model its own way (ranking against a
        # held-out matrix, say): it is called once per epoch with loader=None.
        evaluates = eval_loader is not None or self.evaluate_fn is not None

        state = self._restore()
        if cfg.report_to != "none":
            acc.init_trackers(self.out.resolve().name or "transferkit", config=_tracker_config(cfg, self.run_info))
        for cb in self.callbacks:
            cb.on_train_begin(self)
        start = time.perf_counter() - sum(h.get("seconds", 0.0) for h in state["history"])
        for epoch in epochs:
            if epoch <= state["epoch"]:
                continue
            if self._patience_spent(state) or self._steps_spent(state):
                break
            # Accelerate's loader counts its own iterations and passes them to the sampler; a resumed
            # run must continue that count, or it would replay epoch 1's order.
            if hasattr(train_loader, "set_epoch"):
                train_loader.set_epoch(epoch)
            if sampler is not None:
                sampler.set_epoch(epoch)
            row = self._train_epoch(model, optimizer, scheduler, train_loader, epoch, state)
            state["progress"] = None
            if evaluates:
                row.update(self._evaluate(model, eval_loader))
            for cb in self.callbacks:
                cb.on_epoch_end(self, row)
            state["history"].append(row)
            state["epoch"] = epoch
            if evaluates:
                self._track_best(state, row)
            if cfg.save_checkpoints:
                self._save_checkpoint(state)
            self._write_metrics(state["history"])
            acc.log({f"epoch/{k}": v for k, v in row.items() if k != "epoch" and isinstance(v, (int, float))},
                    step=state["global_step"])
            log.info("epoch %d: %s", epoch, {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
        acc.wait_for_everyone()  # the main process may still be writing the best weights the others read
        if evaluates and state["best_epoch"] is not None:
            self._load_best()
        acc.wait_for_everyone()
        # Not acc.end_training(): it also ends the process group, which the next stage or run still needs.
        for tracker in acc.trackers:
            tracker.finish()
        # Drop Accelerate's autocast wrapper: after training the model predicts in full precision.
        self.model = acc.unwrap_model(model, keep_fp32_wrapper=False)
        self._plot(state["history"])
        return TrainResult(history=state["history"], best_epoch=state["best_epoch"], best_metric=state["best_metric"],
                           skipped_steps=state["skipped"], stopped_early=self._patience_spent(state), steps=state["global_step"],
                           seconds=time.perf_counter() - start, output_dir=str(self.out))

    def _steps_spent(self, state: dict) -> bool:
        return bool(self.config.max_steps) and state["global_step"] >= self.config.max_steps

    def _patience_spent(self, state: dict) -> bool:
        patience = self.config.early_stopping_patience
        return bool(patience) and state["bad_epochs"] >= patience

    def _train_epoch(self, model, optimizer, scheduler, loader, epoch: int, state: dict) -> dict:
        from tqdm.auto import tqdm

        cfg, acc = self.config, self.accelerator
        params = [p for g in self.param_groups for p in g["params"]]
        model.train()
        _freeze_frozen_norm_statistics(model)
        # A run resumed from a step checkpoint continues the epoch: the batches already trained are
        # skipped without loading them, and the epoch's running sums carry on.
        progress = state["progress"] or {"batches": 0, "loss_sum": 0.0, "n_steps": 0, "seen": 0, "seconds": 0.0}
        done = progress["batches"]
        reader = loader if isinstance(loader, StreamReader) else None
        if reader is not None:
            # A stream skips nothing here: the reader continues from the position the checkpoint saved.
            if done:
                reader.resume_at(progress["stream"])
            loader, total = StreamPass(reader, acc.device, epoch), None
        else:
            total = len(loader)
        if done and reader is None:
            from accelerate import skip_first_batches

            loader = skip_first_batches(loader, done) if done < total else []
            if done < total and self._tap is not None and self._resume_rng is not None:
                self._tap.replay(*self._resume_rng)
        # With loader workers, the main process's generators drive only the model, but a loader drawn
        # anew in a resumed process (Accelerate's skipping loader, or the first epoch's) takes a seed
        # from them that the uninterrupted run drew once, at its start: put them back after it.
        pending_rng = rng_state() if self._tap is None and self._resumed and reader is None else None
        self._resume_rng = None
        t0 = time.perf_counter() - progress["seconds"]
        loss_sum, n_steps, seen = progress["loss_sum"], progress["n_steps"], progress["seen"]
        desc = f"pass {epoch}, step {state['global_step']}/{cfg.max_steps}" if reader is not None else f"epoch {epoch}/{cfg.epochs}"
        started_at = done
        bar = tqdm(loader, desc=desc, disable=not cfg.progress or not acc.is_local_main_process,
                   leave=False, dynamic_ncols=True, initial=done, total=total)
        for batch in bar:
            if pending_rng is not None:
                set_rng_state(pending_rng)
                pending_rng = None
            for cb in self.callbacks:
                cb.on_batch_begin(self, model, batch)
            with acc.accumulate(model):
                with acc.autocast():
                    loss = self.compute_loss(model, batch)
                finite = self._all_finite(loss)
                if finite:
                    acc.backward(loss)
                    if acc.sync_gradients and cfg.max_grad_norm:
                        acc.clip_grad_norm_(params, cfg.max_grad_norm)
                    optimizer.step()
                    if acc.sync_gradients and not optimizer.step_was_skipped:  # fp16 overflow: no step
                        scheduler.step()
                else:
                    # A non-finite loss would poison the weights (the fp16 CTC failure): skip the step.
                    state["skipped"] += 1
                optimizer.zero_grad(set_to_none=True)
            done += 1
            if finite:
                value = loss.item()
                for cb in self.callbacks:
                    cb.on_batch_end(self, value)
                loss_sum += value
                n_steps += 1
                seen += _batch_size(batch)
                bar.set_postfix(loss=f"{loss_sum / n_steps:.4f}")
            if not acc.sync_gradients:
                continue
            state["global_step"] += 1
            if finite:
                acc.log({"train/loss": value, "train/lr": scheduler.get_last_lr()[0]}, step=state["global_step"])
            if cfg.save_steps and state["global_step"] % cfg.save_steps == 0:
                state["progress"] = {"batches": done, "loss_sum": loss_sum, "n_steps": n_steps, "seen": seen,
                                     "seconds": time.perf_counter() - t0}
                if reader is not None:
                    state["progress"]["stream"] = reader.position()
                self._save_step_checkpoint(state)
            if self._steps_spent(state):
                break
        if reader is not None and done == started_at == 0:
            raise ValueError(f"pass {epoch} of the training stream yielded no example: an empty stream, or a one-shot "
                             "iterator (a generator) already read; pass a source that can be read again "
                             "(a datasets.IterableDataset, a list)")
        seconds = time.perf_counter() - t0
        if acc.num_processes > 1:  # every process's batches: the same row on every process
            sums = torch.tensor([loss_sum, n_steps, seen], dtype=torch.float64, device=acc.device)
            loss_sum, n_steps, seen = acc.reduce(sums, reduction="sum").tolist()
        return {"epoch": epoch, "train_loss": loss_sum / max(1, n_steps), "lr": scheduler.get_last_lr()[0],
                "seconds": seconds, "samples_per_s": seen / max(seconds, 1e-9), "skipped_steps": state["skipped"]}

    def _all_finite(self, loss: torch.Tensor) -> bool:
        finite = torch.isfinite(loss.detach()).all().float().reshape(1)
        if self.accelerator.num_processes > 1:  # every process must agree, or DDP hangs
            finite = self.accelerator.reduce(finite, reduction="min")
        return bool(finite.item())

    def _evaluate(self, model: nn.Module, loader: DataLoader | None) -> dict:
        model.eval()
        if loader is not None:
            # Batches are collated outside autocast, as in training: a torch feature extractor in the
            # collate function (AST's Kaldi fbank, Whisper's STFT) fails or loses precision in bf16.
            loader = _OutsideAutocast(loader, self.accelerator)
        with torch.no_grad(), self.accelerator.autocast():
            if self.evaluate_fn is not None:
                metrics = self.evaluate_fn(model, loader)
            else:
                total, n = 0.0, 0
                for batch in loader:
                    total += self.compute_loss(model, batch).item()
                    n += 1
                if self.accelerator.num_processes > 1:  # the mean over every process's batches
                    sums = torch.tensor([total, n], dtype=torch.float64, device=self.accelerator.device)
                    total, n = self.accelerator.reduce(sums, reduction="sum").tolist()
                metrics = {"eval_loss": total / max(1, n)}
        model.train()
        return {k: float(v) for k, v in metrics.items()}

    def _track_best(self, state: dict, row: dict) -> None:
        if record_best(self.config, state, row):
            self._save_best()

    def _write_metrics(self, history: list[dict]) -> None:
        if self.accelerator.is_main_process:
            tmp = self.out / "metrics.jsonl.tmp"
            tmp.write_text("".join(json.dumps(h) + "\n" for h in history))
            os.replace(tmp, self.out / "metrics.jsonl")

    def _plot(self, history: list[dict]) -> None:
        if self.config.plot and self.accelerator.is_main_process and history:
            from .report import plot_learning_curve

            plot_learning_curve(history, self.out / "learning_curve.png", metric=self.config.metric_for_best)

    def _upcast_half_trainables(self) -> None:
        # A model loaded in fp16 cannot be trained with AMP ("Attempting to unscale FP16 gradients"):
        # keep the trainable weights in fp32 and let autocast do the half-precision math.
        n = 0
        for g in self.param_groups:
            for p in g["params"]:
                if p.requires_grad and p.dtype in (torch.float16, torch.bfloat16):
                    p.data = p.data.float()
                    n += 1
        if n:
            log.info("cast %d half-precision trainable tensors to fp32 for mixed-precision training", n)


def _freeze_frozen_norm_statistics(model: nn.Module) -> None:
    """Batch norms whose weights a strategy froze keep their running statistics too (eval mode): a
    frozen body must not drift towards the new data's statistics while its weights stay put."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            own = list(m.parameters(recurse=False))
            if own and not any(p.requires_grad for p in own):
                m.eval()


class _OutsideAutocast:
    """A loader whose batches are fetched (and collated) with autocast off, for use inside an autocast block.

    Under several processes each one evaluates its shard of the batches: an evaluate function passes
    what it scores through :meth:`gather` to score every example exactly once on every process.
    """

    def __init__(self, loader: Any, accelerator: Any) -> None:
        self.loader, self.device_type, self.accelerator = loader, accelerator.device.type, accelerator

    def gather(self, *values: Any) -> tuple:
        """Each of ``values`` (a tensor with the batch first, or a list) from every process, in order,
        without the examples Accelerate repeated to give every process a full last batch."""
        if self.accelerator.num_processes == 1:
            return values
        return tuple(self.accelerator.gather_for_metrics(v) for v in values)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        batches = iter(self.loader)
        while True:
            with torch.autocast(self.device_type, enabled=False):
                batch = next(batches, None)
            if batch is None:
                return
            yield batch


def _batch_size(batch: Any) -> int:
    if isinstance(batch, dict):
        batch = next(iter(batch.values()))
    if isinstance(batch, (list, tuple)):
        batch = batch[0]
    return int(batch.shape[0]) if hasattr(batch, "shape") and batch.dim() else 1


def _check_tracker(report_to: str) -> None:
    import importlib.util

    package = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}.get(report_to)
    if package and importlib.util.find_spec(package) is None:
        raise ImportError(f"report_to={report_to!r} needs the {package} package: pip install {package} "
                          "(or report_to='none')")


def _tracker_config(config: TrainConfig, run_info: dict) -> dict:
    """The run's settings as flat scalars, which every tracker accepts as hyperparameters."""
    flat = {**config.to_dict(), **{k: v for k, v in run_info.items() if not isinstance(v, dict)}}
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flat.items()}


def record_best(config: TrainConfig, state: dict, row: dict) -> bool:
    """Whether epoch ``row`` is the best so far by ``config.metric_for_best`` (recorded in ``state``; else one
    more epoch without improvement). Among epochs with the same metric the lower ``eval_loss`` wins: on a
    small dev set accuracy ties are common, and the first epoch of a probe still warming up used to win them.
    """
    metric = config.metric_for_best
    if metric not in row:
        raise ValueError(f"metric_for_best={metric!r} is not among the evaluation metrics {sorted(row)}")
    value, best = row[metric], state["best_metric"]
    tie_loss = state.get("best_eval_loss")
    better = (best is None or (value > best if config.greater_is_better else value < best)
              or (value == best and metric != "eval_loss" and tie_loss is not None
                  and row.get("eval_loss", math.inf) < tie_loss))
    if better:
        state["best_metric"], state["best_epoch"], state["bad_epochs"] = value, row["epoch"], 0
        state["best_eval_loss"] = row.get("eval_loss")
        return True
    state["bad_epochs"] += 1
    return False

