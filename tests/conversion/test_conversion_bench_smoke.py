"""Smoke test of kmock.benchmarks.conversion in quick mode (no timing assertions)."""

from kmock.benchmarks.conversion import run


def test_bench_conversion_quick_runs():
    lines = []
    rows = run(quick=True, out=lines.append)
    text = "\n".join(lines)
    assert "C1" in text and "C2" in text
    c1, c2 = rows[:2]  # then one row per installed architecture plugin
    assert c1["ops"] == 1000 and c1["seconds"] > 0 and 0 <= c1["shared_pages_after"] <= 500
    assert c1["real_fallocate_us"] is None or c1["real_fallocate_us"] > 0
    assert c2["ops"] == 10000 and c2["peak_rss_mb"] > 0
    assert c2["allocated_pages"] == 40 * (1 << 30) // 4096
    assert c2["huge_folios"] + c2["split_folios"] == 40
