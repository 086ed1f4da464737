"""The head-only loop: a frozen encoder's cached feature vectors train the new head, without Accelerate.

When a stage trains the head alone on cached features, the batches are rows of one matrix and a
step is a matrix product: setting up Accelerate, data loaders and autocast would cost more than the
epochs themselves (on a small backbone they rivalled the backbone passes the cache saves). This loop
runs the same recipe as :class:`~transferkit.common.Trainer` (the stage's optimizer groups, AdamW,
warmup + cosine, gradient clipping, gradient accumulation, the same shuffled order per epoch, the
callbacks, best-epoch selection and early stopping) and leaves the same files: ``config.json``,
``metrics.jsonl``, ``checkpoints/best.safetensors`` (with eval data), ``checkpoints/last/model.safetensors``
(with ``save_checkpoints``) and ``learning_curve.png`` (with ``plot``). It trains in fp32 (the head's
arithmetic on vectors gains nothing from autocast) and always from the first epoch: on cached
vectors a rerun takes about as long as reading a checkpoint, and reaches the same weights.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Any

import torch

from .sampling import EpochSampler
from .trainer import Trainer, TrainResult, record_best

log = logging.getLogger(__name__)


def fit_head_on_features(trainer: Trainer, train: Any, eval: Any = None) -> TrainResult:
    """Train ``trainer.model``'s trainable parameters (the head) on feature sets with ``features`` and
    ``labels`` tensors, following ``trainer``'s config, groups, loss, evaluation and callbacks."""
    cfg, model = trainer.config, trainer.model
    n = len(train.labels)
    if n == 0:
        raise ValueError("the training set is empty")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    torch.manual_seed(cfg.seed)
    trainer.out.mkdir(parents=True, exist_ok=True)
    cfg.save(trainer.out / "config.json", resolved_mixed_precision="no", device=str(device), num_processes=1,
             loop="head only (cached features)", **trainer.run_info)
    params = [p for g in trainer.param_groups for p in g["params"]]
    optimizer = trainer.optimizer_factory(trainer.param_groups, cfg)
    batches_per_epoch = math.ceil(n / cfg.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum_steps)
    scheduler = trainer.scheduler_factory(optimizer, steps_per_epoch * cfg.epochs, cfg)
    x, y = train.features.to(device), train.labels.to(device)
    eval_batches = _batches(eval, cfg.effective_eval_batch_size, device) if eval is not None else None
    evaluates = eval_batches is not None or trainer.evaluate_fn is not None
    sampler = EpochSampler(n, cfg.seed)
    state: dict[str, Any] = {"history": [], "best_metric": None, "best_epoch": None, "bad_epochs": 0, "skipped": 0}
    best_head: dict[str, torch.Tensor] | None = None
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    for cb in trainer.callbacks:
        cb.on_train_begin(trainer)
    start = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        if trainer._patience_spent(state):
            break
        sampler.set_epoch(epoch)
        row = _train_epoch(trainer, model, optimizer, scheduler, params, x, y, torch.tensor(list(sampler)), epoch, state)
        if evaluates:
            row.update(_evaluate(trainer, model, eval_batches))
        for cb in trainer.callbacks:
            cb.on_epoch_end(trainer, row)
        state["history"].append(row)
        if evaluates and record_best(cfg, state, row):
            best_head = {k: v.detach().clone() for k, v in model.state_dict().items() if k in trainable}
        log.info("epoch %d: %s", epoch, {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
    _write(trainer, model, state, best_head, cfg)
    return TrainResult(history=state["history"], best_epoch=state["best_epoch"], best_metric=state["best_metric"],
                       skipped_steps=state["skipped"], stopped_early=trainer._patience_spent(state),
                       seconds=time.perf_counter() - start, output_dir=str(trainer.out))


def _batches(feature_set: Any, size: int, device: torch.device) -> list[dict]:
    x, y = feature_set.features.to(device), feature_set.labels.to(device)
    return [{"features": x[i:i + size], "labels": y[i:i + size]} for i in range(0, len(y), size)]


def _train_epoch(trainer, model, optimizer, scheduler, params, x, y, order, epoch, state) -> dict:
    cfg = trainer.config
    # A linear layer on vectors: compiling it would cost seconds and save nothing.
    loss_fn = getattr(trainer.compute_loss, "_torchdynamo_orig_callable", trainer.compute_loss)
    model.train()
    t0, loss_sum, n_steps, seen = time.perf_counter(), 0.0, 0, 0
    starts = range(0, len(order), cfg.batch_size)
    for k, start in enumerate(starts):
        idx = order[start:start + cfg.batch_size].to(x.device)
        batch = {"features": x[idx], "labels": y[idx]}
        for cb in trainer.callbacks:
            cb.on_batch_begin(trainer, model, batch)
        loss = loss_fn(model, batch)
        if not bool(torch.isfinite(loss.detach())):
            state["skipped"] += 1  # a non-finite loss would poison the weights: skip the step
            optimizer.zero_grad(set_to_none=True)
            continue
        (loss / cfg.grad_accum_steps).backward()
        # Accelerate steps after every grad_accum_steps batches and at the end of the epoch; so does this.
        if (k + 1) % cfg.grad_accum_steps == 0 or k == len(starts) - 1:
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        value = float(loss.detach())
        for cb in trainer.callbacks:
            cb.on_batch_end(trainer, value)
        loss_sum += value
        n_steps += 1
        seen += len(idx)
    seconds = time.perf_counter() - t0
    return {"epoch": epoch, "train_loss": loss_sum / max(1, n_steps), "lr": scheduler.get_last_lr()[0],
            "seconds": seconds, "samples_per_s": seen / max(seconds, 1e-9), "skipped_steps": state["skipped"]}


def _evaluate(trainer, model, batches) -> dict:
    model.eval()
    with torch.no_grad():
        if trainer.evaluate_fn is not None:
            metrics = trainer.evaluate_fn(model, batches)
        else:
            metrics = {"eval_loss": sum(float(trainer.compute_loss(model, b)) for b in batches) / max(1, len(batches))}
    model.train()
    return {k: float(v) for k, v in metrics.items()}


def _write(trainer: Trainer, model: torch.nn.Module, state: dict, best_head: dict | None, cfg) -> None:
    """Metrics, the last weights (for a run folder without eval data), the best weights, the plot."""
    from safetensors.torch import save_model

    out = trainer.out
    tmp = out / "metrics.jsonl.tmp"
    tmp.write_text("".join(json.dumps(h) + "\n" for h in state["history"]))
    os.replace(tmp, out / "metrics.jsonl")
    ckpt = out / "checkpoints"
    if cfg.save_checkpoints:
        (ckpt / "last").mkdir(parents=True, exist_ok=True)
        save_model(model, str(ckpt / "last" / "model.tmp"))
        os.replace(ckpt / "last" / "model.tmp", ckpt / "last" / "model.safetensors")
    if best_head is not None:
        model.load_state_dict(best_head, strict=False)
        ckpt.mkdir(parents=True, exist_ok=True)
        save_model(model, str(ckpt / "best.tmp"))
        os.replace(ckpt / "best.tmp", ckpt / "best.safetensors")
    if cfg.plot and state["history"]:
        from .report import plot_learning_curve

        plot_learning_curve(state["history"], out / "learning_curve.png", metric=cfg.metric_for_best)
