"""Does the image decode cache change what a fine-tune learns? The same ResNet-20 fine-tune on ants vs bees
(the fixed "fine-tune" row of ``vision_transfer.py``: 32 px, 15 epochs, lr 5e-4 / 5e-3, batch 32, the same dev
split and augmentation) with ``decode_cache=True`` and ``False``, side by side per seed: val accuracy and seconds.

    python benchmarks/decode_cache_check.py [--seeds 0 2] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import sys
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
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 2])
    args = p.parse_args()
    data = Path(args.data)
    tx, ty, _ = vt.load_photos(data / "hymenoptera" / "train", None)
    vx, vy, _ = vt.load_photos(data / "hymenoptera" / "val", None)
    encoders = vt.Encoders(data / "weights" / "resnet20-cifar10.th", None, None)
    recipe = {k: v for k, v in vt.RECIPES["fine-tune"].items() if k != "strategy"}
    print("| seed | decode_cache | val accuracy | seconds |\n|---|---|---|---|")
    for seed in args.seeds:
        fit_idx, dev_idx = vt.dev_split(ty, seed)
        train, dev = vt.subset(tx, ty, fit_idx), vt.subset(tx, ty, dev_idx)
        base = TrainConfig(batch_size=32, progress=False, seed=seed, weight_decay=0.05, save_checkpoints=False,
                           plot=False, epochs=15)
        for cached in (True, False):
            torch.manual_seed(seed)
            clf = encoders.make("ResNet-20 (CIFAR-10)", "finetune", True)
            t0 = time.perf_counter()
            clf.fit(train, eval=dev, config=base, augment=vt.AUGMENT, decode_cache=cached,
                    output_dir=f"/tmp/tk-decode-check-{seed}-{cached}", **recipe)
            acc = clf.evaluate(ImageSet.from_arrays(vx, vy))["accuracy"]
            print(f"| {seed} | {cached} | {acc:.3f} | {time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
