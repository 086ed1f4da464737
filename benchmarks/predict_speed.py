"""Prediction speed: transferkit's ``predict`` on files against ``transformers.pipeline`` on the same export.

Images: a MobileNetV2 of transformers' own class (``MobileNetV2Config()`` defaults: the architecture and size of
``packaged:mobilenet_v2``, random weights, seed 0; the packaged torchvision weights export as transferkit files
that ``pipeline`` cannot load) after a short linear probe on hymenoptera (``--probe-per-class`` training photos per
class, 2 epochs), predicting the ``--images`` first val photos. Clips: a wav2vec2 (4 layers, 256 wide, random
weights, seed 0) after a short linear probe on fsdd (``--probe-per-class`` clips per digit from speakers other
than the predicted ones), predicting ``--clips`` recordings of the held-out speaker ``theo``. Each model is exported
with ``save`` and both sides run that export in this one process, fp32, the same torch threads: transferkit as
``Classifier.load(export).predict(paths)``, ``pipeline(task, model=export)`` called the default way,
``pipe(paths)``. Sides alternate over ``--repeats``; the median rate is reported, and how often the two sides'
top labels agree.

Usage: ``python benchmarks/predict_speed.py [--smoke] [--threads 1] [--repeats 3] [--images 153] [--clips 200]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import benchinfo


def image_export(data: Path, work: Path, per_class: int) -> tuple[Path, list[str], list[str]]:
    import torch
    from transformers import MobileNetV2Config, MobileNetV2ImageProcessor, MobileNetV2Model

    from transferkit.vision import ImageClassifier, ImageSet

    torch.manual_seed(0)
    MobileNetV2Model(MobileNetV2Config()).save_pretrained(work / "mobilenet_v2")
    MobileNetV2ImageProcessor().save_pretrained(work / "mobilenet_v2")
    train = ImageSet.from_folder(data / "hymenoptera" / "train")
    seen: dict[str, int] = {}
    for path, label in zip(train.items, train.targets):
        seen[label] = seen.get(label, 0) + 1
        if seen[label] <= per_class:
            (work / "train" / label).mkdir(parents=True, exist_ok=True)
            (work / "train" / label / Path(path).name).symlink_to(path)
    clf = ImageClassifier.from_pretrained(str(work / "mobilenet_v2"), labels=["ants", "bees"], strategy="linear_probe")
    clf.fit(str(work / "train"), epochs=2, batch_size=16, seed=0, mixed_precision="no", progress=False, plot=False,
            save_checkpoints=False, output_dir=str(work / "run-image"))
    folder = clf.save(work / "export-image")
    val = ImageSet.from_folder(data / "hymenoptera" / "val")
    return folder, [str(p) for p in val.items], [str(t) for t in val.targets]


def audio_export(data: Path, work: Path, per_class: int) -> tuple[Path, list[str], list[str]]:
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    from transferkit.audio import AudioClassifier

    torch.manual_seed(0)
    cfg = Wav2Vec2Config(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
                         feat_extract_norm="layer", do_stable_layer_norm=True, mask_time_prob=0.0)
    Wav2Vec2Model(cfg).save_pretrained(work / "wav2vec2")
    Wav2Vec2FeatureExtractor(sampling_rate=16_000, return_attention_mask=True).save_pretrained(work / "wav2vec2")
    files = sorted((data / "fsdd" / "recordings").glob("*.wav"))
    held = [f for f in files if f.stem.split("_")[1] == "theo"]
    seen: dict[str, int] = {}
    for f in files:
        digit = f.stem.split("_")[0]
        if f.stem.split("_")[1] != "theo" and seen.get(digit, 0) < per_class:
            seen[digit] = seen.get(digit, 0) + 1
            (work / "clips" / digit).mkdir(parents=True, exist_ok=True)
            (work / "clips" / digit / f.name).symlink_to(f)
    clf = AudioClassifier.from_pretrained(str(work / "wav2vec2"), labels=sorted(seen), strategy="linear_probe")
    clf.fit(str(work / "clips"), epochs=2, batch_size=16, seed=0, mixed_precision="no", progress=False, plot=False,
            save_checkpoints=False, output_dir=str(work / "run-audio"))
    folder = clf.save(work / "export-audio")
    return folder, [str(f) for f in held], [f.stem.split("_")[0] for f in held]


def model_alone(clf, examples: list, batch_size: int, memory_format: bool | None = None) -> float:
    """Items per second of the forward passes alone, on inputs prepared beforehand (the ceiling of any predict);
    ``memory_format``: channels-last weights (True), plain (False) or as ``predict`` picks (None)."""
    import torch

    from transferkit.common.memory_format import channels_last

    batches = [clf.prepare_inputs(examples[i:i + batch_size]) for i in range(0, len(examples), batch_size)]
    clf.model.eval()
    with torch.inference_mode(), channels_last(clf.model, memory_format):
        clf.model(**batches[0])  # warm-up (first-call allocations)
        t0 = time.perf_counter()
        for b in batches:
            clf.model(**b)
    return len(examples) / (time.perf_counter() - t0)


def convert_ms(model, repeats: int = 20) -> float:
    """Milliseconds to convert a model's weights to channels-last and back (what ``predict`` pays per call)."""
    import torch

    t0 = time.perf_counter()
    for _ in range(repeats):
        model.to(memory_format=torch.channels_last)
        model.to(memory_format=torch.contiguous_format)
    return (time.perf_counter() - t0) / repeats * 1000


def race(name: str, ours, theirs, paths: list[str], targets: list[str], repeats: int) -> dict:
    """Items per second of both sides (alternating, median over repeats), their agreement and accuracies."""
    rates: dict[str, list[float]] = {"transferkit": [], "pipeline": []}
    labels: dict[str, list[str]] = {}
    for r in range(repeats):
        for side in (("transferkit", "pipeline") if r % 2 == 0 else ("pipeline", "transferkit")):
            t0 = time.perf_counter()
            if side == "transferkit":
                labels[side] = [p["label"] for p in ours(paths)]
            else:
                labels[side] = [p[0]["label"] for p in theirs(paths)]
            rates[side].append(len(paths) / (time.perf_counter() - t0))
            print(f"{name} repeat {r} {side}: {rates[side][-1]:.2f}/s", flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    agree = sum(a == b for a, b in zip(labels["transferkit"], labels["pipeline"])) / len(paths)
    acc = {k: sum(a == t for a, t in zip(v, targets)) / len(paths) for k, v in labels.items()}
    return {"rates": rates, "median": med, "speedup": med["transferkit"] / med["pipeline"], "agree": agree, "acc": acc}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    benchinfo.add_common_arguments(parser, data="folder with hymenoptera/ and fsdd/",
                                   smoke="16 photos and 16 clips, a 2-per-class probe, 1 repeat")
    parser.add_argument("--images", type=int, default=153)
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--probe-per-class", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None, help="transferkit's batch (default: predict's own)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    threads = benchinfo.set_threads(args.threads or 1)
    if args.smoke:
        args.images, args.clips, args.probe_per_class, args.repeats = 16, 16, 2, 1
    from transformers import pipeline

    from transferkit.audio import AudioClassifier
    from transferkit.audio.modality import as_clips
    from transferkit.vision import ImageClassifier
    from transferkit.vision.classifier import CPU_PREDICT_BATCH

    data, work = Path(args.data), Path(tempfile.mkdtemp(prefix="predict-speed-"))
    load_before, t0 = benchinfo.load_average(), time.time()
    folder, paths, targets = image_export(data, work, args.probe_per_class)
    paths, targets = paths[:args.images], targets[:args.images]
    ours = ImageClassifier.load(folder)
    pipe = pipeline("image-classification", model=str(folder))
    kw = {} if args.batch_size is None else {"batch_size": args.batch_size}
    img = race("images", lambda p: ours.predict(p, **kw), pipe, paths, targets, args.repeats)
    img["alone"] = {bs: model_alone(ours, paths, bs) for bs in (1, args.batch_size or CPU_PREDICT_BATCH, 32)}
    # channels-last against the plain format, alternating, at the batch sizes a user might pick
    img["formats"] = {(bs, cl): model_alone(ours, paths, bs, cl) for bs in (1, 2, 8, 32) for cl in (False, True)}
    img["convert_ms"] = convert_ms(ours.model)
    folder, clips, digits = audio_export(data, work, args.probe_per_class)
    clips, digits = clips[:args.clips], digits[:args.clips]
    ours_a = AudioClassifier.load(folder)
    pipe_a = pipeline("audio-classification", model=str(folder))
    aud = race("clips", lambda p: ours_a.predict(p, **kw), pipe_a, clips, digits, args.repeats)
    waves = sorted(as_clips(clips, ours_a.sampling_rate), key=len)  # predict's shortest-first order
    aud["alone"] = {bs: model_alone(ours_a, waves, bs) for bs in (1, args.batch_size or 32)}

    lines = ["# Prediction speed: `predict` against `transformers.pipeline` on the same export", ""]
    if args.smoke:
        lines += ["**SMOKE RUN**: 16 photos, 16 clips, 1 repeat.", ""]
    lines += benchinfo.machine_lines(load_before, benchinfo.load_average(), "fp32", threads)
    lines += [f"- Total wall time: {time.time() - t0:.0f} s", "", " ".join(__doc__.split("\n\n")[1].split()), "",
              "| items | transferkit `predict` /s | `pipeline` default call /s | speedup | top labels agree | "
              "accuracy (transferkit / pipeline) | rates per repeat (transferkit; pipeline) |", "|---|---|---|---|---|---|---|"]
    for name, n, res in (("photos (MobileNetV2)", len(paths), img), ("clips (wav2vec2 4x256)", len(clips), aud)):
        per = "; ".join(" / ".join(f"{x:.1f}" for x in res["rates"][k]) for k in ("transferkit", "pipeline"))
        lines.append(f"| {n} {name} | {res['median']['transferkit']:.2f} | {res['median']['pipeline']:.2f} | "
                     f"{res['speedup']:.2f}x | {res['agree']:.3f} | {res['acc']['transferkit']:.3f} / "
                     f"{res['acc']['pipeline']:.3f} | {per} |")
    lines += ["", "The forward passes alone, on inputs decoded beforehand (items per second at a batch size): "
              + "; ".join(f"{name}: " + ", ".join(f"batch {bs} {r:.2f}" for bs, r in res["alone"].items())
                          for name, res in (("photos", img), ("clips", aud))) + ".",
              "", "Photos, the forward passes alone in the plain memory format against channels-last weights "
              "(`transferkit.common.memory_format.channels_last`, which `predict`, feature extraction and evaluation use "
              "for convolutional networks), photos per second:", "", "| batch | plain | channels-last | ratio |",
              "|---|---|---|---|"]
    lines += [f"| {bs} | {img['formats'][(bs, False)]:.2f} | {img['formats'][(bs, True)]:.2f} | "
              f"{img['formats'][(bs, True)] / img['formats'][(bs, False)]:.2f}x |" for bs in (1, 2, 8, 32)]
    saved = 1000 / img["formats"][(2, False)] - 1000 / img["formats"][(2, True)]
    lines += ["", f"Converting the weights to channels-last and back takes {img['convert_ms']:.1f} ms (mean of 20); "
              + (f"at batch 2 channels-last saves {saved:.2f} ms per photo, so it pays from about "
                 f"{img['convert_ms'] / saved:.1f} photos per call" if saved > 0 else
                 "at batch 2 channels-last saved nothing in this run")
              + " (`predict` converts from `CHANNELS_LAST_MIN_EXAMPLES` examples)."]
    lines += ["", "Accuracies are those of a random-weight encoder after a short probe: this file measures speed, "
              "and the agreement column shows both sides compute the same predictions."]
    print(f"RESULT predict_speed image_speedup={img['speedup']:.2f} audio_speedup={aud['speedup']:.2f} "
          f"image_agree={img['agree']:.3f} audio_agree={aud['agree']:.3f}", flush=True)
    benchinfo.write_results(args.results_dir, "predict_speed", args.smoke, lines)


if __name__ == "__main__":
    main()
