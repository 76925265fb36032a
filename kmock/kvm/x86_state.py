"""The state behind the x86 vCPU ioctls (kmock.kvm.x86_vcpu, kmock.kvm.x86_msr): the
per-host settings (probed on the host profile, else :data:`DEFAULTS_618`), CPUID
look-ups, and :class:`X86State`, one per vCPU, created on its first state ioctl (its
values then are those of kvm_arch_vcpu_create + kvm_vcpu_reset) and kept in a weak map
beside the vCPU. docs/vcpu-state.md.
"""

import errno
import time
import weakref

from ..errors import oserror
from ..uapi import kvm as K
from ..uapi import x86 as X
from .attached import Attached

U64 = (1 << 64) - 1

#: Linux 6.18 on a VMX host (no TSC scaling, no AMX): the defaults of profiles that
#: probe nothing. The MSR lists are those of the 6.18.44 probe host.
DEFAULTS_618 = {
    "msr_index_list": (
        0x174, 0x175, 0x176, 0xC0000081, 0xC0000083, 0xC0000102, 0xC0000084, 0xC0000082,
        0x10, 0x277, 0xC0010117, 0x3A, 0x48, 0x122, 0x1D9, 0x1DB, 0x1DC, 0x1DD, 0x1DE,
        0x12, 0x11, 0x4B564D01, 0x4B564D00, 0x4B564D02, 0x4B564D03, 0x4B564D04,
        0x4B564D06, 0x4B564D07, 0x3B, 0x6E0, 0x10A, 0x345, 0x1A0, 0x17A, 0x17B, 0x34,
        0xCE, 0x140, 0xC001011F, 0x1FC, 0x8B, 0xC0010015, 0x4B564D05),
    "msr_feature_list": (0x8B, 0x10A, 0x345, 0xCE),
    #: KVM_GET_MSRS on /dev/kvm of the feature MSRs: a new vCPU's ARCH_CAPABILITIES
    #: (kvm_get_arch_capabilities) and PERF_CAPABILITIES come from here
    "msr_feature_values": ((0x10A, 0x400000000C08E0EB),),
    #: KVM_GET_MSRS on /dev/kvm of every feature MSR (kvm_get_feature_msr: the host's
    #: microcode revision, ARCH_CAPABILITIES, PERF_CAPABILITIES, PLATFORM_INFO)
    "msr_feature_dev_values": ((0x8B, 0x100000000), (0x10A, 0x400000000C08E0EB),
                               (0x345, 0), (0xCE, 0x80000000)),
    #: kvm_vcpu_reset / kvm_arch_vcpu_create: MSR_IA32_CR_PAT = MSR_IA32_CR_PAT_DEFAULT,
    #: MISC_ENABLE fast-string, PLATFORM_INFO CPUID-faulting, KVM_POLL_CONTROL 1
    "msr_init": ((0x277, 0x0007040600070406), (0x1A0, 1),
                 (0xCE, 0x80000000), (0x4B564D05, 1)),
    "tsc_khz": 2100000,
    #: KVM_GET_CLOCK's flags while the VM uses the master clock (__get_kvmclock):
    #: TSC_STABLE | REALTIME | HOST_TSC with the TSC as host clocksource; 0 when the
    #: host clocksource is not the TSC (no master clock)
    "kvmclock_flags": 0xE,
    "tsc_control": False,
    #: a host-initiated MSR_IA32_TSC write moves the guest TSC (kvm_synchronize_tsc);
    #: False on the PVM probe host, whose guests read the host TSC
    "tsc_writable": True,
    #: what a host-initiated read of MSR_AMD64_TSC_RATIO gives, or None when it is not
    #: served (a VMX host); the PVM probe host reads the default ratio 1 << 32, as an SVM
    #: host does without TSC scaling for the guest (kmock.kvm.x86_msr, TSC_RATIO)
    "tsc_ratio_msr": None,
    #: KVM_SET_SREGS(2) keeps CR0.PG outside long mode (32-bit and PAE paging); False on
    #: the PVM probe host, which drops it (its guests run in long mode only)
    "legacy_paging": True,
    #: KVM_GET_XSAVE of a new vCPU: fcw 0x37f, mxcsr 0x1f80, mxcsr_mask 0xffff
    "xsave_init": ((0, b"\x7f\x03"), (24, b"\x80\x1f\x00\x00\xff\xff")),
}


def settings(profile):
    s = getattr(profile, "x86_vcpu", None)
    return s if s else DEFAULTS_618


# --- CPUID look-ups ------------------------------------------------------------------------


def cpuid_entry(entries, fn, index=0):
    for e in entries:
        if e[0] == fn and (e[1] == index or not e[2] & 1):  # KVM_CPUID_FLAG_SIGNIFCANT_INDEX
            return e
    return None


def cpuid_entry_of(entries, fn):
    """kvm_find_cpuid_entry (index KVM_CPUID_INDEX_NOT_SIGNIFICANT): the first entry of
    function ``fn``, whatever its index and flags (cpuid_entry2_find)."""
    for e in entries:
        if e[0] == fn:
            return e
    return None


def cpuid_has(entries, fn, index, reg, bit):
    e = cpuid_entry(entries, fn, index)
    return bool(e and e[3 + reg] >> bit & 1)


EAX, EBX, ECX, EDX = range(4)

#: __cr4_reserved_bits (arch/x86/kvm/x86.h): CR4 bit -> the CPUID features allowing it
_CR4_FEATURES = {
    11: ((7, 0, ECX, 2),),               # UMIP
    12: ((7, 0, ECX, 16),),              # LA57
    13: ((1, 0, ECX, 5),),               # VMXE
    16: ((7, 0, EBX, 0),),               # FSGSBASE
    17: ((1, 0, ECX, 17),),              # PCIDE
    18: ((1, 0, ECX, 26),),              # OSXSAVE
    20: ((7, 0, EBX, 7),),               # SMEP
    21: ((7, 0, EBX, 20),),              # SMAP
    22: ((7, 0, ECX, 3),),               # PKE
    23: ((7, 0, ECX, 7), (7, 0, EDX, 20)),  # CET: SHSTK or IBT
    28: ((7, 1, EAX, 26),),              # LAM_SUP
}
#: the CR4 bits that depend on a CPUID feature
CR4_FEATURE_BITS = tuple(sorted(_CR4_FEATURES))
#: CR4_RESERVED_BITS' complement without the feature bits: VME..OSXMMEXCPT
_CR4_ALWAYS = (1 << 11) - 1


def cr4_features(entries):
    """The CR4 bits whose CPUID features ``entries`` has, plus the always-valid ones."""
    allowed = _CR4_ALWAYS
    for bit, feats in _CR4_FEATURES.items():
        if any(cpuid_has(entries, *f) for f in feats):
            allowed |= 1 << bit
    return allowed


def cr4_reserved(st):
    """__kvm_is_valid_cr4's two masks: cr4_reserved_bits, from the host CPU
    (boot_cpu_data: the profile's ``cr4_allowed``, probed on the host profile, else the
    features of the supported CPUID), and vcpu->arch.cr4_guest_rsvd_bits, which stays 0
    until kvm_vcpu_after_set_cpuid computes it from the guest's CPUID (as capped by
    KVM's, guest_cpu_cap_has). The profile setting ``cr4_guest_rsvd`` False (probed: the
    PVM host) leaves the guest's CPUID out."""
    host = st.cr4_allowed
    reserved = U64 & ~host
    if st.cpuid_set and st.cr4_guest_rsvd:
        reserved |= U64 & ~(cr4_features(st.cpuid) & cr4_features(st.supported))
    return reserved


def virt_addr_bits(supported):
    """max_host_virt_addr_bits(): 57 when KVM supports LA57, else 48 (the width
    is_noncanonical_msr_address checks MSR writes against)."""
    return 57 if cpuid_has(supported, 7, 0, ECX, 16) else 48


def guest_maxphyaddr(guest):
    """cpuid_query_maxphyaddr: leaf 0x80000008 EAX[7:0] if the guest has it, else 36."""
    e = cpuid_entry(guest, 0x80000000)
    if e is None or e[3] < 0x80000008:
        return 36
    e = cpuid_entry(guest, 0x80000008)
    return e[3] & 0xFF if e else 36


def supported_xcr0(supported):
    e = cpuid_entry(supported, 0xD, 0)
    return (e[3] | e[6] << 32) if e else 1


def guest_supported_xcr0(st):
    """vcpu->arch.guest_supported_xcr0 (cpuid_get_supported_xcr0): the guest's CPUID leaf
    0xD.0 within KVM's supported XCR0; 0 while the guest has no leaf 0xD."""
    e = cpuid_entry(st.cpuid, 0xD, 0)
    return (e[3] | e[6] << 32) & supported_xcr0(st.supported) if e else 0


# --- the stored state ------------------------------------------------------------------------

_GPRS = [name for name, _ in K.kvm_regs._fields_]


def _seg(base, limit, selector, type_, s):
    return X.kvm_segment(base=base, limit=limit, selector=selector, type=type_, present=1, s=s)


def host_tsc(khz):
    return time.monotonic_ns() * khz // 1_000_000


def queue_nmi(st):
    """kvm_inject_nmi, folded at once as process_nmi folds it (at the next
    KVM_GET_VCPU_EVENTS or entry): nmi_pending + 1, at most 2, or 1 while NMIs are masked
    or one is injected. Callers: KVM_NMI and an NMI the in-kernel LAPIC accepts."""
    limit = 1 if st.nmi_masked or st.nmi_injected else 2
    st.nmi_pending = min(st.nmi_pending + 1, limit)


class X86State:
    """The register state of one x86 vCPU (struct kvm_vcpu_arch, in part)."""

    def __init__(self, vcpu):
        profile = vcpu.vm.kernel.profile
        s = settings(profile)
        self.supported = profile.cpuid
        self.cpuid = ()
        # CR0 = X86_CR0_NW | X86_CR0_CD | X86_CR0_ET; APIC_BASE = APIC_DEFAULT_PHYS_BASE |
        # MSR_IA32_APICBASE_ENABLE, BSP for kvm->arch.bsp_vcpu_id
        self._reset_registers(0x60000010, 0xFEE00000 | 0x800 | (0x100 if vcpu.id == 0 else 0))
        sr = self.sregs
        #: the base the LAPIC page (kmock.kvm.x86_lapic, made on first use) was reset with
        self.reset_apic_base = sr.apic_base
        self.lapic = None
        #: vcpu->arch.tpr_access_reporting (KVM_TPR_ACCESS_REPORTING)
        self.tpr_access_reporting = False
        #: the MMU's PAE PDPTRs (KVM_GET/SET_SREGS2; kvm_pdptr_read / kvm_pdptr_write)
        self.pdptrs = [0, 0, 0, 0]
        self.legacy_paging = s.get("legacy_paging", True)
        self.cpuid_set = False  # kvm_vcpu_after_set_cpuid has run
        self.cr4_allowed = s.get("cr4_allowed") or cr4_features(profile.cpuid)
        self.cr4_guest_rsvd = s.get("cr4_guest_rsvd", True)
        self.rflags_kept = s.get("rflags_kept", U64)
        #: KVM_SET_VCPU_EVENTS' interrupt shadow: KVM_X86_SHADOW_INT_MOV_SS | _STI on VMX
        self.shadow_mask = s.get("shadow_mask", 3)
        #: CONFIG_KVM_SMM (x86 defconfig: y)
        self.kvm_smm = s.get("kvm_smm", True)
        self.va_bits = virt_addr_bits(profile.cpuid)
        self.mp_state = X.KVM_MP_STATE_RUNNABLE  # no in-kernel LAPIC in kmock
        # struct kvm_queued_exception, the queued interrupt, NMI and SMM state
        self.exception = {"injected": 0, "pending": 0, "nr": 0, "has_error_code": 0,
                          "error_code": 0, "has_payload": 0, "payload": 0}
        self.interrupt = (0, 0, 0)  # injected, nr, soft
        self.shadow = 0
        self.nmi_injected = self.nmi_pending = self.nmi_masked = 0
        self.smm = self.smi_pending = self.smm_inside_nmi = 0
        self.triple_fault_pending = 0  # KVM_REQ_TRIPLE_FAULT
        #: apic->sipi_vector (KVM_SET_VCPU_EVENTS' VALID_SIPI_VECTOR) and the KVM_APIC_SIPI
        #: bit of apic->pending_events (KVM_SET_MP_STATE SIPI_RECEIVED), which
        #: kmock.kvm.x86_vcpu.accept_events consumes
        self.sipi_vector = 0
        self.sipi_pending = False
        #: the KVM_APIC_INIT bit of apic->pending_events (KVM_SET_VCPU_EVENTS' latched_init)
        self.init_pending = False
        #: vcpu->arch.pending_external_vector: the vector KVM_INTERRUPT queued on a split-
        #: irqchip VM (None: none); kmock's guest never acknowledges the ExtINT [kmock]
        self.pending_external_vector = None
        #: vcpu->arch.pv_cpuid.enforce (KVM_CAP_ENFORCE_PV_FEATURE_CPUID); stored only: the
        #: scripted guest makes no PV MSR access for it to refuse
        self.pv_cpuid_enforce = 0
        #: vcpu->guest_debug and the debug registers of KVM_SET_GUEST_DEBUG (stored only)
        self.guest_debug = 0
        self.guest_debug_regs = (0,) * 8
        self.db = [0, 0, 0, 0]
        self.dr6 = 0xFFFF0FF0  # DR6_ACTIVE_LOW
        self.dr7 = 0x400  # DR7_FIXED_1
        self.xcr0 = 1  # XFEATURE_MASK_FP
        from . import x86_vm  # (it imports this module)

        # kvm_arch_vcpu_create: kvm_set_tsc_khz(vcpu, kvm->arch.default_tsc_khz), which
        # records the rate even when it then fails (no TSC scaling, a slower rate)
        self.tsc_khz = x86_vm.state(vcpu.vm).default_tsc_khz
        self.tsc_offset = 0  # the guest TSC is the host's at creation
        self.msrs = dict(s["msr_init"])
        self.msrs.update(s.get("msr_feature_values", ()))
        self.feature_values = dict(s.get("msr_feature_values", ()))
        self.xsave_size = max(4096, vcpu.vm.kernel.caps.get(X.KVM_CAP_XSAVE2, 0) or 0)
        init = bytearray(self.xsave_size)
        for off, data in s["xsave_init"]:
            init[off:off + len(data)] = data
        self.xsave_init = bytes(init)
        #: the kernel's fpstate buffer (GET_FPU reads it raw) and its XSTATE_BV
        self.fpstate = bytearray(init)
        self.xfeatures = 0
        self.sigmask = None
        #: KVM_KVMCLOCK_CTRL raised PVCLOCK_GUEST_STOPPED for the next pvclock update
        self.pvclock_stopped = False

    # RESET and INIT

    def _reset_registers(self, cr0, apic_base):
        """kvm_vcpu_reset's registers: RDX = CPUID.1.EAX of the guest (0x600 while there is
        none); vmx_vcpu_reset: RIP 0xfff0, RFLAGS bit 1, the real-mode segments; the other
        GPRs, CR2-CR4, CR8, EFER and the descriptor tables 0; CR0 and APIC_BASE given."""
        self.regs = K.kvm_regs()
        e = cpuid_entry(self.cpuid, 1, 0)
        self.regs.rdx = e[3] if e else 0x600
        self.regs.rip = 0xFFF0
        self.regs.rflags = 0x2
        sr = self.sregs = X.kvm_sregs()
        sr.cs = _seg(0xFFFF0000, 0xFFFF, 0xF000, 0xB, 1)
        for name in ("ds", "es", "fs", "gs", "ss"):
            setattr(sr, name, _seg(0, 0xFFFF, 0, 0x3, 1))
        sr.tr = _seg(0, 0xFFFF, 0, 0xB, 0)
        sr.ldt = _seg(0, 0xFFFF, 0, 0x2, 0)
        sr.gdt.limit = sr.idt.limit = 0xFFFF
        sr.cr0 = cr0
        sr.apic_base = apic_base

    def init_event(self):
        """kvm_vcpu_reset(vcpu, init_event=true), for the state kmock keeps: the registers
        as at creation except APIC_BASE (kept) and CR0's CD and NW (kept: CR0 = ET | the
        old NW/CD); the debug registers reset; the queued exception, interrupt and NMIs and
        the interrupt shadow cleared (their vector numbers stay); the MSRs, XCR0 and the
        TSC kept. Probed on this project's 6.18 host (conformance ``x86_init_event``)."""
        self._reset_registers(0x10 | (self.sregs.cr0 & 0x60000000), self.sregs.apic_base)
        self.db = [0, 0, 0, 0]
        self.dr6 = 0xFFFF0FF0  # DR6_ACTIVE_LOW
        self.dr7 = 0x400  # DR7_FIXED_1
        self.exception = dict(self.exception, injected=0, pending=0, has_payload=0,
                              payload=0)
        self.interrupt = (0, self.interrupt[1], 0)
        self.shadow = 0
        self.nmi_injected = self.nmi_pending = 0
        self.smi_pending = 0
        self.triple_fault_pending = 0

    # TSC

    def tsc(self):
        return (host_tsc(self.tsc_khz) + self.tsc_offset) & U64

    def set_tsc(self, value):
        self.tsc_offset = value - host_tsc(self.tsc_khz)


#: VM -> kvm->arch.wall_clock
WALL_CLOCKS = weakref.WeakKeyDictionary()

#: ``state(vcpu)``: the vCPU's X86State (made at its first use)
state = Attached(X86State)


def vcpu_of(f):
    f.vm.check_caller()
    return f.vcpu


def protected(vcpu):
    """x86.c's ``has_protected_state && guest_state_protected`` check: EINVAL. Called
    after the caller check and after a SET's argument was read (kvm_vcpu_ioctl copies
    it in before the arch handler runs), before anything is written."""
    vt = vcpu.vm.vmtype
    if vt.has_protected_state and vt.has_vcpu_state_hooks and vt.guest_state_protected(vcpu):
        raise oserror(errno.EINVAL)


def fpu_hidden(vcpu):
    """x86.c's ``fpstate_is_confidential`` check: EINVAL when the VM has protected state,
    else True (the handler returns 0 doing nothing; a GET copies out zeros)."""
    vt = vcpu.vm.vmtype
    if not (vt.has_vcpu_state_hooks and vt.fpu_confidential(vcpu)):
        return False
    if vt.has_protected_state:
        raise oserror(errno.EINVAL)
    return True


def has_run(vcpu):
    """kvm_vcpu_has_run (last_vmentry_cpu != -1): KVM_RUN entered the guest at least once,
    also when the guest only halted in the kernel and the call ended on a signal."""
    return vcpu.entered


def canonical(v, bits=48):
    top = v >> (bits - 1)
    return top == 0 or top == (U64 >> (bits - 1))


def apic_base_ok(st, value):
    """kvm_apic_set_base (host-initiated): reserved bits (above MAXPHYADDR, 0x2ff, x2APIC
    without the CPUID bit) and the invalid mode (x2APIC enabled, xAPIC disabled) fail."""
    if value == st.sregs.apic_base:
        return True
    reserved = (U64 << guest_maxphyaddr(st.cpuid)) & U64 | 0x2FF
    if not cpuid_has(st.cpuid, 1, 0, ECX, 21):
        reserved |= 0x400
    if value & reserved:
        return False
    return not (value & 0x400 and not value & 0x800)
