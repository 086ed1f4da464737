"""--smoke runs of the speed benchmarks (time to accuracy, the frozen-prefix cache, prediction), so they cannot rot unnoticed.

They need the real data in ../shared/data and skip without it; each writes into a temporary results folder.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def smoke(script: str, tmp_path: Path, needs: tuple[str, ...], *extra: str) -> tuple[dict, Path]:
    missing = [n for n in needs if not (SHARED_DATA / n).exists()]
    if missing:
        pytest.skip(f"real data {missing} not found under {SHARED_DATA} (see the project README)")
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--smoke", "--data", str(SHARED_DATA),
                           "--results-dir", str(results), "--threads", "1", *extra],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert found, proc.stdout[-2000:]
    return dict(re.findall(r"(\w+)=(\S+)", found[-1])), results


def test_time_to_accuracy_smoke(tmp_path):
    # One task and two sides keep it short: each side is a fresh process, stopped at its target or its cap.
    values, results = smoke("time_to_accuracy.py", tmp_path, ("fsdd",), "--tasks", "audio",
                            "--sides", "tk_default,tutorial", "--cap-audio", "25")
    rows = json.loads((results / "time_to_accuracy_smoke.json").read_text())
    assert {r["side"] for r in rows} == {"tk_default", "tutorial"}
    for r in rows:
        assert r["wall"] <= 25 + 5  # the cap holds
        assert r["best"] is None or 0.0 <= r["best"] <= 1.0
        assert (r["hit"] is not None) == (r["best"] is not None and r["best"] >= 0.95)
    report = (results / "time_to_accuracy_smoke.md").read_text()
    assert "SMOKE RUN" in report and "| PyTorch tutorial loop |" in report and "MFCC statistics" in report
    assert "audio_tk_default_s" in values


def test_prefix_cache_check_smoke(tmp_path):
    values, results = smoke("prefix_cache_check.py", tmp_path, ("hymenoptera",))
    assert float(values["speedup_from_epoch2"]) > 0
    report = (results / "prefix_cache_check_smoke.md").read_text()
    assert "| partial, prefix_cache=True (default) |" in report and "| True |" in report and "| False |" in report


def test_predict_speed_smoke(tmp_path):
    values, results = smoke("predict_speed.py", tmp_path, ("hymenoptera", "fsdd"))
    assert float(values["image_speedup"]) > 0 and float(values["audio_speedup"]) > 0
    # Both sides run the same export: their top labels agree on (nearly) every item.
    assert float(values["image_agree"]) >= 0.9 and float(values["audio_agree"]) >= 0.9
    report = (results / "predict_speed_smoke.md").read_text()
    assert "SMOKE RUN" in report and "| 16 photos (MobileNetV2) |" in report and "| 16 clips (wav2vec2 4x256) |" in report
