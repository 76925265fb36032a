"""KVM_X86_SET_MSR_FILTER (kmock.kvm.x86_vm.vm_set_msr_filter) on profile linux-6.18.

The errno and check order are x86.c's kvm_vm_ioctl_set_msr_filter / kvm_add_msr_filter
(6.18), confirmed on a 6.18.44 host by the conformance scenario x86_vm_msr_filter; these
tests pin what the scenario cannot see: the filter kept, and a failed call changing
nothing.
"""

import ctypes
import errno

from kmock.kvm import x86_vm as X
from kmock.uapi import kvm as K
from kmock.uapi import x86 as X86

from ._util import create_vm, err

READ, WRITE, DENY = X86.KVM_MSR_FILTER_READ, X86.KVM_MSR_FILTER_WRITE, X86.KVM_MSR_FILTER_DEFAULT_DENY


def _filter(flags, *ranges):
    """A kvm_msr_filter; each range (flags, nmsrs, base, bitmap bytes or a raw pointer).
    Returns (struct, the buffers it points at: keep them alive)."""
    flt = X86.kvm_msr_filter(flags=flags)
    keep = []
    for i, (rflags, nmsrs, base, bits) in enumerate(ranges):
        if isinstance(bits, int):
            ptr = bits
        else:
            buf = ctypes.create_string_buffer(bytes(bits), max(len(bits), 8))
            keep.append(buf)
            ptr = ctypes.addressof(buf)
        flt.ranges[i] = X86.kvm_msr_filter_range(flags=rflags, nmsrs=nmsrs, base=base, bitmap=ptr)
    return flt, keep


def test_cap_advertised(k):
    kvm, vm = create_vm(k)
    assert k.ioctl(vm, K.KVM_CHECK_EXTENSION, X86.KVM_CAP_X86_MSR_FILTER) == 1


def test_filter_is_kept_with_its_bitmaps(k):
    _, vm = create_vm(k)
    st = X.state(k.file(vm).vm)
    assert st.msr_filter is None
    flt, keep = _filter(DENY, (READ | WRITE, 16, 0xC0000080, b"\x05\x80"),
                        (0, 0, 0, 0),  # an empty range is skipped, even with a NULL bitmap
                        (WRITE, 1, 0x10, b"\x01"))
    assert k.ioctl(vm, X86.KVM_X86_SET_MSR_FILTER, flt) == 0
    f = st.msr_filter
    assert f.default_allow is False
    # BITS_TO_LONGS(nmsrs) longs of each bitmap are copied: 8 bytes for 16 or 1 MSR
    assert f.ranges == ((READ | WRITE, 0xC0000080, 16, b"\x05\x80" + bytes(6)),
                        (WRITE, 0x10, 1, b"\x01" + bytes(7)))


def test_failed_call_keeps_the_old_filter(k):
    _, vm = create_vm(k)
    st = X.state(k.file(vm).vm)
    good, keep = _filter(0, (READ, 8, 0, b"\xff"))
    assert k.ioctl(vm, X86.KVM_X86_SET_MSR_FILTER, good) == 0
    before = st.msr_filter
    # range 0 valid, range 1 unreadable: EFAULT after range 0 was read, nothing replaced
    bad, keep2 = _filter(DENY, (WRITE, 8, 0, b"\x00"), (READ, 1, 0, 8))
    assert err(k.ioctl, vm, X86.KVM_X86_SET_MSR_FILTER, bad) == errno.EFAULT
    bad2, keep3 = _filter(0, (READ, 8, 0, b"\x00"), (READ, X86.KVM_MSR_FILTER_MAX_BITMAP_SIZE * 8 + 1, 0, b""))
    assert err(k.ioctl, vm, X86.KVM_X86_SET_MSR_FILTER, bad2) == errno.EINVAL
    assert st.msr_filter is before


def test_allow_with_no_range_clears_the_filter(k):
    _, vm = create_vm(k)
    st = X.state(k.file(vm).vm)
    flt, keep = _filter(DENY, (READ, 8, 0, b"\x01"))
    k.ioctl(vm, X86.KVM_X86_SET_MSR_FILTER, flt)
    assert k.ioctl(vm, X86.KVM_X86_SET_MSR_FILTER, X86.kvm_msr_filter()) == 0
    assert st.msr_filter.default_allow is True and st.msr_filter.ranges == ()
