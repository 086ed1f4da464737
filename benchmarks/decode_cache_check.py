"""Does the image decode cache change what a fine-tune learns, and what does it save? The same ResNet-20
fine-tune on ants vs bees (the recipe of the "fine-tune" row of ``vision_transfer.py``: 32 px, 15 epochs,
lr 5e-4 / 5e-3, batch 32, the same dev split and augmentation), trained from the JPEG files as a user trains,
with ``decode_cache=True`` (each photo decoded once and stored at up to twice the input; crops cut from the
stored arrays) and ``False`` (every photo decoded and cropped from the full-resolution file every epoch), side
by side per seed: val accuracy and seconds. The cache is cold in every run (a fresh folder).

    python benchmarks/decode_cache_check.py [--seeds 0 1 2] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import os
import shutil
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
    p.add_argument("--data", default=str(benchinfo.DEFAULT_DATA), help="folder that holds hymenoptera/ and weights/")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args()
    data = Path(args.data)
    files = ImageSet.from_folder(data / "hymenoptera" / "train")
    tx, ty = files.items, files.targets
    val = ImageSet.from_folder(data / "hymenoptera" / "val")
    work = Path(tempfile.mkdtemp(prefix="tk-decode-check-"))
    encoders = vt.Encoders(data / "weights" / "resnet20-cifar10.th", None, None)
    recipe = {k: v for k, v in vt.RECIPES["fine-tune"].items() if k != "strategy"}
    print("| seed | decode_cache | val accuracy | seconds |\n|---|---|---|---|")
    try:
        run(args.seeds, tx, ty, val, encoders, recipe, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(seeds, tx, ty, val, encoders, recipe, work: Path) -> None:
    for seed in seeds:
        fit_idx, dev_idx = vt.dev_split(ty, seed)
        train = ImageSet([tx[i] for i in fit_idx], [ty[i] for i in fit_idx])
        dev = ImageSet([tx[i] for i in dev_idx], [ty[i] for i in dev_idx])
        base = TrainConfig(batch_size=32, progress=False, seed=seed, weight_decay=0.05, save_checkpoints=False,
                           plot=False, epochs=15)
        for cached in (True, False):
            torch.manual_seed(seed)
            clf = encoders.make("ResNet-20 (CIFAR-10)", "finetune", True)
            os.environ["TRANSFERKIT_CACHE"] = str(work / f"cache-{seed}-{cached}")  # cold
            t0 = time.perf_counter()
            clf.fit(train, eval=dev, config=base, augment=vt.AUGMENT, decode_cache=cached,
                    output_dir=str(work / f"run-{seed}-{cached}"), **recipe)
            acc = clf.evaluate(val)["accuracy"]
            print(f"| {seed} | {cached} | {acc:.3f} | {time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
