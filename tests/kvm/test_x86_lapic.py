"""KVM_GET/SET_LAPIC (arch/x86/kvm/x86.c kvm_arch_vcpu_ioctl; lapic.c kvm_lapic_reset,
kvm_apic_get_state, kvm_apic_set_state, kvm_apic_state_fixup)."""

import errno

import pytest

from kmock.kvm import x86_lapic
from kmock.testing.conformance_vcpu import msrs_buf
from kmock.uapi import kvm as K
from kmock.uapi import x86 as X

from .test_x86_vcpu_state import err


def vm_with(k, mode, x2apic_api=0):
    kvm = k.open("/dev/kvm", 2)
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, 0)
    if mode == "kernel":
        k.ioctl(vm, K.KVM_CREATE_IRQCHIP, 0)
    elif mode == "split":
        e = K.kvm_enable_cap(cap=121)
        e.args[0] = 24
        k.ioctl(vm, K.KVM_ENABLE_CAP, e)
    if x2apic_api:
        e = K.kvm_enable_cap(cap=129)
        e.args[0] = x2apic_api
        k.ioctl(vm, K.KVM_ENABLE_CAP, e)
    return vm


def get(k, v):
    s = X.kvm_lapic_state()
    k.ioctl(v, X.KVM_GET_LAPIC, s)
    return bytearray(bytes(s))


def reg(page, off):
    return x86_lapic.get(page, off)


def set_(k, v, page):
    return k.ioctl(v, X.KVM_SET_LAPIC, X.kvm_lapic_state.from_buffer_copy(bytes(page)))


def to_x2apic(k, v):
    e = K.kvm_cpuid_entry2(function=1, ecx=1 << 21)
    buf = bytearray(8 + len(bytes(e)))
    buf[0:4] = (1).to_bytes(4, "little")
    buf[8:] = bytes(e)
    k.ioctl(v, X.KVM_SET_CPUID2, buf)
    assert k.ioctl(v, X.KVM_SET_MSRS, msrs_buf([(0x1B, 0xFEE00C00)])) == 1


def test_no_irqchip_is_einval_before_the_copy(k):
    vm = vm_with(k, "none")
    v = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    assert err(k.ioctl, v, X.KVM_GET_LAPIC, X.kvm_lapic_state()) == errno.EINVAL
    assert err(k.ioctl, v, X.KVM_SET_LAPIC, 8) == errno.EINVAL


@pytest.mark.parametrize("mode", ["kernel", "split"])
def test_reset_page(k, mode):
    vm = vm_with(k, mode)
    v0, v3 = (k.ioctl(vm, K.KVM_CREATE_VCPU, i) for i in (0, 3))
    p0, p3 = get(k, v0), get(k, v3)
    assert reg(p0, 0x20) == 0 and reg(p3, 0x20) == 3 << 24
    for p in (p0, p3):
        assert reg(p, 0x30) == 0x50014 and reg(p, 0xE0) == 0xFFFFFFFF and reg(p, 0xF0) == 0xFF
        assert [reg(p, 0x320 + 0x10 * i) for i in (0, 1, 2, 4, 5)] == [0x10000] * 5
    assert reg(p0, 0x350) == 0x700 and reg(p3, 0x350) == 0x10000  # LINT0 ExtINT on the BSP


def test_round_trip_recomputes_version_and_ppr(k):
    vm = vm_with(k, "kernel")
    v = k.ioctl(vm, K.KVM_CREATE_VCPU, 1)
    page = get(k, v)
    x86_lapic.put(page, 0x30, 0x1234)
    x86_lapic.put(page, 0x80, 0x20)
    x86_lapic.put(page, 0x120, 1 << 17)  # vector 0x51 in service
    x86_lapic.put(page, 0x390, 77)  # TMCCT: no timer runs
    x86_lapic.put(page, 0x3E0, 0xB)
    assert set_(k, v, page) == 0
    got = get(k, v)
    assert reg(got, 0x30) == 0x50014 and reg(got, 0x390) == 0 and reg(got, 0x3E0) == 0xB
    assert reg(got, 0xA0) == 0x20  # the ISR count of the reset page was 0
    set_(k, v, page)
    assert reg(get(k, v), 0xA0) == 0x50


def test_x2apic_ids(k):
    vm = vm_with(k, "split")
    v = k.ioctl(vm, K.KVM_CREATE_VCPU, 5)
    to_x2apic(k, v)
    page = get(k, v)
    assert reg(page, 0x20) == 5 << 24 and reg(page, 0xD0) == 0x20
    assert reg(page, 0x30) == 0x1050014  # directed EOI: x2APIC CPUID, split irqchip
    x86_lapic.put(page, 0x20, 9)
    x86_lapic.put(page, 0x310, 7)
    assert set_(k, v, page) == 0
    got = get(k, v)
    assert reg(got, 0x20) == 5 << 24 and reg(got, 0x310) == 7


def test_x2apic_32bit_ids_mismatch_is_einval_after_svr(k):
    vm = vm_with(k, "split", x2apic_api=1)
    v = k.ioctl(vm, K.KVM_CREATE_VCPU, 2)
    to_x2apic(k, v)
    page = get(k, v)
    assert reg(page, 0x20) == 2
    bad = bytearray(page)
    x86_lapic.put(bad, 0x20, 3)
    x86_lapic.put(bad, 0xF0, 0x1FF)
    x86_lapic.put(bad, 0x80, 0x30)
    assert err(set_, k, v, bad) == errno.EINVAL
    got = get(k, v)
    assert reg(got, 0xF0) == 0x1FF and reg(got, 0x80) == 0  # apic_set_spiv ran first
    assert set_(k, v, page) == 0


def test_bad_pointers(k):
    vm = vm_with(k, "kernel")
    v = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    assert err(k.ioctl, v, X.KVM_GET_LAPIC, 8) == errno.EFAULT
    assert err(k.ioctl, v, X.KVM_SET_LAPIC, 8) == errno.EFAULT
