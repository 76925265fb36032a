"""The binary stats fds from native code: stats_native.c, built here with the system
compiler, reads the VM and vCPU stats files (header, id string, descriptors, data) and
tries the calls their fops lack, on the real /dev/kvm and under the preload library
(the stats fd is a kmock fd like the others: read/pread/lseek are forwarded)."""

from pathlib import Path

import pytest

from ._native import REAL_KVM, build, lines, needs_cc, run_mock, up_lines_match_real

import kmock

HERE = Path(__file__).parent
pytestmark = needs_cc


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    return build(tmp_path_factory.mktemp("native") / "stats_native", HERE / "stats_native.c",
                 "-lpthread")


def up(text):
    return lines(text, "up ")



@pytest.mark.skipif(not REAL_KVM, reason="no usable /dev/kvm")
def test_stats_lines_match_the_real_kernel(program, lib):
    real = up_lines_match_real(program, 70)
    assert "up vm id: read 48 is-format 1" in real


def test_upstream_table_under_kmock(program, lib):
    out = run_mock(program, kmock.Kernel("linux-6.18")).stdout
    assert "up vm header: flags 0 name_size 48 num_desc 15 id 24 desc 72 data 1032" in out
    assert "up vcpu header: flags 0 name_size 48 num_desc 45 id 24 desc 72 data 2952" in out
    assert "up vcpu id: read 48 is-format 1" in out
    # the library sends each thread's id: the vCPU a thread created is named after it
    assert "up vcpu created by another thread: id names that thread 1, not the process 1" in out
    assert "up vcpu desc 7: halt_poll_success_hist flags 0x24 exp -9 size 32 offset 56 bucket 0" in out
    # read moves the position, lseek answers it (noop_llseek), pread < 0 is EINVAL
    # (the library refuses it: on the wire offset -1 means "at the file position")
    for line in ("up lseek 0 SEEK_SET: 24", "up lseek whence 9: -1 EINVAL", "up read 8: 8 kvm",
                 "up lseek 0 SEEK_CUR: 36", "up pread at -1: -1 EINVAL", "up write: -1 EBADF",
                 "up pwrite: -1 ESPIPE", "up mmap: -1 ENODEV", "up fallocate: -1 EBADF",
                 "up vm stats after close: 24"):
        assert line in out
