"""kmock.benchmarks.conversion_cca runs (quick) and reports its rows."""

from kmock.benchmarks import conversion_cca


def test_conversion_cca_quick():
    lines = []
    rows = conversion_cca.run(quick=True, out=lines.append)
    assert [r["name"].split(" (")[0] for r in rows] == [
        "CCA 4K conversion to private", "CCA 4K conversion to shared"]
    for r in rows:
        assert 0 < r["mock_s_best"] <= r["mock_s_median"]
        assert 0 < r["core_ioctls_s"]
        if r["real_fallocate_s"] is not None:
            assert r["ratio"] == r["mock_s_median"] / r["real_fallocate_s"]
    assert "Arm CCA 4K conversion" in lines[0]
