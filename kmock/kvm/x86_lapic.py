"""The in-kernel local APIC's register page (struct kvm_lapic ``regs``): KVM_GET/SET_LAPIC.

A VM with an in-kernel irqchip (KVM_CREATE_IRQCHIP or KVM_CAP_SPLIT_IRQCHIP, both put the
LAPIC in the kernel: ``lapic_in_kernel``) has one page per vCPU, made at vCPU creation by
kvm_create_lapic + kvm_lapic_reset (arch/x86/kvm/lapic.c). kmock stores the page only: no
interrupt is delivered, no timer runs (TMCCT reads 0), no IPI is sent. Sources per
function below; docs/vcpu-state.md.
"""

import errno

from ..errors import oserror
from . import x86_vm
from .x86_state import ECX, cpuid_has, state

APIC_ID, APIC_LVR, APIC_TASKPRI, APIC_PROCPRI = 0x20, 0x30, 0x80, 0xA0
APIC_LDR, APIC_DFR, APIC_SPIV, APIC_ISR = 0xD0, 0xE0, 0xF0, 0x100
APIC_ICR, APIC_ICR2, APIC_LVTT, APIC_LVT0, APIC_TMCCT = 0x300, 0x310, 0x320, 0x350, 0x390
#: APIC_VERSION (lapic.c): an integrated APIC, version 0x14
APIC_VERSION = 0x14
#: apic->nr_lvt_entries without MCG_CMCI_P in the guest's mcg_cap (kmock has no
#: KVM_X86_SETUP_MCE): LVTT, THMR, PC, LINT0, LINT1, ERROR
NR_LVT_ENTRIES = 6
APIC_LVR_DIRECTED_EOI = 1 << 24
APIC_LVT_MASKED = 1 << 16
APIC_DM_EXTINT = 0x700  # SET_APIC_DELIVERY_MODE(0, APIC_MODE_EXTINT)
KVM_X86_QUIRK_LINT0_REENABLED = 1 << 0
KVM_X2APIC_API_USE_32BIT_IDS = 1 << 0
MSR_IA32_APICBASE_ENABLE, X2APIC_ENABLE = 1 << 11, 1 << 10


def get(page, reg):
    return int.from_bytes(page[reg:reg + 4], "little")


def put(page, reg, value):
    page[reg:reg + 4] = (value & 0xFFFFFFFF).to_bytes(4, "little")


class Lapic:
    """struct kvm_lapic, the parts the UAPI sees: the register page, and the APIC base
    mode it was last synchronised with (kvm_lapic_set_base's ID updates)."""

    def __init__(self, vcpu):
        self.regs = bytearray(1024)
        self.base = state(vcpu).reset_apic_base
        #: apic->isr_count as apic_update_ppr sees it: 0 after reset, else whether the
        #: ISR of the last KVM_SET_LAPIC had a bit (kvm_apic_update_apicv, no APICv)
        self.isr_count = 0
        reset(vcpu, self.regs)


def in_kernel(vcpu):
    """lapic_in_kernel: the VM had an in-kernel irqchip when the vCPU was created (the
    irqchip cannot be created after vCPUs: kvm_arch_vm_ioctl, KVM_CAP_SPLIT_IRQCHIP)."""
    return x86_vm.state(vcpu.vm).irqchip_in_kernel


def lapic(vcpu):
    """The vCPU's Lapic, synchronised with its APIC base; EINVAL without one (the
    ``!lapic_in_kernel`` check of kvm_arch_vcpu_ioctl KVM_GET/SET_LAPIC)."""
    if not in_kernel(vcpu):
        raise oserror(errno.EINVAL)
    st = state(vcpu)
    ap = st.lapic
    if ap is None:
        ap = st.lapic = Lapic(vcpu)
    _sync_base(vcpu, ap, st.sregs.apic_base)
    return ap


def x2apic_mode(vcpu):
    return bool(state(vcpu).sregs.apic_base & X2APIC_ENABLE)


def x2apic_ldr(vid):
    """kvm_apic_calc_x2apic_ldr: cluster (id >> 4) in bits 31:16, 1 << (id & 0xf)."""
    return (vid >> 4) << 16 | 1 << (vid & 0xF)


def _sync_base(vcpu, ap, base):
    """kvm_apic_set_base's register updates for a base set since the last look
    (KVM_SET_SREGS / KVM_SET_MSRS): hardware enable resets the xAPIC ID to the vCPU id,
    entering x2APIC mode sets the x2APIC ID and LDR (kvm_apic_set_x2apic_id)."""
    old, ap.base = ap.base, base
    if old == base:
        return
    if (old ^ base) & MSR_IA32_APICBASE_ENABLE and base & MSR_IA32_APICBASE_ENABLE:
        put(ap.regs, APIC_ID, vcpu.id << 24)
    if (old ^ base) & X2APIC_ENABLE and base & X2APIC_ENABLE:
        put(ap.regs, APIC_ID, vcpu.id)
        put(ap.regs, APIC_LDR, x2apic_ldr(vcpu.id))


def version(vcpu):
    """kvm_apic_set_version: APIC_VERSION | (nr_lvt_entries - 1) << 16, and directed EOI
    when the guest CPUID has x2APIC and the I/O APIC is not in the kernel (split)."""
    v = APIC_VERSION | (NR_LVT_ENTRIES - 1) << 16
    if (cpuid_has(state(vcpu).cpuid, 1, 0, ECX, 21)
            and x86_vm.state(vcpu.vm).irqchip_mode != "kernel"):
        v |= APIC_LVR_DIRECTED_EOI
    return v


def reset(vcpu, page):
    """kvm_lapic_reset(init_event=false) after vCPU creation: xAPIC ID = vcpu_id << 24,
    every LVT masked, LINT0 ExtINT on the BSP (KVM_X86_QUIRK_LINT0_REENABLED), DFR all
    ones, SVR 0xff (software disabled), everything else 0."""
    vm_state = x86_vm.state(vcpu.vm)
    put(page, APIC_ID, vcpu.id << 24)
    put(page, APIC_LVR, version(vcpu))
    for i in range(NR_LVT_ENTRIES):
        put(page, APIC_LVTT + 0x10 * i, APIC_LVT_MASKED)
    if (vcpu.id == vm_state.bsp_vcpu_id
            and not vm_state.disabled_quirks & KVM_X86_QUIRK_LINT0_REENABLED):
        put(page, APIC_LVT0, APIC_DM_EXTINT)
    put(page, APIC_DFR, 0xFFFFFFFF)
    put(page, APIC_SPIV, 0xFF)


def _fixup(vcpu, page, set_):
    """kvm_apic_state_fixup: in x2APIC mode the ID is the x2APIC ID. With
    KVM_X2APIC_API_USE_32BIT_IDS a SET with another ID is EINVAL; without it the ID is
    reported as id << 24 and a SET's ID ignored. A SET recomputes the LDR; the 64-bit
    ICR (VMX: x2apic_icr_is_split false) is split into ICR/ICR2 for userspace."""
    if not x2apic_mode(vcpu):
        return
    fmt = x86_vm.state(vcpu.vm).x2apic_api & KVM_X2APIC_API_USE_32BIT_IDS
    if fmt:
        if get(page, APIC_ID) != vcpu.id:
            raise oserror(errno.EINVAL)
    else:
        put(page, APIC_ID, vcpu.id if set_ else vcpu.id << 24)
    if set_:
        put(page, APIC_LDR, x2apic_ldr(vcpu.id))
    else:
        put(page, APIC_ICR2, get(page, APIC_ICR + 4))


def _isr_count(page):
    return sum(get(page, APIC_ISR + 0x10 * i).bit_count() for i in range(8))


def _ppr(page, isr_count):
    """apic_update_ppr: TPR if its class is at least the highest in-service vector's,
    else that vector's class. kvm_apic_set_state calls it before kvm_apic_update_apicv
    recounts the ISR, so apic_find_highest_isr sees the previous isr_count: with 0 (no
    vector was in service) the new ISR is not looked at (probed on the host)."""
    tpr = get(page, APIC_TASKPRI)
    isrv = 0
    for i in range(7 if isr_count else -1, -1, -1):
        w = get(page, APIC_ISR + 0x10 * i)
        if w:
            isrv = i * 32 + w.bit_length() - 1
            break
    return tpr & 0xFF if (tpr & 0xF0) >= (isrv & 0xF0) else isrv & 0xF0


def get_state(vcpu):
    """kvm_apic_get_state: a copy of the page, TMCCT = the timer's current count (0: no
    timer runs in kmock), then the fixup."""
    ap = lapic(vcpu)
    page = bytearray(ap.regs)
    put(page, APIC_LVR, version(vcpu))
    put(page, APIC_TMCCT, 0)
    _fixup(vcpu, page, False)
    return bytes(page)


def apic_protected(vcpu):
    """vcpu->arch.apic->guest_apic_protected (TDX: tdx_vcpu_create): KVM_GET/SET_LAPIC are
    EINVAL (kvm_vcpu_ioctl_get_lapic / _set_lapic); the VM type's
    ``guest_apic_protected(vcpu)`` says."""
    vt = vcpu.vm.vmtype
    return vt.has_vcpu_state_hooks and bool(vt.guest_apic_protected(vcpu))


def set_state(vcpu, data):
    """kvm_apic_set_state: SVR is written first (apic_set_spiv; it stays written when the
    fixup then fails), the fixup (EINVAL), the page copied; the version and PPR are
    recomputed (kvm_apic_set_version, apic_update_ppr)."""
    ap = lapic(vcpu)
    page = bytearray(data)
    put(ap.regs, APIC_SPIV, get(page, APIC_SPIV))
    if x2apic_mode(vcpu):
        icr = get(page, APIC_ICR) | get(page, APIC_ICR2) << 32
    _fixup(vcpu, page, True)
    if x2apic_mode(vcpu):
        page[APIC_ICR:APIC_ICR + 8] = icr.to_bytes(8, "little")
    put(page, APIC_LVR, version(vcpu))
    put(page, APIC_PROCPRI, _ppr(page, ap.isr_count))
    put(page, APIC_TMCCT, 0)
    ap.regs[:] = page
    ap.isr_count = _isr_count(page)
