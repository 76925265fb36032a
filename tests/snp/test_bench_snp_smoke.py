"""kmock.benchmarks.conversion_snp in quick mode (no timing assertion: the machine is shared)."""

from kmock.benchmarks.conversion_snp import run


def test_snp_conversion_bench_quick_runs():
    lines = []
    (row,) = run(quick=True, out=lines.append)
    assert "SNP 4K conversion" in lines[0] and row["ops"] == 200
    assert 0 < row["mock_s_best"] <= row["mock_s_median"]
    assert (row["real_fallocate_s"] is None) == (row["ratio"] is None)
    if row["ratio"] is not None:  # interleaved with the mock's rounds, median over median
        assert row["real_rounds"] == 2
        assert row["ratio"] == row["mock_s_median"] / row["real_fallocate_s"]
