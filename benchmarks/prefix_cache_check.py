"""What the frozen-prefix cache buys ``partial``: epoch seconds with and without it, side by side.

``packaged:mobilenet_v2`` with ``strategy="partial"`` (top 2 inverted-residual blocks and the last 1x1
convolution learn), no augmentation (``AugmentConfig(crop_scale=(1, 1), hflip=False)``), on the first
``--per-class`` hymenoptera training photos of each class, validated on the first ``--per-class`` val photos,
fp32, batch 16, ``--epochs`` epochs; once with ``prefix_cache=True`` (the default) and once with
``prefix_cache=False``, each in its own fresh process with a cold decode cache, alternated over ``--repeats``.
Epoch seconds are the trainer's own clock (training and the epoch's validation pass); the one pass that
computes the frozen blocks' outputs runs before the stage's first epoch, so it counts in the whole fit's
seconds, not in an epoch's.

Usage: ``python benchmarks/prefix_cache_check.py [--smoke] [--per-class 48] [--epochs 3] [--repeats 1]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchinfo


def child(on: bool, data: Path, per_class: int, epochs: int, work: Path) -> dict:
    import os

    os.environ["TRANSFERKIT_CACHE"] = str(work / f"decoded-{on}")
    from transferkit.common import get_strategy
    from transferkit.vision import AugmentConfig, ImageClassifier, ImageSet

    links = {}
    for split in ("train", "val"):
        images, seen = ImageSet.from_folder(data / "hymenoptera" / split), {}
        for path, label in zip(images.items, images.targets):
            seen[label] = seen.get(label, 0) + 1
            if seen[label] <= per_class:
                (work / split / label).mkdir(parents=True, exist_ok=True)
                (work / split / label / Path(path).name).symlink_to(path)
        links[split] = str(work / split)
    clf = ImageClassifier.from_pretrained("packaged:mobilenet_v2", labels=["ants", "bees"],
                                          strategy=get_strategy("partial", top_k_blocks=2, prefix_cache=on))
    t0 = time.perf_counter()
    out = clf.fit(links["train"], eval=links["val"], epochs=epochs, batch_size=16, lr=1e-3, head_lr=1e-2, seed=0,
                  mixed_precision="no", progress=False, save_checkpoints=False, plot=False,
                  augment=AugmentConfig(crop_scale=(1.0, 1.0), hflip=False), output_dir=str(work / f"run-{on}"))
    hist = out["partial"].history
    return {"fit": time.perf_counter() - t0, "epochs": [h["seconds"] for h in hist],
            "accuracy": [h.get("accuracy") for h in hist], "used": (work / f"run-{on}" / "prefix").exists()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    benchinfo.add_common_arguments(parser, data="folder with hymenoptera/", smoke="4 photos per class, 2 epochs")
    parser.add_argument("--per-class", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    threads = benchinfo.set_threads(args.threads or 1)
    if args.child:
        print(json.dumps(child(args.child == "on", Path(args.data), args.per_class, args.epochs, Path(args.work))))
        return
    if args.smoke:
        args.per_class, args.epochs, args.repeats = 4, 2, 1
    load_before, t0 = benchinfo.load_average(), time.time()
    runs: dict[str, list[dict]] = {"on": [], "off": []}
    for r in range(args.repeats):
        for side in (("off", "on") if r % 2 else ("on", "off")):
            work = tempfile.mkdtemp(prefix=f"prefix-{side}-")
            cmd = [sys.executable, __file__, "--child", side, "--data", args.data, "--per-class", str(args.per_class),
                   "--epochs", str(args.epochs), "--work", work, "--threads", str(args.threads or 1)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False,
                                 env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "TRANSFERKIT_CPU_BF16": "0"})
            if out.returncode != 0:
                raise RuntimeError(f"prefix cache {side} failed:\n{out.stderr[-3000:]}")
            runs[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(side, runs[side][-1], flush=True)

    def later(side: str) -> float:  # median over repeats of the mean epoch seconds from epoch 2 on
        return statistics.median(statistics.mean(r["epochs"][1:]) for r in runs[side])

    speedup = later("off") / later("on")
    lines = ["# Frozen-prefix cache: partial fine-tuning with and without it", ""]
    if args.smoke:
        lines += ["**SMOKE RUN**: 4 photos per class, 2 epochs.", ""]
    lines += benchinfo.machine_lines(load_before, benchinfo.load_average(), "fp32 (`mixed_precision=\"no\"`)", threads)
    lines += [f"- Total wall time: {time.time() - t0:.0f} s", "", __doc__.split("\n\n")[1].replace("\n", " "), "",
              "| side | epoch seconds (per epoch, per repeat) | mean epoch s from epoch 2 | whole fit s | val accuracy per epoch | cache used |",
              "|---|---|---|---|---|---|"]
    for side, name in (("off", "partial, prefix_cache=False"), ("on", "partial, prefix_cache=True (default)")):
        for r in runs[side]:
            lines.append(f"| {name} | {' / '.join(f'{s:.2f}' for s in r['epochs'])} | {statistics.mean(r['epochs'][1:]):.2f} "
                         f"| {r['fit']:.1f} | {' / '.join(f'{a:.3f}' for a in r['accuracy'])} | {r['used']} |")
    fit_ratio = statistics.median(r["fit"] for r in runs["off"]) / statistics.median(r["fit"] for r in runs["on"])
    lines += ["", f"From the second epoch the cached stage runs **{speedup:.1f}x** as fast as the uncached one; "
              f"the whole fit (caching pass included) {fit_ratio:.2f}x."]
    print(f"RESULT prefix_cache speedup_from_epoch2={speedup:.2f} fit_ratio={fit_ratio:.2f}", flush=True)
    benchinfo.write_results(args.results_dir, "prefix_cache_check", args.smoke, lines)


if __name__ == "__main__":
    main()
