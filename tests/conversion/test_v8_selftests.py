"""The v8 selftest x86/guest_memfd_conversions_test.c (reference §2.6), ported to kmock.

Profile gmem-attributes-v8, KVM_X86_SW_PROTECTED_VM, gmem at GPA SZ_4G in memslot 1,
GUEST_MEMFD_FLAG_MMAP (the selftest's VM_MEM_SRC_SHMEM backing is the host mapping).
The guest side runs through the vCPU's guest script; a guest access's kind follows
the page's attribute, as the selftest guest's accesses do on SW_PROTECTED.
"""

import pytest

from ._util import (INIT_SHARED, MMAP, PRIVATE, P, V8, err, errno, native_faults,
                    native_readable, sigbus_at)


def host_write(m, off, data):
    m[off:off + len(data)] = data


def test_requires_cap(k8):
    """The selftest requires KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES & PRIVATE."""
    env = V8(k8)
    from kmock.uapi import kvm as K
    assert k8.ioctl(env.vm, K.KVM_CHECK_EXTENSION, 250) & PRIVATE


def test_init_private(k8):
    """init_private: the default is private; the host gets SIGBUS, the guest reads/writes;
    after to-shared both sides see the same data; back to private the host faults again."""
    env = V8(k8, size=P, flags=MMAP)
    m = env.mmap()
    assert sigbus_at(m, 0) == 0
    assert native_faults(m, 0)
    env.guest_write(0, b"A" * 8)
    assert env.guest_read(0, 8) == b"A" * 8
    env.to_shared(0, P)
    assert m[0:8] == b"A" * 8  # conversion keeps the contents (SW_PROTECTED)
    host_write(m, 0, b"B" * 8)
    assert env.guest_read(0, 8) == b"B" * 8
    env.guest_write(0, b"C" * 8)
    assert m[0:8] == b"C" * 8 and _native(m, 0, 8) == b"C" * 8
    env.to_private(0, P)
    assert sigbus_at(m, 0) == 0 and native_faults(m, 0)
    assert env.guest_read(0, 8) == b"C" * 8


def _native(m, off, n):
    from kmock import _libc
    data, got = _libc.read_user(m.address + off, n)
    assert got == n
    return data


def test_init_shared(k8):
    """init_shared: with INIT_SHARED host and guest share data from the start."""
    env = V8(k8, size=P, flags=MMAP | INIT_SHARED)
    m = env.mmap()
    host_write(m, 0, b"host")
    assert env.guest_read(0, 4) == b"host"
    env.guest_write(0, b"gst!")
    assert m[0:4] == b"gst!"
    env.to_private(0, P)
    assert sigbus_at(m, 0) == 0 and native_faults(m, 0)
    assert env.guest_read(0, 4) == b"gst!"


@pytest.mark.parametrize("test_page", range(4))
def test_indexing(k8, test_page):
    """indexing: 4 pages; converting one index affects only that index."""
    env = V8(k8, size=4 * P, flags=MMAP | INIT_SHARED)
    m = env.mmap()
    for i in range(4):
        host_write(m, i * P, bytes([0x10 + i]) * 4)
    env.to_private(test_page * P, P)
    for i in range(4):
        if i == test_page:
            assert sigbus_at(m, i * P) == i * P and native_faults(m, i * P)
            assert env.guest_read(i * P, 4) == bytes([0x10 + i]) * 4
        else:
            assert m[i * P:i * P + 4] == bytes([0x10 + i]) * 4
    env.to_shared(test_page * P, P)
    for i in range(4):
        assert m[i * P:i * P + 4] == bytes([0x10 + i]) * 4
    # the reverse: all private, one page shared
    env.to_private(0, 4 * P)
    env.to_shared(test_page * P, P)
    for i in range(4):
        assert (sigbus_at(m, i * P) is None) == (i == test_page)
        assert native_readable(m, i * P) == (i == test_page)


@pytest.mark.parametrize("flags", [MMAP, MMAP | INIT_SHARED], ids=["private", "shared"])
def test_before_allocation(k8, flags):
    """before_allocation_shared/private: converting never-allocated pages succeeds and
    allocates nothing."""
    env = V8(k8, size=4 * P, flags=flags)
    assert env.gmem_snapshot()["allocated_pages"] == 0
    env.to_shared(0, 4 * P)
    env.to_private(0, 4 * P)
    env.to_shared(P, 2 * P)
    assert env.gmem_snapshot()["allocated_pages"] == 0
    assert env.gmem_snapshot()["private_pages"] == 2


@pytest.mark.parametrize("test_page", [0, 2, 7])
def test_unallocated_folios(k8, test_page):
    """unallocated_folios: 8 pages, only test_page and page 4 faulted in; converting all
    of them succeeds in both directions."""
    env = V8(k8, size=8 * P, flags=MMAP | INIT_SHARED)
    m = env.mmap()
    host_write(m, test_page * P, b"x")
    env.guest_write(4 * P, b"y")
    allocated = env.gmem_snapshot()["allocated_pages"]
    assert allocated == len({test_page, 4})
    env.to_private(0, 8 * P)
    assert env.gmem_snapshot()["private_pages"] == 8
    env.to_shared(0, 8 * P)
    assert env.gmem_snapshot()["private_pages"] == 0
    assert m[test_page * P] == ord("x") and m[4 * P] == ord("y")
    assert env.gmem_snapshot()["allocated_pages"] == allocated


@pytest.mark.parametrize("attr", [0, PRIVATE], ids=["shared", "private"])
def test_truncate(k8, attr):
    """truncate: PUNCH_HOLE keeps the attributes; the data reads back as zero."""
    env = V8(k8, size=4 * P, flags=MMAP | INIT_SHARED)
    m = env.mmap()
    for i in range(4):
        host_write(m, i * P, b"\xaa" * 16)
    if attr:
        env.to_private(P, 2 * P)
    before = env.gmem_snapshot()
    env.punch(P, 2 * P)
    after = env.gmem_snapshot()
    assert after["private_pages"] == before["private_pages"]
    assert after["allocated_pages"] == before["allocated_pages"] - 2
    for i in (1, 2):
        if attr:
            assert sigbus_at(m, i * P) == i * P and native_faults(m, i * P)
            assert env.guest_read(i * P, 16) == bytes(16)
        else:
            assert m[i * P:i * P + 16] == bytes(16)
            assert _native(m, i * P, 16) == bytes(16)
            assert env.guest_read(i * P, 16) == bytes(16)
    for i in (0, 3):
        assert m[i * P:i * P + 16] == b"\xaa" * 16
    # the attribute is still in force after the punch: to-shared shows zeroes
    if attr:
        env.to_shared(P, 2 * P)
        assert m[P:P + 16] == bytes(16)


def test_forked_accesses(k8):
    """forked_accesses: the kernel zaps every process's mapping on to-private.

    The second process (a forked child, a vhost-user backend) holds its own mapping of
    the same fd: a second Kernel.mmap. Both mappings SIGBUS after to-private, and
    native code at either address really faults.
    """
    env = V8(k8, size=4 * P, flags=MMAP | INIT_SHARED)
    parent = env.mmap()
    child = env.mmap()
    host_write(parent, P, b"parent")
    assert child[P:P + 6] == b"parent"
    host_write(child, 2 * P, b"child")
    assert parent[2 * P:2 * P + 5] == b"child"
    env.to_private(0, 4 * P)
    for m in (parent, child):
        for i in range(4):
            assert sigbus_at(m, i * P) == i * P
            assert native_faults(m, i * P)
    assert env.gmem_snapshot()["host_mappings"] == 2
    # the child's data is private now, and the guest still sees it
    assert env.guest_read(2 * P, 5) == b"child"
    env.to_shared(P, P)
    for m in (parent, child):
        assert m[P:P + 6] == b"parent" and native_readable(m, P, 6)
        assert native_faults(m, 0) and native_faults(m, 2 * P)
    # a mapping made after the conversion starts with the same view
    late = env.mmap()
    assert late[P:P + 6] == b"parent" and native_faults(late, 0)


@pytest.mark.parametrize("test_page", range(4))
def test_elevated_refcount(k8, test_page):
    """elevated_refcount: a PIN_LONGTERM pin on test_page makes both the bulk and the
    single-page to-private conversion fail with EAGAIN, error_offset == test_page * P;
    after unpinning both succeed. The failed conversion changed nothing."""
    env = V8(k8, size=4 * P, flags=MMAP | INIT_SHARED)
    m = env.mmap()
    for i in range(4):
        host_write(m, i * P, bytes([i + 1]) * 8)
    pin = k8.gup_pin(m, test_page * P, P)
    before = k8.snapshot()
    r, a = env.set_attrs(0, 4 * P, PRIVATE)
    assert r == errno.EAGAIN and a.error_offset == test_page * P
    r, a = env.set_attrs(test_page * P, P, PRIVATE)
    assert r == errno.EAGAIN and a.error_offset == test_page * P
    assert k8.snapshot() == before
    for i in range(4):
        assert m[i * P:i * P + 8] == bytes([i + 1]) * 8
        assert native_readable(m, i * P)
    # the pages around the pinned one convert fine on their own
    if test_page > 0:
        env.to_private(0, test_page * P)
        env.to_shared(0, test_page * P)
    pin.unpin()
    env.to_private(test_page * P, P)
    env.to_shared(test_page * P, P)
    r, a = env.set_attrs(0, 4 * P, PRIVATE)
    assert r == 0
    assert env.gmem_snapshot()["private_pages"] == 4


def test_elevated_refcount_pin_survives_munmap(k8):
    """A gup pin outlives the mapping it was taken through (gup_test keeps the pages)."""
    env = V8(k8, size=2 * P, flags=MMAP | INIT_SHARED)
    m = env.mmap()
    pin = k8.gup_pin(m, P, P)
    m.close()
    r, a = env.set_attrs(0, 2 * P, PRIVATE)
    assert r == errno.EAGAIN and a.error_offset == P
    pin.unpin()
    env.to_private(0, 2 * P)


def test_pin_of_private_page_faults(k8):
    """gup on a private page fails (the fault handler refuses it): EFAULT, no pin taken."""
    env = V8(k8, size=2 * P, flags=MMAP)
    m = env.mmap()
    assert err(k8.gup_pin, m, 0, P) == errno.EFAULT
    assert env.gmem_snapshot()["pinned_pages"] == 0
