"""The benchmark scripts' --smoke modes run end to end, so the scripts cannot rot unnoticed.

Each run writes into a temporary results folder (never over the committed results) and must end
with its RESULT line. They need the real data in ../shared/data and skip without it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def run_smoke(script: str, tmp_path: Path, needs: tuple[str, ...]) -> tuple[str, Path]:
    missing = [n for n in needs if not (SHARED_DATA / n).exists()]
    if missing:
        pytest.skip(f"real data {missing} not found under {SHARED_DATA} (see the project README)")
    results = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--smoke", "--data", str(SHARED_DATA),
         "--results-dir", str(results), "--threads", "1"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    return last, results


def result_values(line: str, name: str) -> dict[str, str]:
    assert line.startswith(f"RESULT {name} "), line
    return dict(re.findall(r"(\w+)=(\S+)", line))


def test_vision_transfer_smoke(tmp_path):
    line, results = run_smoke("vision_transfer.py", tmp_path, ("hymenoptera", "weights/resnet20-cifar10.th"))
    values = result_values(line, "vision_transfer")
    for key in ("pixels_logistic_regression", "resnet20_linear_probe", "resnet20_finetune", "resnet20_lpft",
                "resnet20_llrd", "resnet20_wiseft", "resnet20_greedy_soup", "vit_from_scratch", "vit_finetune"):
        assert 0.0 <= float(values[key]) <= 1.0, key
    report = (results / "vision_transfer_smoke.md").read_text()
    assert "SMOKE RUN" in report and "| ResNet-20 (CIFAR-10) | LP-FT |" in report
    assert not (results / "vision_transfer.md").exists()  # a smoke run never writes the real result's name


def test_throughput_smoke(tmp_path):
    line, results = run_smoke("throughput.py", tmp_path, ("hymenoptera", "ml-100k/u.data"))
    values = result_values(line, "throughput")
    assert values["precision"] in ("bf16", "no", "fp16")
    for key in ("finetune_speed_ratio", "probe_speedup", "step_gflops", "tk_peak_rss_mib", "hf_peak_rss_mib"):
        assert float(values[key]) > 0, key
    float(values["als_overhead_pct"])
    report = (results / "throughput_smoke.md").read_text()
    assert "## Targets" in report and "Same factors as the direct call (same seed): True" in report


def test_label_curve_smoke(tmp_path):
    line, results = run_smoke("label_curve.py", tmp_path, ("hymenoptera",))
    values = result_values(line, "label_curve")
    assert 0.0 <= float(values["probe_2"]) <= 1.0 and 0.0 <= float(values["reference_2"]) <= 1.0
    report = (results / "label_curve_smoke.md").read_text()
    assert "SMOKE RUN" in report and "| labels_per_class | linear_probe | reference |" in report
    assert (results / "label_curve_smoke.png").stat().st_size > 5_000


def test_decode_cache_check_smoke(tmp_path):
    line, results = run_smoke("decode_cache_check.py", tmp_path, ("hymenoptera", "weights/resnet20-cifar10.th"))
    values = result_values(line, "decode_cache_check")
    assert 0.0 <= float(values["cached"]) <= 1.0 and 0.0 <= float(values["per_file"]) <= 1.0
    assert float(values["speedup"]) > 0
    report = (results / "decode_cache_check_smoke.md").read_text()
    assert "SMOKE RUN" in report and report.count("| 0 | ") == 2  # seed 0, cache on and off
