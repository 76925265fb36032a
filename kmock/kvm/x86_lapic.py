"""The in-kernel local APIC's register page (struct kvm_lapic ``regs``): KVM_GET/SET_LAPIC.

A VM with an in-kernel irqchip (KVM_CREATE_IRQCHIP or KVM_CAP_SPLIT_IRQCHIP, both put the
LAPIC in the kernel: ``lapic_in_kernel``) has one page per vCPU, made at vCPU creation by
kvm_create_lapic + kvm_lapic_reset (arch/x86/kvm/lapic.c). kmock stores the page; an
interrupt the LAPIC accepts (KVM_SIGNAL_MSI, an MSI route, the I/O APIC) sets its IRR and
TMR bits (:func:`accept_vector`), but the scripted guest never takes it (it stays in the
IRR), no timer runs (TMCCT reads 0) and no IPI is sent. Sources per function below;
docs/vcpu-state.md.
"""

import errno

from ..errors import oserror
from ..kernel_util import copy_from_user, copy_to_user
from ..uapi import x86 as X
from . import x86_vm
from .x86_state import ECX, cpuid_has, state, vcpu_of

APIC_ID, APIC_LVR, APIC_TASKPRI, APIC_PROCPRI = 0x20, 0x30, 0x80, 0xA0
APIC_LDR, APIC_DFR, APIC_SPIV, APIC_ISR = 0xD0, 0xE0, 0xF0, 0x100
APIC_TMR, APIC_IRR = 0x180, 0x200
APIC_ICR, APIC_ICR2, APIC_LVTT, APIC_LVT0, APIC_TMCCT = 0x300, 0x310, 0x320, 0x350, 0x390
#: APIC_VERSION (lapic.c): an integrated APIC, version 0x14
APIC_VERSION = 0x14
U64 = (1 << 64) - 1
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
        #: apic->vapic_addr (KVM_SET_VAPIC_ADDR): the guest-physical address of the
        #: VAPIC page QEMU's kvmvapic option ROM uses; 0 = none
        self.vapic_addr = 0
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


# --- the APIC map (kvm->arch.apic_map), for interrupt delivery (kmock.kvm.x86_irq) ------------


def present(vcpu):
    """kvm_apic_present: an in-kernel LAPIC, hardware-enabled in the APIC base."""
    return in_kernel(vcpu) and bool(state(vcpu).sregs.apic_base & MSR_IA32_APICBASE_ENABLE)


def enabled(vcpu):
    """apic_enabled: present and software-enabled (SVR bit 8)."""
    return present(vcpu) and bool(get(lapic(vcpu).regs, APIC_SPIV) & 0x100)


def apic_id(vcpu):
    """kvm_xapic_id (ID bits 31:24) or, in x2APIC mode, kvm_x2apic_id (the whole ID)."""
    vid = get(lapic(vcpu).regs, APIC_ID)
    return vid if x2apic_mode(vcpu) else vid >> 24


def broadcast_id(vcpu):
    """kvm_apic_broadcast: 0xff in xAPIC mode, 0xffffffff in x2APIC mode."""
    return 0xFFFFFFFF if x2apic_mode(vcpu) else 0xFF


def match_logical(vcpu, mda):
    """kvm_apic_match_logical_addr: broadcast, else the LDR against the destination in
    the DFR's model (flat or cluster; x2APIC: cluster in bits 31:16)."""
    if mda == broadcast_id(vcpu):
        return True
    regs = lapic(vcpu).regs
    ldr = get(regs, APIC_LDR)
    if x2apic_mode(vcpu):
        return ldr >> 16 == mda >> 16 and bool(ldr & mda & 0xFFFF)
    lid = ldr >> 24
    dfr = get(regs, APIC_DFR)
    if dfr == 0xFFFFFFFF:  # APIC_DFR_FLAT
        return bool(lid & mda)
    if dfr == 0x0FFFFFFF:  # APIC_DFR_CLUSTER
        return lid >> 4 == mda >> 4 and bool(lid & mda & 0xF)
    return False


def recalculate_apic_map(vm, exclude=None):
    """kvm_recalculate_apic_map: the present LAPICs of the VM's vCPUs (but ``exclude``:
    a vCPU being created, not yet visible to kvm_for_each_vcpu) become the map. Observed
    on the 6.18.44 host (conformance ``x86_irq_line``): the map is rebuilt when a vCPU is
    created (without it), at every KVM_SET_LAPIC, and when a vCPU's APIC base changes
    its enable or x2APIC bit; nothing else adds a vCPU to it."""
    s = x86_vm.state(vm)
    vcpus = [v for v in list(vm.vcpus.values()) if v is not exclude]
    for v in vcpus:
        lapic(v)  # synchronise each with its APIC base first
    with s.lock:
        s.apic_map = tuple(v for v in vcpus if present(v))
        s.apic_map_dirty = False


def apic_map(vm):
    """The vCPUs of the APIC map, or None before the first rebuild (the slow path)."""
    s = x86_vm.state(vm)
    for v in list(vm.vcpus.values()):
        lapic(v)  # an APIC base change since the last look marks the map dirty
    if s.apic_map_dirty:
        recalculate_apic_map(vm)
    return s.apic_map


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
    if (old ^ base) & (MSR_IA32_APICBASE_ENABLE | X2APIC_ENABLE):
        x86_vm.state(vcpu.vm).apic_map_dirty = True  # kvm_lapic_set_base
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


def get_cr8(vcpu):
    """kvm_lapic_get_cr8: CR8 is the TPR's priority class (TPR bits 7:4)."""
    return (get(lapic(vcpu).regs, APIC_TASKPRI) & 0xF0) >> 4


def set_cr8(vcpu, cr8):
    """kvm_lapic_set_tpr from kvm_set_cr8: TPR = CR8 << 4 (its low bits cleared), then
    apic_update_ppr. Probed on this project's 6.18 host (conformance ``x86_init_event``)."""
    ap = lapic(vcpu)
    put(ap.regs, APIC_TASKPRI, (cr8 & 0xF) << 4)
    put(ap.regs, APIC_PROCPRI, _ppr(ap.regs, ap.isr_count))


def init_reset(vcpu):
    """kvm_lapic_reset(init_event=true), for an INIT the vCPU accepts: the register page as
    :func:`reset` makes it, except that the xAPIC ID is kept (only RESET writes it); the APIC
    base is untouched. A page never made yet is made reset at its first use anyway."""
    ap = state(vcpu).lapic
    if ap is None:
        return
    kept_id = get(ap.regs, APIC_ID)
    ap.regs[:] = bytes(len(ap.regs))
    ap.isr_count = 0
    reset(vcpu, ap.regs)
    put(ap.regs, APIC_ID, kept_id)


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


def _vector_bit(vector):
    """(register offset, bit) of ``vector`` in a 256-bit register (ISR, TMR, IRR): eight
    32-bit words 16 bytes apart (VEC_POS / REG_POS in lapic.h)."""
    return 0x10 * (vector >> 5), 1 << (vector & 31)


def accept_vector(vcpu, vector, level_triggered):
    """__apic_accept_irq for a fixed or lowest-priority interrupt this LAPIC accepted
    (asserted): the vector's TMR bit follows the trigger mode, then its IRR bit is set
    (kvm_lapic_set_irr: no APICv, as on the probe host; with APICv the PIR holds it and
    KVM_GET_LAPIC's sync_pir_to_irr shows the same). A vector below 16 is set too (no
    illegal-vector check on this path: probed). Conformance scenario x86_lapic_irr."""
    page = lapic(vcpu).regs
    off, bit = _vector_bit(vector & 0xFF)
    tmr = get(page, APIC_TMR + off)
    put(page, APIC_TMR + off, tmr | bit if level_triggered else tmr & ~bit)
    put(page, APIC_IRR + off, get(page, APIC_IRR + off) | bit)


def pending_eoi(vcpu, vector):
    """kvm_apic_pending_eoi: ``vector`` is in the ISR or the IRR."""
    page = lapic(vcpu).regs
    off, bit = _vector_bit(vector & 0xFF)
    return bool((get(page, APIC_ISR + off) | get(page, APIC_IRR + off)) & bit)


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
    recomputed (kvm_apic_set_version, apic_update_ppr); the APIC map is rebuilt."""
    ap = lapic(vcpu)
    page = bytearray(data)
    old_spiv = get(ap.regs, APIC_SPIV)
    put(ap.regs, APIC_SPIV, get(page, APIC_SPIV))
    if (old_spiv ^ get(page, APIC_SPIV)) & 0x100:
        x86_vm.state(vcpu.vm).apic_map_dirty = True  # apic_set_spiv: sw-enable changed
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
    recalculate_apic_map(vcpu.vm)


# --- KVM_TPR_ACCESS_REPORTING and KVM_SET_VAPIC_ADDR (x86.c kvm_arch_vcpu_ioctl) ------------


def tpr_access_reporting(f, arg):
    """vcpu_ioctl_tpr_access_reporting: the struct (EFAULT), flags != 0 EINVAL, then
    vcpu->arch.tpr_access_reporting = !!enabled and the struct is copied back as read.
    No in-kernel LAPIC is needed (conformance ``x86_vcpu_tpr_vapic``). Recorded only:
    the scripted guest makes no TPR access for a KVM_EXIT_TPR_ACCESS."""
    vcpu = vcpu_of(f)
    tac = copy_from_user(arg, X.kvm_tpr_access_ctl)
    if tac.flags:
        raise oserror(errno.EINVAL)
    state(vcpu).tpr_access_reporting = bool(tac.enabled)
    copy_to_user(arg, tac)
    return 0


def set_vapic_addr(f, arg):
    """KVM_SET_VAPIC_ADDR: EINVAL without an in-kernel LAPIC (before the copy), EFAULT,
    then kvm_lapic_set_vapic_addr: each page of the 4 bytes at a non-zero address must
    lie in a memslot (kvm_gpc_activate; EINVAL otherwise). Probed on the 6.18.44 host:
    the memory need not be mapped yet, and 4 bytes across a page, or across two
    adjacent memslots, are accepted; across a memslot's end into no memslot, EINVAL."""
    vcpu = vcpu_of(f)
    ap = lapic(vcpu)
    va = copy_from_user(arg, X.kvm_vapic_addr)
    addr = va.vapic_addr
    vm = vcpu.vm
    if addr and (vm.lookup_memslot(addr >> 12) is None
                 or vm.lookup_memslot(((addr + 3) & U64) >> 12) is None):
        raise oserror(errno.EINVAL)
    ap.vapic_addr = addr
    return 0
