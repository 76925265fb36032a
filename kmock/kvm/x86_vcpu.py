"""x86 vCPU register and state ioctls: state stores with Linux 6.18's validation.

The guest of a kmock vCPU is a script (kmock.kvm.guest), so these registers never
steer execution: they are stored, validated and read back as arch/x86/kvm/x86.c
kvm_arch_vcpu_ioctl does (sources per handler below; docs/vcpu-state.md). The
values that differ per host CPU (the MSR lists, the TSC frequency, the XSAVE image)
come from the profile's ``x86_vcpu`` settings (probed on the host profile, see
:func:`probe_host`), else from kmock.kvm.x86_state.DEFAULTS_618.

The state is kmock.kvm.x86_state's :class:`X86State`; the MSRs are kmock.kvm.x86_msr.
"""

import ctypes
import errno
import os
import re

from .. import _libc
from ..errors import oserror
from ..kernel_util import copy_from_user, copy_to_user, int_arg, read_user_at, write_user_at
from ..uapi import kvm as K
from ..uapi import x86 as X
from . import x86_lapic, x86_mce, x86_msr, x86_paging, x86_state, x86_vcpu_misc, x86_vm
from .x86_state import (apic_base_ok, cpuid_entry,
                        cpuid_entry_of, cr4_reserved, fpu_hidden, guest_maxphyaddr,
                        guest_supported_xcr0,
                        has_run, protected, settings, state, supported_xcr0,
                        vcpu_of)

ENTRY = ctypes.sizeof(K.kvm_cpuid_entry2)

#: KVM_MAX_CPUID_ENTRIES (arch/x86/include/asm/kvm_host.h)
KVM_MAX_CPUID_ENTRIES = 256
#: kvm_arch_vcpu_ioctl KVM_SET_TSC_KHZ -> kvm_set_tsc_khz: the tolerance (module
#: parameter tsc_tolerance_ppm, default 250) inside which no scaling is needed
TSC_TOLERANCE_PPM = 250

# --- GET/SET_REGS ----------------------------------------------------------------------------


def get_regs(f, arg):
    """kvm_arch_vcpu_ioctl_get_regs (EINVAL when the state is protected)."""
    vcpu = vcpu_of(f)
    protected(vcpu)
    st = state(vcpu)
    copy_to_user(arg, st.regs)
    return 0


def set_regs(f, arg):
    """kvm_arch_vcpu_ioctl_set_regs -> __set_regs: RFLAGS gets X86_EFLAGS_FIXED (bit 1) and
    is otherwise kept whole (vmx_set_rflags writes it to the VMCS unchecked); a pending
    exception is dropped. EINVAL when the state is protected. The profile setting
    ``rflags_kept`` (probed) is the mask of bits a host keeps: the PVM probe host drops
    RFLAGS.VM (bit 17)."""
    vcpu = vcpu_of(f)
    r = copy_from_user(arg, K.kvm_regs)
    protected(vcpu)
    st = state(vcpu)
    r.rflags = (r.rflags | 0x2) & st.rflags_kept
    st.regs = r
    st.exception["pending"] = 0
    return 0


# --- GET/SET_SREGS ---------------------------------------------------------------------------


def get_sregs(f, arg):
    """kvm_arch_vcpu_ioctl_get_sregs: the stored registers; interrupt_bitmap has the bit of
    an injected, not soft, interrupt. EINVAL when the state is protected."""
    vcpu = vcpu_of(f)
    protected(vcpu)
    st = state(vcpu)
    out = X.kvm_sregs.from_buffer_copy(st.sregs)
    if x86_lapic.in_kernel(vcpu):
        out.cr8 = x86_lapic.get_cr8(vcpu)  # kvm_get_cr8: the LAPIC's TPR
    for i in range(4):
        out.interrupt_bitmap[i] = 0
    injected, nr, soft = st.interrupt
    if injected and not soft:
        out.interrupt_bitmap[nr >> 6] |= 1 << (nr & 63)
    copy_to_user(arg, out)
    return 0


def valid_sregs(st, s):
    """kvm_is_valid_sregs: long mode needs CR4.PAE, EFER.LMA and a legal CR3; outside it
    EFER.LMA and CS.L are clear; then kvm_is_valid_cr4 and kvm_is_valid_cr0."""
    if s.efer & X.EFER_LME and s.cr0 & X.X86_CR0_PG:
        if not s.cr4 & X.X86_CR4_PAE or not s.efer & X.EFER_LMA:
            return False
        if s.cr3 >> guest_maxphyaddr(st.cpuid):  # kvm_vcpu_is_legal_cr3
            return False
    elif s.efer & X.EFER_LMA or s.cs.l:
        return False
    if s.cr4 & cr4_reserved(st):
        return False
    cr0 = s.cr0
    if cr0 >> 32:
        return False
    if cr0 & X.X86_CR0_NW and not cr0 & X.X86_CR0_CD:
        return False
    return not (cr0 & X.X86_CR0_PG and not cr0 & X.X86_CR0_PE)


def _set_sregs_common(vcpu, st, s, update_pdptrs):
    """__set_sregs_common's checks and stores, shared by SET_SREGS and SET_SREGS2 (``s``
    is a kvm_sregs; its interrupt_bitmap is ignored here): EINVAL if kvm_is_valid_sregs
    fails or kvm_apic_set_base refuses apic_base; CR8 with reserved bits is not written
    (kvm_set_cr8's error is ignored); with an in-kernel LAPIC, CR8 is its TPR's class
    (kvm_lapic_set_tpr; GET reads it back from the TPR). With ``update_pdptrs`` and PAE paging in the new
    state, load_pdptrs reads the PDPTEs at CR3 from guest memory
    (kmock.kvm.x86_paging.load_pdptrs; its failure is ignored: the PDPTRs keep their
    value). With the profile setting ``legacy_paging`` False (probed: the PVM host) CR0.PG
    is dropped outside long mode after the checks, as that host does."""
    if not valid_sregs(st, s) or not apic_base_ok(st, s.apic_base):
        raise oserror(errno.EINVAL)
    if s.cr8 & ~0xF:
        s.cr8 = st.sregs.cr8
    elif x86_lapic.in_kernel(vcpu):
        x86_lapic.set_cr8(vcpu, s.cr8)  # kvm_set_cr8 -> kvm_lapic_set_tpr
    if not st.legacy_paging and not s.efer & X.EFER_LMA:
        s.cr0 &= ~X.X86_CR0_PG  # the PVM probe host (settings "legacy_paging")
    for i in range(4):
        s.interrupt_bitmap[i] = 0
    st.sregs = s
    if update_pdptrs and _pae_paging(s):
        x86_paging.load_pdptrs(vcpu, st)


def set_sregs(f, arg):
    """kvm_arch_vcpu_ioctl_set_sregs -> __set_sregs: :func:`_set_sregs_common`, then the
    lowest bit of interrupt_bitmap queues that interrupt (kvm_queue_interrupt). EINVAL
    first when the state is protected."""
    vcpu = vcpu_of(f)
    s = copy_from_user(arg, X.kvm_sregs)
    protected(vcpu)
    st = state(vcpu)
    pending = next((i * 64 + (w & -w).bit_length() - 1
                    for i, w in enumerate(s.interrupt_bitmap) if w), None)
    _set_sregs_common(vcpu, st, s, update_pdptrs=True)
    if pending is not None:
        st.interrupt = (1, pending, 0)
    return 0


def _pae_paging(s):
    """is_pae_paging: CR0.PG, CR4.PAE and not long mode (EFER.LMA)."""
    return bool(s.cr0 & X.X86_CR0_PG and s.cr4 & X.X86_CR4_PAE and not s.efer & X.EFER_LMA)


#: the bytes kvm_sregs2 shares with kvm_sregs (everything before interrupt_bitmap)
_SREGS_COMMON = X.kvm_sregs.interrupt_bitmap.offset


def get_sregs2(f, arg):
    """KVM_GET_SREGS2 (kvm_arch_vcpu_ioctl -> __get_sregs2): EINVAL when the state is
    protected (checked before anything else); the SREGS fields of __get_sregs_common in
    a zeroed struct, and with PAE paging the PDPTRs and KVM_SREGS2_FLAGS_PDPTRS_VALID."""
    vcpu = vcpu_of(f)
    protected(vcpu)
    st = state(vcpu)
    out = X.kvm_sregs2()
    ctypes.memmove(ctypes.addressof(out), ctypes.addressof(st.sregs), _SREGS_COMMON)
    if x86_lapic.in_kernel(vcpu):
        out.cr8 = x86_lapic.get_cr8(vcpu)  # kvm_get_cr8: the LAPIC's TPR
    if _pae_paging(st.sregs):
        out.flags = X.KVM_SREGS2_FLAGS_PDPTRS_VALID
        for i, v in enumerate(st.pdptrs):
            out.pdptrs[i] = v
    copy_to_user(arg, out)
    return 0


def set_sregs2(f, arg):
    """KVM_SET_SREGS2 (kvm_arch_vcpu_ioctl -> __set_sregs2): EINVAL when the state is
    protected (before the copy, so before EFAULT); EINVAL for a flag other than
    KVM_SREGS2_FLAGS_PDPTRS_VALID, and for that flag without PAE paging in the new
    CR0/CR4/EFER or with guest_state_protected (legacy SEV-ES); then :func:`_set_sregs_common`; the PDPTRs are stored unchecked
    (kvm_pdptr_write) when the flag is set."""
    vcpu = vcpu_of(f)
    protected(vcpu)
    s2 = copy_from_user(arg, X.kvm_sregs2)
    st = state(vcpu)
    if s2.flags & ~X.KVM_SREGS2_FLAGS_PDPTRS_VALID:
        raise oserror(errno.EINVAL)
    valid_pdptrs = s2.flags & X.KVM_SREGS2_FLAGS_PDPTRS_VALID
    vt = vcpu.vm.vmtype
    state_protected = vt.has_vcpu_state_hooks and vt.guest_state_protected(vcpu)
    if valid_pdptrs and (not _pae_paging(s2) or state_protected):
        raise oserror(errno.EINVAL)
    s = X.kvm_sregs()
    ctypes.memmove(ctypes.addressof(s), ctypes.addressof(s2), _SREGS_COMMON)
    _set_sregs_common(vcpu, st, s, update_pdptrs=not valid_pdptrs)
    if valid_pdptrs:
        st.pdptrs = list(s2.pdptrs)
    return 0


# --- GET/SET_LAPIC (kmock.kvm.x86_lapic) -----------------------------------------------------


def get_lapic(f, arg):
    """kvm_arch_vcpu_ioctl KVM_GET_LAPIC: EINVAL without an in-kernel LAPIC, then
    kvm_vcpu_ioctl_get_lapic (EINVAL when guest_apic_protected), then the copy out."""
    vcpu = vcpu_of(f)
    x86_lapic.lapic(vcpu)
    if x86_lapic.apic_protected(vcpu):
        raise oserror(errno.EINVAL)
    copy_to_user(arg, X.kvm_lapic_state.from_buffer_copy(x86_lapic.get_state(vcpu)))
    return 0


def set_lapic(f, arg):
    """kvm_arch_vcpu_ioctl KVM_SET_LAPIC: EINVAL without an in-kernel LAPIC, the copy in
    (EFAULT), then kvm_vcpu_ioctl_set_lapic (EINVAL when guest_apic_protected) ->
    kvm_apic_set_state."""
    vcpu = vcpu_of(f)
    x86_lapic.lapic(vcpu)
    s = copy_from_user(arg, X.kvm_lapic_state)
    if x86_lapic.apic_protected(vcpu):
        raise oserror(errno.EINVAL)
    x86_lapic.set_state(vcpu, bytes(s))
    return 0


# --- KVM_SET_GUEST_DEBUG, KVM_NMI ----------------------------------------------------------


def set_guest_debug(f, arg):
    """kvm_vcpu_ioctl copies the struct in (EFAULT), then
    kvm_arch_vcpu_ioctl_set_guest_debug: EINVAL when guest_state_protected (any VM type:
    SEV-ES too); INJECT_DB / INJECT_BP (ENABLE or not) queue #DB (else #BP), EBUSY while
    an exception is pending or injected (kvm_is_exception_pending). x86 checks no flag
    against KVM_GUESTDBG_VALID_MASK (probed: unknown bits succeed). The control word
    (0 without ENABLE) and the debug registers are stored; they steer nothing in kmock,
    and the UAPI shows neither (DEBUGREGS reports the guest's, RFLAGS hides the TF)."""
    vcpu = vcpu_of(f)
    dbg = copy_from_user(arg, X.kvm_guest_debug)
    vt = vcpu.vm.vmtype
    if vt.has_vcpu_state_hooks and vt.guest_state_protected(vcpu):
        raise oserror(errno.EINVAL)
    st = state(vcpu)
    ctl = dbg.control
    if ctl & (X.KVM_GUESTDBG_INJECT_DB | X.KVM_GUESTDBG_INJECT_BP):
        ex = st.exception
        if ex["pending"] or ex["injected"]:
            raise oserror(errno.EBUSY)
        ex.update(injected=0, pending=1, has_error_code=0, error_code=0, has_payload=0,
                  payload=0, nr=1 if ctl & X.KVM_GUESTDBG_INJECT_DB else 3)
    st.guest_debug = ctl if ctl & X.KVM_GUESTDBG_ENABLE else 0
    st.guest_debug_regs = tuple(dbg.debugreg)
    return 0


def nmi(f, arg):
    """kvm_vcpu_ioctl_nmi -> kvm_inject_nmi: an NMI is queued (no in-kernel LAPIC
    needed), and process_nmi (run by the next KVM_GET_VCPU_EVENTS or entry) folds it into
    nmi_pending, at most 2, or 1 while NMIs are masked or one is injected. kmock folds at
    once, which reads the same through KVM_GET_VCPU_EVENTS."""
    x86_state.queue_nmi(state(vcpu_of(f)))
    return 0


def smi(f, arg):
    """KVM_SMI -> kvm_inject_smi (arch/x86/kvm/smm.h): KVM_REQ_SMI, which the next
    KVM_GET_VCPU_EVENTS (process_smi) or entry turns into smi.pending; kmock sets it at
    once. Without CONFIG_KVM_SMM (profile setting ``kvm_smm`` False, probed: the PVM host)
    kvm_inject_smi is -ENOTTY."""
    st = state(vcpu_of(f))
    if not st.kvm_smm:
        raise oserror(errno.ENOTTY)
    st.smi_pending = 1
    return 0


# --- GET/SET_FPU -----------------------------------------------------------------------------

# struct fxregs_state offsets
_FX_CWD, _FX_SWD, _FX_TWD, _FX_FOP, _FX_RIP, _FX_RDP, _FX_MXCSR = 0, 2, 4, 6, 8, 16, 24
_FX_ST, _FX_XMM = 32, 160


def get_fpu(f, arg):
    """kvm_arch_vcpu_ioctl_get_fpu: the legacy area of the fpstate buffer, without MXCSR
    (the kernel does not copy it: kvm_fpu.mxcsr reads 0). A confidential fpstate: EINVAL
    (protected-state VM) or zeros."""
    vcpu = vcpu_of(f)
    if fpu_hidden(vcpu):
        copy_to_user(arg, X.kvm_fpu())
        return 0
    st = state(vcpu)
    fx = st.fpstate
    out = X.kvm_fpu()
    ctypes.memmove(ctypes.addressof(out.fpr), bytes(fx[_FX_ST:_FX_ST + 128]), 128)
    out.fcw = int.from_bytes(fx[_FX_CWD:_FX_CWD + 2], "little")
    out.fsw = int.from_bytes(fx[_FX_SWD:_FX_SWD + 2], "little")
    out.ftwx = fx[_FX_TWD]
    out.last_opcode = int.from_bytes(fx[_FX_FOP:_FX_FOP + 2], "little")
    out.last_ip = int.from_bytes(fx[_FX_RIP:_FX_RIP + 8], "little")
    out.last_dp = int.from_bytes(fx[_FX_RDP:_FX_RDP + 8], "little")
    ctypes.memmove(ctypes.addressof(out.xmm), bytes(fx[_FX_XMM:_FX_XMM + 256]), 256)
    copy_to_user(arg, out)
    return 0


def set_fpu(f, arg):
    """kvm_arch_vcpu_ioctl_set_fpu: writes the legacy area (MXCSR included), not XSTATE_BV.
    A confidential fpstate: EINVAL (protected-state VM) or nothing written."""
    vcpu = vcpu_of(f)
    fpu = copy_from_user(arg, X.kvm_fpu)
    if fpu_hidden(vcpu):
        return 0
    st = state(vcpu)
    fx = st.fpstate
    fx[_FX_ST:_FX_ST + 128] = bytes(fpu.fpr)
    fx[_FX_CWD:_FX_CWD + 2] = fpu.fcw.to_bytes(2, "little")
    fx[_FX_SWD:_FX_SWD + 2] = fpu.fsw.to_bytes(2, "little")
    fx[_FX_TWD] = fpu.ftwx
    fx[_FX_FOP:_FX_FOP + 2] = fpu.last_opcode.to_bytes(2, "little")
    fx[_FX_RIP:_FX_RIP + 8] = fpu.last_ip.to_bytes(8, "little")
    fx[_FX_RDP:_FX_RDP + 8] = fpu.last_dp.to_bytes(8, "little")
    fx[_FX_MXCSR:_FX_MXCSR + 4] = fpu.mxcsr.to_bytes(4, "little")
    fx[_FX_XMM:_FX_XMM + 256] = bytes(fpu.xmm)
    return 0


# --- XSAVE -----------------------------------------------------------------------------------

_HDR = 512  # struct xstate_header in the uabi (non-compacted) buffer
_FP, _SSE, _YMM = 1, 2, 4


def _components(st):
    """(bit, offset, size) of the extended components KVM supports (CPUID 0xD.i)."""
    mask = supported_xcr0(st.supported)
    out = []
    for bit in range(2, 64):
        if mask >> bit & 1:
            e = cpuid_entry(st.supported, 0xD, bit)
            if e and e[3] and e[4] + e[3] <= st.xsave_size:
                out.append((bit, e[4], e[3]))
    return out


def _xsave_image(st):
    """fpu_copy_guest_fpstate_to_uabi -> __copy_xstate_to_uabi_buf: XSTATE_BV limited to
    the guest's supported XCR0 plus FP and SSE (KVM_GET_XSAVE passes
    guest_supported_xcr0: a part the guest's CPUID lacks reads as not in use, probed);
    each part from the state if its bit is set, else the init value; XCOMP_BV 0."""
    init, fx = st.xsave_init, st.fpstate
    xf = st.xfeatures & (guest_supported_xcr0(st) | _FP | _SSE)
    out = bytearray(init)
    if xf & _FP:
        out[0:_FX_MXCSR] = fx[0:_FX_MXCSR]
        out[_FX_ST:_FX_XMM] = fx[_FX_ST:_FX_XMM]
    if xf & (_SSE | _YMM):  # MXCSR and its mask: the state's, else the init values
        out[_FX_MXCSR:_FX_MXCSR + 8] = fx[_FX_MXCSR:_FX_MXCSR + 8]
    if xf & _SSE:
        out[_FX_XMM:_FX_XMM + 256] = fx[_FX_XMM:_FX_XMM + 256]
    out[_HDR:_HDR + 64] = bytes(64)
    out[_HDR:_HDR + 8] = xf.to_bytes(8, "little")
    for bit, off, size in _components(st):
        if xf >> bit & 1:
            out[off:off + size] = fx[off:off + size]
    return bytes(out)


def get_xsave(f, arg):
    """KVM_GET_XSAVE: EINVAL when the guest's buffer is larger than struct kvm_xsave;
    then a confidential fpstate: EINVAL (protected-state VM) or zeros."""
    vcpu = vcpu_of(f)
    st = state(vcpu)
    if st.xsave_size > ctypes.sizeof(X.kvm_xsave):
        raise oserror(errno.EINVAL)
    if fpu_hidden(vcpu):
        write_user_at(arg, 0, bytes(ctypes.sizeof(X.kvm_xsave)))
        return 0
    write_user_at(arg, 0, _xsave_image(st))
    return 0


def get_xsave2(f, arg):
    """KVM_GET_XSAVE2: KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2) bytes; a confidential fpstate:
    EINVAL (protected-state VM) or zeros."""
    vcpu = vcpu_of(f)
    st = state(vcpu)
    if fpu_hidden(vcpu):
        write_user_at(arg, 0, bytes(st.xsave_size))
        return 0
    write_user_at(arg, 0, _xsave_image(st))
    return 0


def set_xsave(f, arg):
    """kvm_vcpu_ioctl_x86_set_xsave -> fpu_copy_uabi_to_guest_fpstate / copy_uabi_to_xstate
    (arch/x86/kernel/fpu): XSTATE_BV beyond the supported XCR0, XCOMP_BV or a reserved
    header byte set, MXCSR outside mxcsr_feature_mask (when FP, SSE or YMM is set):
    EINVAL; then each part whose bit is set is copied (FP: the legacy area up to the XMM
    registers, MXCSR and its mask included; SSE or YMM without FP: MXCSR and its mask), and
    XSTATE_BV is replaced. A
    confidential fpstate first: EINVAL (protected-state VM) or nothing written."""
    vcpu = vcpu_of(f)
    st = state(vcpu)
    buf = read_user_at(arg, 0, st.xsave_size)
    if fpu_hidden(vcpu):
        return 0
    xf = int.from_bytes(buf[_HDR:_HDR + 8], "little")
    if xf & ~supported_xcr0(st.supported) or any(buf[_HDR + 8:_HDR + 64]):
        raise oserror(errno.EINVAL)
    fx = st.fpstate
    if xf & (_FP | _SSE | _YMM):
        mxcsr = int.from_bytes(buf[_FX_MXCSR:_FX_MXCSR + 4], "little")
        mask = int.from_bytes(st.xsave_init[28:32], "little") or 0xFFBF
        if mxcsr & ~mask:
            raise oserror(errno.EINVAL)
        if not xf & _FP:  # SSE and YMM need MXCSR (and its mask) even without FP
            fx[_FX_MXCSR:_FX_MXCSR + 8] = buf[_FX_MXCSR:_FX_MXCSR + 8]
    if xf & _FP:  # the FP component is the whole legacy area before the XMM registers
        fx[0:_FX_XMM] = buf[0:_FX_XMM]
    if xf & _SSE:
        fx[_FX_XMM:_FX_XMM + 256] = buf[_FX_XMM:_FX_XMM + 256]
    for bit, off, size in _components(st):
        if xf >> bit & 1:
            fx[off:off + size] = buf[off:off + size]
    st.xfeatures = xf
    return 0


# --- XCRS ------------------------------------------------------------------------------------


def get_xcrs(f, arg):
    """kvm_vcpu_ioctl_x86_get_xcrs: one XCR, XCR0 (EINVAL when the state is protected)."""
    vcpu = vcpu_of(f)
    protected(vcpu)
    st = state(vcpu)
    out = X.kvm_xcrs(nr_xcrs=1)
    out.xcrs[0].value = st.xcr0
    copy_to_user(arg, out)
    return 0


def _xcr0_ok(st, xcr0):
    """__kvm_set_xcr: FP set, YMM needs SSE, only the guest's supported bits (CPUID 0xD of
    the guest & KVM's), BNDREGS with BNDCSR, AVX-512 all or none and with YMM, AMX tiles
    together."""
    if not xcr0 & _FP or xcr0 & _YMM and not xcr0 & _SSE:
        return False
    if xcr0 & ~(guest_supported_xcr0(st) | _FP):
        return False
    if bool(xcr0 & 0x8) != bool(xcr0 & 0x10):
        return False
    avx512 = xcr0 & 0xE0
    if avx512 and (not xcr0 & _YMM or avx512 != 0xE0):
        return False
    tile = xcr0 & 0x60000
    return not tile or tile == 0x60000


def set_xcrs(f, arg):
    """kvm_vcpu_ioctl_x86_set_xcrs: nr_xcrs > KVM_MAX_XCRS or flags -> EINVAL; the first
    entry for XCR0 is set (__kvm_set_xcr failing is EINVAL); other XCRs are ignored. A
    protected state is EINVAL before those checks."""
    vcpu = vcpu_of(f)
    x = copy_from_user(arg, X.kvm_xcrs)
    protected(vcpu)
    st = state(vcpu)
    if x.nr_xcrs > X.KVM_MAX_XCRS or x.flags:
        raise oserror(errno.EINVAL)
    for i in range(x.nr_xcrs):
        if x.xcrs[i].xcr == 0:
            if not _xcr0_ok(st, x.xcrs[i].value):
                raise oserror(errno.EINVAL)
            st.xcr0 = x.xcrs[i].value
            break
    return 0


# --- CPUID -----------------------------------------------------------------------------------


def _read_entries(arg, nent):
    raw = read_user_at(arg, ctypes.sizeof(K.kvm_cpuid2), nent * ENTRY)
    out = []
    for i in range(nent):
        e = K.kvm_cpuid_entry2.from_buffer_copy(raw, i * ENTRY)
        out.append((e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx))
    return tuple(out)


def set_cpuid2(f, arg):
    """kvm_vcpu_ioctl_set_cpuid2: nent > KVM_MAX_CPUID_ENTRIES -> E2BIG; kvm_set_cpuid:
    after the vCPU has run only the identical table is accepted (kvm_cpuid_check_equal,
    else EINVAL); kvm_check_cpuid: a virtual-address width in 0x80000008 other than 0,
    48 or 57 is EINVAL."""
    vcpu = vcpu_of(f)
    head = copy_from_user(arg, K.kvm_cpuid2)
    if head.nent > KVM_MAX_CPUID_ENTRIES:
        raise oserror(errno.E2BIG)
    return kvm_set_cpuid(vcpu, _read_entries(arg, head.nent))


#: XFEATURE_MASK_USER_DYNAMIC (arch/x86/include/asm/fpu/xstate.h): XTILE_DATA
XFEATURE_MASK_USER_DYNAMIC = 1 << 18


def kvm_set_cpuid(vcpu, entries):
    """kvm_set_cpuid with the table as (function, index, flags, eax, ebx, ecx, edx)
    tuples: KVM_SET_CPUID2 and the legacy KVM_SET_CPUID (kmock.kvm.x86_vcpu_misc)."""
    st = state(vcpu)
    if has_run(vcpu):
        if entries != st.cpuid:
            raise oserror(errno.EINVAL)
        return 0
    e = cpuid_entry_of(entries, 0x80000008)  # kvm_check_cpuid: the first such entry
    if e is not None and (e[3] >> 8 & 0xFF) not in (0, 48, 57):
        raise oserror(errno.EINVAL)
    e = cpuid_entry(entries, 0xD, 0)
    dynamic = (e[3] | e[6] << 32) & XFEATURE_MASK_USER_DYNAMIC if e is not None else 0
    if dynamic:
        # kvm_check_cpuid -> fpu_enable_guest_xfd_features: a dynamic feature (AMX tile
        # data) needs the process's ARCH_REQ_XCOMP_GUEST_PERM, else EPERM (probed). A
        # process kmock cannot ask (a kmock serve client) is taken as permitted [kmock].
        perm = _libc.guest_xcomp_perm()
        if perm is not None and dynamic & ~perm:
            raise oserror(errno.EPERM)
    st.cpuid = entries
    st.cpuid_set = True
    return 0


def get_cpuid2(f, arg):
    """kvm_vcpu_ioctl_get_cpuid2: nent smaller than the table -> E2BIG (nent is not
    written back); else the entries, then nent."""
    st = state(vcpu_of(f))
    head = copy_from_user(arg, K.kvm_cpuid2)
    if head.nent < len(st.cpuid):
        raise oserror(errno.E2BIG)
    table = (K.kvm_cpuid_entry2 * len(st.cpuid))()
    for e, (fn, idx, flags, a, b, c, d) in zip(table, st.cpuid):
        e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx = fn, idx, flags, a, b, c, d
    if st.cpuid:
        write_user_at(arg, ctypes.sizeof(K.kvm_cpuid2), bytes(table))
    head.nent = len(st.cpuid)
    copy_to_user(arg, head)
    return 0


# --- MP state, events, debug registers --------------------------------------------------------


def get_mp_state(f, arg):
    """kvm_arch_vcpu_ioctl_get_mpstate: the pending events are accepted first."""
    vcpu = vcpu_of(f)
    accept_events(vcpu)
    copy_to_user(arg, X.kvm_mp_state(state(vcpu).mp_state))
    return 0


def accept_events(vcpu):
    """kvm_apic_accept_events (arch/x86/kvm/lapic.c): first a latched INIT
    (KVM_SET_VCPU_EVENTS' smi.latched_init; kept while in SMM) resets the vCPU
    (X86State.init_event) and makes it RUNNABLE if it is the BSP, else INIT_RECEIVED; then
    the SIPI KVM_SET_MP_STATE (SIPI_RECEIVED) left pending is consumed, and delivered only
    to a vCPU still INIT_RECEIVED (kvm_vcpu_deliver_sipi_vector: CS selector = vector << 8, base =
    vector << 12, RIP 0; then RUNNABLE); in SMM it is eaten. KVM_GET_MP_STATE and a KVM_RUN
    that enters the vCPU accept it; KVM_SET_MP_STATE, KVM_GET_SREGS and a KVM_RUN refused
    for immediate_exit do not (conformance ``x86_sipi_vector``)."""
    st = state(vcpu)
    if st.init_pending and not st.smm:  # (INITs are latched while in SMM)
        st.init_pending = False
        st.init_event()
        x86_lapic.init_reset(vcpu)
        bsp = vcpu.id == x86_vm.state(vcpu.vm).bsp_vcpu_id
        st.mp_state = X.KVM_MP_STATE_RUNNABLE if bsp else X.KVM_MP_STATE_INIT_RECEIVED
        vcpu.halted = False
        vcpu.set_stopped(not bsp)
    if not st.sipi_pending:
        return
    st.sipi_pending = False
    if st.smm or st.mp_state != X.KVM_MP_STATE_INIT_RECEIVED:
        return
    cs = st.sregs.cs
    cs.selector = st.sipi_vector << 8
    cs.base = st.sipi_vector << 12
    st.regs.rip = 0
    st.mp_state = X.KVM_MP_STATE_RUNNABLE
    vcpu.set_stopped(False)


#: the states KVM_SET_MP_STATE takes only with an in-kernel LAPIC (x86.c)
_LAPIC_MP_STATES = (X.KVM_MP_STATE_UNINITIALIZED, X.KVM_MP_STATE_HALTED,
                    X.KVM_MP_STATE_AP_RESET_HOLD, X.KVM_MP_STATE_INIT_RECEIVED,
                    X.KVM_MP_STATE_SIPI_RECEIVED)
#: the states in which KVM_RUN blocks until a signal (the vCPU waits for INIT or SIPI)
WAIT_FOR_SIPI = (X.KVM_MP_STATE_UNINITIALIZED, X.KVM_MP_STATE_INIT_RECEIVED,
                 X.KVM_MP_STATE_AP_RESET_HOLD)


def set_mp_state(f, arg):
    """kvm_arch_vcpu_ioctl_set_mpstate: RUNNABLE always; UNINITIALIZED, HALTED,
    AP_RESET_HOLD, INIT_RECEIVED and SIPI_RECEIVED only with an in-kernel LAPIC (split
    or full irqchip); INIT/SIPI also not while an SMI is pending; anything else EINVAL.
    SIPI_RECEIVED is stored as INIT_RECEIVED with the SIPI pending, which the next
    KVM_GET_MP_STATE or KVM_RUN accepts (:func:`accept_events`): RUNNABLE, as
    GET reads it right after on this machine (conformance ``x86_mp_state_lapic``).
    Waiting for INIT/SIPI (UNINITIALIZED, as QEMU puts its APs at reset), the vCPU's
    KVM_RUN blocks until a signal; HALTED halts it as a guest HLT does."""
    vcpu = vcpu_of(f)
    st = state(vcpu)
    value = copy_from_user(arg, X.kvm_mp_state).mp_state
    if value in _LAPIC_MP_STATES:
        if not x86_vm.state(vcpu.vm).irqchip_in_kernel:
            raise oserror(errno.EINVAL)
    elif value != X.KVM_MP_STATE_RUNNABLE:
        raise oserror(errno.EINVAL)
    if value in (X.KVM_MP_STATE_INIT_RECEIVED, X.KVM_MP_STATE_SIPI_RECEIVED) and \
            (st.smm or st.smi_pending):
        raise oserror(errno.EINVAL)  # !kvm_apic_init_sipi_allowed (SMM) or smi_pending
    if value == X.KVM_MP_STATE_SIPI_RECEIVED:
        value = X.KVM_MP_STATE_INIT_RECEIVED
        st.sipi_pending = True  # set_bit(KVM_APIC_SIPI, &apic->pending_events)
    st.mp_state = value
    vcpu.halted = value == X.KVM_MP_STATE_HALTED
    vcpu.set_stopped(value in WAIT_FOR_SIPI)
    return 0


_EVENT_FLAGS = (X.KVM_VCPUEVENT_VALID_NMI_PENDING | X.KVM_VCPUEVENT_VALID_SIPI_VECTOR |
                X.KVM_VCPUEVENT_VALID_SHADOW | X.KVM_VCPUEVENT_VALID_SMM |
                X.KVM_VCPUEVENT_VALID_PAYLOAD | X.KVM_VCPUEVENT_VALID_TRIPLE_FAULT)
NMI_VECTOR = 2


def _event_caps(vcpu):
    """(kvm->arch.exception_payload_enabled, kvm->arch.triple_fault_event): KVM_ENABLE_CAP
    of KVM_CAP_EXCEPTION_PAYLOAD / KVM_CAP_X86_TRIPLE_FAULT_EVENT (kmock.kvm.x86_vm)."""
    enabled = x86_vm.state(vcpu.vm).enabled
    return (bool(enabled.get(K.KVM_CAP_EXCEPTION_PAYLOAD)),
            bool(enabled.get(K.KVM_CAP_X86_TRIPLE_FAULT_EVENT)))


def get_vcpu_events(f, arg):
    """kvm_vcpu_ioctl_x86_get_vcpu_events: flags NMI_PENDING | SHADOW | SMM, plus PAYLOAD
    (the pending exception apart from the injected one) with KVM_CAP_EXCEPTION_PAYLOAD
    and TRIPLE_FAULT with KVM_CAP_X86_TRIPLE_FAULT_EVENT; without the first a pending
    exception is reported as injected (and as pending); a soft exception (#BP, #OF: no
    instruction length in the API) as neither. sipi_vector 0."""
    vcpu = vcpu_of(f)
    st = state(vcpu)
    payload, triple = _event_caps(vcpu)
    ev = X.kvm_vcpu_events()
    ex = st.exception
    if ex["nr"] not in (3, 4):  # kvm_exception_is_soft (#BP, #OF): not reported
        ev.exception.injected = ex["injected"]
        ev.exception.pending = ex["pending"]  # in both modes (probed)
        if not payload:
            ev.exception.injected |= ex["pending"]
    ev.exception.nr = ex["nr"]
    ev.exception.has_error_code = ex["has_error_code"]
    ev.exception.error_code = ex["error_code"]
    ev.exception_has_payload = ex["has_payload"]
    ev.exception_payload = ex["payload"]
    injected, nr, soft = st.interrupt
    ev.interrupt.injected = 1 if injected and not soft else 0
    ev.interrupt.nr = nr
    ev.interrupt.shadow = st.shadow
    ev.nmi.injected = st.nmi_injected
    ev.nmi.pending = st.nmi_pending
    ev.nmi.masked = st.nmi_masked
    ev.smi.smm = st.smm
    ev.smi.pending = st.smi_pending
    ev.smi.smm_inside_nmi = st.smm_inside_nmi
    ev.smi.latched_init = 1 if st.init_pending else 0  # kvm_lapic_latched_init
    ev.flags = (X.KVM_VCPUEVENT_VALID_NMI_PENDING | X.KVM_VCPUEVENT_VALID_SHADOW |
                X.KVM_VCPUEVENT_VALID_SMM)
    if payload:
        ev.flags |= X.KVM_VCPUEVENT_VALID_PAYLOAD
    if triple:
        ev.flags |= X.KVM_VCPUEVENT_VALID_TRIPLE_FAULT
        ev.triple_fault.pending = st.triple_fault_pending
    copy_to_user(arg, ev)
    return 0


def set_vcpu_events(f, arg):
    """kvm_vcpu_ioctl_x86_set_vcpu_events: unknown flags; VALID_PAYLOAD without
    KVM_CAP_EXCEPTION_PAYLOAD; an injected or pending exception vector > 31 or NMI: EINVAL
    before anything is written. VALID_TRIPLE_FAULT without KVM_CAP_X86_TRIPLE_FAULT_EVENT
    is EINVAL after the rest was written (the kernel checks it last). Without VALID_PAYLOAD the pending exception and its
    payload are dropped; with it, a pending exception is not also injected. VALID_SMM with
    smi.smm or smi.pending while the vCPU is INIT_RECEIVED: EINVAL before anything is
    written. A kernel without CONFIG_KVM_SMM (profile setting ``kvm_smm`` False, probed:
    the PVM host) refuses smi.smm, smi.pending or smm_inside_nmi with EINVAL after the
    exception, interrupt and NMI state were written (its ``#else`` branch). With SMM, entry
    (smi.smm) is not modelled: EINVAL before anything is written [kmock]. The interrupt
    shadow is stored through the profile's ``shadow_mask`` (vmx_set_interrupt_shadow keeps
    MOV_SS and STI, 3; the PVM probe host keeps the byte)."""
    vcpu = vcpu_of(f)
    st = state(vcpu)
    payload, triple = _event_caps(vcpu)
    ev = copy_from_user(arg, X.kvm_vcpu_events)
    if ev.flags & ~_EVENT_FLAGS:
        raise oserror(errno.EINVAL)
    injected, pending, has_payload = ev.exception.injected, ev.exception.pending, \
        ev.exception_has_payload
    if ev.flags & X.KVM_VCPUEVENT_VALID_PAYLOAD:
        if not payload:
            raise oserror(errno.EINVAL)
        if pending:
            injected = 0
        else:
            has_payload = 0
    else:
        pending = has_payload = 0
    if (injected or pending) and (ev.exception.nr > 31 or ev.exception.nr == NMI_VECTOR):
        raise oserror(errno.EINVAL)
    smm = ev.flags & X.KVM_VCPUEVENT_VALID_SMM
    if smm and (ev.smi.smm or ev.smi.pending) and st.mp_state == X.KVM_MP_STATE_INIT_RECEIVED:
        raise oserror(errno.EINVAL)  # INITs are latched while in SMM
    if smm and ev.smi.smm and st.kvm_smm:
        raise oserror(errno.EINVAL)  # SMM entry [kmock]
    st.exception = {"injected": injected, "pending": pending, "nr": ev.exception.nr,
                    "has_error_code": ev.exception.has_error_code,
                    "error_code": ev.exception.error_code, "has_payload": has_payload,
                    "payload": ev.exception_payload}
    st.interrupt = (ev.interrupt.injected, ev.interrupt.nr, ev.interrupt.soft)
    if ev.flags & X.KVM_VCPUEVENT_VALID_SHADOW:
        st.shadow = ev.interrupt.shadow & st.shadow_mask
    st.nmi_injected = ev.nmi.injected
    if ev.flags & X.KVM_VCPUEVENT_VALID_NMI_PENDING:
        # process_nmi: at most one pending NMI while one is injected or NMIs are masked
        limit = 1 if ev.nmi.masked or ev.nmi.injected else 2
        st.nmi_pending = min(ev.nmi.pending, limit)
    st.nmi_masked = 1 if ev.nmi.masked else 0
    if ev.flags & X.KVM_VCPUEVENT_VALID_SIPI_VECTOR and x86_lapic.in_kernel(vcpu):
        st.sipi_vector = ev.sipi_vector  # apic->sipi_vector (lapic_in_kernel only)
    if smm:
        if not st.kvm_smm:
            if ev.smi.smm or ev.smi.pending or ev.smi.smm_inside_nmi:
                raise oserror(errno.EINVAL)  # no CONFIG_KVM_SMM: after the writes above
        else:
            st.smi_pending = ev.smi.pending
        if x86_lapic.in_kernel(vcpu):
            # set_bit / clear_bit(KVM_APIC_INIT, &apic->pending_events): the INIT is taken
            # at the next accept (KVM_GET_MP_STATE, or KVM_RUN: its slow path, below)
            st.init_pending = bool(ev.smi.latched_init)
            # (a latched INIT sends KVM_RUN through its stopped path, which accepts it)
            vcpu.set_stopped(st.init_pending or st.mp_state in WAIT_FOR_SIPI)
    if ev.flags & X.KVM_VCPUEVENT_VALID_TRIPLE_FAULT:
        if not triple:
            # checked last, as x86.c does: the events above are written already (EINVAL
            # with the exception, interrupt and NMI state changed; conformance shows it)
            raise oserror(errno.EINVAL)
        st.triple_fault_pending = 1 if ev.triple_fault.pending else 0
    return 0


def get_debugregs(f, arg):
    """kvm_vcpu_ioctl_x86_get_debugregs (EINVAL when the state is protected)."""
    vcpu = vcpu_of(f)
    protected(vcpu)
    st = state(vcpu)
    d = X.kvm_debugregs(dr6=st.dr6, dr7=st.dr7)
    for i in range(4):
        d.db[i] = st.db[i]
    copy_to_user(arg, d)
    return 0


def set_debugregs(f, arg):
    """kvm_vcpu_ioctl_x86_set_debugregs: flags, or DR6/DR7 bits above 31
    (kvm_dr6_valid, kvm_dr7_valid): EINVAL, after the protected-state check (EINVAL)."""
    vcpu = vcpu_of(f)
    d = copy_from_user(arg, X.kvm_debugregs)
    protected(vcpu)
    st = state(vcpu)
    if d.flags or d.dr6 >> 32 or d.dr7 >> 32:
        raise oserror(errno.EINVAL)
    st.db = list(d.db)
    st.dr6, st.dr7 = d.dr6, d.dr7
    return 0


# --- TSC frequency, signal mask ---------------------------------------------------------------


def get_tsc_khz(f, arg):
    """KVM_GET_TSC_KHZ: vcpu->arch.virtual_tsc_khz."""
    return state(vcpu_of(f)).tsc_khz


def set_tsc_khz(f, arg):
    """KVM_SET_TSC_KHZ (u32 argument; 0 = the host's): kvm_set_tsc_khz records the rate
    first, then without TSC scaling (KVM_CAP_TSC_CONTROL 0) a rate below the tolerance
    band around the host's is EINVAL; with scaling, rates from max_guest_tsc_khz up are
    EINVAL before anything is recorded; so is any rate for a vCPU whose TSC is protected
    (the VM type's ``guest_tsc_protected``, checked first)."""
    vcpu = vcpu_of(f)
    vt = vcpu.vm.vmtype
    if vt.has_vcpu_state_hooks and vt.guest_tsc_protected(vcpu):
        raise oserror(errno.EINVAL)
    st = state(vcpu)
    s = settings(vcpu.vm.kernel.profile)
    host = s["tsc_khz"]
    khz = int_arg(arg) & 0xFFFFFFFF
    if s["tsc_control"] and khz >= s.get("max_guest_tsc_khz", 0xFFFFFFFF):
        raise oserror(errno.EINVAL)
    if khz == 0:
        khz = host
    st.tsc_khz = khz
    # adjust_tsc_khz(tsc_khz, -tsc_tolerance_ppm); above the band the kernel catches up
    lo = host * (1_000_000 - TSC_TOLERANCE_PPM) // 1_000_000
    if not s["tsc_control"] and khz < lo:
        raise oserror(errno.EINVAL)
    return 0


def set_signal_mask(f, arg):
    """KVM_SET_SIGNAL_MASK (kvm_vcpu_ioctl): a NULL argument clears the mask; else len must
    be sizeof(kernel_sigset_t) = 8 (EINVAL), then the set is read (EFAULT)."""
    vcpu = vcpu_of(f)
    st = state(vcpu)
    if type(arg) is int and arg == 0:
        st.sigmask = None
        return 0
    head = copy_from_user(arg, X.kvm_signal_mask)
    if head.len != 8:
        raise oserror(errno.EINVAL)
    st.sigmask = int.from_bytes(read_user_at(arg, 4, 8), "little")
    return 0


# --- KVM_KVMCLOCK_CTRL ------------------------------------------------------------------------

def kvmclock_ctrl(f, arg):
    """KVM_KVMCLOCK_CTRL (kvm_set_guest_paused): EINVAL unless the guest's pvclock is
    active (vcpu->arch.pv_time: the last write of MSR_KVM_SYSTEM_TIME(_NEW) had bit 0
    set; probed: no memslot needed). Otherwise 0; the "guest stopped" flag it raises
    for the guest's next pvclock update is recorded as ``pvclock_stopped``."""
    st = state(vcpu_of(f))
    if not st.msrs.get(x86_msr.SYSTEM_TIME_KEY, 0) & 1:
        raise oserror(errno.EINVAL)
    st.pvclock_stopped = True
    return 0


def vcpu_ioctls():
    """The x86 vCPU state ioctls (kmock.kvm.vcpu adds them on x86 profiles)."""
    return {
        X.KVM_GET_REGS: get_regs, X.KVM_SET_REGS: set_regs,
        X.KVM_GET_SREGS: get_sregs, X.KVM_SET_SREGS: set_sregs,
        X.KVM_GET_SREGS2: get_sregs2, X.KVM_SET_SREGS2: set_sregs2,
        X.KVM_GET_LAPIC: get_lapic, X.KVM_SET_LAPIC: set_lapic,
        X.KVM_TPR_ACCESS_REPORTING: x86_lapic.tpr_access_reporting,
        X.KVM_SET_VAPIC_ADDR: x86_lapic.set_vapic_addr,
        X.KVM_SET_GUEST_DEBUG: set_guest_debug, X.KVM_NMI: nmi, X.KVM_SMI: smi,
        X.KVM_GET_FPU: get_fpu, X.KVM_SET_FPU: set_fpu,
        X.KVM_GET_MSRS: x86_msr.get_msrs, X.KVM_SET_MSRS: x86_msr.set_msrs,
        X.KVM_SET_CPUID2: set_cpuid2, X.KVM_GET_CPUID2: get_cpuid2,
        X.KVM_GET_MP_STATE: get_mp_state, X.KVM_SET_MP_STATE: set_mp_state,
        X.KVM_GET_VCPU_EVENTS: get_vcpu_events, X.KVM_SET_VCPU_EVENTS: set_vcpu_events,
        X.KVM_GET_DEBUGREGS: get_debugregs, X.KVM_SET_DEBUGREGS: set_debugregs,
        X.KVM_GET_XCRS: get_xcrs, X.KVM_SET_XCRS: set_xcrs,
        X.KVM_GET_XSAVE: get_xsave, X.KVM_SET_XSAVE: set_xsave, X.KVM_GET_XSAVE2: get_xsave2,
        X.KVM_GET_TSC_KHZ: get_tsc_khz, X.KVM_SET_TSC_KHZ: set_tsc_khz,
        X.KVM_SET_SIGNAL_MASK: set_signal_mask,
        K.KVM_KVMCLOCK_CTRL: kvmclock_ctrl,
        X.KVM_X86_SETUP_MCE: x86_mce.setup_mce, X.KVM_X86_SET_MCE: x86_mce.set_mce,
        **x86_vcpu_misc.vcpu_ioctls(),
    }


# --- the host profile's probe -----------------------------------------------------------------


def _one_msr(index, data=0):
    """A struct kvm_msrs of one entry (``index``, ``data``), for the host probes; its data
    is bytes 16:24."""
    return bytearray((1).to_bytes(8, "little") + index.to_bytes(8, "little")
                     + data.to_bytes(8, "little"))


def _probe_tsc_writable(vcpu_fd):
    """Does a KVM_SET_MSRS of MSR_IA32_TSC = 1 << 40 move the guest TSC there?"""
    import fcntl

    buf = _one_msr(0x10, 1 << 40)
    fcntl.ioctl(vcpu_fd, X.KVM_SET_MSRS, buf)
    fcntl.ioctl(vcpu_fd, X.KVM_GET_MSRS, buf)
    return (1 << 40) <= int.from_bytes(buf[16:24], "little") < (1 << 41)


def _probe_tsc_ratio(vcpu_fd):
    """What a host-initiated KVM_GET_MSRS of MSR_AMD64_TSC_RATIO reads, or None when the
    kernel does not serve it (VMX: vmx_get_msr has no case for it, and it is not
    advertised). An SVM host without TSC scaling for the guest, and the PVM probe host,
    read the default ratio (svm_get_msr: svm->tsc_ratio_msr)."""
    import fcntl

    buf = _one_msr(x86_msr.MSR_AMD64_TSC_RATIO)
    if fcntl.ioctl(vcpu_fd, X.KVM_GET_MSRS, buf) != 1:
        return None
    return int.from_bytes(buf[16:24], "little")


def _probe_legacy_paging(vcpu_fd):
    """Does KVM_SET_SREGS keep CR0.PG outside long mode (flat protected mode, CR4.PAE)?
    The vCPU's registers are restored."""
    import fcntl

    orig = X.kvm_sregs()
    fcntl.ioctl(vcpu_fd, X.KVM_GET_SREGS, orig)
    s = X.kvm_sregs.from_buffer_copy(orig)
    s.cs.type, s.cs.s, s.cs.present, s.cs.db = 0xB, 1, 1, 1
    s.cr0, s.cr4, s.cr3 = 0x80000011, X.X86_CR4_PAE, 0x3000
    try:
        fcntl.ioctl(vcpu_fd, X.KVM_SET_SREGS, s)
        fcntl.ioctl(vcpu_fd, X.KVM_GET_SREGS, s)
        return bool(s.cr0 & X.X86_CR0_PG)
    except OSError:
        return True
    finally:
        fcntl.ioctl(vcpu_fd, X.KVM_SET_SREGS, orig)


def _probe_cr4(vcpu_fd):
    """The CR4 bits KVM_SET_SREGS accepts on a new vCPU (the host CPU's cr4_reserved_bits);
    the vCPU's registers are restored."""
    import fcntl

    orig = X.kvm_sregs()
    fcntl.ioctl(vcpu_fd, X.KVM_GET_SREGS, orig)
    allowed = 0
    try:
        for bit in range(32):
            s = X.kvm_sregs.from_buffer_copy(orig)
            s.cr4 = 1 << bit
            try:
                fcntl.ioctl(vcpu_fd, X.KVM_SET_SREGS, s)
                allowed |= 1 << bit
            except OSError:
                pass
    finally:
        fcntl.ioctl(vcpu_fd, X.KVM_SET_SREGS, orig)
    return allowed


def _probe_cr4_guest_rsvd(kvm_fd, allowed):
    """Does the guest's CPUID restrict CR4 (kvm_vcpu_after_set_cpuid's cr4_guest_rsvd_bits,
    upstream)? On a new VM's vCPU with an empty KVM_SET_CPUID2, KVM_SET_SREGS with one
    feature bit of CR4 the host allows: EINVAL upstream; the PVM probe host accepts it."""
    import fcntl

    feature_bits = [b for b in x86_state.CR4_FEATURE_BITS if allowed >> b & 1]
    if not feature_bits:
        return True
    vm = fcntl.ioctl(kvm_fd, K.KVM_CREATE_VM, 0)
    try:
        cpu = fcntl.ioctl(vm, K.KVM_CREATE_VCPU, 0)
        try:
            fcntl.ioctl(cpu, X.KVM_SET_CPUID2, bytes(8))
            s = X.kvm_sregs()
            fcntl.ioctl(cpu, X.KVM_GET_SREGS, s)
            s.cr4 = 1 << feature_bits[0]
            try:
                fcntl.ioctl(cpu, X.KVM_SET_SREGS, s)
                return False
            except OSError:
                return True
        finally:
            os.close(cpu)
    finally:
        os.close(vm)


def _probe_rflags_kept(vcpu_fd):
    """The RFLAGS bits KVM_SET_REGS keeps (all ones written, read back); restored."""
    import fcntl

    orig = K.kvm_regs()
    fcntl.ioctl(vcpu_fd, K.KVM_GET_REGS, orig)
    try:
        r = K.kvm_regs.from_buffer_copy(orig)
        r.rflags = (1 << 64) - 1
        fcntl.ioctl(vcpu_fd, K.KVM_SET_REGS, r)
        fcntl.ioctl(vcpu_fd, K.KVM_GET_REGS, r)
        return r.rflags
    finally:
        fcntl.ioctl(vcpu_fd, K.KVM_SET_REGS, orig)


def _probe_events(kvm_fd):
    """On a new VM's vCPU: the interrupt-shadow bits KVM_SET_VCPU_EVENTS keeps (0xff
    written with VALID_SHADOW, read back), and whether the kernel has CONFIG_KVM_SMM (a
    pending SMI with VALID_SMM is accepted)."""
    import fcntl

    vm = fcntl.ioctl(kvm_fd, K.KVM_CREATE_VM, 0)
    try:
        cpu = fcntl.ioctl(vm, K.KVM_CREATE_VCPU, 0)
        try:
            ev = X.kvm_vcpu_events()
            fcntl.ioctl(cpu, X.KVM_GET_VCPU_EVENTS, ev)
            ev.flags = X.KVM_VCPUEVENT_VALID_SHADOW
            ev.interrupt.shadow = 0xFF
            fcntl.ioctl(cpu, X.KVM_SET_VCPU_EVENTS, ev)
            fcntl.ioctl(cpu, X.KVM_GET_VCPU_EVENTS, ev)
            shadow = ev.interrupt.shadow
            ev = X.kvm_vcpu_events(flags=X.KVM_VCPUEVENT_VALID_SMM)
            ev.smi.pending = 1
            try:
                fcntl.ioctl(cpu, X.KVM_SET_VCPU_EVENTS, ev)
                smm = True
            except OSError:
                smm = False
            return {"shadow_mask": shadow, "kvm_smm": smm}
        finally:
            os.close(cpu)
    finally:
        os.close(vm)


def _probe_kvmclock_flags(kvm_fd):
    """KVM_GET_CLOCK's flags once a VM with a vCPU recomputed its master clock
    (KVM_SET_CLOCK runs pvclock_update_vm_gtod_copy): the host clocksource's effect."""
    import fcntl
    vm = fcntl.ioctl(kvm_fd, K.KVM_CREATE_VM, 0)
    try:
        cpu = fcntl.ioctl(vm, K.KVM_CREATE_VCPU, 0)
        try:
            fcntl.ioctl(vm, K.KVM_SET_CLOCK, bytes(ctypes.sizeof(K.kvm_clock_data)))
            data = bytearray(ctypes.sizeof(K.kvm_clock_data))
            fcntl.ioctl(vm, K.KVM_GET_CLOCK, data)
            return K.kvm_clock_data.from_buffer(data).flags
        finally:
            os.close(cpu)
    except OSError:
        return x86_state.DEFAULTS_618["kvmclock_flags"]
    finally:
        os.close(vm)


def _probe_mce_and_attrs(kvm_fd, vcpu_fd):
    """KVM_X86_GET_MCE_CAP_SUPPORTED (kvm_caps.supported_mce_cap), whether the vendor
    reads MSR_IA32_MCG_EXT_CTL (VMX: yes; SVM, PVM: no) and /dev/kvm's
    KVM_X86_XCOMP_GUEST_SUPP (kvm_caps.supported_xcr0); a key is left out when its
    ioctl fails (the defaults of kmock.kvm.x86_mce / kmock.kvm.device then apply)."""
    import fcntl

    out = {}
    v = ctypes.c_uint64()
    try:
        fcntl.ioctl(kvm_fd, X.KVM_X86_GET_MCE_CAP_SUPPORTED, v)
        out["mce_cap_supported"] = v.value
    except OSError:
        pass
    try:
        out["mcg_ext_ctl"] = fcntl.ioctl(vcpu_fd, X.KVM_GET_MSRS,
                                         _one_msr(x86_mce.MSR_IA32_MCG_EXT_CTL)) == 1
    except OSError:
        pass
    xcomp = ctypes.c_uint64()
    attr = X.kvm_device_attr(group=0, attr=X.KVM_X86_XCOMP_GUEST_SUPP,
                             addr=ctypes.addressof(xcomp))
    try:
        fcntl.ioctl(kvm_fd, X.KVM_GET_DEVICE_ATTR, attr)
        out["xcomp_guest_supp"] = xcomp.value
    except OSError:
        pass
    return out


def probe_host(kvm_fd, vcpu_fd, caps):
    """The per-CPU values of this machine's /dev/kvm, for Profile.x86_vcpu."""
    import fcntl

    def msr_list(req):
        buf = bytearray(4 + 4 * 1024)
        buf[0:4] = (1024).to_bytes(4, "little")
        try:
            fcntl.ioctl(kvm_fd, req, buf)
        except OSError:
            return ()
        n = int.from_bytes(buf[0:4], "little")
        return tuple(int.from_bytes(buf[4 + 4 * i:8 + 4 * i], "little") for i in range(n))

    index_list = msr_list(X.KVM_GET_MSR_INDEX_LIST)
    init = []
    listed = [i for i in index_list if i != 0x10]
    buf = bytearray(8 + 16 * len(listed))
    buf[0:4] = len(listed).to_bytes(4, "little")
    for i, idx in enumerate(listed):
        buf[8 + 16 * i:12 + 16 * i] = idx.to_bytes(4, "little")
    got = fcntl.ioctl(vcpu_fd, X.KVM_GET_MSRS, buf)
    for i in range(got):
        v = int.from_bytes(buf[16 + 16 * i:24 + 16 * i], "little")
        if v:
            init.append((listed[i], v))
    size = max(4096, caps.get(X.KVM_CAP_XSAVE2, 0))
    xs = bytearray(size)
    try:
        fcntl.ioctl(vcpu_fd, X.KVM_GET_XSAVE2 if size > 4096 else X.KVM_GET_XSAVE, xs)
        runs = [(m.start(), m.group()) for m in re.finditer(rb"[^\x00]+", bytes(xs))]
    except OSError:
        runs = x86_state.DEFAULTS_618["xsave_init"]
    feats = msr_list(X.KVM_GET_MSR_FEATURE_INDEX_LIST)
    fbuf = bytearray(8 + 16 * len(feats))
    fbuf[0:4] = len(feats).to_bytes(4, "little")
    for i, idx in enumerate(feats):
        fbuf[8 + 16 * i:12 + 16 * i] = idx.to_bytes(4, "little")
    try:
        nf = fcntl.ioctl(kvm_fd, X.KVM_GET_MSRS, fbuf)
    except OSError:
        nf = 0
    dev_values = tuple((feats[i], int.from_bytes(fbuf[16 + 16 * i:24 + 16 * i], "little"))
                       for i in range(nf))
    fvalues = tuple(e for e in dev_values if e[0] in x86_msr.FEATURE_CPUID)
    return {
        **_probe_mce_and_attrs(kvm_fd, vcpu_fd),
        "msr_feature_values": fvalues,
        "msr_feature_dev_values": dev_values,
        "cr4_allowed": (cr4 := _probe_cr4(vcpu_fd)),
        "cr4_guest_rsvd": _probe_cr4_guest_rsvd(kvm_fd, cr4),
        "rflags_kept": _probe_rflags_kept(vcpu_fd),
        **_probe_events(kvm_fd),
        "msr_index_list": index_list,
        "msr_feature_list": feats,
        "msr_init": tuple(init),
        "tsc_khz": fcntl.ioctl(vcpu_fd, X.KVM_GET_TSC_KHZ, 0),
        "tsc_control": bool(caps.get(X.KVM_CAP_TSC_CONTROL, 0)),
        "tsc_writable": _probe_tsc_writable(vcpu_fd),
        "tsc_ratio_msr": _probe_tsc_ratio(vcpu_fd),
        "legacy_paging": _probe_legacy_paging(vcpu_fd),
        "xsave_init": tuple(runs),
        "kvmclock_flags": _probe_kvmclock_flags(kvm_fd),
    }

