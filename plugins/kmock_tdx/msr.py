"""Which MSRs KVM_GET_MSRS / KVM_SET_MSRS may reach on a TD vCPU (arch/x86/kvm/vmx/tdx.c,
6.18: vt_get_msr/vt_set_msr -> tdx_get_msr/tdx_set_msr). The TDX module owns every other
MSR: KVM returns 1 for it (not KVM_MSR_RET_UNSUPPORTED, so ignore_msrs and the
host-initiated read-as-zero do not apply) and the ioctl's loop stops there.

- ``tdx_has_emulated_msr``: the MSRs KVM emulates for a TD (listed below).
- ``tdx_is_read_only_msr``: APIC_BASE, EFER and FEAT_CTL are never written.
- MCG_EXT_CTL: a host-initiated read always works; a write only with LMCE_EN or 0.

The x2APIC range keeps 6.18's ranges as written (``X2APIC_MSR(APIC_ISR + APIC_ISR_NR)``
is X2APIC_MSR(APIC_ISR): only ISR0, TMR0 and IRR0 are excluded with TPR, PPR and EOI);
"KVM: TDX: Fix APIC MSR ranges in tdx_has_emulated_msr()" (2026) excludes all eight of
each. tdx_get_msr answers FEAT_CTL itself: FEAT_CTL_LOCKED, plus FEAT_CTL_LMCE_ENABLED
when vcpu->arch.mcg_cap has MCG_LMCE_P (``get_msrs`` patches the core's answer).
"""

import struct

from kmock.kernel_util import read_user_at, write_user_at
from kmock.kvm import x86_msr
from kmock.kvm.x86_mce import mce
from kmock.kvm.x86_state import state as x86_state

MSR_IA32_APICBASE = 0x1B
MSR_IA32_FEAT_CTL = 0x3A
MSR_IA32_MCG_EXT_CTL = 0x4D0
MSR_EFER = 0xC0000080
MCG_EXT_CTL_LMCE_EN = 1

#: tdx_has_emulated_msr's single MSRs: UCODE_REV, ARCH_CAPABILITIES, MTRRcap, PLATFORM_INFO,
#: MISC_FEATURES_ENABLES, MCG_CAP/STATUS/CTL, MISC_ENABLE, POWER_CTL, CR_PAT, MTRRdefType,
#: TSC_DEADLINE, APIC_BASE, EFER, FEAT_CTL, MCG_EXT_CTL, MSR_KVM_POLL_CONTROL
_SINGLE = frozenset((0x8B, 0x10A, 0xFE, 0xCE, 0x140, 0x179, 0x17A, 0x17B, 0x1A0, 0x1FC,
                     0x277, 0x2FF, 0x6E0, MSR_IA32_APICBASE, MSR_EFER, MSR_IA32_FEAT_CTL,
                     MSR_IA32_MCG_EXT_CTL, 0x4B564D05))
#: [first, last] ranges: MTRR physBase0..fix4K_F8000, MC0_CTL2..MC31_CTL2 and
#: MC0_CTL..MCx_CTL(KVM_MAX_MCE_BANKS = 32) - 1 (CTL/STATUS/ADDR/MISC of 32 banks)
_RANGES = ((0x200, 0x26F), (0x280, 0x29F), (0x400, 0x47F))
#: x2APIC registers the CPU virtualizes (TPR, PPR, EOI, ISR0, TMR0, IRR0 in 6.18)
_X2APIC_VIRTUALIZED = frozenset((0x808, 0x80A, 0x80B, 0x810, 0x818, 0x820))
_READ_ONLY = frozenset((MSR_IA32_APICBASE, MSR_EFER, MSR_IA32_FEAT_CTL))


def has_emulated_msr(index):
    """tdx_has_emulated_msr."""
    if index in _SINGLE:
        return True
    if 0x800 <= index <= 0x8FF:
        return index not in _X2APIC_VIRTUALIZED
    return any(first <= index <= last for first, last in _RANGES)


def allowed(index, write, data=0):
    """Whether a host-initiated tdx_get_msr (``write`` False) or tdx_set_msr reaches KVM's
    common code (or, for MCG_EXT_CTL, succeeds)."""
    if index == MSR_IA32_MCG_EXT_CTL:
        return not (write and data & ~MCG_EXT_CTL_LMCE_EN)
    if write and index in _READ_ONLY:
        return False
    return has_emulated_msr(index)


FEAT_CTL_LOCKED = 1 << 0
FEAT_CTL_LMCE_ENABLED = 1 << 20
MCG_LMCE_P = 1 << 27
_ENTRY = struct.Struct("<IIQ")  # struct kvm_msr_entry


def feat_ctl(vcpu):
    """tdx_get_msr(MSR_IA32_FEAT_CTL)."""
    v = FEAT_CTL_LOCKED
    if mce(x86_state(vcpu)).mcg_cap & MCG_LMCE_P:
        v |= FEAT_CTL_LMCE_ENABLED
    return v


def get_msrs(f, arg):
    """KVM_GET_MSRS on a TD vCPU: the core's msr_io (with ``allowed`` as the vendor
    filter), then FEAT_CTL's entries among those read get tdx_get_msr's value."""
    done = x86_msr.get_msrs(f, arg)
    if done:
        raw = bytearray(read_user_at(arg, 8, done * _ENTRY.size))
        changed = False
        for i in range(done):
            index, pad, _data = _ENTRY.unpack_from(raw, i * _ENTRY.size)
            if index == MSR_IA32_FEAT_CTL:
                _ENTRY.pack_into(raw, i * _ENTRY.size, index, pad, feat_ctl(f.vcpu))
                changed = True
        if changed:
            write_user_at(arg, 8, bytes(raw))
    return done
