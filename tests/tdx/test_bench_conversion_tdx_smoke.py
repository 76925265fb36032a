"""Smoke test of kmock.benchmarks.conversion_tdx in quick mode (no timing assertions)."""

from kmock.benchmarks.conversion_tdx import run


def test_bench_conversion_tdx_quick_runs():
    lines = []
    rows = run(quick=True, out=lines.append)
    text = "\n".join(lines)
    assert "TDX 4K conversion" in text and "SW_PROTECTED" in text and ("MISSED" in text or "met" in text)
    shared, private, trip, base = rows
    assert trip["ops"] == 200 and trip["target"] and trip["violations"] == 0
    assert trip["mock_s_best"] <= trip["mock_s_median"]
    assert 0 < shared["mock_s_median"] < trip["mock_s_median"]
    if trip["real_fallocate_s"] is not None:  # one real round after each of the mock's 2
        assert trip["real_rounds"] == 2
        assert trip["ratio"] == trip["mock_s_median"] / trip["real_fallocate_s"]
    assert base["mock_s_median"] > 0 and not base["target"]
