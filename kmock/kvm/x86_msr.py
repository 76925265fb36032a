"""KVM_GET/SET_MSRS and the MSR index lists of x86 vCPUs, Linux 6.18 (x86.c msr_io,
kvm_set_msr_common, vmx_set_msr; observed on the probe host: conformance scenario
fact_x86_msrs; docs/vcpu-state.md)."""

import ctypes
import errno

from ..errors import oserror
from ..kernel_util import copy_from_user, copy_to_user, read_user_at, write_user_at
from ..uapi import x86 as X
from . import x86_mce, x86_mtrr, x86_vm
from .x86_state import (U64, WALL_CLOCKS, apic_base_ok, canonical, cpuid_has, settings,
                        state, vcpu_of)

#: MAX_IO_MSRS (x86.c): msr_io refuses nmsrs >= this with E2BIG
MAX_IO_MSRS = 256

# --- the MSRs kmock accepts --------------------------------------------------------------
#
# What a host-initiated KVM_SET_MSRS does with each MSR of a 6.18 VMX host's
# KVM_GET_MSR_INDEX_LIST for a vCPU with no CPUID set (kvm_set_msr_common /
# vmx_set_msr; observed on the 6.18.44 probe host, see the conformance scenario
# fact_x86_msrs). The kinds:
STORE = "store"          # any value, read back as written
CANONICAL = "canonical"  # is_noncanonical_msr_address (48 or 57 bits) -> refused
SEXT = "sext"            # accepted, read back sign-extended to the virtual-address width
IGNORED = "ignored"      # accepted, read back 0 (feature absent from the guest's CPUID)
ZERO_ONLY = "zero"       # only 0 accepted (feature absent from the guest's CPUID)
REFUSED = "refused"      # every write refused
ASYNC_PF = "async_pf"    # MSR_KVM_ASYNC_PF_EN / _INT: kvm_pv_enable_async_pf(_int): only 0
                         # (EN) or nothing (INT) without an in-kernel LAPIC; with one, any
                         # value without the reserved bits is stored
TSC = "tsc"              # MSR_IA32_TSC: the guest TSC keeps counting (kvm_synchronize_tsc)
APIC_BASE = "apic_base"  # kvm_apic_set_base, the same as KVM_SET_SREGS' apic_base
WALL_CLOCK = "wall_clock"  # kvm->arch.wall_clock: one value per VM, shared by both MSRs
SYSTEM_TIME = "system_time"  # vcpu->arch.time: one value per vCPU, shared by both MSRs
EFER = "efer"            # set_efer: the same EFER as KVM_SET_SREGS'; LMA kept from before
FEATURE = "feature"      # a feature MSR: readable and writable only while the guest's CPUID
                         # has the feature (PERF_CAPABILITIES within KVM's value;
                         # ARCH_CAPABILITIES any value); otherwise as ZERO_ONLY
GATED = "gated"          # stored while the guest's CPUID has the feature, else accepted and
                         # dropped; read back as stored
CONSTANT = "constant"    # reads a fixed value (the rule's second item), every write refused
TSC_RATIO = "tsc_ratio"  # MSR_AMD64_TSC_RATIO where the host serves it (the profile's
                         # tsc_ratio_msr): reads that value; a write of 0 or of it is taken
                         # and dropped, any other refused (svm_set_msr without TSC scaling
                         # for the guest: "Due to bug in qemu 6.2.0, it would try to set
                         # this msr to 0"; the PVM probe host does the same, conformance
                         # x86_unlisted_msrs)
SEGBASE = "segbase"      # MSR_FS_BASE / MSR_GS_BASE: the segment base KVM_GET/SET_SREGS
                         # shows (the VMCS's GUEST_FS/GS_BASE), canonical values only

#: where both system-time MSRs keep their value: MSR_KVM_SYSTEM_TIME_NEW
SYSTEM_TIME_KEY = 0x4B564D01

#: FEATURE MSRs -> the CPUID bit (leaf, index, register, bit) that enables them
FEATURE_CPUID = {
    0x10A: (7, 0, 3, 29),   # MSR_IA32_ARCH_CAPABILITIES: X86_FEATURE_ARCH_CAPABILITIES
    0x345: (1, 0, 2, 15),   # MSR_IA32_PERF_CAPABILITIES: X86_FEATURE_PDCM
}

#: FEATURE MSRs whose value must lie within KVM's (kvm_set_msr_common: PERF_CAPABILITIES
#: checks kvm_caps.supported_perf_cap; ARCH_CAPABILITIES takes any value, probed)
FEATURE_VALUE_CHECKED = {0x345}

#: GATED MSRs -> the CPUID bit (guest_cpu_cap_has) that makes a host write stick
GATED_CPUID = {
    0x3B: (7, 0, 1, 1),     # MSR_IA32_TSC_ADJUST: X86_FEATURE_TSC_ADJUST (probed)
}

#: index -> (kind, reserved mask for STORE: a write with one of these bits is refused)
MSR_RULES = {
    0x10: (TSC, 0),                 # MSR_IA32_TSC
    0x11: (WALL_CLOCK, 0),          # MSR_KVM_WALL_CLOCK
    0x12: (SYSTEM_TIME, 0),         # MSR_KVM_SYSTEM_TIME
    0x1B: (APIC_BASE, 0),           # MSR_IA32_APICBASE (emulated, not listed)
    # MSR_EFER (emulated, not listed): efer_reserved_bits of a VMX host with long mode and
    # NX (SCE, LME, LMA, NX); a host-initiated write skips __kvm_valid_efer's CPUID checks
    0xC0000080: (EFER, U64 & ~0xD01),
    0x34: (STORE, 0),               # MSR_SMI_COUNT
    0x3A: (ZERO_ONLY, 0),           # MSR_IA32_FEAT_CTL
    0x3B: (GATED, 0),               # MSR_IA32_TSC_ADJUST
    0x48: (IGNORED, 0),             # MSR_IA32_SPEC_CTRL
    0x8B: (STORE, 0),               # MSR_IA32_UCODE_REV
    0x10A: (FEATURE, 0),            # MSR_IA32_ARCH_CAPABILITIES
    0x122: (IGNORED, 0),            # MSR_IA32_TSX_CTRL
    0x140: (STORE, 0),              # MSR_MISC_FEATURES_ENABLES
    0x174: (STORE, 0),              # MSR_IA32_SYSENTER_CS
    0x175: (SEXT, 0),             # MSR_IA32_SYSENTER_ESP
    0x176: (SEXT, 0),             # MSR_IA32_SYSENTER_EIP
    0x1A0: (STORE, 0),              # MSR_IA32_MISC_ENABLE
    0x1D9: (IGNORED, 0),            # MSR_IA32_DEBUGCTLMSR
    0x1DB: (ZERO_ONLY, 0),          # MSR_IA32_LASTBRANCHFROMIP
    0x1DC: (ZERO_ONLY, 0),          # MSR_IA32_LASTBRANCHTOIP
    0x1DD: (ZERO_ONLY, 0),          # MSR_IA32_LASTINTFROMIP
    0x1DE: (ZERO_ONLY, 0),          # MSR_IA32_LASTINTTOIP
    0x1FC: (STORE, 0),              # MSR_IA32_POWER_CTL
    0x277: (STORE, 0),              # MSR_IA32_CR_PAT
    0x345: (FEATURE, 0),            # MSR_IA32_PERF_CAPABILITIES
    0x6E0: (IGNORED, 0),            # MSR_IA32_TSC_DEADLINE
    0xCE: (STORE, 0),               # MSR_PLATFORM_INFO
    0xC0000081: (STORE, 0),         # MSR_STAR
    0xC0000082: (CANONICAL, 0),     # MSR_LSTAR
    0xC0000083: (CANONICAL, 0),     # MSR_CSTAR
    0xC0000084: (STORE, 0),         # MSR_SYSCALL_MASK
    0xC0000102: (CANONICAL, 0),     # MSR_KERNEL_GS_BASE
    0xC0010015: (ZERO_ONLY, 0),     # MSR_K7_HWCR
    0xC0010117: (IGNORED, 0),       # MSR_VM_HSAVE_PA
    0xC001011F: (IGNORED, 0),       # MSR_AMD64_VIRT_SPEC_CTRL
    0x4B564D00: (WALL_CLOCK, 0),    # MSR_KVM_WALL_CLOCK_NEW
    0x4B564D01: (SYSTEM_TIME, 0),   # MSR_KVM_SYSTEM_TIME_NEW
    0x4B564D02: (ASYNC_PF, 0x30),   # MSR_KVM_ASYNC_PF_EN: bits 5:4 reserved
    0x4B564D03: (STORE, 0x3E),      # MSR_KVM_STEAL_TIME: KVM_STEAL_RESERVED_MASK
    0x4B564D04: (STORE, 0x3),       # MSR_KVM_PV_EOI_EN: enabling needs the in-kernel LAPIC
    0x4B564D05: (STORE, U64 & ~1),  # MSR_KVM_POLL_CONTROL: bit 0 only
    0x4B564D06: (ASYNC_PF, U64 & ~0xFF),  # MSR_KVM_ASYNC_PF_INT: the vector only
    0x4B564D07: (IGNORED, 0),       # MSR_KVM_ASYNC_PF_ACK
    # not in the index list, but served to a host-initiated access (probed on the 6.18 host,
    # conformance x86_unlisted_msrs; x86.c kvm_get/set_msr_common, vmx_get/set_msr)
    0x17: (REFUSED, 0),             # MSR_IA32_PLATFORM_ID: reads 0
    0xC1: (IGNORED, 0),             # MSR_IA32_PERFCTR0 (no vPMU counters for the guest)
    0xC2: (IGNORED, 0),             # MSR_IA32_PERFCTR1
    0x186: (IGNORED, 0),            # MSR_P6_EVNTSEL0
    0x187: (IGNORED, 0),            # MSR_P6_EVNTSEL1
    0x198: (CONSTANT, 1000 | 4 << 40),  # MSR_IA32_PERF_STATUS: KVM's fixed answer
    0x199: (REFUSED, 0),            # MSR_IA32_PERF_CTL: reads 0
    0xC0000100: (SEGBASE, 0),       # MSR_FS_BASE
    0xC0000101: (SEGBASE, 0),       # MSR_GS_BASE
    0xC0000103: (STORE, U64 & ~0xFFFFFFFF),  # MSR_TSC_AUX: bits 63:32 reserved
}

MSR_AMD64_TSC_RATIO = 0xC0000104

#: SEGBASE MSRs -> the kvm_sregs segment whose base they are
_SEGBASE = {0xC0000100: "fs", 0xC0000101: "gs"}

# --- MSRs ------------------------------------------------------------------------------------


def msr_index_list(settings_key):
    def dev_get_msr_list(f, arg):
        """KVM_GET_MSR_INDEX_LIST / KVM_GET_MSR_FEATURE_INDEX_LIST (kvm_arch_dev_ioctl): the
        count is written back first; E2BIG if the caller's nmsrs is smaller; then the list."""
        head = copy_from_user(arg, X.kvm_msr_list)
        msrs = settings(f.kernel.profile)[settings_key]
        n = head.nmsrs
        head.nmsrs = len(msrs)
        copy_to_user(arg, head)
        if n < len(msrs):
            raise oserror(errno.E2BIG)
        write_user_at(arg, 4, b"".join(i.to_bytes(4, "little") for i in msrs))
        return 0
    return dev_get_msr_list


dev_get_msr_index_list = msr_index_list("msr_index_list")
dev_get_msr_feature_index_list = msr_index_list("msr_feature_list")


def _msr_kind(vcpu, index):
    """The rule of ``index``, or None if kmock (and the modelled kernel) refuses it."""
    rule = MSR_RULES.get(index)
    if rule is not None:
        return rule
    if index == MSR_AMD64_TSC_RATIO:
        ratio = settings(vcpu.vm.kernel.profile).get("tsc_ratio_msr")
        return None if ratio is None else (TSC_RATIO, ratio)
    if index in settings(vcpu.vm.kernel.profile)["msr_index_list"]:
        return (STORE, 0)  # a probed MSR kmock has no rule for: stored
    return None


def _advertised(vcpu, index):
    """kvm_do_msr_access: an MSR the handlers do not support but KVM_GET_MSR_INDEX_LIST
    advertises reads 0 and takes a write of 0 from the host."""
    return index in settings(vcpu.vm.kernel.profile)["msr_index_list"]


def get_msr(st, vcpu, index):
    if x86_mce.handles(index):
        v = x86_mce.get_msr(st, vcpu, index)
        if v is x86_mce.UNSUPPORTED:
            return 0 if _advertised(vcpu, index) else None
        return v
    if x86_mtrr.handles(index):
        return x86_mtrr.get_msr(st, index)
    rule = _msr_kind(vcpu, index)
    if rule is None:
        return None
    kind = rule[0]
    if kind == TSC:
        return st.tsc()
    if kind == APIC_BASE:
        return st.sregs.apic_base
    if kind == EFER:
        return st.sregs.efer
    if kind == WALL_CLOCK:
        return WALL_CLOCKS.get(vcpu.vm, 0)
    if kind == SYSTEM_TIME:
        return st.msrs.get(SYSTEM_TIME_KEY, 0)
    if kind == FEATURE and not cpuid_has(st.cpuid, *FEATURE_CPUID[index]):
        return 0  # host-initiated read of an advertised MSR the guest lacks
    if kind == CONSTANT or kind == TSC_RATIO:
        return rule[1]
    if kind == SEGBASE:
        return getattr(st.sregs, _SEGBASE[index]).base
    return st.msrs.get(index, 0)


def set_msr(st, vcpu, index, data):
    """One host-initiated write; False if refused (the loop stops there). The MCE MSRs
    (kmock.kvm.x86_mce) and the MTRRs (kmock.kvm.x86_mtrr) first."""
    if x86_mce.handles(index):
        ok = x86_mce.set_msr(st, vcpu, index, data)
        if ok is x86_mce.UNSUPPORTED:
            return data == 0 and _advertised(vcpu, index)
        return ok
    if x86_mtrr.handles(index) and index != x86_mtrr.MSR_MTRRcap:
        return x86_mtrr.set_msr(st, index, data)
    rule = _msr_kind(vcpu, index)
    if rule is None:
        return False
    kind, reserved = rule
    if kind == STORE:
        if data & reserved:
            return False
        st.msrs[index] = data
    elif kind == CANONICAL:
        if not canonical(data, st.va_bits):
            return False
        st.msrs[index] = data
    elif kind == SEXT:
        low = (1 << st.va_bits) - 1
        st.msrs[index] = data & low | (U64 & ~low if data >> (st.va_bits - 1) & 1 else 0)
    elif kind == IGNORED:
        pass
    elif kind == ZERO_ONLY:
        return data == 0
    elif kind == REFUSED or kind == CONSTANT:
        return False
    elif kind == TSC_RATIO:
        return data == 0 or data == reserved  # (the rule's second item: the ratio)
    elif kind == SEGBASE:
        if not canonical(data, st.va_bits):
            return False
        getattr(st.sregs, _SEGBASE[index]).base = data
    elif kind == ASYNC_PF:
        if data & reserved:
            return False
        if not x86_vm.state(vcpu.vm).irqchip_in_kernel:
            # kvm_pv_enable_async_pf: "return data ? 1 : 0"; _int: always 1
            return data == 0 and index == 0x4B564D02
        st.msrs[index] = data  # (the hva cache of an enabled gpa is not checked: probed)
    elif kind == TSC:
        if settings(vcpu.vm.kernel.profile).get("tsc_writable", True):
            st.set_tsc(data)
    elif kind == WALL_CLOCK:
        WALL_CLOCKS[vcpu.vm] = data
    elif kind == SYSTEM_TIME:
        st.msrs[SYSTEM_TIME_KEY] = data  # bit 0 activates the pvclock (KVM_KVMCLOCK_CTRL)
    elif kind == FEATURE:
        if not cpuid_has(st.cpuid, *FEATURE_CPUID[index]):
            return data == 0
        if index in FEATURE_VALUE_CHECKED and data & ~st.feature_values.get(index, 0):
            return False
        st.msrs[index] = data
    elif kind == GATED:
        if cpuid_has(st.cpuid, *GATED_CPUID[index]) and cpuid_has(st.supported,
                                                                  *GATED_CPUID[index]):
            st.msrs[index] = data
    elif kind == APIC_BASE:
        if not apic_base_ok(st, data):
            return False
        st.sregs.apic_base = data
    elif kind == EFER:
        if data & reserved:
            return False
        lma = 0x400  # EFER_LMA: set_efer keeps the vCPU's own
        st.sregs.efer = data & ~lma | st.sregs.efer & lma
    return True


def _read_entries(arg):
    """msr_io's copy in: the header (EFAULT), nmsrs >= MAX_IO_MSRS -> E2BIG, the entries."""
    head = copy_from_user(arg, X.kvm_msrs)
    if head.nmsrs >= MAX_IO_MSRS:
        raise oserror(errno.E2BIG)
    n = head.nmsrs
    size = ctypes.sizeof(X.kvm_msr_entry)
    return (X.kvm_msr_entry * n).from_buffer_copy(read_user_at(arg, 8, n * size)) if n else ()


def dev_get_msrs(f, arg):
    """KVM_GET_MSRS on /dev/kvm (kvm_arch_dev_ioctl -> msr_io(NULL, .., do_get_feature_msr)):
    the entries in order, stopping at the first MSR that cannot be read; the number read
    is returned and the entries written back. A feature MSR (KVM_GET_MSR_FEATURE_INDEX_LIST)
    reads the host's value (kvm_get_feature_msr; profile setting
    ``msr_feature_dev_values``, else ``msr_feature_values``); another MSR KVM advertises
    (KVM_GET_MSR_INDEX_LIST) reads 0 (kvm_do_msr_access: a host-initiated read of an
    unsupported but advertised MSR); any other MSR stops the loop (probed: APIC_BASE, VMX
    MSRs without nested, 0xffffffff), its entry's data zeroed."""
    s = settings(f.kernel.profile)
    values = dict(s.get("msr_feature_values", ()))
    values.update(s.get("msr_feature_dev_values", ()))
    features = set(s["msr_feature_list"])
    listed = set(s["msr_index_list"])
    entries = _read_entries(arg)
    done = 0
    for e in entries:
        if e.index in features:
            e.data = values.get(e.index, 0)
        elif e.index in listed:
            e.data = 0
        else:
            e.data = 0  # kvm_do_msr_access zeroes a read it refuses
            break
        done += 1
    if entries:
        write_user_at(arg, 8, bytes(entries))
    return done


def _msr_io(f, arg, write):
    """msr_io: nmsrs >= MAX_IO_MSRS -> E2BIG; the entries are read; __msr_io processes
    them in order and stops at the first MSR it cannot get or set (the VM type's
    ``msr_allowed`` first: the vendor's get_msr/set_msr); the return value is the number
    processed. KVM_GET_MSRS writes the entries back."""
    vcpu = vcpu_of(f)
    vt = vcpu.vm.vmtype
    hook = vt.msr_allowed if vt.has_msr_hook else None
    st = state(vcpu)
    entries = _read_entries(arg)
    n = len(entries)
    done = 0
    for e in entries:
        if hook is not None and not hook(vcpu, e.index, write, e.data if write else 0):
            if not write:
                e.data = 0  # kvm_do_msr_access zeroes a read it refuses, whoever refused
            break
        if write:
            if not set_msr(st, vcpu, e.index, e.data):
                break
        else:
            v = get_msr(st, vcpu, e.index)
            if v is None:
                e.data = 0  # kvm_do_msr_access zeroes a read it refuses (probed)
                break
            e.data = v
        done += 1
    if not write and n:
        write_user_at(arg, 8, bytes(entries))
    return done


def get_msrs(f, arg):
    return _msr_io(f, arg, False)


def set_msrs(f, arg):
    return _msr_io(f, arg, True)
