"""Does a stream train as well as the folder it streams, and at what cost? The same ResNet-20 fine-tune on
ants vs bees (the "fine-tune" recipe of ``vision_transfer.py``: 32 px, lr 5e-4 / 5e-3, batch 32, random resized
crops and flips), trained from the JPEG files of ``hymenoptera/train`` as a map-style folder (``epochs=E``, every
photo decoded from its file every epoch: ``decode_cache=False``, the same decode path a stream takes) and as
``load_dataset("imagefolder", streaming=True)`` (``max_steps`` = the same number of optimizer steps, shuffled
through a buffer that holds the whole set), side by side per seed: validation accuracy and seconds of ``fit``.
The reference: logistic regression on 32 px pixels (C chosen on a 20 % dev split of the training photos).
Writes ``benchmarks/results/streaming_check.md``.

    python benchmarks/streaming_check.py [--seeds 0 1 2] [--epochs 10] [--threads 1]   # ~4 min on 1 core
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchinfo  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import vision_transfer as vt  # noqa: E402

from transferkit.common import TrainConfig  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    benchinfo.add_common_arguments(p, data="folder that holds hymenoptera/ and weights/",
                                   smoke="one seed, 1 epoch: checks the script runs")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=10)
    args = p.parse_args()
    from datasets import load_dataset

    data = Path(args.data)
    train_dir, val_dir = data / "hymenoptera" / "train", data / "hymenoptera" / "val"
    if not train_dir.is_dir():
        sys.exit(f"{data / 'hymenoptera'} is missing: pass --data pointing at the folder that holds hymenoptera/")
    threads = benchinfo.set_threads(args.threads)
    seeds, epochs = ([0], 1) if args.smoke else (args.seeds, args.epochs)
    encoders = vt.Encoders(data / "weights" / "resnet20-cifar10.th", None, None)
    recipe = {k: v for k, v in vt.RECIPES["fine-tune"].items() if k != "strategy"}
    n_train = sum(1 for f in train_dir.rglob("*") if f.is_file())
    steps = epochs * math.ceil(n_train / 32)
    load_before, t_start = benchinfo.load_average(), time.perf_counter()
    rows = []
    work = Path(tempfile.mkdtemp(prefix="tk-stream-check-"))
    # Untimed: the first fit of a process pays lazy imports and a cold file cache (it took 5x the others).
    warm = TrainConfig(batch_size=32, progress=False, save_checkpoints=False, plot=False, epochs=1)
    encoders.make("ResNet-20 (CIFAR-10)", "finetune", True).fit(str(train_dir), config=warm, decode_cache=False,
                                                                 output_dir=str(work / "warm-folder"))
    encoders.make("ResNet-20 (CIFAR-10)", "finetune", True).fit(
        load_dataset("imagefolder", data_dir=str(train_dir), streaming=True)["train"], config=warm, max_steps=2,
        output_dir=str(work / "warm-stream"))
    for seed in seeds:
        base = TrainConfig(batch_size=32, progress=False, seed=seed, weight_decay=0.05, save_checkpoints=False,
                           plot=False, epochs=epochs)
        for kind in ("folder", "stream"):
            torch.manual_seed(seed)
            clf = encoders.make("ResNet-20 (CIFAR-10)", "finetune", True)
            t0 = time.perf_counter()
            if kind == "folder":
                result = clf.fit(str(train_dir), config=base, augment=vt.AUGMENT, decode_cache=False,
                                 output_dir=str(work / f"{kind}-{seed}"), **recipe)
            else:
                stream = load_dataset("imagefolder", data_dir=str(train_dir), streaming=True)["train"]
                result = clf.fit(stream, config=base, augment=vt.AUGMENT, max_steps=steps, shuffle_buffer=n_train,
                                 output_dir=str(work / f"{kind}-{seed}"), **recipe)
            seconds = time.perf_counter() - t0
            rows.append({"seed": seed, "kind": kind, "steps": result["finetune"].steps, "seconds": seconds,
                         "accuracy": clf.evaluate(str(val_dir))["accuracy"]})
            print(f"| {seed} | {kind} | {rows[-1]['steps']} | {rows[-1]['accuracy']:.3f} | {seconds:.1f} |", flush=True)
    reference = pixel_reference(train_dir, val_dir)
    total = time.perf_counter() - t_start

    def mean(kind: str, key: str) -> float:
        return statistics.mean(r[key] for r in rows if r["kind"] == kind)

    lines = [
        "# Streaming check: the same fine-tune from a folder and from a stream of that folder",
        "",
        *(["**SMOKE RUN** (one seed, 1 epoch; not a result)", ""] if args.smoke else []),
        *benchinfo.machine_lines(load_before, benchinfo.load_average(), "`mixed_precision=\"auto\"`", threads),
        f"- Total wall time: {total:.0f} s",
        "",
        f"ResNet-20 (CIFAR-10) fine-tuned at 32 px on the {n_train} training photos, lr {recipe['lr']} / "
        f"{recipe['head_lr']}, batch 32, random resized crops (area 0.35-1) and flips, {steps} optimizer steps "
        f"({epochs} epochs of the folder; `max_steps={steps}` for the stream, `shuffle_buffer={n_train}`); final "
        "weights (no dev split), scored on the validation photos. Folder: `decode_cache=False` (each photo decoded "
        "from its file every epoch, as the stream decodes it every pass; the folder reader leaves out the one GIF of "
        "the folder, which `datasets`' imagefolder reads). Seconds: the whole `fit`, after an untimed warm-up fit "
        "of each kind.",
        "",
        "| seed | data | steps | val accuracy | seconds |",
        "|---|---|---|---|---|",
        *(f"| {r['seed']} | {r['kind']} | {r['steps']} | {r['accuracy']:.3f} | {r['seconds']:.1f} |" for r in rows),
        f"| mean | folder | | {mean('folder', 'accuracy'):.3f} | {mean('folder', 'seconds'):.1f} |",
        f"| mean | stream | | {mean('stream', 'accuracy'):.3f} | {mean('stream', 'seconds'):.1f} |",
        f"| reference | logistic regression on 32 px pixels | | {reference:.3f} | |",
        "",
        f"Stream against folder: mean accuracy difference {mean('stream', 'accuracy') - mean('folder', 'accuracy'):+.3f}; "
        f"the stream's fit takes {mean('stream', 'seconds') / mean('folder', 'seconds'):.2f}x the folder's time.",
    ]
    benchinfo.write_results(args.results_dir, "streaming_check", args.smoke, lines)
    print(f"RESULT streaming_check folder={mean('folder', 'accuracy'):.3f} stream={mean('stream', 'accuracy'):.3f} "
          f"time_ratio={mean('stream', 'seconds') / mean('folder', 'seconds'):.2f} reference={reference:.3f}")


def pixel_reference(train_dir: Path, val_dir: Path) -> float:
    arrays, targets, _ = vt.load_photos(train_dir, None, size=vt.RESNET_INPUT)
    val_arrays, val_targets, _ = vt.load_photos(val_dir, None, size=vt.RESNET_INPUT)
    fit_idx, dev_idx = vt.dev_split(targets, 0)

    def xy(a, t, idx):
        return np.stack([a[i].ravel() for i in idx]).astype(np.float32) / 255.0, np.array([t[i] for i in idx])

    return vt.fit_logistic(xy(arrays, targets, fit_idx), xy(arrays, targets, dev_idx),
                           xy(val_arrays, val_targets, range(len(val_arrays))), (1e-4, 1e-3, 1e-2, 1e-1, 1.0))


if __name__ == "__main__":
    main()
