"""RFC v2 KVM_GMEM_CONVERT_SHARED/PRIVATE on profile gmem-convert-rfc-v2 (reference §1).

Creation flags (§1.2), caps 240-242, the validation order (§1.3), the EAGAIN
error_offset (folio start, unclamped, §1.4), huge folio split/merge (§1.5), and the
selftest guest_memfd_conversions_test.c of patch 12/51 (§1.6).
"""

import pytest

from kmock.uapi import gmem as G
from kmock.uapi import kvm as K

from ._util import (HUGETLB, INIT_PRIVATE, PRIVATE, SUPPORT_SHARED, U64, G1, M2, P, RfcV2,
                    err, errno, native_faults, native_readable, sigbus_at)

HUGE_2M = SUPPORT_SHARED | HUGETLB | G.GUESTMEM_HUGETLB_FLAG_2MB
HUGE_1G = SUPPORT_SHARED | HUGETLB | G.GUESTMEM_HUGETLB_FLAG_1GB


def create(env_or_k, vm, size, flags):
    return env_or_k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD,
                          K.kvm_create_guest_memfd(size=size, flags=flags))


@pytest.fixture
def vm(krfc):
    import os
    kvm = krfc.open("/dev/kvm", os.O_RDWR)
    return kvm, krfc.ioctl(kvm, K.KVM_CREATE_VM, K.KVM_X86_SW_PROTECTED_VM)


# --- numbers, caps, creation flags ---------------------------------------------------------


def test_numbers():
    assert G.KVM_GMEM_CONVERT_SHARED == 0xC040AF41
    assert G.KVM_GMEM_CONVERT_PRIVATE == 0xC040AF42
    assert (SUPPORT_SHARED, INIT_PRIVATE, HUGETLB) == (1, 2, 4)
    assert G.GUESTMEM_HUGETLB_FLAG_1GB == 30 << 58


def test_caps(krfc, vm):
    kvm, v = vm
    for cap in (240, 241, 242):
        assert krfc.ioctl(kvm, K.KVM_CHECK_EXTENSION, cap) == 1
        assert krfc.ioctl(v, K.KVM_CHECK_EXTENSION, cap) == 1
    assert krfc.ioctl(kvm, K.KVM_CHECK_EXTENSION, 250) == 0


@pytest.mark.parametrize("flags", [INIT_PRIVATE, INIT_PRIVATE | HUGETLB])
def test_init_private_requires_support_shared(krfc, vm, flags):
    assert err(create, krfc, vm[1], M2, flags) == errno.EINVAL


@pytest.mark.parametrize("flags,size,ok", [
    (SUPPORT_SHARED, 4 * P, True),
    (SUPPORT_SHARED | INIT_PRIVATE, 4 * P, True),
    (HUGETLB, M2, True),  # 0 = the default huge page size (2M on x86)
    (HUGETLB, 4 * P, False),  # not a multiple of the huge page size
    (HUGETLB, 3 * M2, True),
    (HUGETLB | G.GUESTMEM_HUGETLB_FLAG_2MB, 2 * M2, True),
    (HUGETLB | G.GUESTMEM_HUGETLB_FLAG_2MB, M2 + P, False),
    (HUGE_1G, G1, True),
    (HUGE_1G, M2, False),
    (HUGE_1G | INIT_PRIVATE, 2 * G1, True),
    (SUPPORT_SHARED | G.GUESTMEM_HUGETLB_FLAG_2MB, M2, False),  # size bits without HUGETLB
    (1 << 3, 4 * P, False),  # unknown flag
])
def test_creation_flags(krfc, vm, flags, size, ok):
    if ok:
        assert create(krfc, vm[1], size, flags) > 0
    else:
        assert err(create, krfc, vm[1], size, flags) == errno.EINVAL


def test_huge_folio_size_in_snapshot(krfc):
    env = RfcV2(krfc, size=2 * G1, flags=HUGE_1G | INIT_PRIVATE, bind=False)
    s = env.gmem_snapshot()
    assert s["folio_pages"] == G1 // P and s["huge_folios"] == 2 and s["split_folios"] == 0


# --- validation order (§1.3) ---------------------------------------------------------------


@pytest.mark.parametrize("to_private", [False, True])
def test_error_offset_nonzero_first(krfc, to_private):
    """Rule 1 beats rule 2: error_offset != 0 with size 0 is EINVAL, not a no-op."""
    env = RfcV2(krfc)
    assert env.convert(to_private, 0, 0, error_offset=P)[0] == errno.EINVAL
    assert env.convert(to_private, 0, P, error_offset=1)[0] == errno.EINVAL


@pytest.mark.parametrize("offset", [0, 1, 4 * P, 1 << 40, U64])
def test_size_zero_is_a_no_op_before_range_and_alignment(krfc, offset):
    env = RfcV2(krfc)
    assert env.convert(True, offset, 0)[0] == 0
    assert env.gmem_snapshot()["private_pages"] == 0


@pytest.mark.parametrize("offset,size", [
    (U64 - P + 1, P),  # overflow
    (5 * P, P),  # offset > i_size
    (3 * P, 2 * P),  # end > i_size
    (4 * P, P),  # offset == i_size, end > i_size
    (5 * P + 1, 3),  # range and alignment: range first (both EINVAL)
    (1, P),  # unaligned offset
    (0, P + 1),  # unaligned size
])
def test_range_and_alignment_einval(krfc, offset, size):
    env = RfcV2(krfc)
    assert env.convert(True, offset, size)[0] == errno.EINVAL
    assert env.convert(False, offset, size)[0] == errno.EINVAL


def test_reserved_not_checked(krfc):
    env = RfcV2(krfc)
    assert env.convert(True, 0, P, reserved={0: 1, 4: U64})[0] == 0
    assert env.gmem_snapshot()["private_pages"] == 1


def test_validation_before_eagain(krfc):
    """A pinned page does not turn a validation EINVAL into EAGAIN."""
    env = RfcV2(krfc)
    m = env.mmap()
    pin = krfc.gup_pin(m, 0, 4 * P)
    assert env.convert(True, 0, 4 * P, error_offset=P)[0] == errno.EINVAL
    assert env.convert(True, 1, P)[0] == errno.EINVAL
    assert env.convert(True, 0, 8 * P)[0] == errno.EINVAL
    assert env.convert(True, 0, 0)[0] == 0
    assert env.convert(True, 0, 4 * P)[0] == errno.EAGAIN
    pin.unpin()


def test_whole_range_offset_equal_size_boundary(krfc):
    env = RfcV2(krfc)
    assert env.convert(True, 0, 4 * P)[0] == 0
    assert env.convert(False, 3 * P, P)[0] == 0


# --- EAGAIN and error_offset (§1.4) ----------------------------------------------------------


def test_eagain_error_offset_4k(krfc):
    env = RfcV2(krfc, size=8 * P)
    m = env.mmap()
    pin = krfc.gup_pin(m, 5 * P, P)
    r, c = env.convert(True, 0, 8 * P)
    assert r == errno.EAGAIN and c.error_offset == 5 * P
    r, c = env.convert(True, 5 * P, P)
    assert r == errno.EAGAIN and c.error_offset == 5 * P
    env.to_private(0, 5 * P)  # pages before the pinned one
    assert env.convert(False, 0, 8 * P)[0] == 0  # to-shared runs no check
    pin.unpin()
    env.to_private(0, 8 * P)


def test_eagain_error_offset_is_the_huge_folio_start_unclamped(krfc):
    """A pinned page in an (unsplit) huge folio refuses the whole folio; error_offset is
    the folio's first byte even when that lies before the requested range."""
    env = RfcV2(krfc, size=2 * M2, flags=HUGE_2M)  # all shared, folios unsplit
    m = env.mmap()
    m[M2 + 7 * P] = 1
    pin = krfc.gup_pin(m, M2 + 7 * P, P)
    before = krfc.snapshot()
    for off, size in ((M2 + 3 * P, 2 * P), (M2 + 7 * P, P), (M2 + 100 * P, P), (0, 2 * M2)):
        r, c = env.convert(True, off, size)
        assert r == errno.EAGAIN and c.error_offset == M2, (off, size)
    assert krfc.snapshot() == before
    env.to_private(0, M2)  # the other folio has no pin
    pin.unpin()
    env.to_private(M2, M2)
    assert env.gmem_snapshot()["private_pages"] == 2 * M2 // P


def test_split_folio_pin_outside_range_does_not_block(krfc):
    """After a split (to-shared), the 4K folios outside the range do not count (§1.4:
    the folios filemap_get_folios finds)."""
    env = RfcV2(krfc, size=M2, flags=HUGE_2M | INIT_PRIVATE)
    env.to_shared(0, 4 * P)
    assert env.gmem_snapshot()["split_folios"] == 1
    m = env.mmap()
    pin = krfc.gup_pin(m, 0, P)
    env.to_private(P, 3 * P)
    r, c = env.convert(True, 0, 4 * P)
    assert r == errno.EAGAIN and c.error_offset == 0
    pin.unpin()
    env.to_private(0, P)


# --- huge folios: split and merge (§1.5) --------------------------------------------------


def test_split_on_shared_merge_on_private(krfc):
    env = RfcV2(krfc, size=4 * M2, flags=HUGE_2M | INIT_PRIVATE)
    snap = env.gmem_snapshot
    assert (snap()["huge_folios"], snap()["split_folios"]) == (4, 0)
    env.to_shared(M2 + 5 * P, P)
    assert (snap()["huge_folios"], snap()["split_folios"]) == (3, 1)
    env.to_shared(2 * M2 - P, 2 * P)  # spans folios 1 and 2
    assert (snap()["huge_folios"], snap()["split_folios"]) == (2, 2)
    env.to_private(M2 + 5 * P, P)  # folio 1 still has its last page shared
    assert (snap()["huge_folios"], snap()["split_folios"]) == (2, 2)
    env.to_private(2 * M2, P)  # folio 2: nothing shared any more -> merged
    assert (snap()["huge_folios"], snap()["split_folios"]) == (3, 1)
    env.to_private(2 * M2 - P, P)
    assert (snap()["huge_folios"], snap()["split_folios"]) == (4, 0)
    # the host maps single pages of a split folio
    env.to_shared(3 * M2 + 9 * P, P)
    m = env.mmap()
    assert native_readable(m, 3 * M2 + 9 * P)
    assert native_faults(m, 3 * M2 + 8 * P) and native_faults(m, 3 * M2 + 10 * P)


def test_1g_split_and_merge(krfc):
    env = RfcV2(krfc, size=2 * G1, flags=HUGE_1G | INIT_PRIVATE, bind=False)
    env.to_shared(G1 + 123 * P, P)
    s = env.gmem_snapshot()
    assert (s["huge_folios"], s["split_folios"]) == (1, 1)
    env.to_private(G1, G1)
    s = env.gmem_snapshot()
    assert (s["huge_folios"], s["split_folios"]) == (2, 0)


# --- the selftest of patch 12/51 (§1.6) -----------------------------------------------------


def test_sharing(krfc):
    """Host and guest write and read through conversions in both directions."""
    env = RfcV2(krfc, size=P, flags=SUPPORT_SHARED)
    m = env.mmap()
    m[0:4] = b"host"
    assert env.guest_read(0, 4) == b"host"
    env.to_private(0, P)
    assert sigbus_at(m, 0) == 0
    assert env.guest_read(0, 4) == b"host"
    env.guest_write(0, b"priv")
    env.to_shared(0, P)
    assert m[0:4] == b"priv"
    env.guest_write(0, b"shrd")
    assert m[0:4] == b"shrd"


def test_init_mappable_false(krfc):
    """INIT_PRIVATE: the host gets SIGBUS until CONVERT_SHARED."""
    env = RfcV2(krfc, size=2 * P, flags=SUPPORT_SHARED | INIT_PRIVATE)
    m = env.mmap()
    assert sigbus_at(m, 0) == 0 and sigbus_at(m, P) == P
    assert native_faults(m, 0)
    env.to_shared(0, 2 * P)
    assert m[0:2 * P] == bytes(2 * P)


def test_conversion_before_allocation(krfc):
    env = RfcV2(krfc, size=4 * P)
    env.to_private(0, 4 * P)
    env.to_shared(0, 4 * P)
    assert env.gmem_snapshot()["allocated_pages"] == 0


def test_conversion_if_not_all_folios_allocated(krfc):
    """16 pages, only some faulted in; conversion succeeds."""
    env = RfcV2(krfc, size=16 * P)
    m = env.mmap()
    for i in (0, 3, 9):
        m[i * P] = i + 1
    env.allocate(12 * P, P)
    assert env.gmem_snapshot()["allocated_pages"] == 4
    env.to_private(0, 16 * P)
    env.to_shared(0, 16 * P)
    for i in (0, 3, 9):
        assert m[i * P] == i + 1


@pytest.mark.parametrize("i", [1, 2])
def test_conversions_should_not_affect_surrounding_pages(krfc, i):
    env = RfcV2(krfc, size=4 * P)
    m = env.mmap()
    for j in range(4):
        m[j * P] = 0x40 + j
    env.to_private(i * P, P)
    for j in (i - 1, i + 1):
        assert m[j * P] == 0x40 + j and native_readable(m, j * P)
    assert sigbus_at(m, i * P) == i * P
    env.to_shared(i * P, P)
    assert [m[j * P] for j in range(4)] == [0x40 + j for j in range(4)]


def test_truncate_should_not_change_mappability(krfc):
    """PUNCH_HOLE keeps shareability: a private page stays SIGBUS, a shared page maps."""
    env = RfcV2(krfc, size=4 * P)
    m = env.mmap()
    m[0:4 * P] = b"\x55" * (4 * P)
    env.to_private(P, P)
    env.punch(0, 4 * P)
    assert sigbus_at(m, P) == P and native_faults(m, P)
    assert m[0:P] == bytes(P) and m[2 * P:4 * P] == bytes(2 * P)
    env.to_shared(P, P)
    assert m[P:2 * P] == bytes(P)


def test_conversions_should_fail_if_memory_has_elevated_refcount(krfc):
    env = RfcV2(krfc, size=4 * P)
    m = env.mmap()
    pin = krfc.gup_pin(m, 2 * P, P)
    r, c = env.convert(True, 0, 4 * P)
    assert r == errno.EAGAIN and c.error_offset == 2 * P
    pin.unpin()
    env.to_private(0, 4 * P)


def test_fault_type_independent_of_mem_attributes(krfc):
    """§1.4 (patch 06/51): for a SUPPORT_SHARED gmem the guest's fault type follows the
    gmem shareability, not the VM-level KVM_SET_MEMORY_ATTRIBUTES."""
    from ._util import GPA
    env = RfcV2(krfc, size=2 * P)
    a = K.kvm_memory_attributes(address=GPA, size=2 * P, attributes=PRIVATE, flags=0)
    assert krfc.ioctl(env.vm, K.KVM_SET_MEMORY_ATTRIBUTES, a) == 0
    m = env.mmap()
    env.guest_write(0, b"shared")  # a shared access: the host sees it
    assert m[0:6] == b"shared"
    env.to_private(P, P)
    env.guest_write(P, b"private")
    assert sigbus_at(m, P) == P
    a = K.kvm_memory_attributes(address=GPA, size=2 * P, attributes=0, flags=0)
    krfc.ioctl(env.vm, K.KVM_SET_MEMORY_ATTRIBUTES, a)
    assert env.guest_read(P, 7) == b"private"
