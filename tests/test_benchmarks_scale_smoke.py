"""``benchmarks/scale.py --smoke`` runs end to end on generated data (offline, no shared data needed)."""

from __future__ import annotations

from test_benchmarks_smoke import result_values, run_smoke


def test_scale_smoke(tmp_path):
    line, results = run_smoke("scale.py", tmp_path, ())
    values = result_values(line, "scale")
    assert values["cache_within_budget"] == "True"
    assert float(values["peak_anon_mb_1200"]) > 0 and float(values["warm_start_s"]) > 0
    # The streaming imagefolder pass read every generated JPEG once, none skipped.
    assert int(values["stream_examples_1200"]) == 1200 and float(values["stream_pass_s_1200"]) > 0
    assert float(values["stream_peak_anon_mb_1200"]) > 0
    report = (results / "scale_smoke.md").read_text()
    assert "SMOKE RUN" in report and "| 1,200 | budget |" in report and "| popularity (reference) |" in report
    assert "| 1,200 | stream (imagefolder) |" in report and "| 300 | stream (imagefolder) |" in report
