"""x86 vCPU ioctls beside the register state: KVM_INTERRUPT, the vCPU device attributes
(the TSC offset), KVM_TRANSLATE, the legacy KVM_SET_CPUID and ONE_REG / KVM_GET_REG_LIST.

Linux 6.18 arch/x86/kvm/x86.c (kvm_arch_vcpu_ioctl); sources per handler below, the
facts probed on the 6.18.44 host are in docs/vcpu-state.md.
"""

import ctypes
import errno

from ..errors import oserror
from ..kernel_util import copy_from_user, copy_to_user, read_user_at, write_user_at
from ..uapi import kvm as K
from ..uapi import x86 as X
from . import dirty_ring, x86_msr, x86_paging, x86_vcpu, x86_vm
from .x86_state import ECX, U64, cpuid_has, settings, state, vcpu_of

#: KVM_MAX_CPUID_ENTRIES (arch/x86/include/asm/kvm_host.h)
KVM_MAX_CPUID_ENTRIES = 256
_LEGACY_ENTRY = ctypes.sizeof(X.kvm_cpuid_entry)

# --- KVM_INTERRUPT --------------------------------------------------------------------------


def interrupt(f, arg):
    """kvm_vcpu_ioctl_interrupt: irq >= KVM_NR_INTERRUPTS -> EINVAL; without an in-kernel
    irqchip kvm_queue_interrupt (not soft): GET_VCPU_EVENTS then reports
    interrupt.injected=1 with the vector, GET_SREGS its interrupt_bitmap bit (probed),
    and a second call replaces the vector; with the in-kernel PIC (KVM_CREATE_IRQCHIP)
    ENXIO; with the split irqchip the vector waits in X86State.pending_external_vector for the
    LAPIC's ExtINT (EEXIST while one waits; the events do not show it)."""
    vcpu = vcpu_of(f)
    irq = copy_from_user(arg, X.kvm_interrupt).irq
    if irq >= X.KVM_NR_INTERRUPTS:
        raise oserror(errno.EINVAL)
    mode = x86_vm.state(vcpu.vm).irqchip_mode
    if mode == "none":
        state(vcpu).interrupt = (1, irq, 0)
        return 0
    if mode != "split":  # pic_in_kernel
        raise oserror(errno.ENXIO)
    st = state(vcpu)
    if st.pending_external_vector is not None:
        raise oserror(errno.EEXIST)
    st.pending_external_vector = irq
    return 0


# --- KVM_HAS/GET/SET_DEVICE_ATTR (the vCPU's TSC offset) -------------------------------------


def _tsc_attr(arg):
    """kvm_vcpu_ioctl_device_attr: the struct is read (EFAULT), flags are not checked;
    a group other than KVM_VCPU_TSC_CTRL, or an attr other than KVM_VCPU_TSC_OFFSET
    (kvm_arch_tsc_has/get/set_attr), is ENXIO."""
    a = copy_from_user(arg, X.kvm_device_attr)
    if a.group != X.KVM_VCPU_TSC_CTRL or a.attr != X.KVM_VCPU_TSC_OFFSET:
        raise oserror(errno.ENXIO)
    return a


def has_device_attr(f, arg):
    vcpu_of(f)
    _tsc_attr(arg)
    return 0


def get_device_attr(f, arg):
    """kvm_arch_tsc_get_attr: vcpu->arch.l1_tsc_offset to attr.addr (EFAULT)."""
    st = state(vcpu_of(f))
    a = _tsc_attr(arg)
    copy_to_user(a.addr, ctypes.c_uint64(st.tsc_offset & U64))
    return 0


def set_device_attr(f, arg):
    """kvm_arch_tsc_set_attr: the offset is read from attr.addr (EFAULT), then
    __kvm_synchronize_tsc makes it the L1 offset: the guest TSC (KVM_GET_MSRS of
    IA32_TSC) is the host's plus the offset. A host whose guests read the host TSC
    (settings ``tsc_writable`` False, the PVM probe host) keeps offset 0 (probed)."""
    vcpu = vcpu_of(f)
    st = state(vcpu)
    a = _tsc_attr(arg)
    offset = int.from_bytes(read_user_at(a.addr, 0, 8), "little")
    if settings(vcpu.vm.kernel.profile).get("tsc_writable", True):
        st.tsc_offset = offset
    return 0


# --- KVM_TRANSLATE ---------------------------------------------------------------------------


def translate(f, arg):
    """kvm_arch_vcpu_ioctl_translate (no protected-state refusal in 6.18): gpa =
    kvm_mmu_gva_to_gpa_system, the walk of the guest's page tables in kmock.kvm.x86_paging
    (with CR0.PG clear the gpa is the linear address, all 64 bits, so ~0 reads back as
    not valid; probed); valid = gpa != INVALID_GPA; writeable 1, usermode 0; always 0."""
    vcpu = vcpu_of(f)
    st = state(vcpu)
    tr = copy_from_user(arg, X.kvm_translation)
    with dirty_ring.vcpu_loaded(vcpu):  # the walk's Accessed bits go to this vCPU's ring
        gpa = x86_paging.gva_to_gpa(vcpu, st, tr.linear_address)
    tr.physical_address = gpa
    tr.valid = 1 if gpa != x86_paging.INVALID_GPA else 0
    tr.writeable = 1
    tr.usermode = 0
    copy_to_user(arg, tr)
    return 0


# --- KVM_SET_CPUID (legacy) ------------------------------------------------------------------


def set_cpuid(f, arg):
    """kvm_vcpu_ioctl_set_cpuid: nent > KVM_MAX_CPUID_ENTRIES -> E2BIG; the
    struct kvm_cpuid_entry array is read (EFAULT) and converted to kvm_cpuid_entry2
    (index 0, flags 0), then kvm_set_cpuid as KVM_SET_CPUID2 does
    (kmock.kvm.x86_vcpu.kvm_set_cpuid)."""
    vcpu = vcpu_of(f)
    head = copy_from_user(arg, X.kvm_cpuid)
    if head.nent > KVM_MAX_CPUID_ENTRIES:
        raise oserror(errno.E2BIG)
    raw = read_user_at(arg, ctypes.sizeof(X.kvm_cpuid), head.nent * _LEGACY_ENTRY)
    entries = []
    for i in range(head.nent):
        e = X.kvm_cpuid_entry.from_buffer_copy(raw, i * _LEGACY_ENTRY)
        entries.append((e.function, 0, 0, e.eax, e.ebx, e.ecx, e.edx))
    return x86_vcpu.kvm_set_cpuid(vcpu, tuple(entries))


# --- ONE_REG and KVM_GET_REG_LIST ------------------------------------------------------------

#: the stored GUEST_SSP (kmock keeps it beside the MSRs; MSR_KVM_INTERNAL_GUEST_SSP)
GUEST_SSP_KEY = "guest_ssp"


def _has_shstk(st):
    """guest_cpu_cap_has(X86_FEATURE_SHSTK): the guest's CPUID and KVM's (the profile)."""
    return cpuid_has(st.cpuid, 7, 0, ECX, 7) and cpuid_has(st.supported, 7, 0, ECX, 7)


def reg_ids(st):
    """kvm_get_reg_list's list: KVM_REG_GUEST_SSP when the guest has SHSTK, else none
    (the MSRs are ONE_REG registers too but are not listed)."""
    return (X.KVM_X86_REG_KVM(X.KVM_REG_GUEST_SSP),) if _has_shstk(st) else ()


def get_reg_list(f, arg):
    """kvm_get_reg_list: n is read (EFAULT), the count written back (EFAULT); n smaller
    than the count -> E2BIG (the count already written); then the ids."""
    st = state(vcpu_of(f))
    n = copy_from_user(arg, X.kvm_reg_list).n
    ids = reg_ids(st)
    copy_to_user(arg, X.kvm_reg_list(len(ids)))
    if n < len(ids):
        raise oserror(errno.E2BIG)
    if ids:
        write_user_at(arg, 8, bytes((ctypes.c_uint64 * len(ids))(*ids)))
    return 0


def _one_reg(f, arg, write):
    """kvm_get_set_one_reg: the struct is read (EFAULT); not KVM_REG_X86, the reserved
    fields (bits 40-51 but the size), a KVM register other than GUEST_SSP of a SHSTK
    guest (kvm_translate_kvm_reg), a type other than MSR or a size other than U64:
    EINVAL. Then do_get_msr / do_set_msr (host-initiated, EINVAL when refused); the
    value goes to / comes from one_reg.addr (EFAULT; a SET reads it first)."""
    vcpu = vcpu_of(f)
    st = state(vcpu)
    r = copy_from_user(arg, X.kvm_one_reg)
    rid = r.id
    if rid & X.KVM_REG_ARCH_MASK != X.KVM_REG_X86 or rid >> 40 & 0xFF or rid >> 48 & 0xF:
        raise oserror(errno.EINVAL)
    kind, index = rid >> 32 & 0xFF, rid & 0xFFFFFFFF
    if kind == X.KVM_X86_REG_TYPE_KVM:
        if index != X.KVM_REG_GUEST_SSP or not _has_shstk(st):
            raise oserror(errno.EINVAL)
        kind, index = X.KVM_X86_REG_TYPE_MSR, GUEST_SSP_KEY
    if kind != X.KVM_X86_REG_TYPE_MSR or rid & X.KVM_REG_SIZE_MASK != X.KVM_REG_SIZE_U64:
        raise oserror(errno.EINVAL)
    vt = vcpu.vm.vmtype
    hook = vt.msr_allowed if vt.has_msr_hook and index != GUEST_SSP_KEY else None
    if write:
        value = int.from_bytes(read_user_at(r.addr, 0, 8), "little")
        if hook is not None and not hook(vcpu, index, True, value):
            raise oserror(errno.EINVAL)
        if index == GUEST_SSP_KEY:
            st.msrs[GUEST_SSP_KEY] = value
        elif not x86_msr.set_msr(st, vcpu, index, value):
            raise oserror(errno.EINVAL)
        return 0
    if hook is not None and not hook(vcpu, index, False, 0):
        raise oserror(errno.EINVAL)
    v = st.msrs.get(GUEST_SSP_KEY, 0) if index == GUEST_SSP_KEY else \
        x86_msr.get_msr(st, vcpu, index)
    if v is None:
        raise oserror(errno.EINVAL)
    copy_to_user(r.addr, ctypes.c_uint64(v & U64))
    return 0


def get_one_reg(f, arg):
    return _one_reg(f, arg, False)


def set_one_reg(f, arg):
    return _one_reg(f, arg, True)


# --- KVM_ENABLE_CAP on an x86 vCPU -------------------------------------------------------------


def vcpu_enable_cap(f, arg):
    """kvm_vcpu_ioctl_enable_cap: flags EINVAL; KVM_CAP_ENFORCE_PV_FEATURE_CPUID stores
    args[0] (any value: vcpu->arch.pv_cpuid.enforce); the Hyper-V capabilities are compiled
    out of the probe host (CONFIG_KVM_HYPERV; EINVAL there too, conformance
    ``enable_cap_sweep``); every other capability EINVAL."""
    vcpu = vcpu_of(f)
    cap = copy_from_user(arg, K.kvm_enable_cap)
    if cap.flags or cap.cap != K.KVM_CAP_ENFORCE_PV_FEATURE_CPUID:
        raise oserror(errno.EINVAL)
    state(vcpu).pv_cpuid_enforce = cap.args[0]
    return 0


# --- KVM_MEMORY_ENCRYPT_OP on a vCPU without a vendor handler ----------------------------------


def vcpu_mem_enc_op(f, arg):
    """kvm_arch_vcpu_ioctl KVM_MEMORY_ENCRYPT_OP: ENOTTY when the vendor module has no
    vcpu_mem_enc_ioctl: SVM, and VMX built without CONFIG_KVM_INTEL_TDX (this 6.18.44 host;
    the sweep in docs/capabilities.md). A TD's vCPUs get the TDX handler from their VM
    type; kmock_tdx answers EINVAL for the other vCPUs of a TDX host (vt_vcpu_mem_enc_ioctl:
    !is_td_vcpu)."""
    vcpu_of(f)
    raise oserror(errno.ENOTTY)


def vcpu_ioctls():
    """These handlers (kmock.kvm.x86_vcpu adds them to its table)."""
    return {
        X.KVM_INTERRUPT: interrupt,
        X.KVM_HAS_DEVICE_ATTR: has_device_attr, X.KVM_GET_DEVICE_ATTR: get_device_attr,
        X.KVM_SET_DEVICE_ATTR: set_device_attr,
        X.KVM_TRANSLATE: translate, X.KVM_SET_CPUID: set_cpuid,
        X.KVM_GET_ONE_REG: get_one_reg, X.KVM_SET_ONE_REG: set_one_reg,
        X.KVM_GET_REG_LIST: get_reg_list,
        K.KVM_MEMORY_ENCRYPT_OP: vcpu_mem_enc_op,
        K.KVM_ENABLE_CAP: vcpu_enable_cap,
    }
