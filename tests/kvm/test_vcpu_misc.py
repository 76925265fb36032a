"""kmock.kvm.x86_vcpu_misc: KVM_INTERRUPT, the vCPU TSC-offset attribute, KVM_TRANSLATE,
the legacy KVM_SET_CPUID, x86 ONE_REG and KVM_GET_REG_LIST (Linux 6.18 x86.c)."""

import ctypes
import errno


from kmock.kvm import x86_state, x86_vcpu_misc
from kmock.uapi import kvm as K
from kmock.uapi import x86 as X

from ._util import create_vm
from .test_x86_vcpu_state import err, run_hlt


def vm_vcpu(k, mode="none"):
    """A VM with no irqchip, the in-kernel one ("irqchip") or the split one, and vCPU 0."""
    _, vm = create_vm(k)
    if mode == "irqchip":
        k.ioctl(vm, K.KVM_CREATE_IRQCHIP, 0)
    elif mode == "split":
        e = K.kvm_enable_cap(cap=K.KVM_CAP_SPLIT_IRQCHIP)
        e.args[0] = 24
        k.ioctl(vm, K.KVM_ENABLE_CAP, e)
    return vm, k.ioctl(vm, K.KVM_CREATE_VCPU, 0)


def events(k, v):
    ev = X.kvm_vcpu_events()
    k.ioctl(v, X.KVM_GET_VCPU_EVENTS, ev)
    return ev


# --- KVM_INTERRUPT ---------------------------------------------------------------------------


def test_interrupt_without_irqchip_is_queued_and_replaced(k):
    _, v = vm_vcpu(k)
    assert err(k.ioctl, v, X.KVM_INTERRUPT, X.kvm_interrupt(256)) == errno.EINVAL
    assert (events(k, v).interrupt.injected, events(k, v).interrupt.nr) == (0, 0)
    for irq in (0x20, 0xFF):
        assert k.ioctl(v, X.KVM_INTERRUPT, X.kvm_interrupt(irq)) == 0
        ev = events(k, v)
        assert (ev.interrupt.injected, ev.interrupt.nr, ev.interrupt.soft) == (1, irq, 0)
    s = X.kvm_sregs()
    k.ioctl(v, X.KVM_GET_SREGS, s)
    assert list(s.interrupt_bitmap) == [0, 0, 0, 1 << 63]


def test_interrupt_in_kernel_pic_is_enxio(k):
    _, v = vm_vcpu(k, "irqchip")
    assert err(k.ioctl, v, X.KVM_INTERRUPT, X.kvm_interrupt(0x20)) == errno.ENXIO
    assert err(k.ioctl, v, X.KVM_INTERRUPT, X.kvm_interrupt(256)) == errno.EINVAL
    assert events(k, v).interrupt.injected == 0


def test_interrupt_split_irqchip_one_pending_extint(k):
    vm, v = vm_vcpu(k, "split")
    vcpu = k.vm(vm).vcpus[0]
    assert x86_state.state(vcpu).pending_external_vector is None
    assert k.ioctl(v, X.KVM_INTERRUPT, X.kvm_interrupt(0x30)) == 0
    assert err(k.ioctl, v, X.KVM_INTERRUPT, X.kvm_interrupt(0x31)) == errno.EEXIST
    assert x86_state.state(vcpu).pending_external_vector == 0x30
    assert events(k, v).interrupt.injected == 0


def test_interrupt_bad_pointer(k):
    _, v = vm_vcpu(k)
    assert err(k.ioctl, v, X.KVM_INTERRUPT, 8) == errno.EFAULT


# --- the TSC offset attribute ----------------------------------------------------------------


def attr(ptr, group=X.KVM_VCPU_TSC_CTRL, a=X.KVM_VCPU_TSC_OFFSET, flags=0):
    return X.kvm_device_attr(flags=flags, group=group, attr=a, addr=ptr)


def test_tsc_attr_has_only_the_offset(k):
    _, v = vm_vcpu(k)
    val = ctypes.c_uint64()
    p = ctypes.addressof(val)
    assert k.ioctl(v, X.KVM_HAS_DEVICE_ATTR, attr(p, flags=7)) == 0
    for bad in (attr(p, group=1), attr(p, a=1)):
        for req in (X.KVM_HAS_DEVICE_ATTR, X.KVM_GET_DEVICE_ATTR, X.KVM_SET_DEVICE_ATTR):
            assert err(k.ioctl, v, req, bad) == errno.ENXIO
    for req in (X.KVM_GET_DEVICE_ATTR, X.KVM_SET_DEVICE_ATTR):
        assert err(k.ioctl, v, req, attr(8)) == errno.EFAULT
        assert err(k.ioctl, v, req, 8) == errno.EFAULT


def test_tsc_offset_set_get_and_guest_tsc(k):
    vm, v = vm_vcpu(k)
    st = x86_state.state(k.vm(vm).vcpus[0])
    val = ctypes.c_uint64(1 << 50)
    assert k.ioctl(v, X.KVM_SET_DEVICE_ATTR, attr(ctypes.addressof(val))) == 0
    out = ctypes.c_uint64()
    assert k.ioctl(v, X.KVM_GET_DEVICE_ATTR, attr(ctypes.addressof(out))) == 0
    assert out.value == 1 << 50
    host = x86_state.host_tsc(st.tsc_khz)
    buf = bytearray(24)
    buf[0:4] = (1).to_bytes(4, "little")
    buf[8:12] = (0x10).to_bytes(4, "little")
    assert k.ioctl(v, X.KVM_GET_MSRS, buf) == 1
    tsc = int.from_bytes(buf[16:24], "little")
    assert 0 <= tsc - (host + (1 << 50)) < st.tsc_khz * 1000  # within a second
    # a negative offset wraps as the kernel's u64 does
    val.value = (1 << 64) - 5
    k.ioctl(v, X.KVM_SET_DEVICE_ATTR, attr(ctypes.addressof(val)))
    k.ioctl(v, X.KVM_GET_DEVICE_ATTR, attr(ctypes.addressof(out)))
    assert out.value == (1 << 64) - 5


def test_tsc_offset_on_a_host_whose_guests_read_the_host_tsc(k, monkeypatch):
    _, v = vm_vcpu(k)
    s = dict(x86_state.DEFAULTS_618, tsc_writable=False)
    monkeypatch.setattr(x86_vcpu_misc, "settings", lambda profile: s)
    val = ctypes.c_uint64(1 << 40)
    assert k.ioctl(v, X.KVM_SET_DEVICE_ATTR, attr(ctypes.addressof(val))) == 0
    out = ctypes.c_uint64(5)
    k.ioctl(v, X.KVM_GET_DEVICE_ATTR, attr(ctypes.addressof(out)))
    assert out.value == 0


# --- KVM_TRANSLATE ---------------------------------------------------------------------------


def translate(k, v, la):
    tr = X.kvm_translation(linear_address=la)
    assert k.ioctl(v, X.KVM_TRANSLATE, tr) == 0
    return tr.physical_address, tr.valid, tr.writeable, tr.usermode


def test_translate_paging_off_is_identity(k):
    _, v = vm_vcpu(k)
    assert translate(k, v, 0x1234) == (0x1234, 1, 1, 0)
    assert translate(k, v, 0xFFFF_FFFF_0000_0000) == (0xFFFF_FFFF_0000_0000, 1, 1, 0)
    assert translate(k, v, (1 << 64) - 1) == ((1 << 64) - 1, 0, 1, 0)
    assert err(k.ioctl, v, X.KVM_TRANSLATE, 8) == errno.EFAULT


def test_translate_paging_on_answers_unmapped(k):
    vm, v = vm_vcpu(k)
    st = x86_state.state(k.vm(vm).vcpus[0])
    st.sregs.cr0 |= 1 << 31 | 1
    assert translate(k, v, 0x1000) == ((1 << 64) - 1, 0, 1, 0)


# --- KVM_SET_CPUID ---------------------------------------------------------------------------


def legacy(entries, nent=None):
    buf = bytearray(8 + 24 * len(entries))
    buf[0:4] = (len(entries) if nent is None else nent).to_bytes(4, "little")
    for i, e in enumerate(entries):
        buf[8 + 24 * i:32 + 24 * i] = bytes(X.kvm_cpuid_entry(*e))
    return buf


def get_cpuid2(k, v):
    out = bytearray(8 + 40 * 8)
    out[0:4] = (8).to_bytes(4, "little")
    k.ioctl(v, X.KVM_GET_CPUID2, out)
    n = int.from_bytes(out[0:4], "little")
    return [tuple(getattr(K.kvm_cpuid_entry2.from_buffer_copy(out, 8 + 40 * i), f)
                  for f in ("function", "index", "flags", "eax", "ebx", "ecx", "edx"))
            for i in range(n)]


def test_set_cpuid_converts_to_cpuid2(k):
    _, v = vm_vcpu(k)
    assert k.ioctl(v, X.KVM_SET_CPUID, legacy([(0xD, 1, 2, 3, 4, 77), (7, 9, 9, 9, 9)])) == 0
    assert get_cpuid2(k, v) == [(0xD, 0, 0, 1, 2, 3, 4), (7, 0, 0, 9, 9, 9, 9)]


def test_set_cpuid_checks_are_set_cpuid2s(k):
    _, v = vm_vcpu(k)
    assert err(k.ioctl, v, X.KVM_SET_CPUID, legacy([], 257)) == errno.E2BIG
    assert err(k.ioctl, v, X.KVM_SET_CPUID, 0) == errno.EFAULT
    bad = legacy([(0x80000000, 0x80000008), (0x80000008, 40 << 8)])
    assert err(k.ioctl, v, X.KVM_SET_CPUID, bad) == errno.EINVAL
    assert get_cpuid2(k, v) == []  # nothing half-changed
    table = legacy([(0, 1, 0, 0, 0)])
    k.ioctl(v, X.KVM_SET_CPUID, table)
    run_hlt(k, v)
    assert k.ioctl(v, X.KVM_SET_CPUID, table) == 0  # the same table after KVM_RUN
    assert err(k.ioctl, v, X.KVM_SET_CPUID, legacy([(0, 2, 0, 0, 0)])) == errno.EINVAL


# --- ONE_REG and KVM_GET_REG_LIST ------------------------------------------------------------


def one(k, v, req, rid, value=None):
    val = ctypes.c_uint64(value or 0)
    k.ioctl(v, req, X.kvm_one_reg(rid, ctypes.addressof(val)))
    return val.value


def test_one_reg_msrs(k):
    _, v = vm_vcpu(k)
    pat = X.KVM_X86_REG_MSR(0x277)
    assert one(k, v, X.KVM_GET_ONE_REG, pat) == 0x0007040600070406
    one(k, v, X.KVM_SET_ONE_REG, pat, 0x0606060606060606)
    assert one(k, v, X.KVM_GET_ONE_REG, pat) == 0x0606060606060606
    for rid in (X.KVM_X86_REG_MSR(0x12345678), X.KVM_X86_REG_KVM(X.KVM_REG_GUEST_SSP),
                X.KVM_X86_REG_KVM(1), pat | 1 << 40, pat | 1 << 48, pat & ~(0xFF << 32),
                pat & ~X.KVM_REG_SIZE_MASK, 0x6030000000000000, 0):
        for req in (X.KVM_GET_ONE_REG, X.KVM_SET_ONE_REG):
            assert err(one, k, v, req, rid) == errno.EINVAL, hex(rid)
    for req in (X.KVM_GET_ONE_REG, X.KVM_SET_ONE_REG):
        assert err(k.ioctl, v, req, X.kvm_one_reg(pat, 8)) == errno.EFAULT


def reg_list(k, v, n):
    buf = (ctypes.c_uint64 * 3)(n, 0, 0)
    k.ioctl(v, X.KVM_GET_REG_LIST, buf)
    return list(buf)


def shstk_profile_cpuid(k):
    """The profile's CPUID with SHSTK (7.0 ECX bit 7) in leaf 7."""
    out = []
    for e in k.profile.cpuid:
        if e[0] == 7 and e[1] == 0:
            e = e[:5] + (e[5] | 1 << 7,) + e[6:]
        out.append(e)
    return tuple(out)


def test_reg_list_empty_without_shstk(k):
    _, v = vm_vcpu(k)
    assert reg_list(k, v, 0) == [0, 0, 0]
    assert reg_list(k, v, 2) == [0, 0, 0]
    assert err(k.ioctl, v, X.KVM_GET_REG_LIST, 8) == errno.EFAULT


def test_reg_list_and_guest_ssp_with_shstk(k, monkeypatch):
    vm, v = vm_vcpu(k)
    st = x86_state.state(k.vm(vm).vcpus[0])
    monkeypatch.setattr(st, "supported", shstk_profile_cpuid(k))
    st.cpuid = ((7, 0, 1, 0, 0, 1 << 7, 0),)
    ssp = X.KVM_X86_REG_KVM(X.KVM_REG_GUEST_SSP)
    buf = (ctypes.c_uint64 * 2)(0, 0)
    assert err(k.ioctl, v, X.KVM_GET_REG_LIST, buf) == errno.E2BIG
    assert buf[0] == 1  # the count is written back before E2BIG
    assert reg_list(k, v, 2) == [1, ssp, 0]
    one(k, v, X.KVM_SET_ONE_REG, ssp, 0x7000)
    assert one(k, v, X.KVM_GET_ONE_REG, ssp) == 0x7000

