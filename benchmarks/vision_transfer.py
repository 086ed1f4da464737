"""Ants vs bees: how much a pretrained encoder helps on 244 real photos, per transfer strategy.

Encoders: the real CIFAR-10 ResNet-20 (``weights/resnet20-cifar10.th``, 91.8% on CIFAR-10) at 32x32,
the resolution it was trained at; and the small ViT the project pretrains itself on digits 0-4
(``transferkit.demos.vision``), at its own 8x8 input. Methods: from scratch (same architecture,
random init), linear probe, fine-tune, LP-FT, LLRD, WiSE-FT (halfway between the LP-FT run's probe
stage and its fine-tuned end) and a greedy soup of the fine-tune, LP-FT and LLRD runs. Reference:
logistic regression on raw 32x32 pixels.

Protocol, per seed: 20% of the training photos (stratified) are held out as a dev set, which picks the
best epoch, the soup's ingredients and the logistic regression's C; the remaining 80% train; accuracy
is on the 153 validation photos, which nothing is tuned on. Photos are decoded once and resized to
64x64; training crops and resizes them to the encoder's input.

    python benchmarks/vision_transfer.py [--data ../shared/data] [--smoke] [--results-dir DIR]

Writes ``benchmarks/results/vision_transfer.md`` and ends with one ``RESULT vision_transfer`` line.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import benchinfo  # noqa: E402
import torch  # noqa: E402

from transferkit.common import TrainConfig, greedy_soup, resolve_mixed_precision, wise_ft  # noqa: E402
from transferkit.common.report import markdown_table  # noqa: E402
from transferkit.vision import AugmentConfig, ImageClassifier, ImageSet, resnet20_cifar  # noqa: E402

LABELS = ["ants", "bees"]
STORE_SIZE = 64  # photos are kept at 64x64: room for random crops at 32x32
RESNET_INPUT = 32  # CIFAR-10's resolution: the BN statistics and filter scales were learned there
CIFAR_MEAN, CIFAR_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # the checkpoint's training normalisation
AUGMENT = AugmentConfig(crop_scale=(0.35, 1.0), hflip=True)
# Learning rates per method (encoder lr, head lr); epochs come from the command line.
RECIPES = {
    "from scratch": {"strategy": "finetune", "lr": 1e-3, "head_lr": 1e-3},
    "linear probe": {"strategy": "linear_probe", "head_lr": 1e-2},
    "fine-tune": {"strategy": "finetune", "lr": 5e-4, "head_lr": 5e-3},
    "LP-FT": {"strategy": "lp_ft", "lr": 5e-4, "head_lr": 1e-2},
    "LLRD": {"strategy": "llrd", "lr": 1e-3, "head_lr": 5e-3, "llrd_decay": 0.7},
}
SOUP_FROM = ("fine-tune", "LP-FT", "LLRD")
METHODS = [*RECIPES, "WiSE-FT (LP-FT, alpha 0.5)", "greedy soup"]


def load_photos(folder: Path, per_class: int | None) -> tuple[list[np.ndarray], list[str], dict]:
    """Decode every photo once through the library's folder loader, resized to STORE_SIZE squares."""
    from PIL import Image

    listed = ImageSet.from_folder(folder, validate=False)
    keep = range(len(listed))
    if per_class is not None:  # smoke: the first few of each class
        keep = [i for c in LABELS for i in [j for j, t in enumerate(listed.targets) if t == c][:per_class]]
    ds = ImageSet([listed.items[i] for i in keep], [listed.targets[i] for i in keep], skipped=listed.skipped,
                  origin=listed.origin).validate()
    arrays = [np.asarray(ds[i][0].resize((STORE_SIZE, STORE_SIZE), Image.BILINEAR)) for i in range(len(ds))]
    info = {"images": len(ds), "skipped": ds.skipped,
            "gif": [Path(p).name for p in ds.items if str(p).lower().endswith(".gif")]}
    return arrays, list(ds.targets), info


def dev_split(targets: list[str], seed: int, frac: float = 0.2) -> tuple[list[int], list[int]]:
    rng = np.random.default_rng(seed)
    fit, dev = [], []
    for c in LABELS:
        idx = rng.permutation([i for i, t in enumerate(targets) if t == c])
        n_dev = max(1, round(frac * len(idx)))
        dev += idx[:n_dev].tolist()
        fit += idx[n_dev:].tolist()
    return sorted(fit), sorted(dev)


def subset(arrays, targets, idx) -> ImageSet:
    return ImageSet.from_arrays([arrays[i] for i in idx], [targets[i] for i in idx])


def logistic_regression(train: ImageSet, dev: ImageSet, val: ImageSet, size: int = RESNET_INPUT) -> float:
    """Reference without deep learning: standardised raw pixels at size x size, C chosen on dev."""
    from PIL import Image
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def xy(ds: ImageSet):
        x = np.stack([np.asarray(Image.fromarray(a).resize((size, size), Image.BILINEAR)).ravel() for a in ds.items])
        return x.astype(np.float32) / 255.0, np.array(ds.targets)

    (xt, yt), (xd, yd), (xv, yv) = xy(train), xy(dev), xy(val)
    fits = {c: make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000)).fit(xt, yt)
            for c in (1e-4, 1e-3, 1e-2, 1e-1, 1.0)}
    best = max(fits, key=lambda c: fits[c].score(xd, yd))
    return float(fits[best].score(xv, yv))


class Encoders:
    """Builds fresh classifiers: each run must start from untouched weights."""

    def __init__(self, weights: Path, vit_pretrained: Path, vit_random: Path) -> None:
        from transformers import ViTImageProcessor

        self.weights, self.vit_pretrained, self.vit_random = weights, vit_pretrained, vit_random
        # The processor only carries geometry and normalisation for a plain nn.Module encoder.
        self.cifar_processor = ViTImageProcessor(size={"height": RESNET_INPUT, "width": RESNET_INPUT},
                                                 image_mean=CIFAR_MEAN, image_std=CIFAR_STD)

    def make(self, encoder: str, strategy: str, pretrained: bool) -> ImageClassifier:
        if encoder == "ResNet-20 (CIFAR-10)":
            kw = {"feature_dim": 64, "processor": self.cifar_processor}
            if pretrained:  # legacy torch file, read with weights_only=True by load_encoder
                kw["weights"] = self.weights
            return ImageClassifier.from_pretrained(resnet20_cifar(), LABELS, strategy, **kw)
        folder = self.vit_pretrained if pretrained else self.vit_random
        return ImageClassifier.from_pretrained(str(folder), LABELS, strategy)


def pretrain_vit(work: Path, epochs: int, smoke: bool) -> tuple[Path, Path, float, float]:
    """The vision demo's source task: a 4-layer, 64-wide ViT (8x8 input) trained on digits 0-4."""
    from transferkit.demos.digits import AUGMENT as DIGIT_AUGMENT
    from transferkit.demos.digits import SOURCE, digits_as_images, tiny_vit_folder

    t0 = time.perf_counter()
    X, y = digits_as_images()
    src = np.random.default_rng(0).permutation(np.flatnonzero(np.isin(y, SOURCE)))
    if smoke:
        src = src[:200]
    n_val = len(src) // 10
    data = lambda idx: ([X[i] for i in idx], [str(int(y[i])) for i in idx])  # noqa: E731
    random_dir = tiny_vit_folder(work / "vit-random", seed=0)
    source = ImageClassifier.from_pretrained(str(random_dir), [str(c) for c in SOURCE], "finetune")
    cfg = TrainConfig(batch_size=64, progress=False, seed=0, weight_decay=0.05, save_checkpoints=False)
    source.fit(data(src[n_val:]), eval=data(src[:n_val]), config=cfg, augment=DIGIT_AUGMENT,
               output_dir=str(work / "vit-pretrain"), epochs=epochs, lr=1e-3, head_lr=1e-3)
    acc = source.results["finetune"].best_metric
    return source.save(work / "vit-digits-0to4"), random_dir, acc, time.perf_counter() - t0


def evaluate_state(probe: ImageClassifier, state: dict, data: ImageSet) -> float:
    probe.model.load_state_dict(state)
    return probe.evaluate(data)["accuracy"]


def run_seed(encoders: Encoders, encoder: str, seed: int, data: dict, args, work: Path) -> dict[str, tuple[float, float]]:
    """Every method for one encoder and seed: {method: (val accuracy, seconds)}."""
    from safetensors.torch import load_file

    train, dev, val = data["train"], data["dev"], data["val"]
    base = TrainConfig(batch_size=32, progress=False, seed=seed, weight_decay=0.05, save_checkpoints=False,
                       epochs=args.epochs, probe_epochs=args.probe_epochs, feature_cache=str(work / "features"))
    out, runs = {}, {}
    for method, recipe in RECIPES.items():
        t0 = time.perf_counter()
        # The new head (and a from-scratch body) is initialised when the classifier is built, before fit() seeds
        # anything: seed here, or a run's result depends on what ran before it in this process.
        torch.manual_seed(seed)
        clf = encoders.make(encoder, recipe["strategy"], pretrained=method != "from scratch")
        run_dir = work / f"{encoder[:6]}-{seed}-{recipe['strategy']}-{method[:4]}"
        epochs = args.probe_epochs if recipe["strategy"] == "linear_probe" else args.epochs
        clf.fit(train, eval=dev, config=base, augment=AUGMENT, output_dir=str(run_dir), epochs=epochs,
                **{k: v for k, v in recipe.items() if k != "strategy"})
        out[method] = (clf.evaluate(val)["accuracy"], time.perf_counter() - t0)
        runs[method] = (clf, run_dir)
        print(f"  {encoder} seed {seed} {method}: {out[method][0]:.3f} ({out[method][1]:.0f}s)", flush=True)

    t0 = time.perf_counter()
    lpft, lpft_dir = runs["LP-FT"]
    probe_state = load_file(str(lpft_dir / "linear_probe" / "checkpoints" / "best.safetensors"))
    probe = copy.deepcopy(lpft)
    out["WiSE-FT (LP-FT, alpha 0.5)"] = (evaluate_state(probe, wise_ft(probe_state, lpft.model.state_dict(), 0.5), val),
                                         time.perf_counter() - t0)
    t0 = time.perf_counter()
    states = [runs[m][0].model.state_dict() for m in SOUP_FROM]
    dev_scores = [runs[m][0].evaluate(dev)["accuracy"] for m in SOUP_FROM]
    soup, chosen = greedy_soup(states, lambda s: evaluate_state(probe, s, dev), scores=dev_scores)
    out["greedy soup"] = (evaluate_state(probe, soup, val), time.perf_counter() - t0)
    out["soup ingredients"] = "+".join(SOUP_FROM[i] for i in sorted(chosen))
    return out


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def reading(acc: dict[tuple[str, str], list[float]], n_val: int) -> list[str]:
    """One computed sentence per encoder: its best method against from-scratch, with the seed spread beside it."""
    lines = ["## Reading", ""]
    pixels = statistics.mean(acc[("pixels", "logistic regression")])
    for encoder in ("ResNet-20 (CIFAR-10)", "ViT (digits 0-4)"):
        scores = {m: v for (e, m), v in acc.items() if e == encoder}
        best = max((m for m in scores if m != "from scratch"), key=lambda m: statistics.mean(scores[m]))
        delta = statistics.mean(scores[best]) - statistics.mean(scores["from scratch"])
        spread = max(statistics.pstdev(scores[best]), statistics.pstdev(scores["from scratch"]))
        verdict = ("one seed, no spread to compare with" if len(scores[best]) < 2 else
                   f"{'larger than' if abs(delta) > spread else 'within'} the seed spread ({spread:.3f})")
        lines.append(f"- {encoder}: best transfer method {best} ({statistics.mean(scores[best]):.3f}), "
                     f"{delta:+.3f} over from scratch, {verdict}; logistic regression on pixels {pixels:.3f}.")
    lines.append(f"- {n_val} validation photos: one photo is {1 / n_val:.4f} of accuracy, so differences under ~0.03 "
                 "between methods are a handful of photos; and the best of several methods is an upward-biased pick.")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(benchinfo.DEFAULT_DATA), help="the shared data folder (holds hymenoptera/ and weights/)")
    p.add_argument("--results-dir", help="where to write the markdown (default: benchmarks/results)")
    p.add_argument("--smoke", action="store_true", help="tiny subset, one seed, one epoch: checks that the script runs")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=15, help="epochs of every run that trains the encoder")
    p.add_argument("--probe-epochs", type=int, default=30, help="epochs of the linear probe (on cached features)")
    p.add_argument("--pretrain-epochs", type=int, default=30, help="epochs of the ViT's digits 0-4 source task (as the demo)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores when the machine is idle, 1 when shared)")
    args = p.parse_args(argv)
    threads = benchinfo.set_threads(args.threads)
    if args.smoke:
        args.seeds, args.epochs, args.probe_epochs, args.pretrain_epochs = 1, 1, 1, 1
    data_root = Path(args.data)
    hym, weights = data_root / "hymenoptera", data_root / "weights" / "resnet20-cifar10.th"
    for need in (hym / "train", hym / "val", weights):
        if not need.exists():
            sys.exit(f"{need} is missing: pass --data pointing at the folder that holds hymenoptera/ and weights/")

    load_before, t_start = benchinfo.load_average(), time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="tk-vision-bench-"))
    try:
        per_class = 12 if args.smoke else None
        train_x, train_y, train_info = load_photos(hym / "train", per_class)
        val_x, val_y, val_info = load_photos(hym / "val", per_class)
        val = ImageSet.from_arrays(val_x, val_y)
        print(f"train {train_info}, val {val_info}", flush=True)
        vit_dir, vit_random, vit_src_acc, vit_src_s = pretrain_vit(work, args.pretrain_epochs, args.smoke)
        print(f"ViT pretrained on digits 0-4: accuracy {vit_src_acc:.3f} ({vit_src_s:.0f}s)", flush=True)
        encoders = Encoders(weights, vit_dir, vit_random)

        acc: dict[tuple[str, str], list[float]] = {}
        secs: dict[tuple[str, str], list[float]] = {}
        soups: list[str] = []
        for seed in range(args.seeds):
            fit_idx, dev_idx = dev_split(train_y, seed)
            data = {"train": subset(train_x, train_y, fit_idx), "dev": subset(train_x, train_y, dev_idx), "val": val}
            t0 = time.perf_counter()
            lr_acc = logistic_regression(data["train"], data["dev"], val)
            acc.setdefault(("pixels", "logistic regression"), []).append(lr_acc)
            secs.setdefault(("pixels", "logistic regression"), []).append(time.perf_counter() - t0)
            for encoder in ("ResNet-20 (CIFAR-10)", "ViT (digits 0-4)"):
                res = run_seed(encoders, encoder, seed, data, args, work)
                soups.append(f"{encoder} seed {seed}: {res.pop('soup ingredients')}")
                for method, (a, s) in res.items():
                    acc.setdefault((encoder, method), []).append(a)
                    secs.setdefault((encoder, method), []).append(s)
        total = time.perf_counter() - t_start
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = [{"encoder": e, "method": m, "val accuracy (mean ± std)": mean_std(v),
             "per seed": " / ".join(f"{x:.3f}" for x in v), "seconds per run": f"{statistics.mean(secs[(e, m)]):.1f}"}
            for (e, m), v in acc.items()]
    precision = resolve_mixed_precision("auto")
    n_fit, n_dev = len(fit_idx), len(dev_idx)
    skipped_note = (f"The folder loader counted {train_info['images']} training photos, including the placeholder "
                    f"{', '.join(train_info['gif'])} (a 300x300 'image not found' GIF filed under ants): "
                    "`ImageSet.from_folder` accepts .gif and does not skip it, so it is in the training data here."
                    if train_info["gif"] else
                    f"`ImageSet.from_folder` skipped and counted {train_info['skipped'].get('not_image', 0)} non-image "
                    f"file(s) in train (SOURCE.md names one, the placeholder `train/ants/imageNotFound.gif`) and "
                    f"{train_info['skipped'].get('undecodable', 0)} undecodable one(s).")
    lines = [
        "# Image transfer on real photos: ants vs bees" + (" (SMOKE RUN: tiny subset, numbers mean nothing)" if args.smoke else ""),
        "",
        *benchinfo.machine_lines(load_before, benchinfo.load_average(), f"`mixed_precision=\"auto\"` resolved to `{precision}` for every run",
                                  threads),
        f"- Total wall time: {total:.0f} s",
        "",
        f"Data: `hymenoptera` train {train_info['images']} / val {val_info['images']} photos. {skipped_note} "
        f"Per seed, {n_dev} training photos (20%, stratified) form a dev set that selects the best epoch, the greedy "
        f"soup's ingredients and the logistic regression's C; {n_fit} train. Accuracy is on the {val_info['images']} "
        "validation photos, which nothing is tuned on. Photos are decoded once and resized to 64x64; training "
        f"augmentation: random resized crop (area {AUGMENT.crop_scale[0]}-1) and horizontal flips.",
        "",
        f"Encoders: **ResNet-20 (CIFAR-10)** — the real pretrained checkpoint (91.8% on CIFAR-10, option-A shortcuts, "
        f"`transferkit.vision.resnet20_cifar`), loaded with `load_encoder(module, feature_dim=64, weights=...)`, at "
        f"{RESNET_INPUT}x{RESNET_INPUT} input, the resolution it was trained at, with its ImageNet-style normalisation. "
        f"**ViT (digits 0-4)** — the vision demo's 4-layer, 64-wide ViT (patch 2, 8x8 input) pretrained on scikit-learn "
        f"digits 0-4 for {args.pretrain_epochs} epochs (source accuracy {vit_src_acc:.3f}, {vit_src_s:.0f} s); its input "
        "is 8x8, so the photos reach it as 8x8 thumbnails. From scratch = the same architecture, randomly initialised.",
        "",
        f"Runs: batch 32, AdamW, warmup + cosine, {args.epochs} epochs for every run that trains the encoder, "
        f"{args.probe_epochs} epochs for the linear probe (on cached features; LP-FT's probe stage too). Learning rates "
        "(encoder / head): " + "; ".join(f"{m} {r.get('lr', '-')} / {r['head_lr']}" for m, r in RECIPES.items())
        + ". LLRD on ResNet-20 sees 5 blocks: `Encoder.blocks()` finds only stage 3's three blocks as layers, so the "
        "stem and stages 1-2 form one block. WiSE-FT averages the LP-FT run's probe-stage weights (pretrained "
        "encoder + probed head) with its fine-tuned weights, alpha 0.5. Greedy soup: fine-tune, LP-FT and LLRD "
        "runs of the same seed, added best-first by dev accuracy while dev accuracy does not drop.",
        "",
        f"Seeds: {args.seeds} (0..{args.seeds - 1}: the dev split, initialisation and data order). Seconds per run include "
        "building the model, training, feature caching and evaluation; soups and WiSE-FT count only their own work.",
        "",
        markdown_table(rows, ["encoder", "method", "val accuracy (mean ± std)", "per seed", "seconds per run"]),
        "",
        "Greedy soup ingredients kept: " + "; ".join(soups) + ".",
        "",
        *reading(acc, val_info["images"]),
    ]
    path = benchinfo.results_path(args.results_dir, "vision_transfer", args.smoke)
    path.write_text("\n".join(lines) + "\n")
    short = {"ResNet-20 (CIFAR-10)": "resnet20", "ViT (digits 0-4)": "vit", "pixels": "pixels"}
    keys = " ".join(f"{short[e]}_{m.split(' (')[0].lower().replace(' ', '_').replace('-', '')}={statistics.mean(v):.3f}"
                    for (e, m), v in acc.items())
    print(f"wrote {path}")
    print(f"RESULT vision_transfer {keys} seeds={args.seeds} seconds={total:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
