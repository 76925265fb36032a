"""The x86 vCPU state ioctls on a TD vCPU (arch/x86/kvm/x86.c with tdx.c, 6.18): a TD has
protected state (tdx_vm_init) and tdx_vcpu_create makes every vCPU's state protected (unless
the TD has DEBUG) and its fpstate confidential, so REGS, SREGS, XCRS, DEBUGREGS, FPU and
XSAVE are EINVAL from creation on and change nothing; CPUID2, MSRS (those KVM emulates for a
TD), MP_STATE and VCPU_EVENTS keep working; the vCPU's TSC is protected (KVM_SET_TSC_KHZ)."""

import ctypes
import errno

import pytest

from kmock.kvm import x86_state
from kmock.testing.conformance_vcpu import msrs_buf, msrs_values
from kmock.uapi import kvm as K
from kmock.uapi import tdx as T
from kmock.uapi import x86 as X

from ._td import Td

GETS = ((X.KVM_GET_REGS, K.kvm_regs), (X.KVM_GET_SREGS, X.kvm_sregs),
        (X.KVM_GET_SREGS2, X.kvm_sregs2), (X.KVM_GET_XCRS, X.kvm_xcrs), (X.KVM_GET_DEBUGREGS, X.kvm_debugregs))
SETS = ((X.KVM_SET_REGS, K.kvm_regs(rip=0x1000)), (X.KVM_SET_SREGS, X.kvm_sregs()),
        (X.KVM_SET_SREGS2, X.kvm_sregs2()),
        (X.KVM_SET_XCRS, X.kvm_xcrs(nr_xcrs=1)), (X.KVM_SET_DEBUGREGS, X.kvm_debugregs()))
FPU = ((X.KVM_GET_FPU, X.kvm_fpu()), (X.KVM_SET_FPU, X.kvm_fpu(fcw=0x27F)),
       (X.KVM_GET_XSAVE, X.kvm_xsave()), (X.KVM_SET_XSAVE, X.kvm_xsave()),
       (X.KVM_GET_XSAVE2, X.kvm_xsave()))


def err(k, fd, req, arg):
    with pytest.raises(OSError) as e:
        k.ioctl(fd, req, arg)
    return e.value.errno


def td_with_vcpu(k, debug=False):
    td = Td(k)
    td.capabilities()
    td.split_irqchip()
    td.init_vm()
    if debug:
        # KVM_SUPPORTED_TD_ATTRS has no DEBUG, so INIT_VM refuses it; a module that
        # offered it would leave the attribute in kvm_tdx->attributes like this
        td.vmobj.arch.attributes |= T.TDX_TD_ATTR_DEBUG
    td.create_vcpus()
    return td


def saved(k, td):
    st = x86_state.state(k.vm(td.vm).vcpus[0])
    return (bytes(st.regs), bytes(st.sregs), list(st.pdptrs), st.xcr0, list(st.db), st.dr6, st.dr7,
            bytes(st.fpstate), st.xfeatures)


def test_protected_from_creation_every_state_ioctl_is_einval(tdx_kernel):
    k = tdx_kernel()
    td = td_with_vcpu(k)
    before = saved(k, td)
    for req, t in GETS:
        assert err(k, td.vcpu, req, t()) == errno.EINVAL
    for req, arg in SETS + FPU:
        assert err(k, td.vcpu, req, arg) == errno.EINVAL
    assert saved(k, td) == before


def test_still_einval_after_finalize(tdx_kernel):
    k = tdx_kernel()
    td = Td(k).launch()
    for req, arg in SETS + FPU:
        assert err(k, td.vcpu, req, arg) == errno.EINVAL


def test_cpuid_msrs_events_stay_allowed(tdx_kernel):
    k = tdx_kernel()
    td = td_with_vcpu(k)  # create_vcpus did KVM_SET_CPUID2 already
    buf = msrs_buf([(0x277, 0)])  # MSR_IA32_CR_PAT: tdx_has_emulated_msr
    assert k.ioctl(td.vcpu, X.KVM_GET_MSRS, buf) == 1
    assert msrs_values(buf, 1) == [0x0007040600070406]
    mp = X.kvm_mp_state()
    k.ioctl(td.vcpu, X.KVM_GET_MP_STATE, mp)
    assert mp.mp_state == X.KVM_MP_STATE_RUNNABLE
    ev = X.kvm_vcpu_events()
    k.ioctl(td.vcpu, X.KVM_GET_VCPU_EVENTS, ev)
    k.ioctl(td.vcpu, X.KVM_SET_VCPU_EVENTS, ev)


def test_vcpu_kvm_set_tsc_khz_is_einval(tdx_kernel):
    k = tdx_kernel()
    td = td_with_vcpu(k)
    khz = k.ioctl(td.vcpu, X.KVM_GET_TSC_KHZ, 0)
    assert err(k, td.vcpu, X.KVM_SET_TSC_KHZ, khz) == errno.EINVAL
    assert k.ioctl(td.vcpu, X.KVM_GET_TSC_KHZ, 0) == khz


def test_a_debug_td_exposes_registers_but_not_the_fpu(tdx_kernel):
    k = tdx_kernel()
    td = td_with_vcpu(k, debug=True)
    k.ioctl(td.vcpu, X.KVM_SET_REGS, K.kvm_regs(rip=0x1000))
    regs = K.kvm_regs()
    k.ioctl(td.vcpu, X.KVM_GET_REGS, regs)
    assert regs.rip == 0x1000
    k.ioctl(td.vcpu, X.KVM_GET_DEBUGREGS, X.kvm_debugregs())
    for req, arg in FPU:  # fpstate_set_confidential does not look at DEBUG
        assert err(k, td.vcpu, req, arg) == errno.EINVAL


def test_msrs_the_tdx_module_owns_stop_the_loop(tdx_kernel):
    """tdx_get_msr/tdx_set_msr return 1 for MSRs tdx_has_emulated_msr does not list (LSTAR,
    STAR, TSC_AUX ...) and for writes of APIC_BASE, EFER and FEAT_CTL."""
    k = tdx_kernel()
    td = td_with_vcpu(k)
    pat, misc, lstar, apic_base = 0x277, 0x1A0, 0xC0000082, 0x1B
    assert k.ioctl(td.vcpu, X.KVM_GET_MSRS, msrs_buf([(pat, 0), (misc, 0), (lstar, 0)])) == 2
    base = msrs_buf([(apic_base, 0)])
    assert k.ioctl(td.vcpu, X.KVM_GET_MSRS, base) == 1  # readable
    value = msrs_values(base, 1)[0]
    assert k.ioctl(td.vcpu, X.KVM_SET_MSRS, msrs_buf([(apic_base, value)])) == 0  # read-only
    buf = msrs_buf([(pat, 0x0606060606060606), (lstar, 0xFFFFFFFF81000000)])
    assert k.ioctl(td.vcpu, X.KVM_SET_MSRS, buf) == 1
    got = msrs_buf([(pat, 0)])
    k.ioctl(td.vcpu, X.KVM_GET_MSRS, got)
    assert msrs_values(got, 1) == [0x0606060606060606]
    assert x86_state.state(k.vm(td.vm).vcpus[0]).msrs.get(lstar, 0) == 0


@pytest.mark.parametrize(("index", "write", "data", "ok"), [
    (0x8B, False, 0, True), (0x200, True, 0, True), (0x26F, False, 0, True),
    (0x270, False, 0, False), (0x47F, False, 0, True), (0x480, False, 0, False),
    (0x29F, False, 0, True), (0x2A0, False, 0, False), (0x4B564D05, True, 1, True),
    (0x4B564D00, False, 0, False), (0x4D0, True, 1, True), (0x4D0, True, 2, False),
    (0x4D0, False, 0, True), (0x3A, False, 0, True), (0x3A, True, 0, False),
    (0x1B, True, 0, False), (0x802, False, 0, True), (0x808, False, 0, False),
    (0x80B, True, 0, False), (0x810, False, 0, False), (0x811, False, 0, True),
    (0x820, False, 0, False), (0x830, True, 0, True), (0xC0000081, False, 0, False),
    (0x10, False, 0, False), (0xC0000103, False, 0, False),
])
def test_tdx_has_emulated_msr(index, write, data, ok):
    """tdx_has_emulated_msr / tdx_is_read_only_msr / MCG_EXT_CTL, including 6.18's x2APIC
    ranges (ISR1 0x811 is not excluded there)."""
    from kmock_tdx import msr
    assert msr.allowed(index, write, data) is ok


def test_sregs2_protected_check_precedes_the_copy(tdx_kernel):
    """kvm_arch_vcpu_ioctl KVM_GET/SET_SREGS2: the protected-state EINVAL comes before
    the struct is read (unlike SET_SREGS, whose copy happens first)."""
    k = tdx_kernel()
    td = td_with_vcpu(k)
    assert err(k, td.vcpu, X.KVM_SET_SREGS2, 8) == errno.EINVAL
    assert err(k, td.vcpu, X.KVM_GET_SREGS2, 8) == errno.EINVAL


def test_guest_debug_is_einval_and_nmi_is_queued(tdx_kernel):
    """kvm_arch_vcpu_ioctl_set_guest_debug: EINVAL with guest_state_protected; KVM_NMI on a
    TD vCPU queues the NMI as on any vCPU (kvm_inject_nmi: nmi_pending after process_nmi)
    and makes kvm_vcpu_has_events() true (tests/tdx/test_vcpu_events.py)."""
    k = tdx_kernel()
    td = td_with_vcpu(k)
    assert err(k, td.vcpu, X.KVM_SET_GUEST_DEBUG, X.kvm_guest_debug(control=1)) == errno.EINVAL
    assert k.ioctl(td.vcpu, X.KVM_NMI, 0) == 0
    vcpu = k.vm(td.vm).vcpus[0]
    assert vcpu.arch.pending_event is True
    assert x86_state.state(vcpu).nmi_pending == 1


def test_lapic_is_einval_for_a_td(tdx_kernel):
    """tdx_vcpu_create sets guest_apic_protected: KVM_GET/SET_LAPIC are EINVAL although the
    TD has an in-kernel (split) irqchip; a default VM with one answers."""
    k = tdx_kernel()
    td = td_with_vcpu(k)
    assert err(k, td.vcpu, X.KVM_GET_LAPIC, X.kvm_lapic_state()) == errno.EINVAL
    assert err(k, td.vcpu, X.KVM_SET_LAPIC, X.kvm_lapic_state()) == errno.EINVAL
    kvm = k.open("/dev/kvm", 2)
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, 0)
    cap = K.kvm_enable_cap(cap=K.KVM_CAP_SPLIT_IRQCHIP)
    cap.args[0] = 24
    k.ioctl(vm, K.KVM_ENABLE_CAP, cap)
    vcpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    assert k.ioctl(vcpu, X.KVM_GET_LAPIC, X.kvm_lapic_state()) == 0


def test_feat_ctl_reads_locked_plus_lmce_when_mcg_cap_has_it(tdx_kernel):
    """tdx_get_msr(MSR_IA32_FEAT_CTL): FEAT_CTL_LOCKED, | FEAT_CTL_LMCE_ENABLED (bit 20) when
    vcpu->arch.mcg_cap has MCG_LMCE_P (bit 27, set by KVM_X86_SETUP_MCE); the other entries
    of the same KVM_GET_MSRS keep the core's values."""
    k = tdx_kernel()
    td = td_with_vcpu(k)
    buf = msrs_buf([(0x3A, 0), (0x179, 0)])
    assert k.ioctl(td.vcpu, X.KVM_GET_MSRS, buf) == 2
    feat, mcg_cap = msrs_values(buf, 2)
    assert feat == 1 and not mcg_cap & (1 << 27)
    supported = ctypes.c_uint64()
    k.ioctl(td.kvm, X.KVM_X86_GET_MCE_CAP_SUPPORTED, supported)
    assert supported.value & (1 << 27)  # a VMX host: hardware_setup adds MCG_LMCE_P
    k.ioctl(td.vcpu, X.KVM_X86_SETUP_MCE, ctypes.c_uint64((1 << 27) | 10))
    buf = msrs_buf([(0x3A, 0)])
    assert k.ioctl(td.vcpu, X.KVM_GET_MSRS, buf) == 1
    assert msrs_values(buf, 1)[0] == 1 | 1 << 20
