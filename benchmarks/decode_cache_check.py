"""Does the image decode cache change what a fine-tune learns, and what does it save? The same ResNet-20
fine-tune on ants vs bees (the recipe of the "fine-tune" row of ``vision_transfer.py``: 32 px, 15 epochs,
lr 5e-4 / 5e-3, batch 32, the same dev split and augmentation), trained from the JPEG files as a user trains,
with ``decode_cache=True`` (each photo decoded once, kept with its aspect ratio at a shorter side of 256 px;
crops cut from the stored arrays) and ``False`` (every photo decoded and cropped from the full-resolution file
every epoch), side by side per seed: val accuracy and seconds. The cache is cold in every run (a fresh folder).
Writes ``benchmarks/results/decode_cache_check.md``.

    python benchmarks/decode_cache_check.py [--seeds 0 1 2 3 4 5 6] [--data ../shared/data]   # ~3 min
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchinfo  # noqa: E402
import torch  # noqa: E402
import vision_transfer as vt  # noqa: E402

from transferkit.common import TrainConfig  # noqa: E402
from transferkit.vision import ImageSet  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    benchinfo.add_common_arguments(p, data="folder that holds hymenoptera/ and weights/",
                                   smoke="one seed, 2 epochs: checks the script runs")
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(7)))
    args = p.parse_args()
    data = Path(args.data)
    if not (data / "hymenoptera" / "train").is_dir():
        sys.exit(f"{data / 'hymenoptera'} is missing: pass --data pointing at the folder that holds hymenoptera/")
    threads = benchinfo.set_threads(args.threads)
    seeds, epochs = ([0], 2) if args.smoke else (args.seeds, 15)
    files = ImageSet.from_folder(data / "hymenoptera" / "train")
    val = ImageSet.from_folder(data / "hymenoptera" / "val")
    encoders = vt.Encoders(data / "weights" / "resnet20-cifar10.th", None, None)
    recipe = {k: v for k, v in vt.RECIPES["fine-tune"].items() if k != "strategy"}
    load_before, t_start = benchinfo.load_average(), time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="tk-decode-check-"))
    try:
        rows = run(seeds, epochs, files, val, encoders, recipe, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - t_start

    def mean(cached: bool, key: str) -> float:
        return statistics.mean(r[key] for r in rows if r["cached"] == cached)

    def spread(cached: bool) -> str:
        vals = [r["accuracy"] for r in rows if r["cached"] == cached]
        return f" ± {statistics.stdev(vals):.3f}" if len(vals) > 1 else ""

    wins = sum(a["accuracy"] > b["accuracy"] for a, b in zip(rows[::2], rows[1::2]))
    losses = sum(a["accuracy"] < b["accuracy"] for a, b in zip(rows[::2], rows[1::2]))
    lines = [
        "# Image decode cache: the same fine-tune from the JPEG files, cache on and off",
        "",
        *(["**SMOKE RUN** (one seed, 2 epochs; not a result)", ""] if args.smoke else []),
        *benchinfo.machine_lines(load_before, benchinfo.load_average(), "`mixed_precision=\"auto\"`", threads),
        f"- Total wall time: {total:.0f} s",
        "",
        f"ResNet-20 (CIFAR-10) fine-tuned at 32 px, {epochs} epochs, lr {recipe['lr']} / {recipe['head_lr']}, batch 32, "
        "random resized crops (area 0.35-1) and flips, on the 195 training photos of each seed's split (49 dev photos "
        "pick the best epoch), scored on the 153 validation photos. `decode_cache=True`: each photo decoded once and "
        "kept with its aspect ratio at a shorter side of 256 px, crops cut from those arrays; `False`: decoded and "
        "cropped from the full-resolution file every epoch. Seconds: the whole `fit` with a cold cache (decoding "
        "included).",
        "",
        "| seed | decode_cache | val accuracy | seconds |",
        "|---|---|---|---|",
        *(f"| {r['seed']} | {r['cached']} | {r['accuracy']:.3f} | {r['seconds']:.1f} |" for r in rows),
        f"| mean | True | {mean(True, 'accuracy'):.3f}{spread(True)} | {mean(True, 'seconds'):.1f} |",
        f"| mean | False | {mean(False, 'accuracy'):.3f}{spread(False)} | {mean(False, 'seconds'):.1f} |",
        "",
        f"Cache on against off, seed by seed: higher in {wins}, lower in {losses}, equal in {len(seeds) - wins - losses}; "
        f"mean difference {mean(True, 'accuracy') - mean(False, 'accuracy'):+.3f}; the fit takes "
        f"{mean(False, 'seconds') / mean(True, 'seconds'):.2f}x less time with the cache.",
    ]
    benchinfo.write_results(args.results_dir, "decode_cache_check", args.smoke, lines)
    print(f"RESULT decode_cache_check cached={mean(True, 'accuracy'):.3f} per_file={mean(False, 'accuracy'):.3f} "
          f"speedup={mean(False, 'seconds') / mean(True, 'seconds'):.2f}")


def run(seeds, epochs, files, val, encoders, recipe, work: Path) -> list[dict]:
    rows = []
    for seed in seeds:
        fit_idx, dev_idx = vt.dev_split(files.targets, seed)
        train = ImageSet([files.items[i] for i in fit_idx], [files.targets[i] for i in fit_idx])
        dev = ImageSet([files.items[i] for i in dev_idx], [files.targets[i] for i in dev_idx])
        base = TrainConfig(batch_size=32, progress=False, seed=seed, weight_decay=0.05, save_checkpoints=False,
                           plot=False, epochs=epochs)
        for cached in (True, False):
            torch.manual_seed(seed)
            clf = encoders.make("ResNet-20 (CIFAR-10)", "finetune", True)
            os.environ["TRANSFERKIT_CACHE"] = str(work / f"cache-{seed}-{cached}")  # cold
            t0 = time.perf_counter()
            clf.fit(train, eval=dev, config=base, augment=vt.AUGMENT, decode_cache=cached,
                    output_dir=str(work / f"run-{seed}-{cached}"), **recipe)
            seconds = time.perf_counter() - t0
            rows.append({"seed": seed, "cached": cached, "accuracy": clf.evaluate(val)["accuracy"], "seconds": seconds})
            print(f"| {seed} | {cached} | {rows[-1]['accuracy']:.3f} | {seconds:.0f} |", flush=True)
    return rows


if __name__ == "__main__":
    main()
