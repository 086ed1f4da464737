"""benchmarks/audit.py --smoke runs end to end on a subset of the real photos and digits.

It writes into a temporary results folder, never over the committed results, and needs the real data in
../shared/data (hymenoptera and fsdd): without it the test skips and says so.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def test_audit_benchmark_smoke(tmp_path):
    for need in (DATA / "hymenoptera" / "train", DATA / "fsdd" / "recordings"):
        if not need.is_dir():
            pytest.skip(f"real data not found: {need} is missing (it lives in ../shared/data, never in the repo)")
    pytest.importorskip("cleanlab", reason="the reference is cleanlab's Datalab")
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "audit.py"), "--smoke", "--data", str(DATA),
                           "--results-dir", str(results), "--threads", "1"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("RESULT audit "), last
    values = {k: float(v) for k, v in re.findall(r"(\w+)=(\S+)", last)}
    for key in ("ants_label_r_ours", "ants_duplicate_p_ours", "digits_duplicate_r_ours", "digits_acc_cleaned"):
        assert 0.0 <= values[key] <= 1.0
    # the digits' copies are resampled and quieter, yet the same recording: every pair is found
    assert values["digits_duplicate_r_ours"] == 1.0
    report = (results / "audit_smoke.md").read_text()
    assert "SMOKE RUN" in report and "| duplicate | planted pairs | cleanlab Datalab |" in report
    assert (results / "audit_ants_smoke.png").stat().st_size > 10_000
    assert not (results / "audit.md").exists()  # a smoke run never writes the real result's name
