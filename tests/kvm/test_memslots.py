"""Memslot binding: KVM_SET_USER_MEMORY_REGION2 check order (reference §4.5) and the §7 quirks."""

import dataclasses
import errno
import os

import pytest

import kmock
from kmock.uapi import kvm as K

from ._util import (DEFAULT_VM, GMEM, P, SW_PROTECTED_VM, create_gmem,
                    create_vm, err, errno_or_0, needs_host_kvm, region2, set_region)

G = 1 << 32
CLOSED_FD = 0x7FFF0000  # never open in this process


@pytest.fixture(params=[DEFAULT_VM, SW_PROTECTED_VM], ids=["default", "sw_protected"])
def vm(request, k):
    return create_vm(k, request.param)[1]


def test_slot_ids(k, vm):
    """§4.5 step 2: (u16)slot >= KVM_USER_MEM_SLOTS (32764) -> EINVAL; 32763 works."""
    gmem = create_gmem(k, vm, 16 * P)
    assert set_region(k, vm, 32763, G, P, GMEM, gmem) == 0
    assert err(set_region, k, vm, 32764, G + P, P, GMEM, gmem, P) == errno.EINVAL
    assert err(set_region, k, vm, 0xFFFF, G + P, P) == errno.EINVAL
    assert set_region(k, vm, 0, G + P, P) == 0


def test_slot_id_checked_before_everything_else(k, vm):
    """Slot 32764 with a closed gmem fd, bad flags and an overlapping GPA: EINVAL from step 2,
    not EBADF (bind) nor EEXIST (overlap)."""
    assert set_region(k, vm, 1, G, 4 * P) == 0
    assert err(set_region, k, vm, 32764, G, 4 * P, GMEM, CLOSED_FD) == errno.EINVAL
    assert err(set_region, k, vm, 32764, G, 4 * P, 1 << 3) == errno.EINVAL


def test_as_id_1(k, vm):
    """§4.5 step 3.2: as_id < kvm_arch_nr_memslot_as_ids; linux-6.18 (SMM) has 2 address
    spaces, so as_id 1 works and GPA overlap is per address space; as_id 2 -> EINVAL."""
    assert set_region(k, vm, 1, G, 4 * P) == 0
    assert set_region(k, vm, 1, G, 4 * P, as_id=1) == 0  # same id, same GPA, other AS
    assert err(set_region, k, vm, 2, G, P, as_id=1) == errno.EEXIST
    assert err(set_region, k, vm, 1, G, 4 * P, as_id=2) == errno.EINVAL
    gmem = create_gmem(k, vm, 4 * P)
    assert set_region(k, vm, 3, 2 * G, 4 * P, GMEM, gmem, as_id=1) == 0
    # the gmem range is bound now, whatever the address space
    assert err(set_region, k, vm, 3, 2 * G, 4 * P, GMEM, gmem) == errno.EINVAL
    # deleting in AS 1 leaves AS 0 alone
    assert set_region(k, vm, 1, G, 0, as_id=1) == 0
    assert err(set_region, k, vm, 1, G, 0, as_id=1) == errno.EINVAL
    assert set_region(k, vm, 1, G, 0) == 0


@needs_host_kvm
def test_as_id_1_host_profile():
    """§4.5 probe: as_id 1 -> EINVAL on the host (CONFIG_KVM_SMM off, one address space)."""
    with kmock.Kernel(profile="host") as h:
        _, vm = create_vm(h)
        assert err(set_region, h, vm, 1, G, 4 * P, as_id=1) == errno.EINVAL
        assert set_region(h, vm, 1, G, 4 * P) == 0


def test_eexist_before_gmem_bind(k, vm):
    """§4.5 step 6 runs before step 7: a GPA overlap is EEXIST even when the guest_memfd is
    closed (would be EBADF), not a gmem (EINVAL), misbound, or its range already bound."""
    gmem = create_gmem(k, vm, 16 * P)
    assert set_region(k, vm, 1, G, 4 * P, GMEM, gmem, 0) == 0
    memfd = os.memfd_create("not-gmem")
    try:
        for fd, off in ((CLOSED_FD, 0), (memfd, 0), (gmem, 0), (gmem, 32 * P)):
            assert err(set_region, k, vm, 2, G + P, 4 * P, GMEM, fd, off) == errno.EEXIST
        # and without the overlap each is its bind error
        assert err(set_region, k, vm, 2, 2 * G, 4 * P, GMEM, CLOSED_FD) == errno.EBADF
        assert err(set_region, k, vm, 2, 2 * G, 4 * P, GMEM, memfd) == errno.EINVAL
        assert err(set_region, k, vm, 2, 2 * G, 4 * P, GMEM, gmem, 0) == errno.EINVAL
        assert err(set_region, k, vm, 2, 2 * G, 4 * P, GMEM, gmem, 32 * P) == errno.EINVAL
        assert set_region(k, vm, 2, 2 * G, 4 * P, GMEM, gmem, 4 * P) == 0
    finally:
        os.close(memfd)


def test_overlapping_private_regions_selftest(k):
    """ST-SMR test_add_overlapping_private_memory_regions on SW_PROTECTED: EEXIST for GPA
    overlaps with slot B although the gmem ranges do not overlap."""
    _, vm = create_vm(k, SW_PROTECTED_VM)
    R = 64 * P
    gmem = create_gmem(k, vm, 4 * R)
    assert set_region(k, vm, 1, G, 2 * R, GMEM, gmem, 0) == 0
    assert set_region(k, vm, 2, 2 * G, 2 * R, GMEM, gmem, 2 * R) == 0
    assert set_region(k, vm, 1, G, 0) == 0
    assert err(set_region, k, vm, 1, 2 * G - R, 2 * R, GMEM, gmem, 0) == errno.EEXIST
    assert err(set_region, k, vm, 1, 2 * G + R, 2 * R, GMEM, gmem, 0) == errno.EEXIST


def test_add_private_region_invalid_fds_and_offsets(k):
    """ST-SMR test_add_private_memory_region: /dev/kvm, the VM fd, a memfd, another VM's gmem
    -> EINVAL; offsets 1..P-1 -> EINVAL; then offset 0 binds."""
    kvm, vm = create_vm(k, SW_PROTECTED_VM)
    _, other = create_vm(k, SW_PROTECTED_VM)
    foreign = create_gmem(k, other, 4 * P)
    memfd = os.memfd_create("not-gmem")
    try:
        for fd in (kvm, vm, memfd, foreign):
            assert err(set_region, k, vm, 1, G, 4 * P, GMEM, fd) == errno.EINVAL
    finally:
        os.close(memfd)
    gmem = create_gmem(k, vm, 4 * P)
    for off in (1, 7, P // 2, P - 1):
        assert err(set_region, k, vm, 1, G, 4 * P, GMEM, gmem, off) == errno.EINVAL
    assert set_region(k, vm, 1, G, 4 * P, GMEM, gmem, 0) == 0


def test_flag_rules(k, vm):
    """§4.5 step 3.1 and 1.3: flag validity, and GUEST_MEMFD through the v1 ioctl."""
    gmem = create_gmem(k, vm, 16 * P)
    for flags in (GMEM | K.KVM_MEM_READONLY, GMEM | K.KVM_MEM_LOG_DIRTY_PAGES, 1 << 3, 1 << 16):
        assert err(set_region, k, vm, 1, G, P, flags, gmem) == errno.EINVAL
    v1 = K.kvm_userspace_memory_region(slot=1, flags=GMEM, guest_phys_addr=G, memory_size=P)
    assert err(k.ioctl, vm, K.KVM_SET_USER_MEMORY_REGION, v1) == errno.EINVAL
    assert set_region(k, vm, 2, 2 * G, P, K.KVM_MEM_LOG_DIRTY_PAGES | K.KVM_MEM_READONLY) == 0


def test_gmem_slots_are_immutable(k, vm):
    """§4.5 step 5 / §5.1 row 35: identical re-set, move, and flags change of a gmem slot ->
    EINVAL; plain slots: identical -> 0, move -> 0, flags-only -> 0, size change -> EINVAL."""
    gmem = create_gmem(k, vm, 16 * P)
    assert set_region(k, vm, 1, G, 4 * P, GMEM, gmem) == 0
    assert err(set_region, k, vm, 1, G, 4 * P, GMEM, gmem) == errno.EINVAL
    assert err(set_region, k, vm, 1, 2 * G, 4 * P, GMEM, gmem) == errno.EINVAL
    assert set_region(k, vm, 2, 3 * G, 4 * P) == 0
    assert set_region(k, vm, 2, 3 * G, 4 * P) == 0
    assert set_region(k, vm, 2, 4 * G, 4 * P) == 0
    assert set_region(k, vm, 2, 4 * G, 4 * P, K.KVM_MEM_LOG_DIRTY_PAGES) == 0
    assert err(set_region, k, vm, 2, 4 * G, 8 * P) == errno.EINVAL
    assert err(set_region, k, vm, 2, 4 * G, 4 * P, GMEM, gmem, 8 * P) == errno.EINVAL  # add gmem


def test_delete_rules(k, vm):
    """§4.5 step 3.3: size 0 deletes; no slot -> EINVAL; fields other than slot are not
    required to match."""
    assert err(set_region, k, vm, 5, 0, 0) == errno.EINVAL
    gmem = create_gmem(k, vm, 4 * P)
    assert set_region(k, vm, 5, G, 4 * P, GMEM, gmem) == 0
    assert set_region(k, vm, 5, 123 * P, 0, 0, CLOSED_FD, 8 * P) == 0
    assert err(set_region, k, vm, 5, G, 0) == errno.EINVAL


def test_unchecked_padding_and_ignored_fields(k, vm):
    """§7.5 and §4.5 probe table: pad1/pad2 unchecked; without GUEST_MEMFD the gmem fields are
    ignored."""
    gmem = create_gmem(k, vm, 4 * P)
    r = region2(1, G, 4 * P, GMEM, gmem)
    r.pad1 = 0xFFFFFFFF
    r.pad2[0] = r.pad2[13] = (1 << 64) - 1
    assert k.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION2, r) == 0
    assert set_region(k, vm, 2, 2 * G, 4 * P, 0, CLOSED_FD, 3) == 0


def test_offset_rules(k, vm):
    """§4.5 probe table: offset+size > file size, offset == size, 2**62, 2**64-P, 2**63 -> EINVAL."""
    gmem = create_gmem(k, vm, 4 * P)
    for off in (P, 4 * P, 1 << 62, (1 << 64) - P, 1 << 63):
        assert err(set_region, k, vm, 1, G, 4 * P, GMEM, gmem, off) == errno.EINVAL, hex(off)
    assert set_region(k, vm, 1, G, 3 * P, GMEM, gmem, P) == 0


def test_dup_fd_overlap_is_per_file(k, vm):
    """§4.2: binding through a dup'ed fd works; overlap checks apply per file."""
    gmem = create_gmem(k, vm, 8 * P)
    dup = k.dup(gmem)
    assert set_region(k, vm, 1, G, 4 * P, GMEM, dup) == 0
    assert err(set_region, k, vm, 2, 2 * G, 4 * P, GMEM, gmem, 2 * P) == errno.EINVAL
    assert set_region(k, vm, 2, 2 * G, 4 * P, GMEM, gmem, 4 * P) == 0


# --- §7: the two version quirks as profile settings -------------------------------------


def quirk_profile(toggle_rejected, overflow_accepted):
    return dataclasses.replace(kmock.profiles.get("linux-6.18"),
                               gmem_flag_toggle_rejected=toggle_rejected,
                               gmem_bind_offset_overflow_accepted=overflow_accepted)


@pytest.mark.parametrize("rejected", [True, False], ids=["6.18.y", "6.18.0"])
def test_quirk_gmem_flag_toggle(rejected):
    """§7.1: dropping KVM_MEM_GUEST_MEMFD from a gmem slot: 6.18.y EINVAL; v6.18.0 accepted
    as a FLAGS_ONLY change (then the slot is a plain slot: deletable, re-settable)."""
    with kmock.Kernel(profile=quirk_profile(rejected, True)) as k:
        _, vm = create_vm(k)
        gmem = create_gmem(k, vm, 4 * P)
        assert set_region(k, vm, 1, G, 4 * P, GMEM, gmem) == 0
        if rejected:
            assert err(set_region, k, vm, 1, G, 4 * P, 0) == errno.EINVAL
            assert err(set_region, k, vm, 1, G, 4 * P, GMEM, gmem) == errno.EINVAL
        else:
            assert set_region(k, vm, 1, G, 4 * P, 0) == 0
            assert set_region(k, vm, 1, G, 4 * P, 0) == 0  # now identical plain params: no-op
        # either way adding GUEST_MEMFD back is EINVAL (immutable / first rule), delete works
        assert err(set_region, k, vm, 1, G, 4 * P, GMEM, gmem) == errno.EINVAL
        assert set_region(k, vm, 1, G, 0) == 0
        assert set_region(k, vm, 2, G, 4 * P, GMEM, gmem) == 0  # the range is free again


@pytest.mark.parametrize("accepted", [True, False], ids=["6.18", "later"])
def test_quirk_bind_offset_overflow(accepted):
    """§7.2: offset 0x7ffffffffffff000 size P: 6.18 accepts it (offset + size wraps to a
    negative loff_t); later kernels say EINVAL. Offsets >= 2**63 are EINVAL in both."""
    with kmock.Kernel(profile=quirk_profile(True, accepted)) as k:
        _, vm = create_vm(k)
        gmem = create_gmem(k, vm, 4 * P)
        off = 0x7FFFFFFFFFFFF000
        if accepted:
            assert set_region(k, vm, 1, G, P, GMEM, gmem, off) == 0
            assert set_region(k, vm, 1, G, 0) == 0
        else:
            assert err(set_region, k, vm, 1, G, P, GMEM, gmem, off) == errno.EINVAL
        assert err(set_region, k, vm, 1, G, P, GMEM, gmem, 1 << 63) == errno.EINVAL
        # offset + size == 2**63 exactly: also a negative loff_t
        if accepted:
            assert set_region(k, vm, 1, G, 2 * P, GMEM, gmem, off - P) == 0
        else:
            assert err(set_region, k, vm, 1, G, 2 * P, GMEM, gmem, off - P) == errno.EINVAL


@pytest.mark.parametrize("rejected,accepted", [(a, b) for a in (True, False) for b in (True, False)])
def test_quirks_are_independent(rejected, accepted):
    """Each §7 setting only changes its own behaviour."""
    with kmock.Kernel(profile=quirk_profile(rejected, accepted)) as k:
        _, vm = create_vm(k)
        gmem = create_gmem(k, vm, 4 * P)
        assert (errno_or_0(set_region, k, vm, 1, G, P, GMEM, gmem, 0x7FFFFFFFFFFFF000) == 0) \
            == accepted
        assert set_region(k, vm, 2, 2 * G, P, GMEM, gmem, 0) == 0
        assert (errno_or_0(set_region, k, vm, 2, 2 * G, P, 0) == errno.EINVAL) == rejected

