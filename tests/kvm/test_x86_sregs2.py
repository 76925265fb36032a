"""KVM_GET/SET_SREGS2 (arch/x86/kvm/x86.c kvm_arch_vcpu_ioctl, __get_sregs2, __set_sregs2)."""

import ctypes
import errno

import pytest

from kmock.uapi import kvm as K
from kmock.uapi import x86 as X

from .test_x86_vcpu_state import err, new_vcpu

PAE_CR0 = 0x80000011  # PG | ET | PE
PAE_CR4 = 0x20


def get2(k, v):
    s = X.kvm_sregs2()
    k.ioctl(v, X.KVM_GET_SREGS2, s)
    return s


def pae(s, pdptrs=None):
    s.cr0, s.cr4, s.cr3 = PAE_CR0, PAE_CR4, 0x3000
    if pdptrs is not None:
        s.flags = X.KVM_SREGS2_FLAGS_PDPTRS_VALID
        for i, p in enumerate(pdptrs):
            s.pdptrs[i] = p
    return s


def test_new_vcpu_is_sregs_without_bitmap_and_no_pdptrs(k):
    _, _, v = new_vcpu(k)
    s1 = X.kvm_sregs()
    k.ioctl(v, X.KVM_GET_SREGS, s1)
    s2 = get2(k, v)
    off = X.kvm_sregs.interrupt_bitmap.offset
    assert bytes(s2)[:off] == bytes(s1)[:off]
    assert s2.flags == 0 and list(s2.pdptrs) == [0] * 4


def test_cap_is_advertised(k):
    kvm, _, _ = new_vcpu(k)
    assert k.ioctl(kvm, K.KVM_CHECK_EXTENSION, X.KVM_CAP_SREGS2) == 1


def test_pdptrs_round_trip_with_pae_paging(k):
    _, _, v = new_vcpu(k)
    s = pae(get2(k, v), [0x1001, 0x2001, 0x3001, 0xFFFF_0000_0000_0001])
    assert k.ioctl(v, X.KVM_SET_SREGS2, s) == 0
    got = get2(k, v)
    assert got.flags == X.KVM_SREGS2_FLAGS_PDPTRS_VALID
    assert list(got.pdptrs) == [0x1001, 0x2001, 0x3001, 0xFFFF_0000_0000_0001]
    assert (got.cr0, got.cr3, got.cr4) == (PAE_CR0, 0x3000, PAE_CR4)
    # the same state is visible through KVM_GET_SREGS
    s1 = X.kvm_sregs()
    k.ioctl(v, X.KVM_GET_SREGS, s1)
    assert (s1.cr0, s1.cr3, s1.cr4) == (PAE_CR0, 0x3000, PAE_CR4)
    # leaving PAE paging hides them; without the flag (and no memslot at CR3) they stay
    s = get2(k, v)
    s.flags, s.cr0 = 0, 0x60000010
    k.ioctl(v, X.KVM_SET_SREGS2, s)
    assert get2(k, v).flags == 0 and list(get2(k, v).pdptrs) == [0] * 4
    k.ioctl(v, X.KVM_SET_SREGS2, pae(get2(k, v)))
    assert get2(k, v).pdptrs[0] == 0x1001


@pytest.mark.parametrize("flags", [2, 1 << 63, 3])
def test_unknown_flags_are_einval(k, flags):
    _, _, v = new_vcpu(k)
    s = pae(get2(k, v))
    s.flags = flags
    assert err(k.ioctl, v, X.KVM_SET_SREGS2, s) == errno.EINVAL


@pytest.mark.parametrize("cr0,cr4,efer", [(0x60000010, PAE_CR4, 0), (PAE_CR0, 0, 0),
                                          (PAE_CR0, PAE_CR4, 0x500)])
def test_pdptrs_without_pae_paging_are_einval(k, cr0, cr4, efer):
    _, _, v = new_vcpu(k)
    before = bytes(get2(k, v))
    s = pae(get2(k, v), [1, 1, 1, 1])
    s.cr0, s.cr4, s.efer = cr0, cr4, efer
    assert err(k.ioctl, v, X.KVM_SET_SREGS2, s) == errno.EINVAL
    assert bytes(get2(k, v)) == before


def test_sregs_validation_is_shared(k):
    _, _, v = new_vcpu(k)
    before = bytes(get2(k, v))
    s = get2(k, v)
    s.cr0 = 0x80000010  # PG without PE: kvm_is_valid_sregs
    assert err(k.ioctl, v, X.KVM_SET_SREGS2, s) == errno.EINVAL
    s = get2(k, v)
    s.cr8 = 0x10  # kvm_set_cr8 fails, ignored: CR8 keeps its value
    assert k.ioctl(v, X.KVM_SET_SREGS2, s) == 0
    assert get2(k, v).cr8 == 0
    assert bytes(get2(k, v)) == before


def test_set_sregs2_queues_no_interrupt(k):
    """kvm_sregs2 has no interrupt_bitmap: a SET_SREGS2 leaves the queued one alone."""
    _, _, v = new_vcpu(k)
    s1 = X.kvm_sregs()
    k.ioctl(v, X.KVM_GET_SREGS, s1)
    s1.interrupt_bitmap[1] = 1 << 3
    k.ioctl(v, X.KVM_SET_SREGS, s1)
    k.ioctl(v, X.KVM_SET_SREGS2, get2(k, v))
    k.ioctl(v, X.KVM_GET_SREGS, s1)
    assert list(s1.interrupt_bitmap) == [0, 8, 0, 0]


@pytest.mark.parametrize("req", [X.KVM_GET_SREGS2, X.KVM_SET_SREGS2])
def test_bad_pointer_is_efault(k, req):
    _, _, v = new_vcpu(k)
    assert err(k.ioctl, v, req, 8) == errno.EFAULT


def test_numbers_match_the_struct():
    assert ctypes.sizeof(X.kvm_sregs2) == 320
    assert X.KVM_GET_SREGS2 == 0x8140AECC and X.KVM_SET_SREGS2 == 0x4140AECD


def test_pvm_host_setting_drops_pg_outside_long_mode():
    """Profile setting ``legacy_paging`` False (probed on the PVM host): CR0.PG is dropped
    after the checks outside long mode, so no PDPTRs are reported; long mode keeps it."""
    import dataclasses
    from types import MappingProxyType

    import kmock
    from kmock.kvm import x86_state
    from kmock.profiles import LINUX_6_18
    prof = dataclasses.replace(LINUX_6_18, name="pvm-like", x86_vcpu=MappingProxyType(
        dict(x86_state.DEFAULTS_618, legacy_paging=False)))
    with kmock.Kernel(profile=prof) as k:
        _, _, v = new_vcpu(k)
        assert k.ioctl(v, X.KVM_SET_SREGS2, pae(get2(k, v), [1, 2, 3, 4])) == 0
        got = get2(k, v)
        assert (got.cr0, got.flags, list(got.pdptrs)) == (0x11, 0, [0] * 4)
        s = get2(k, v)
        s.cr0, s.cr4, s.efer = PAE_CR0, PAE_CR4, 0x500
        s.cs.l, s.cs.db = 1, 0
        assert k.ioctl(v, X.KVM_SET_SREGS2, s) == 0
        assert get2(k, v).cr0 == PAE_CR0
