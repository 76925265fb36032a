"""Lifetimes of VMs, guest_memfds and memslots (reference §4.6, §5.2)."""

import errno

import pytest

import kmock
from kmock.uapi import kvm as K

from ._util import (DEFAULT_VM, GMEM, INIT_SHARED, MMAP, P, RW, SHARED, SW_PROTECTED_VM,
                    create_gmem, create_vm, err, is_open, set_region)

G = 1 << 32
KEEP_SIZE, PUNCH = 0x1, 0x2


@pytest.mark.parametrize("vm_type", [DEFAULT_VM, SW_PROTECTED_VM])
def test_closing_vm_fd_keeps_vm_alive_for_gmem(k, vm_type):
    """§4.6: each guest_memfd holds a VM reference; after close(vm_fd) fallocate and punch
    still work, mmap works where allowed, and binding the gmem to another VM -> EINVAL."""
    kvm, vm = create_vm(k, vm_type)
    flags = MMAP | (INIT_SHARED if vm_type == DEFAULT_VM else 0)
    gmem = create_gmem(k, vm, 4 * P, flags)
    assert set_region(k, vm, 1, G, 4 * P, GMEM, gmem) == 0
    k.close(vm)
    assert err(k.ioctl, vm, K.KVM_CHECK_EXTENSION, 0) == errno.EBADF and not is_open(vm)
    assert k.fallocate(gmem, KEEP_SIZE, 0, 4 * P) is None
    assert k.fallocate(gmem, KEEP_SIZE | PUNCH, P, P) is None
    assert k.fstat(gmem).st_size == 4 * P
    m = k.mmap(gmem, 4 * P, RW, SHARED)
    if flags & INIT_SHARED:
        m[0:4] = b"live"
        assert m[0:4] == b"live"
    else:
        with pytest.raises(kmock.SigBus):
            m[0]
    m.close()
    other = k.ioctl(kvm, K.KVM_CREATE_VM, vm_type)
    assert err(set_region, k, other, 1, G, 4 * P, GMEM, gmem) == errno.EINVAL
    k.close(gmem)


def test_vcpu_fd_keeps_vm_alive(k):
    """§4.6: the VM is not destroyed while a vCPU fd is open: KVM_RUN keeps working."""
    _, vm = create_vm(k)
    vcpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    k.close(vm)
    assert k.ioctl(vcpu, K.KVM_RUN, 0) == 0


def test_closing_bound_gmem_leaves_slot_deletable(k):
    """§4.6 / probe: closing a bound gmem leaves the memslot; deleting it returns 0, once."""
    _, vm = create_vm(k)
    gmem = create_gmem(k, vm, 8 * P)
    assert set_region(k, vm, 1, G, 4 * P, GMEM, gmem) == 0
    assert set_region(k, vm, 2, 2 * G, 4 * P, GMEM, gmem, 4 * P) == 0
    k.close(gmem)
    # the slots still occupy their GPA ranges
    assert err(set_region, k, vm, 3, G, P) == errno.EEXIST
    assert set_region(k, vm, 1, G, 0) == 0
    assert err(set_region, k, vm, 1, G, 0) == errno.EINVAL
    assert set_region(k, vm, 2, 2 * G, 0) == 0
    assert set_region(k, vm, 3, G, P) == 0


def test_deleting_frees_range_for_rebinding(k):
    """§4.6: kvm_gmem_unbind clears the range: it can be bound to a new slot."""
    _, vm = create_vm(k)
    gmem = create_gmem(k, vm, 4 * P)
    assert set_region(k, vm, 1, G, 4 * P, GMEM, gmem) == 0
    assert err(set_region, k, vm, 2, 2 * G, 4 * P, GMEM, gmem) == errno.EINVAL
    assert set_region(k, vm, 1, G, 0) == 0
    assert set_region(k, vm, 2, 2 * G, 4 * P, GMEM, gmem) == 0
    assert set_region(k, vm, 2, 2 * G, 0) == 0
    assert set_region(k, vm, 1, G, 2 * P, GMEM, gmem, 2 * P) == 0  # part of the range


def test_data_persists_across_memslot_deletion_and_vm_close(k):
    """§4.6 / §5.2: memory lives in the inode: unbind, munmap/mmap and VM close keep it."""
    _, vm = create_vm(k)
    gmem = create_gmem(k, vm, 4 * P, MMAP | INIT_SHARED)
    m = k.mmap(gmem, 4 * P, RW, SHARED)
    m[0:4 * P] = bytes(range(256)) * 64
    assert set_region(k, vm, 1, G, 4 * P, GMEM, gmem) == 0
    assert set_region(k, vm, 1, G, 0) == 0
    m.close()
    m = k.mmap(gmem, 4 * P, RW, SHARED)
    assert m[0:4 * P] == bytes(range(256)) * 64
    k.close(vm)
    m2 = k.mmap(gmem, 4 * P, RW, SHARED)
    assert m2[P:P + 256] == bytes(range(256))
    # punch-hole is seen by every mapping; other pages are kept
    k.fallocate(gmem, KEEP_SIZE | PUNCH, 0, P)
    assert m[0:P] == bytes(P) and m2[P:2 * P] == bytes(range(256)) * 16


def test_mapping_keeps_gmem_alive_after_close(k):
    """§4.6: kvm_gmem_release runs on the last reference; a mapping is one. The binding
    stays while the mapping lives, and the slot can be deleted after."""
    _, vm = create_vm(k)
    gmem = create_gmem(k, vm, 4 * P, MMAP | INIT_SHARED)
    assert set_region(k, vm, 1, G, 4 * P, GMEM, gmem) == 0
    m = k.mmap(gmem, 4 * P, RW, SHARED)
    m[0:5] = b"hello"
    k.close(gmem)
    assert m[0:5] == b"hello"
    m[P:P + 3] = b"abc"
    assert m[P:P + 3] == b"abc"
    m.close()
    assert set_region(k, vm, 1, G, 0) == 0


def test_dup_keeps_gmem_alive(k):
    """§4.2 / §4.6: a dup'ed fd is another reference to the same file."""
    _, vm = create_vm(k)
    gmem = create_gmem(k, vm, 4 * P)
    d = k.dup(gmem)
    assert set_region(k, vm, 1, G, 4 * P, GMEM, gmem) == 0
    k.close(gmem)
    # the binding is still there: the range can't be bound again through the dup
    assert err(set_region, k, vm, 2, 2 * G, P, GMEM, d) == errno.EINVAL
    assert k.fallocate(d, KEEP_SIZE, 0, 4 * P) is None
    k.close(d)
    assert err(k.fallocate, d, KEEP_SIZE, 0, P) == errno.EBADF


def test_vm_destroyed_with_last_reference(k):
    """§4.6: when the last reference goes (gmem after the VM fd), the VM's slots are freed:
    kmock's fd table is empty and nothing is left mapped."""
    kvm, vm = create_vm(k)
    gmem = create_gmem(k, vm, 4 * P)
    assert set_region(k, vm, 1, G, 4 * P, GMEM, gmem) == 0
    vmobj = k.vm(vm)
    k.close(vm)
    assert not vmobj.destroyed
    k.close(gmem)
    assert vmobj.destroyed
    k.close(kvm)
    for fd in (kvm, vm, gmem):
        assert err(k.close, fd) == errno.EBADF
