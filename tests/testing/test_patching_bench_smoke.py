"""kmock.benchmarks.patching runs and reports both sides of every row."""

from kmock.benchmarks import patching


def test_patching_benchmark_quick_run():
    lines = []
    rows = patching.run(quick=True, out=lines.append)
    assert [r["op"] for r in rows] == ["os.read(/dev/null, 0)", "os.fstat(/dev/null)",
                                       "fcntl.ioctl(pipe, FIONREAD)",
                                       "ioctl(vm, CHECK_EXTENSION)"]
    assert all(r["base_best_ns"] > 0 and r["patched_best_ns"] > 0 for r in rows)
    assert len(lines) == 1 + len(rows) and "target" in lines[0]
