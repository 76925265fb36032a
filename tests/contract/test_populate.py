"""kvm_gmem_populate (kmock.kvm.populate): the rules launch updates share (virt/kvm/guest_memfd.c
6.18: EINVAL without a private-capable slot, clamp to the slot, EEXIST on a prepared page,
EINVAL on a shared gfn, pages-done-or-error)."""

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
