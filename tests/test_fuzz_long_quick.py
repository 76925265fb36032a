"""The long fuzz run (kmock.benchmarks.fuzz_long) in quick mode: a few thousand random
syscalls in forked children with two threads each, every profile and platform here.
The full run (10**6 calls) is not part of the suite: ``python3 -m kmock.benchmarks.fuzz_long``."""

from kmock.benchmarks import fuzz_long


def test_fuzz_long_quick_counts_nothing_bad():
    lines = []
    total = fuzz_long.run(quick=True, out=lines.append, seed=20261201, workers=2, threads=2)
    report = "\n".join(lines)
    assert total["calls"] == 4000, report
    assert total["unexpected"] == 0, report + "\n" + "\n".join(total["tracebacks"].values())
    assert total["signals"] == {}, report
    assert total["crashes"] == [], report
    assert total["leaked_fds"] == 0, report
    assert total["oserror"] > 0 and total["ok"] > 0  # both paths were reached
    assert "linux-6.18/none" in total["platforms"]
    assert "non-OSError exceptions: 0" in report and "real signals: 0" in report


def test_fuzz_long_counts_a_signal(monkeypatch):
    """A child killed by a signal is counted, not fatal to the run."""
    import os
    import signal

    def chunk(seed, calls, threads, combos):
        os.kill(os.getpid(), signal.SIGSEGV)

    monkeypatch.setattr(fuzz_long, "_chunk", chunk)
    total = fuzz_long.run(quick=True, out=lambda s: None, calls=800, seed=1, workers=1)
    assert total["signals"] == {f"signal {int(signal.SIGSEGV)}": 1} and total["calls"] == 0
