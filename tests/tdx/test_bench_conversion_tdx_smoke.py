"""Smoke test of kmock.benchmarks.conversion_tdx in quick mode (no timing assertions)."""

from kmock.benchmarks.conversion_tdx import run


def test_bench_conversion_tdx_quick_runs():
    lines = []
    rows = run(quick=True, out=lines.append)
    text = "\n".join(lines)
    assert "TDX 4K conversion round trip" in text and "SW_PROTECTED" in text
    shared, private, trip, base = rows
    assert trip["ops"] == 200 and trip["target"] and trip["violations"] == 0
    assert trip["mock_best_s"] <= trip["mock_median_s"]
    assert 0 < shared["mock_median_s"] < trip["mock_median_s"]
    assert trip["real_fallocate_s"] is None or trip["ratio"] > 0
    assert base["mock_median_s"] > 0
