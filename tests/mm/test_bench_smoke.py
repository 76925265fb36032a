"""Smoke test of the memory-core benchmark (no timing assertions)."""

import pytest

from _mm_impls import PURE_ENV


@pytest.mark.skipif(PURE_ENV, reason="the benchmark compares the compiled core with the twin")
def test_bench_core_quick_runs():
    from kmock.benchmarks.core import run

    lines = []
    rows = run(quick=True, out=lines.append)
    assert lines and "W1" in "\n".join(lines)
    seen = {(r["workload"].split()[0], r["impl"]) for r in rows}
    for w in ("W1", "W2", "W3"):
        for impl in ("compiled", "pure"):
            assert (w, impl) in seen
    for r in rows:
        assert r["ops"] > 0 and r["seconds"] >= 0
    w1 = [r for r in rows if r["workload"].startswith("W1")]
    assert all(r["segments"] > 0 and r["bytes_per_segment"] > 0 for r in w1)
