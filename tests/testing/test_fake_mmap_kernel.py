"""MockMmap's flush, madvise and resize against mmap.mmap over a real guest_memfd mapping.

The same steps run on this machine's real kernel (the real mmap.mmap of a real
guest_memfd) and under kmock.patched (a MockMmap); their outcomes must be equal. The
kernel functions that decide them: mm/msync.c msync -> vfs_fsync_range (no ->fsync:
EINVAL); mm/madvise.c madvise_behavior_valid, madvise_remove -> vfs_fallocate
(PUNCH_HOLE|KEEP_SIZE), madvise_free_single_vma (not anonymous: EINVAL); CPython's resize
ftruncates first: virt/kvm/guest_memfd.c kvm_gmem_setattr (EINVAL).
"""

import errno
import fcntl
import mmap
import os

import pytest

import kmock
from kmock.testing.conformance import kvm_available
from kmock.uapi import kvm as K

P = 4096
SIZE = 4 * P
SHARED = K.GUEST_MEMFD_FLAG_MMAP | K.GUEST_MEMFD_FLAG_INIT_SHARED


def _outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except OSError as e:
        return ("errno", errno.errorcode[e.errno])
    except Exception as e:  # noqa: BLE001 (the exception type is the outcome)
        return ("exc", type(e).__name__)


def _steps():
    """Open /dev/kvm, make a guest_memfd, map it with mmap.mmap and run the steps (in
    whatever world os/fcntl/mmap reach): returns [(label, outcome)]."""
    out = []
    kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    vm = fcntl.ioctl(kvm, K.KVM_CREATE_VM, 0)
    g = fcntl.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(size=SIZE, flags=SHARED))
    try:
        m = mmap.mmap(g, SIZE)
        m[:] = b"\x5a" * SIZE
        for label, fn, args in (
                ("flush()", m.flush, ()), ("flush(0, P)", m.flush, (0, P)),
                ("flush(1, P)", m.flush, (1, P)), ("flush(0, 0)", m.flush, (0, 0)),
                ("flush(0, 2*SIZE)", m.flush, (0, 2 * SIZE)),
                ("madvise REMOVE page 1", m.madvise, (mmap.MADV_REMOVE, P, P)),
                ("page 1 reads 0, page 0 kept", lambda: (m[P], m[0]), ()),
                ("madvise FREE", m.madvise, (mmap.MADV_FREE,)),
                ("madvise DONTNEED", m.madvise, (mmap.MADV_DONTNEED,)),
                ("page 0 kept", lambda: m[0], ()),
                ("madvise WILLNEED", m.madvise, (mmap.MADV_WILLNEED,)),
                ("madvise 12345", m.madvise, (12345,)),
                ("madvise REMOVE start 1", m.madvise, (mmap.MADV_REMOVE, 1, P)),
                ("madvise REMOVE past the end", m.madvise, (mmap.MADV_REMOVE, 3 * P, 8 * P)),
                ("madvise start out of bounds", m.madvise, (mmap.MADV_REMOVE, SIZE, P)),
                ("madvise length -1", m.madvise, (mmap.MADV_REMOVE, 0, -1)),
                ("madvise REMOVE length 0", m.madvise, (mmap.MADV_REMOVE, 0, 0)),
                ("pages 2, 3", lambda: (m[2 * P], m[3 * P]), ()),
                ("fstat size after the punches", lambda: os.fstat(g).st_size, ()),
                ("resize", m.resize, (2 * P,)),
                ("resize -1", m.resize, (-1,)),
                ("len after resize", len, (m,)),
                ("m['a']", m.__getitem__, ("a",)),
        ):
            out.append((label, _outcome(fn, *args)))
        r = mmap.mmap(g, P, prot=mmap.PROT_READ)
        out.append(("read-only: flush", _outcome(r.flush)))
        out.append(("read-only: resize", _outcome(r.resize, P)))
        out.append(("read-only: madvise REMOVE", _outcome(r.madvise, mmap.MADV_REMOVE, 0, P)))
        r.close()
        m.close()
        out.append(("closed: flush", _outcome(m.flush)))
        out.append(("closed: madvise", _outcome(m.madvise, mmap.MADV_REMOVE)))
        out.append(("closed: resize", _outcome(m.resize, P)))
    finally:
        for fd in (g, vm, kvm):
            os.close(fd)
    return out


@pytest.mark.skipif(not kvm_available(), reason="no /dev/kvm: the real kernel's answers unknown")
def test_mock_mmap_answers_as_mmap_mmap_on_a_real_guest_memfd():
    real = _steps()
    k = kmock.Kernel("host")
    try:
        with kmock.patched(k):
            mock = _steps()
    finally:
        k.close_all()
    assert mock == real
    got = dict(real)
    # the facts the docstrings cite, pinned to the real kernel's answers
    assert got["flush()"] == ("errno", "EINVAL") and got["flush(0, 0)"] == ("ok", None)
    assert got["page 1 reads 0, page 0 kept"] == ("ok", (0, 0x5A))
    assert got["madvise FREE"] == ("errno", "EINVAL") and got["resize"] == ("errno", "EINVAL")


def test_mock_mmap_flush_madvise_resize_without_real_kvm():
    """The same answers on the generic profile (no /dev/kvm needed)."""
    k = kmock.Kernel()
    try:
        with kmock.patched(k):
            steps = dict(_steps())
    finally:
        k.close_all()
    assert steps["flush()"] == ("errno", "EINVAL")
    assert steps["flush(1, P)"] == ("errno", "EINVAL")
    assert steps["flush(0, 2*SIZE)"] == ("exc", "ValueError")
    assert steps["page 1 reads 0, page 0 kept"] == ("ok", (0, 0x5A))
    assert steps["pages 2, 3"] == ("ok", (0x5A, 0))
    assert steps["madvise FREE"] == steps["madvise 12345"] == ("errno", "EINVAL")
    assert steps["madvise REMOVE start 1"] == ("errno", "EINVAL")
    assert steps["madvise start out of bounds"] == ("exc", "ValueError")
    assert steps["resize"] == ("errno", "EINVAL") and steps["len after resize"] == ("ok", SIZE)
    assert steps["read-only: flush"] == ("ok", None)
    assert steps["read-only: resize"] == ("exc", "TypeError")
    assert steps["closed: resize"] == ("exc", "ValueError")
    assert steps["m['a']"] == ("exc", "TypeError")
