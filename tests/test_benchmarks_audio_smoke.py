"""benchmarks/audio_fsdd.py --smoke runs end to end (tiny FSDD subset, one epoch everywhere).

It writes into a temporary results folder, never over the committed results, and needs the real
recordings in ../shared/data/fsdd: without them the test skips and says so.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FSDD = ROOT.parent / "shared" / "data" / "fsdd" / "recordings"


def test_audio_fsdd_smoke(tmp_path):
    if not FSDD.is_dir():
        pytest.skip(f"real data not found: {FSDD} is missing (FSDD lives in ../shared/data, never in the repo)")
    pytest.importorskip("espeakng_loader", reason="the synthetic source task needs espeakng-loader")
    results = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "audio_fsdd.py"), "--smoke", "--data", str(FSDD.parents[1]),
         "--results-dir", str(results), "--threads", "1"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("RESULT audio_fsdd "), last
    values = dict(re.findall(r"(\w+)=(\S+)", last))
    for method in ("mfcc", "scratch", "synthetic", "synthetic_ssl"):
        for budget in ("few", "all"):
            assert 0.0 <= float(values[f"kws_{method}_{budget}"]) <= 1.0
            assert float(values[f"cer_{method}_{budget}"]) >= 0.0
            assert float(values[f"wer_{method}_{budget}"]) >= 0.0
    assert values["seeds"] == "1"
    report = (results / "audio_fsdd_smoke.md").read_text()
    assert "SMOKE RUN" in report and "**train** george, jackson, lucas, nicolas" in report
    assert "**test** theo, yweweler" in report
    assert "| synthetic + SSL | all (3/digit/speaker) |" in report
    assert not (results / "audio_fsdd.md").exists()  # a smoke run never writes the real result's name
