"""Speed against the alternative, measured side by side in one run on the same machine.

(a) Full fine-tuning of a small ViT (32x32 input, patch 4, 128 wide, 4 layers): transferkit's
    Trainer vs Hugging Face ``transformers.Trainer`` - samples/s and peak RSS, each run in its own
    process so that RSS is per run.
(b) Linear probe of the same ViT: transferkit (features cached once, then the head trains on them)
    vs ``Trainer`` with the backbone frozen (the backbone runs every epoch) - wall time for the same
    epochs, and the accuracy each reaches.
(c) Achieved FLOP/s of a transferkit training step (FLOPs from ``torch.utils.flop_counter``) over
    the FLOP/s of a large fp32 and a large bf16 matmul, measured in this run with the same threads.
(d) ALS through ``transferkit.recsys.pretrain`` vs calling ``implicit`` directly on MovieLens 100K.

Sections (a)-(d) compare loops on pre-normalised tensors; (e) trains from image and audio files through
``fit(...)`` against ``Trainer`` fed as its examples feed it and a plain loop (see ``throughput_user.py``).

Both sides get the same model, data (ants vs bees photos, resized to 32x32 and normalised once),
batch size, epochs, learning rate, schedule shape, gradient clipping and precision.

    python benchmarks/throughput.py [--data ../shared/data] [--smoke] [--results-dir DIR] [--skip-user]

On a CPU with AVX512-BF16, ``TRANSFERKIT_CPU_BF16=0`` times what a machine without bf16 runs (fp32).

Writes ``benchmarks/results/throughput.md`` and ends with one ``RESULT throughput`` line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import benchinfo  # noqa: E402
import torch  # noqa: E402

LABELS = ["ants", "bees"]
# Both sides train where Accelerate puts them: the GPU when there is one (that path is untested so far).
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SIZE = 32
VIT = {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 256,
       "image_size": SIZE, "patch_size": 4, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


# -- shared inputs, written once by the parent ---------------------------------------------------
def prepare(work: Path, data: Path, smoke: bool) -> dict:
    """Photos -> normalised (N, 3, 32, 32) float32 arrays, and the random ViT both sides load."""
    from PIL import Image
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    from transferkit.vision import ImageSet

    processor = ViTImageProcessor(size={"height": SIZE, "width": SIZE}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    counts = {}
    for split in ("train", "val"):
        ds = ImageSet.from_folder(data / "hymenoptera" / split)
        keep = range(len(ds)) if not smoke else [i for c in LABELS for i in [j for j, t in enumerate(ds.targets) if t == c][:16]]
        images = [ds[i][0].resize((SIZE, SIZE), Image.BILINEAR) for i in keep]
        pixels = processor(images=images, return_tensors="np")["pixel_values"].astype(np.float32)
        np.save(work / f"{split}_x.npy", pixels)
        np.save(work / f"{split}_y.npy", np.array([LABELS.index(ds.targets[i]) for i in keep], dtype=np.int64))
        counts[split] = len(images)
    torch.manual_seed(0)
    ViTModel(ViTConfig(**VIT), add_pooling_layer=False).save_pretrained(work / "vit")
    processor.save_pretrained(work / "vit")
    return counts


class Rows:
    """The prepared arrays as a dataset of {"pixel_values", "labels"} rows (what both trainers read)."""

    def __init__(self, work: Path, split: str) -> None:
        self.x = np.load(work / f"{split}_x.npy", allow_pickle=False)
        self.y = np.load(work / f"{split}_y.npy", allow_pickle=False)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        import torch

        return {"pixel_values": torch.from_numpy(self.x[i]), "labels": int(self.y[i])}


def collate(rows: list[dict]) -> dict:

    return {"pixel_values": torch.stack([r["pixel_values"] for r in rows]), "labels": torch.tensor([r["labels"] for r in rows])}


def on_device(batch: dict) -> dict:
    return {k: v.to(DEVICE) for k, v in batch.items()}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


# -- workers: each runs in its own process ------------------------------------------------------
def worker_tk(work: Path, strategy: str, args) -> dict:
    """transferkit: a TransferClassifier on the loaded encoder whose data hook hands the prepared rows over as they are."""
    t0 = time.perf_counter()  # the clock includes importing the tool, on both sides (torch is already loaded)
    from torch.utils.flop_counter import FlopCounterMode

    from transferkit.common import (
        TrainConfig,
        TrainingData,
        TransferClassifier,
        classification_loss,
        evaluate_classification,
        get_strategy,
        load_encoder,
    )
    from transferkit.common.features import fingerprint

    class RowsClassifier(TransferClassifier):
        def training_data(self, train, eval, config, *, fingerprints):
            self.start_training(config)
            return TrainingData(train=train, collate=collate, eval_collate=collate, fingerprints=fingerprints)

    train, val = Rows(work, "train"), Rows(work, "val")
    out = {}
    runs = ("cold cache", "warm cache") if strategy == "linear_probe" else ("run",)
    cache = work / f"features-{os.getpid()}"
    plot_seconds = _clock_plots()
    for name in runs:
        if name == "warm cache":
            t0 = time.perf_counter()
        plot_seconds.clear()
        settings = {"feature_cache": str(cache)} if strategy == "linear_probe" else {}
        clf = RowsClassifier(load_encoder(str(work / "vit")), LABELS, get_strategy(strategy, **settings))
        t_loaded = time.perf_counter()  # the tool imported and the model loaded: what both sides share
        cfg = TrainConfig(output_dir=str(work / f"tk-{strategy}-{os.getpid()}"), epochs=args.epochs,
                          batch_size=args.batch_size, lr=args.lr, head_lr=args.lr, weight_decay=0.01, warmup_ratio=0.1,
                          max_grad_norm=1.0, mixed_precision=args.precision, seed=0, num_workers=0,
                          save_checkpoints=False, progress=False)
        fps = {"train": fingerprint(train.x, train.y), "preprocess": "32x32, mean 0.5, std 0.5"}
        result = clf.fit(train, config=cfg, fingerprints=fps)[strategy]
        model = clf.model  # the trained model (the trainer may hand back an unwrapped one)
        loader = torch.utils.data.DataLoader(val, batch_size=2 * args.batch_size, collate_fn=collate)
        model.eval()
        with torch.no_grad(), torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=result_precision(args) == "bf16"):
            acc = evaluate_classification(len(LABELS))(model, (on_device(b) for b in loader))["accuracy"]
        out[name] = {"seconds": time.perf_counter() - t0, "accuracy": acc, "after_load": time.perf_counter() - t_loaded,
                     "plot_seconds": sum(plot_seconds),
                     "epoch_seconds": [h["seconds"] for h in result.history]}
    if strategy == "finetune":  # FLOPs of one training step of this very model, counted by torch
        model.train()
        batch = on_device(collate([train[i] for i in range(min(args.batch_size, len(train)))]))
        with FlopCounterMode(display=False) as counter:
            with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=result_precision(args) == "bf16"):
                loss = classification_loss()(model, batch)
            loss.backward()
        out["flops_per_step"] = counter.get_total_flops()
        out["flops_batch"] = len(batch["labels"])
    shutil.rmtree(cache, ignore_errors=True)
    return out


def _clock_plots() -> list[float]:
    """Time transferkit's learning-curve plots without changing them."""
    from transferkit.common import report

    seconds: list[float] = []
    draw = report.plot_learning_curve

    def timed(*a, **k):
        t = time.perf_counter()
        try:
            return draw(*a, **k)
        finally:
            seconds.append(time.perf_counter() - t)

    report.plot_learning_curve = timed
    return seconds


def worker_hf(work: Path, strategy: str, args) -> dict:
    """Hugging Face: ViTForImageClassification trained by transformers.Trainer (backbone frozen for the probe)."""
    t0 = time.perf_counter()
    import math

    from transformers import AutoModelForImageClassification, Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # "newly initialized classifier": expected, the head is new

    train, val = Rows(work, "train"), Rows(work, "val")
    model = AutoModelForImageClassification.from_pretrained(work / "vit", num_labels=len(LABELS))
    if strategy == "linear_probe":
        model.vit.requires_grad_(False)
    t_loaded = time.perf_counter()
    total_steps = math.ceil(len(train) / args.batch_size) * args.epochs
    targs = TrainingArguments(
        output_dir=str(work / f"hf-{strategy}-{os.getpid()}"), per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=2 * args.batch_size, num_train_epochs=args.epochs, learning_rate=args.lr,
        weight_decay=0.01, lr_scheduler_type="cosine", warmup_steps=int(0.1 * total_steps), max_grad_norm=1.0,
        bf16=result_precision(args) == "bf16", use_cpu=DEVICE == "cpu", seed=0, dataloader_num_workers=0,
        save_strategy="no", eval_strategy="no", logging_strategy="no", report_to="none", disable_tqdm=True,
        remove_unused_columns=False)
    clock = benchinfo.epoch_clock()
    trainer = Trainer(model=model, args=targs, train_dataset=train, data_collator=collate, callbacks=[clock])
    trainer.train()
    pred = trainer.predict(val)
    acc = float((pred.predictions.argmax(-1) == val.y).mean())
    return {"run": {"seconds": time.perf_counter() - t0, "accuracy": acc, "after_load": time.perf_counter() - t_loaded,
                    "epoch_seconds": clock.seconds}}


def worker_als(work: Path, args) -> dict:
    """ALS on MovieLens 100K: transferkit.recsys.pretrain vs implicit's AlternatingLeastSquares, alternated."""
    import implicit
    import pandas as pd
    from threadpoolctl import threadpool_limits

    from transferkit.recsys import Interactions, pretrain

    ratings = pd.read_csv(Path(args.data) / "ml-100k" / "u.data", sep="\t", names=["user", "item", "rating", "time"])
    if args.smoke:
        ratings = ratings[ratings.user <= 100]
    iterations = 2 if args.smoke else 15
    hp = {"factors": 64, "iterations": iterations, "regularization": 0.01, "alpha": 1.0, "random_state": 0}
    threads = max(1, int(args.threads_n))

    def build():
        return Interactions.from_arrays(ratings.user.to_numpy(), ratings.item.to_numpy(), weights=ratings.rating.to_numpy())

    def via_transferkit(inter):
        return pretrain(inter, model="als", factors=64, iterations=iterations, seed=0, num_threads=threads, use_gpu=False)

    def direct(matrix):
        with threadpool_limits(limits=1, user_api="blas"):  # what implicit asks its users to do
            est = implicit.cpu.als.AlternatingLeastSquares(num_threads=threads, **hp)
            est.fit(matrix, show_progress=False)
        return est

    inter = build()
    matrix = inter.matrix
    via_transferkit(inter), direct(matrix)  # warm-up: imports, thread pools
    times: dict[str, list[float]] = {"transferkit": [], "implicit": [], "build": []}
    for _ in range(1 if args.smoke else args.als_repeats):
        t0 = time.perf_counter()
        tables = via_transferkit(inter)
        times["transferkit"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        est = direct(matrix)
        times["implicit"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        build().matrix  # noqa: B018  (the data step a user of transferkit adds: validation, ids, CSR)
        times["build"].append(time.perf_counter() - t0)
    same = bool(np.allclose(tables.item_factors, np.asarray(est.item_factors), atol=1e-4))
    return {"times": times, "same_factors": same, "shape": list(matrix.shape), "nnz": int(matrix.nnz),
            "iterations": iterations, "threads": threads}


def result_precision(args) -> str:
    from transferkit.common import resolve_mixed_precision

    return resolve_mixed_precision(args.precision)


def run_worker(name: str, work: Path, args) -> dict:
    """Run one measurement in a fresh process, so that its peak RSS is its own."""
    cmd = [sys.executable, __file__, "--worker", name, "--work", str(work), "--data", args.data,
           "--threads", str(args.threads_n), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
           "--lr", str(args.lr), "--precision", args.precision, "--als-repeats", str(args.als_repeats)]
    if name.endswith("probe"):
        cmd[cmd.index("--epochs") + 1] = str(args.probe_epochs)
        cmd[cmd.index("--lr") + 1] = str(args.probe_lr)
    t0 = time.perf_counter()
    if args.smoke and name != "als":
        # Smoke runs stay in this process (a fresh interpreter costs seconds); only ALS takes the subprocess path.
        result = worker_main(parse([*cmd[2:], "--smoke"]), emit=False)
    else:
        proc = subprocess.run(cmd + (["--smoke"] if args.smoke else []), capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"worker {name} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - t0
    print(f"  {name}: {json.dumps({k: v for k, v in result.items() if k != 'times'})[:300]}", flush=True)
    return result


def matmul_flops(dtype_name: str, n: int, repeats: int) -> list[float]:

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a, b = torch.randn(n, n, dtype=dtype, device=DEVICE), torch.randn(n, n, dtype=dtype, device=DEVICE)
    sync = torch.cuda.synchronize if DEVICE == "cuda" else (lambda: None)
    a @ b
    sync()
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        sync()
        rates.append(2 * n**3 / (time.perf_counter() - t0))
    return rates


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(benchinfo.DEFAULT_DATA), help="the shared data folder (hymenoptera/, ml-100k/)")
    p.add_argument("--results-dir", help="where to write the markdown (default: benchmarks/results)")
    p.add_argument("--smoke", action="store_true", help="tiny subset, one repeat, one epoch: checks that the script runs")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores when the machine is idle, 1 when shared)")
    p.add_argument("--precision", default="auto", help="mixed precision for both sides (auto: bf16 where the CPU has it)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs per run")
    p.add_argument("--lr", type=float, default=3e-4, help="fine-tuning learning rate (both sides, head included)")
    p.add_argument("--probe-epochs", type=int, default=30, help="linear-probe epochs (TrainConfig's default probe_epochs)")
    p.add_argument("--probe-lr", type=float, default=1e-2)
    p.add_argument("--repeats", type=int, default=3, help="fine-tuning runs per side, alternated")
    p.add_argument("--als-repeats", type=int, default=7)
    p.add_argument("--skip-user", action="store_true", help="leave out the user-path section (training from files)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        args.epochs, args.probe_epochs, args.repeats = 2, 2, 1
    return args


def worker_main(args: argparse.Namespace, emit: bool = True) -> dict:

    torch.set_num_threads(args.threads)
    args.threads_n = args.threads
    work = Path(args.work)
    kind, _, strategy = args.worker.partition("_")
    strategy = {"finetune": "finetune", "probe": "linear_probe"}.get(strategy, strategy)
    if kind == "user":
        from throughput_user import run_user

        result = run_user(args.worker, work, json.loads((work / "user.json").read_text()), result_precision(args))
    elif kind == "tk":
        result = worker_tk(work, strategy, args)
    elif kind == "hf":
        result = worker_hf(work, strategy, args)
    else:
        result = worker_als(work, args)
    result["peak_rss_mib"] = peak_rss_mib()
    if emit:
        print(json.dumps(result))
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.worker:
        worker_main(args)
        return 0

    threads = benchinfo.set_threads(args.threads)
    args.threads_n = torch.get_num_threads()
    precision = result_precision(args)
    args.precision = precision
    data = Path(args.data)
    for need in (data / "hymenoptera" / "train", data / "ml-100k" / "u.data", data / "fsdd" / "recordings"):
        if not need.exists():
            sys.exit(f"{need} is missing: pass --data pointing at the folder that holds hymenoptera/ and ml-100k/")
    load_before, t_start = benchinfo.load_average(), time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="tk-throughput-"))
    try:
        counts = prepare(work, data, args.smoke)
        print(f"data {counts}; threads {threads}; precision {precision}", flush=True)
        n_mm, mm_reps = (512, 2) if args.smoke else (8192 if DEVICE == "cuda" else 2048, 5)
        peaks = {k: matmul_flops(k, n_mm, mm_reps) for k in ("fp32", "bf16")}
        ft = {"tk": [], "hf": []}
        for _ in range(args.repeats):  # alternate, so that load from other jobs hits both sides alike
            for side in ("tk", "hf"):
                ft[side].append(run_worker(f"{side}_finetune", work, args))
        for k in ("fp32", "bf16"):
            peaks[k] += matmul_flops(k, n_mm, mm_reps)
        probe = {side: run_worker(f"{side}_probe", work, args) for side in ("tk", "hf")}
        als = run_worker("als", work, args)
        user = {}
        if not args.skip_user:
            from throughput_user import prepare_user

            prep = prepare_user(work, data, args.smoke)
            (work / "user.json").write_text(json.dumps(prep))
            for kind in ("image", "audio"):
                user[kind] = {side: run_worker(f"user_{side}_{kind}", work, args) for side in ("tk", "hf", "plain")}
        total = time.perf_counter() - t_start
    finally:
        shutil.rmtree(work, ignore_errors=True)
    from throughput_report import write_report

    write_report(args, counts, threads, precision, peaks, ft, probe, als, total, load_before, n_mm, user)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
