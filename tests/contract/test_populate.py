"""kvm_gmem_populate (kmock.kvm.populate): the rules launch updates share (virt/kvm/guest_memfd.c
6.18: EINVAL without a private-capable slot, clamp to the slot, EEXIST on a prepared page,
EINVAL on a shared gfn, pages-done-or-error, and which folios a failure leaves allocated)."""

import errno
import os

import pytest

import kmock
from kmock.kvm.populate import gmem_populate
from kmock.uapi import kvm as K

P = 4096
BASE = (1 << 32) >> 12
PRIVATE = K.KVM_MEMORY_ATTRIBUTE_PRIVATE


@pytest.fixture
def env():
    k = kmock.Kernel()
    kvm = k.open("/dev/kvm", os.O_RDWR)
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, K.KVM_X86_SW_PROTECTED_VM)
    gm = k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(size=8 * P))
    k.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
        slot=1, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=BASE << 12, memory_size=8 * P,
        guest_memfd=gm))
    k.ioctl(vm, K.KVM_SET_MEMORY_ATTRIBUTES, K.kvm_memory_attributes(
        address=BASE << 12, size=6 * P, attributes=PRIVATE))
    yield k, k.vm(vm), k.file(gm).inode
    k.close_all()


def test_runs_are_populated_and_prepared(env):
    k, vm, inode = env
    calls = []
    assert gmem_populate(vm, BASE, None, 4, lambda *a: calls.append(a)) == 4
    assert calls == [(BASE, inode.pfn(0), None, 4)]  # one call for the run
    assert inode.prepared.count(1, 0, 4) == 4 and inode.allocated.count(1, 0, 4) == 4
    # a second populate of a prepared page is EEXIST, with nothing done
    with pytest.raises(OSError) as e:
        gmem_populate(vm, BASE + 3, None, 2, lambda *a: calls.append(a))
    assert e.value.errno == errno.EEXIST and len(calls) == 1


def test_stops_at_shared_gfn_and_reports_pages_done(env):
    k, vm, inode = env
    calls = []
    # gfns 4..5 private, 6..7 shared: 2 pages done, then EINVAL is not reported
    assert gmem_populate(vm, BASE + 4, 0x1000, 4, lambda *a: calls.append(a)) == 2
    assert calls == [(BASE + 4, inode.pfn(4), 0x1000, 2)]
    # the loop went on to gfn 6: __kvm_gmem_get_pfn got its folio before the attribute
    # check stopped it (its EINVAL is not reported: pages were done)
    assert list(inode.allocated.ranges(0, 8)) == [(0, 4, 0), (4, 7, 1), (7, 8, 0)]
    assert inode.prepared.get(6) == 0
    with pytest.raises(OSError) as e:
        gmem_populate(vm, BASE + 6, None, 1, lambda *a: None)
    assert e.value.errno == errno.EINVAL


def test_clamped_to_the_slot_and_no_slot_is_einval(env):
    k, vm, inode = env
    assert gmem_populate(vm, BASE, None, 100, lambda *a: None) == 6  # 6 private, then shared
    with pytest.raises(OSError) as e:
        gmem_populate(vm, BASE + 100, None, 1, lambda *a: None)
    assert e.value.errno == errno.EINVAL


def test_a_failing_post_populate_keeps_the_pages_it_did(env):
    k, vm, inode = env

    def post(gfn, pfn, src, n):
        err = OSError(errno.EIO, "firmware")
        err.done = 1
        raise err

    assert gmem_populate(vm, BASE, None, 3, post) == 1
    assert inode.prepared.get(0) == 1 and inode.prepared.get(1) == 0
    with pytest.raises(OSError) as e:
        gmem_populate(vm, BASE + 1, None, 3, lambda *a: (_ for _ in ()).throw(OSError(errno.EIO, "x")))
    assert e.value.errno == errno.EIO


@pytest.mark.parametrize("i", [0, 1, 3, 5])
def test_a_failure_at_page_i_leaves_what_the_kernel_leaves(env, i):
    """6.18 gets each page's folio, then calls post_populate for it (max_order is 0):
    failing at page i, pages < i are populated, page i's folio stays allocated (not
    prepared), pages after i were never reached."""
    k, vm, inode = env

    def post(gfn, pfn, src, n):
        assert n == 6 and pfn == inode.pfn(0)  # one call for the run, never per page
        err = OSError(errno.EIO, "firmware")
        err.done = i
        raise err

    if i == 0:
        with pytest.raises(OSError) as e:
            gmem_populate(vm, BASE, None, 6, post)
        assert e.value.errno == errno.EIO
    else:
        assert gmem_populate(vm, BASE, None, 6, post) == i
    prepared = [] if inode.prepared is None else [r for r in inode.prepared.ranges(0, 8) if r[2]]
    assert prepared == ([(0, i, 1)] if i else [])
    assert list(inode.allocated.ranges(0, 8)) == [(0, i + 1, 1), (i + 1, 8, 0)]


def test_a_failure_keeps_pages_allocated_before(env):
    """Pages the VMM allocated beforehand (fallocate) stay allocated after the failure."""
    k, vm, inode = env
    inode.allocate(4, 6)

    def post(gfn, pfn, src, n):
        err = OSError(errno.EIO, "firmware")
        err.done = 1
        raise err

    assert gmem_populate(vm, BASE, None, 6, post) == 1
    assert list(inode.allocated.ranges(0, 8)) == [(0, 2, 1), (2, 4, 0), (4, 6, 1), (6, 8, 0)]


def test_a_poisoned_page_stops_the_run_with_ehwpoison(env):
    k, vm, inode = env
    inode.memory_failure(2)
    calls = []
    assert gmem_populate(vm, BASE, None, 6, lambda *a: calls.append(a)) == 2
    assert calls == [(BASE, inode.pfn(0), None, 2)]
    with pytest.raises(OSError) as e:
        gmem_populate(vm, BASE + 2, None, 1, lambda *a: calls.append(a))
    assert e.value.errno == 133 and len(calls) == 1  # EHWPOISON, nothing called
