"""Speech recognition by transfer from real Whisper weights: zero-shot vs fine-tuned, on real speech.

Question: on speakers no training step heard, how far does a short fine-tune of Whisper (tiny.en,
base) move WER from the zero-shot model, per strategy, and how does that compare with the
project's CTC recognizer (a small wav2vec2 trained on the same utterances)?

Domain 1, real speech (FSDD, 8 kHz recordings resampled to 16 kHz): utterances made of 3-6 digit
recordings of one speaker joined with 0.1-0.25 s of silence; the transcript is the digit words.
Speakers ``nicolas`` and ``theo`` are held out for the test; the other four give the training and
dev utterances. Domain 2, eSpeak NG sentences: English ones measure forgetting (WER before and
after the FSDD fine-tune of tiny.en); German ones are a second language through the multilingual
base (zero-shot vs fine-tuned on other German sentences spoken by other voices).

Every model is scored with the same decoding (greedy, same caps) and the same normaliser
(``spoken_digits``: case and punctuation removed, digits spelled as words) as its zero-shot row,
which is always scored first. The encoder window is cut to ``--window`` seconds (the longest
utterance fits; see ``WhisperConfig.window_seconds``) for every row, zero-shot included.

Usage:
    python benchmarks/asr_transfer.py                 # the full run (results/asr_transfer.md)
    python benchmarks/asr_transfer.py --smoke         # a few utterances, checks the script runs
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchinfo  # noqa: E402

from transferkit.audio import AudioDataset, SpeechRecognizer, WhisperRecognizer  # noqa: E402
from transferkit.audio.data import load_audio  # noqa: E402

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEST_SPEAKERS = ("nicolas", "theo")
SR = 16_000
EN_SENTENCES = [
    "the weather is cold today", "please open the window", "my brother lives in a small town",
    "we will meet again next week", "the train leaves at noon", "she reads a book every evening",
    "turn left at the big red house", "he drinks coffee with milk", "the children play in the garden",
    "can you help me carry this box", "the shop closes early on sunday", "our dog sleeps under the table"]
DE_SENTENCES = [
    "das wetter ist heute kalt", "bitte öffne das fenster", "mein bruder wohnt in einer kleinen stadt",
    "wir sehen uns nächste woche", "der zug fährt um zwölf uhr ab", "sie liest jeden abend ein buch",
    "der hund schläft unter dem tisch", "er trinkt kaffee mit milch", "die kinder spielen im garten",
    "kannst du mir bitte helfen", "das geschäft schließt am sonntag früh", "ich habe heute keine zeit",
    "wo ist der bahnhof", "das essen ist sehr gut", "morgen fahren wir nach berlin",
    "meine mutter kocht gerne suppe", "der himmel ist blau", "wir brauchen mehr wasser"]


def fsdd_utterances(root: Path, speakers: list[str], n: int, seed: int) -> AudioDataset:
    """``n`` utterances of 3-6 digit recordings of one speaker each, joined with short silences."""
    rng = np.random.default_rng(seed)
    rec = root / "fsdd" / "recordings"
    cache: dict[str, np.ndarray] = {}
    waves, texts = [], []
    for _ in range(n):
        speaker = str(rng.choice(speakers))
        digits = rng.integers(0, 10, size=int(rng.integers(3, 7)))
        parts = []
        for d in digits:
            path = rec / f"{d}_{speaker}_{int(rng.integers(0, 50))}.wav"
            if str(path) not in cache:
                cache[str(path)] = load_audio(path, SR)
            parts += [cache[str(path)], np.zeros(int(SR * rng.uniform(0.1, 0.25)), np.float32)]
        waves.append(np.concatenate(parts[:-1]).astype(np.float32))
        texts.append(" ".join(DIGITS[d] for d in digits))
    return AudioDataset(waves, texts, SR)


def espeak_sentences(sentences: list[str], voices: list[str], n: int, seed: int) -> AudioDataset:
    from transferkit.demos.espeak import Voice, synthesize

    rng = np.random.default_rng(seed)
    texts = [sentences[i % len(sentences)] for i in range(n)]
    vs = [Voice(str(rng.choice(voices)), int(rng.integers(140, 190)), int(rng.integers(30, 71))) for _ in range(n)]
    return AudioDataset(synthesize(texts, vs, SR, noise_snr_db=30.0, seed=seed), texts, SR)


def scored(asr, data: AudioDataset) -> dict:
    """Metrics plus the real-time factor of inference (seconds of decoding per second of audio)."""
    t0 = time.perf_counter()
    res = asr.evaluate(data)
    seconds = time.perf_counter() - t0
    audio = sum(len(w) for w in data.waveforms) / SR
    return {**{k: round(float(v), 4) for k, v in res.items()}, "rtf": round(seconds / audio, 3)}


def run_whisper(spec: str, strategy: str | None, train, dev, tests: dict, out: Path, args, **settings) -> dict:
    """Zero-shot (``strategy=None``) or fine-tuned scores of one packaged Whisper on every test set."""
    asr = WhisperRecognizer.from_pretrained(spec, strategy=strategy or "finetune", window_seconds=args.window,
                                            normalizer="spoken_digits", max_new_tokens=48, **settings)
    row = {"model": spec.removeprefix("packaged:"), "strategy": strategy or "zero-shot", "train_seconds": 0.0}
    if strategy is not None:
        lr = {"finetune": args.lr, "llrd": args.lr * 2, "partial": args.lr * 2, "lora": args.lr}[strategy]
        t0 = time.perf_counter()
        asr.fit(train, eval=dev, output_dir=str(out / f"{row['model']}_{strategy}_{settings.get('language', 'en')}"),
                epochs=args.epochs, batch_size=8, lr=lr, head_lr=1e-3, warmup_ratio=0.1, seed=args.seed,
                progress=False, plot=False, **({"top_k_blocks": 2} if strategy == "partial" else {}))
        row["train_seconds"] = round(time.perf_counter() - t0, 1)
    for name, data in tests.items():
        row[name] = scored(asr, data)
    print(json.dumps(row), flush=True)
    return row


def run_ctc(train, dev, test, out: Path, args) -> dict:
    """The project's CTC recognizer: the demo's small wav2vec2 (random start) trained on the same utterances."""
    from transferkit.demos.audio import random_wav2vec2

    t0 = time.perf_counter()
    init = random_wav2vec2(out / "ctc_init", args.seed)
    asr = SpeechRecognizer.from_pretrained(init, transcripts=train.targets, freeze_feature_encoder=False, mask_time_prob=0.0)
    asr.fit(train, eval=dev, output_dir=str(out / "ctc"), epochs=args.ctc_epochs, batch_size=16, lr=1e-3, head_lr=1e-2,
            seed=args.seed, progress=False, plot=False)
    row = {"model": "wav2vec2 CTC (small, random start)", "strategy": "finetune", "train_seconds": round(time.perf_counter() - t0, 1)}
    t0 = time.perf_counter()
    res = asr.evaluate(test)
    audio = sum(len(w) for w in test.waveforms) / SR
    row["fsdd"] = {k: round(float(v), 4) for k, v in res.items()} | {"rtf": round((time.perf_counter() - t0) / audio, 3)}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    benchinfo.add_common_arguments(p, data="folder holding fsdd/recordings", smoke="a few utterances and steps")
    p.add_argument("--train", type=int, default=96, help="FSDD training utterances (4 speakers)")
    p.add_argument("--dev", type=int, default=16, help="FSDD dev utterances (training speakers), select the epoch")
    p.add_argument("--test", type=int, default=48, help="FSDD test utterances (held-out speakers)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--ctc-epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--window", type=int, default=8, help="encoder window in seconds (the longest utterance fits)")
    p.add_argument("--strategies", default="finetune,partial,lora,llrd")
    p.add_argument("--base-strategies", default="partial")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="asr-transfer-runs")
    p.add_argument("--parts", default="tiny,base,de,ctc", help="which groups of rows to run (tiny: tiny.en on FSDD; "
                   "base: base on FSDD; de: base on German sentences; ctc: the CTC row); data are the same in every part")
    p.add_argument("--report-from", nargs="+", help="write the report from the JSON lines a run printed (a log), without training")
    args = p.parse_args()
    if args.report_from:
        return report_from_log(args)
    if args.smoke:
        args.train, args.dev, args.test, args.epochs, args.ctc_epochs = 8, 4, 4, 1, 1
        args.strategies, args.base_strategies = "partial", "partial"
    threads = benchinfo.set_threads(args.threads)
    load_before = benchinfo.load_average()
    root, out = Path(args.data), Path(args.out)
    if not (root / "fsdd" / "recordings").is_dir():
        sys.exit(f"{root}/fsdd/recordings not found: pass --data with the folder that holds FSDD")
    from transferkit.demos.speech_corpus import split_voices

    train_speakers = sorted({f.name.split("_")[1] for f in (root / "fsdd" / "recordings").glob("*.wav")} - set(TEST_SPEAKERS))
    train = fsdd_utterances(root, train_speakers, args.train, args.seed)
    dev = fsdd_utterances(root, train_speakers, args.dev, args.seed + 1)
    test = fsdd_utterances(root, list(TEST_SPEAKERS), args.test, args.seed + 2)
    voices = split_voices(args.seed)
    n_sent = 4 if args.smoke else 24
    en_test = espeak_sentences(EN_SENTENCES, voices.target_test, n_sent, args.seed + 3)
    de_voices = ["de", "de+m3", "de+f2", "de+m1", "de+f3", "de+m5", "de+f4", "de+m7"]
    de_train = espeak_sentences(DE_SENTENCES[:12], de_voices[:5], 2 * n_sent, args.seed + 4)
    de_test = espeak_sentences(DE_SENTENCES[12:], de_voices[5:], n_sent, args.seed + 5)
    facts = {"train": len(train), "dev": len(dev), "test": len(test), "train_speakers": train_speakers,
             "test_speakers": list(TEST_SPEAKERS), "longest_s": round(max(len(w) for w in train.waveforms + test.waveforms) / SR, 2),
             "espeak_en_test": len(en_test), "espeak_de_train": len(de_train), "espeak_de_test": len(de_test)}
    print(json.dumps(facts), flush=True)

    rows, parts = [], args.parts.split(",")
    tests = {"fsdd": test, "espeak_en": en_test}
    for strategy in [None, *args.strategies.split(",")] if "tiny" in parts else []:
        rows.append(run_whisper("packaged:whisper_tiny_en", strategy, train, dev, tests, out, args))
    for strategy in [None, *args.base_strategies.split(",")] if "base" in parts else []:
        rows.append(run_whisper("packaged:whisper_base", strategy, train, dev, {"fsdd": test}, out, args, language="en"))
    for strategy in [None, *args.base_strategies.split(",")] if "de" in parts else []:
        rows.append(run_whisper("packaged:whisper_base", strategy, de_train, None, {"espeak_de": de_test}, out, args,
                                language="de"))
    if "ctc" in parts:
        rows.append(run_ctc(train, dev, test, out, args))
    (out / "asr_transfer.json").write_text(json.dumps({"facts": facts, "rows": rows}, indent=2) + "\n")
    import subprocess

    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=benchinfo.ROOT).stdout.strip()
    machine = benchinfo.machine_lines(load_before, benchinfo.load_average(), "fp32", threads) + [f"- git rev-parse HEAD: `{head}`"]
    lines = report(rows, facts, args, machine)
    benchinfo.write_results(args.results_dir, "asr_transfer", args.smoke, lines)


def report_from_log(args) -> None:
    """The report from the JSON lines runs printed (each log: its facts first, then one line per row); runs
    with ``--parts`` on the same data (same sizes and seed: the facts must agree) merge into one report."""
    facts, rows = None, []
    for log in args.report_from:
        lines = [json.loads(x) for x in Path(log).read_text().splitlines() if x.startswith("{")]
        if facts is not None and lines[0] != facts:
            raise ValueError(f"{log} ran on other data than {args.report_from[0]}: {lines[0]} != {facts}")
        facts, rows = lines[0], rows + lines[1:]
    machine = [f"- Rows merged from the logs of {len(args.report_from)} run(s) on the same data "
               f"(`--report-from {' '.join(args.report_from)}`); machine, load and commands are stated below."]
    benchinfo.write_results(args.results_dir, "asr_transfer", args.smoke, report(rows, facts, args, machine))


def report(rows: list[dict], facts: dict, args, machine: list[str]) -> list[str]:
    def cell(row, key):
        m = row.get(key)
        return (f"{m['wer']:.3f} | {m['orthographic_wer']:.3f} | {m['cer']:.3f} | {m['rtf']:.2f}" if m and "orthographic_wer" in m
                else f"{m['wer']:.3f} | – | {m['cer']:.3f} | {m['rtf']:.2f}" if m else "– | – | – | –")

    lines = ["# Speech recognition by transfer from Whisper (FSDD held-out speakers, eSpeak sentences)", "",
             *machine, "",
             f"FSDD: {facts['train']} training and {facts['dev']} dev utterances from {', '.join(facts['train_speakers'])}; "
             f"{facts['test']} test utterances from the held-out speakers {', '.join(facts['test_speakers'])} "
             f"(3-6 digits each, longest {facts['longest_s']} s). Encoder window {args.window} s for every Whisper row. "
             f"{args.epochs} epochs, batch 8, best epoch by normalised WER on the dev utterances; seed {args.seed}.",
             "WER / CER after the `spoken_digits` normaliser; orthographic WER on the text as written; RTF = seconds of "
             "evaluation (feature extraction + greedy generation) per second of audio.", "",
             "## FSDD, held-out speakers", "",
             "| model | strategy | train s | WER | orth. WER | CER | RTF | eSpeak EN WER (forgetting) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "fsdd" in r:
            en = f"{r['espeak_en']['wer']:.3f}" if "espeak_en" in r else "–"
            lines.append(f"| {r['model']} | {r['strategy']} | {r['train_seconds']:.0f} | {cell(r, 'fsdd')} | {en} |")
    lines += ["", f"## German eSpeak sentences through the multilingual base ({facts['espeak_de_train']} training clips of "
              f"12 sentences by 5 voices; {facts['espeak_de_test']} test clips of 6 other sentences by 3 other voices)", "",
              "| model | strategy | train s | WER | orth. WER | CER | RTF |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "espeak_de" in r:
            lines.append(f"| {r['model']} | {r['strategy']} | {r['train_seconds']:.0f} | {cell(r, 'espeak_de')} |")
    return lines


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
