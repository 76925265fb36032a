"""Machine-check state of x86 vCPUs, Linux 6.18 (arch/x86/kvm/x86.c).

KVM_X86_GET_MCE_CAP_SUPPORTED (/dev/kvm, kvm_arch_dev_ioctl: kvm_caps.supported_mce_cap),
KVM_X86_SETUP_MCE and KVM_X86_SET_MCE (vCPU, kvm_vcpu_ioctl_x86_setup_mce /
kvm_vcpu_ioctl_x86_set_mce) and the MCE MSRs host-initiated KVM_GET/SET_MSRS reach
(set_msr_mce / get_msr_mce; MSR_IA32_MCG_EXT_CTL in vmx_set_msr / vmx_get_msr).
Confirmed on the probe host by the conformance scenarios ``x86_mce_*``
(kmock.testing.conformance_x86_mce); docs/vcpu-state.md.

The value of KVM_X86_GET_MCE_CAP_SUPPORTED is the vendor module's: x86.c starts from
MCG_CTL_P | MCG_SER_P and vmx.c hardware_setup adds MCG_LMCE_P | MCG_CMCI_P. The host
profile probes it (settings ``mce_cap_supported``); a profile that probes nothing gets
the VMX value. Whether the vendor handles MSR_IA32_MCG_EXT_CTL (VMX does; SVM and the
PVM probe host do not) is the setting ``mcg_ext_ctl``.
"""

import ctypes
import errno

from ..errors import oserror
from ..kernel_util import copy_from_user, copy_to_user
from ..uapi import x86 as X
from .x86_state import settings, state, vcpu_of
from .attached import Attached

#: KVM_MAX_MCE_BANKS (arch/x86/include/asm/kvm_host.h); also KVM_CHECK_EXTENSION(KVM_CAP_MCE)
KVM_MAX_MCE_BANKS = 32

MCG_CTL_P = 1 << 8
MCG_CMCI_P = 1 << 10
MCG_SER_P = 1 << 24
MCG_LMCE_P = 1 << 27
#: kvm_caps.supported_mce_cap of a 6.18 VMX host (x86.c kvm_x86_vendor_init +
#: vmx.c hardware_setup)
VMX_MCE_CAP = MCG_CTL_P | MCG_SER_P | MCG_LMCE_P | MCG_CMCI_P

MSR_IA32_P5_MC_ADDR, MSR_IA32_P5_MC_TYPE = 0x0, 0x1
MSR_IA32_MCG_CAP, MSR_IA32_MCG_STATUS, MSR_IA32_MCG_CTL = 0x179, 0x17A, 0x17B
MSR_IA32_MCG_EXT_CTL = 0x4D0
MSR_IA32_MC0_CTL = 0x400
MSR_IA32_MC0_CTL2 = 0x280
MCG_EXT_CTL_LMCE_EN = 1 << 0
MCI_CTL2_CMCI_EN = 1 << 30
MCI_CTL2_CMCI_THRESHOLD_MASK = 0x7FFF

MCI_STATUS_VAL = 1 << 63
MCI_STATUS_OVER = 1 << 62
MCI_STATUS_UC = 1 << 61
MCI_STATUS_S = 1 << 56
MCI_STATUS_AR = 1 << 55
MCI_STATUS_PCC = 1 << 57
MCG_STATUS_MCIP = 1 << 2
X86_CR4_MCE = 1 << 6
MC_VECTOR = 18
DF_VECTOR = 8

U64 = (1 << 64) - 1


class MceState:
    """vcpu->arch.mcg_cap / mcg_status / mcg_ctl / mcg_ext_ctl / mce_banks /
    mci_ctl2_banks. kvm_arch_vcpu_create: mcg_cap = KVM_MAX_MCE_BANKS (32 banks, no
    capability bit) and zeroed banks, so the bank MSRs are there before SETUP_MCE."""

    def __init__(self):
        self.mcg_cap = KVM_MAX_MCE_BANKS
        self.mcg_status = 0
        self.mcg_ctl = 0
        self.mcg_ext_ctl = 0
        self.banks = [0] * (4 * KVM_MAX_MCE_BANKS)  # CTL, STATUS, ADDR, MISC per bank
        self.ctl2 = [0] * KVM_MAX_MCE_BANKS


#: ``mce(st)``: the MceState of an X86State (made at its first use)
mce = Attached(lambda st: MceState())


def supported_mce_cap(profile):
    return settings(profile).get("mce_cap_supported", VMX_MCE_CAP)


def _vendor_ext_ctl(vcpu):
    return settings(vcpu.vm.kernel.profile).get("mcg_ext_ctl", True)


# --- ioctls ----------------------------------------------------------------------------------


def dev_get_mce_cap_supported(f, arg):
    """KVM_X86_GET_MCE_CAP_SUPPORTED (kvm_arch_dev_ioctl): the u64 copied out (EFAULT)."""
    copy_to_user(arg, ctypes.c_uint64(supported_mce_cap(f.kernel.profile)))
    return 0


def setup_mce(f, arg):
    """KVM_X86_SETUP_MCE: the u64 is copied in (EFAULT); kvm_vcpu_ioctl_x86_setup_mce:
    bank count 0 or above KVM_MAX_MCE_BANKS, or a bit outside supported_mce_cap | 0xff |
    0xff0000: EINVAL, nothing changed. Then mcg_cap is set, MCG_CTL becomes all ones
    with MCG_CTL_P, each bank's MCi_CTL all ones (and MCi_CTL2 0 with MCG_CMCI_P); the
    other bank registers keep their values. vmx_setup_mce lets the guest's FEAT_CTL
    carry LMCE_ENABLED with MCG_LMCE_P (guest writes only: not modelled)."""
    vcpu = vcpu_of(f)
    cap = copy_from_user(arg, ctypes.c_uint64).value
    banks = cap & 0xFF
    if not banks or banks > KVM_MAX_MCE_BANKS:
        raise oserror(errno.EINVAL)
    if cap & ~(supported_mce_cap(vcpu.vm.kernel.profile) | 0xFF | 0xFF0000) & U64:
        raise oserror(errno.EINVAL)
    m = mce(state(vcpu))
    m.mcg_cap = cap
    if cap & MCG_CTL_P:
        m.mcg_ctl = U64
    for b in range(banks):
        m.banks[4 * b] = U64
        if cap & MCG_CMCI_P:
            m.ctl2[b] = 0
    return 0


def _queue_mc(st):
    """kvm_queue_exception(vcpu, MC_VECTOR) -> kvm_multiple_exception: queued pending
    when nothing is; after a #DF a triple fault; #MC is benign (exception_class), so
    any other queued exception is replaced."""
    ex = st.exception
    if (ex["pending"] or ex["injected"]) and ex["nr"] == DF_VECTOR:
        st.triple_fault_pending = 1
        return
    st.exception = {"injected": 0, "pending": 1, "nr": MC_VECTOR, "has_error_code": 0,
                    "error_code": 0, "has_payload": 0, "payload": 0}


def set_mce(f, arg):
    """KVM_X86_SET_MCE: struct kvm_x86_mce copied in (EFAULT); kvm_vcpu_ioctl_x86_set_mce:
    a bank at or above the bank count or a status without MCI_STATUS_VAL: EINVAL. A UCNA
    (VAL|UC, no PCC/S/AR, mcg_status 0) is recorded in the bank and MCG_STATUS
    (kvm_vcpu_x86_set_ucna; the CMCI it may deliver needs an in-kernel LAPIC). An
    uncorrected error is dropped while MCG_CTL (with MCG_CTL_P) or the bank's MCi_CTL is
    not all ones; with MCG_STATUS.MCIP set or CR4.MCE clear it is a triple fault
    (KVM_REQ_TRIPLE_FAULT); else it is recorded (OVER if the bank held a valid error)
    and #MC queued. A corrected error overwrites a bank without a valid uncorrected
    error (OVER if valid), else only sets OVER."""
    vcpu = vcpu_of(f)
    e = copy_from_user(arg, X.kvm_x86_mce)
    st = state(vcpu)
    m = mce(st)
    nbanks = m.mcg_cap & 0xFF
    if e.bank >= nbanks or not e.status & MCI_STATUS_VAL:
        raise oserror(errno.EINVAL)
    b = 4 * e.bank
    bank = m.banks
    status = e.status
    if (not e.mcg_status and not status & (MCI_STATUS_PCC | MCI_STATUS_S | MCI_STATUS_AR)
            and status & MCI_STATUS_UC):
        bank[b + 1], bank[b + 2], bank[b + 3] = status, e.addr, e.misc
        m.mcg_status = e.mcg_status
        return 0
    if status & MCI_STATUS_UC:
        if m.mcg_cap & MCG_CTL_P and m.mcg_ctl != U64:
            return 0
        if bank[b] != U64:
            return 0
        if m.mcg_status & MCG_STATUS_MCIP or not st.sregs.cr4 & X86_CR4_MCE:
            st.triple_fault_pending = 1
            return 0
        if bank[b + 1] & MCI_STATUS_VAL:
            status |= MCI_STATUS_OVER
        bank[b + 2], bank[b + 3] = e.addr, e.misc
        m.mcg_status = e.mcg_status
        bank[b + 1] = status
        _queue_mc(st)
    elif not bank[b + 1] & MCI_STATUS_VAL or not bank[b + 1] & MCI_STATUS_UC:
        if bank[b + 1] & MCI_STATUS_VAL:
            status |= MCI_STATUS_OVER
        bank[b + 1], bank[b + 2], bank[b + 3] = status, e.addr, e.misc
    else:
        bank[b + 1] |= MCI_STATUS_OVER
    return 0


# --- the MSRs (host-initiated) -----------------------------------------------------------------


def handles(index):
    """Is ``index`` one of the MSRs kvm_get/set_msr_common send to get/set_msr_mce
    (or MSR_IA32_MCG_EXT_CTL, the vendor's)?"""
    return (index in (MSR_IA32_P5_MC_ADDR, MSR_IA32_P5_MC_TYPE, MSR_IA32_MCG_CAP,
                      MSR_IA32_MCG_STATUS, MSR_IA32_MCG_CTL, MSR_IA32_MCG_EXT_CTL)
            or MSR_IA32_MC0_CTL <= index < MSR_IA32_MC0_CTL + 4 * KVM_MAX_MCE_BANKS
            or MSR_IA32_MC0_CTL2 <= index < MSR_IA32_MC0_CTL2 + KVM_MAX_MCE_BANKS)


#: get_msr_mce / set_msr_mce refused the MSR as the vendor lacks it: x86.c's
#: kvm_do_msr_access then decides (an advertised MSR reads 0 and takes a 0 write)
UNSUPPORTED = object()


def get_msr(st, vcpu, index):
    """get_msr_mce with host_initiated: the value, None if refused, or UNSUPPORTED."""
    m = mce(st)
    nbanks = m.mcg_cap & 0xFF
    if index in (MSR_IA32_P5_MC_ADDR, MSR_IA32_P5_MC_TYPE):
        return 0
    if index == MSR_IA32_MCG_CAP:
        return m.mcg_cap
    if index == MSR_IA32_MCG_CTL:
        return m.mcg_ctl  # host-initiated: readable without MCG_CTL_P
    if index == MSR_IA32_MCG_STATUS:
        return m.mcg_status
    if index == MSR_IA32_MCG_EXT_CTL:
        return m.mcg_ext_ctl if _vendor_ext_ctl(vcpu) else UNSUPPORTED
    if index < MSR_IA32_MC0_CTL:  # MCi_CTL2: host-initiated reads need no MCG_CMCI_P
        i = index - MSR_IA32_MC0_CTL2
        return m.ctl2[i] if i < nbanks else None
    i = index - MSR_IA32_MC0_CTL
    return m.banks[i] if i < 4 * nbanks else None


def set_msr(st, vcpu, index, data):
    """set_msr_mce with host_initiated: True if written, False if refused, or
    UNSUPPORTED (MCG_CAP, P5_MC_*: no case in kvm_set_msr_common; MCG_EXT_CTL without
    the vendor's handler)."""
    m = mce(st)
    cap = m.mcg_cap
    nbanks = cap & 0xFF
    if index == MSR_IA32_MCG_STATUS:
        m.mcg_status = data
        return True
    if index == MSR_IA32_MCG_CTL:
        if not cap & MCG_CTL_P and data:
            return False
        if data not in (0, U64):
            return False
        m.mcg_ctl = data
        return True
    if index == MSR_IA32_MCG_EXT_CTL:
        if not _vendor_ext_ctl(vcpu):
            return UNSUPPORTED
        if data & ~MCG_EXT_CTL_LMCE_EN:  # host-initiated: LMCE_EN without FEAT_CTL's
            return False
        m.mcg_ext_ctl = data
        return True
    if index in (MSR_IA32_P5_MC_ADDR, MSR_IA32_P5_MC_TYPE, MSR_IA32_MCG_CAP):
        return UNSUPPORTED
    if index < MSR_IA32_MC0_CTL:
        i = index - MSR_IA32_MC0_CTL2
        if i >= nbanks:
            return False
        if not cap & MCG_CMCI_P and data:
            return False
        if data & ~(MCI_CTL2_CMCI_EN | MCI_CTL2_CMCI_THRESHOLD_MASK):
            return False
        m.ctl2[i] = data
        return True
    i = index - MSR_IA32_MC0_CTL
    if i >= 4 * nbanks:
        return False
    # MCi_CTL: 0 or all ones, bits 10 and 0 may be clear; a host-initiated MCi_STATUS
    # write takes any value
    if i % 4 == 0 and data and (data | 1 << 10 | 1) != U64:
        return False
    m.banks[i] = data
    return True
