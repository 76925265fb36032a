"""Smoke tests of the benchmarks that have none elsewhere (quick mode, no timing assertions).

kmock.benchmarks.core: tests/mm/test_bench_smoke.py; conversion:
tests/conversion/test_bench_smoke.py. Here: syscalls and iommufd.
"""

import os

import pytest

HAVE_KVM = os.path.exists("/dev/kvm")


@pytest.mark.skipif(not HAVE_KVM, reason="the syscalls benchmark compares with the real /dev/kvm")
def test_bench_syscalls_quick_runs():
    from kmock.benchmarks.syscalls import run

    lines = []
    rows = run(quick=True, out=lines.append, rounds=1)
    text = "\n".join(lines)
    assert "fallocate 4K" in text and "mock/host" in text
    assert {r["op"] for r in rows} >= {"KVM_CHECK_EXTENSION", "fallocate 4K", "PUNCH_HOLE 4K"}
    for r in rows:
        assert r["host_us"] > 0 and r["mock_us"] > 0 and r["ratio"] > 0


def test_bench_syscalls_without_kvm_says_so(monkeypatch):
    from kmock.benchmarks import syscalls

    monkeypatch.setattr(syscalls.os.path, "exists", lambda p: False)
    lines = []
    assert syscalls.run(quick=True, out=lines.append) == []
    assert "no /dev/kvm" in lines[0]


def test_bench_iommufd_quick_runs():
    from kmock.benchmarks.iommufd import run

    lines = []
    rows = run(quick=True, out=lines.append, rounds=1)
    text = "\n".join(lines)
    assert "MAP_FILE + UNMAP 4K" in text and "dma_read 4K" in text
    assert len(rows) == 2
    for r in rows:
        assert r["mock_us"] > 0
        if HAVE_KVM:
            assert r["fallocate_us"] > 0 and r["ratio"] > 0
        else:
            assert r["fallocate_us"] is None and r["ratio"] is None


def test_bench_iommufd_without_kvm_skips_the_host_column(monkeypatch):
    from kmock.benchmarks import iommufd

    real_exists = os.path.exists
    monkeypatch.setattr(iommufd.os.path, "exists",
                        lambda p: False if p == "/dev/kvm" else real_exists(p))
    lines = []
    rows = iommufd.run(quick=True, out=lines.append, rounds=1)
    assert "no /dev/kvm" in lines[0]
    assert [r["fallocate_us"] for r in rows] == [None, None]
    assert all(r["mock_us"] > 0 for r in rows)
