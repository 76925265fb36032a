"""The guest MTRRs of x86 vCPUs, Linux 6.18 arch/x86/kvm/mtrr.c (find_mtrr, kvm_mtrr_valid,
kvm_mtrr_set_msr, kvm_mtrr_get_msr), reached from kvm_set/get_msr_common for
MTRRphysBase_MSR(0) ... MSR_MTRRfix4K_F8000 and MSR_MTRRdefType (reads also MSR_MTRRcap).

KVM only stores them (since 6.9 it no longer honours guest MTRRs): values are checked
and read back; nothing else follows. No guest CPUID gate. Confirmed on the probe host by
the conformance scenario ``x86_mtrr_msrs``; docs/vcpu-state.md.
"""


from .attached import Attached
from .x86_state import guest_maxphyaddr

#: KVM_NR_VAR_MTRR (arch/x86/include/asm/kvm_host.h)
KVM_NR_VAR_MTRR = 8
MSR_MTRRcap = 0xFE
MSR_MTRRdefType = 0x2FF
MTRR_PHYS_BASE0 = 0x200
MSR_MTRRfix64K_00000 = 0x250
MSR_MTRRfix16K_80000, MSR_MTRRfix16K_A0000 = 0x258, 0x259
MSR_MTRRfix4K_C0000, MSR_MTRRfix4K_F8000 = 0x268, 0x26F
#: kvm_mtrr_get_msr: SMRR 0, WC 1, FIX 1, VCNT KVM_NR_VAR_MTRR
MTRRCAP_VALUE = 0x500 | KVM_NR_VAR_MTRR

#: the MSRs find_mtrr has storage for (var base/mask pairs, the 11 fixed, deftype)
STORED = frozenset(
    list(range(MTRR_PHYS_BASE0, MTRR_PHYS_BASE0 + 2 * KVM_NR_VAR_MTRR))
    + [MSR_MTRRfix64K_00000, MSR_MTRRfix16K_80000, MSR_MTRRfix16K_A0000]
    + list(range(MSR_MTRRfix4K_C0000, MSR_MTRRfix4K_F8000 + 1)) + [MSR_MTRRdefType])

#: ``mtrrs(st)``: vcpu->arch.mtrr_state of an X86State: index -> value (all 0 at creation)
mtrrs = Attached(lambda st: {})


def handles(index):
    """The MSRs kvm_get_msr_common sends to kvm_mtrr_get_msr (writes: without MTRRcap,
    which kvm_set_msr_common has no case for)."""
    return (index == MSR_MTRRcap or MTRR_PHYS_BASE0 <= index <= MSR_MTRRfix4K_F8000
            or index == MSR_MTRRdefType)


def _valid_type(t):
    """valid_mtrr_type: UC, WC, WT, WP, WB (0, 1, 4, 5, 6)."""
    return t < 8 and (1 << t) & 0x73


def valid(st, index, data):
    """kvm_mtrr_valid: deftype only bits 11:10 and 7:0 with a valid type; a fixed MTRR
    eight valid types; a variable base a valid type and no bit of 11:8 or at/above the
    guest's MAXPHYADDR (kvm_vcpu_reserved_gpa_bits_raw, from its CPUID); a mask no bit
    of 10:0 or at/above MAXPHYADDR."""
    if index == MSR_MTRRdefType:
        return not data & ~0xCFF and _valid_type(data & 0xFF)
    if MSR_MTRRfix64K_00000 <= index <= MSR_MTRRfix4K_F8000:
        return all(_valid_type(data >> (8 * i) & 0xFF) for i in range(8))
    reserved = ((1 << 64) - 1) & ~((1 << guest_maxphyaddr(st.cpuid)) - 1)
    if index & 1 == 0:
        if not _valid_type(data & 0xFF):
            return False
        reserved |= 0xF00
    else:
        reserved |= 0x7FF
    return not data & reserved


def get_msr(st, index):
    """kvm_mtrr_get_msr: MTRRcap's constant; the stored value; None (refused) for an
    index of the range find_mtrr has no storage for."""
    if index == MSR_MTRRcap:
        return MTRRCAP_VALUE
    if index not in STORED:
        return None
    return mtrrs(st).get(index, 0)


def set_msr(st, index, data):
    """kvm_mtrr_set_msr: no storage (find_mtrr) or not kvm_mtrr_valid -> refused."""
    if index not in STORED or not valid(st, index, data):
        return False
    mtrrs(st)[index] = data
    return True
