"""The x86 vCPU state ioctls of an SNP vCPU (arch/x86/kvm/x86.c with svm/sev.c, 6.18): an
SNP VM has protected state (svm_vm_init); snp_launch_finish encrypts every VMSA
(snp_launch_update_vmsa) and sets guest_state_protected. Before LAUNCH_FINISH the state
ioctls work; after it REGS, SREGS, XCRS and DEBUGREGS are EINVAL and change nothing, also
when the firmware's LAUNCH_FINISH then failed. SNP does not mark the fpstate confidential:
FPU and XSAVE keep working, as do CPUID2, MSRS and VCPU_EVENTS."""

import errno

import kmock_snp
import pytest
from kmock_snp.vmtypes import SevEsVm, SevVm, SnpVm

from kmock.kvm import x86_state
from kmock.testing.conformance_vcpu import msrs_buf
from kmock.uapi import kvm as K
from kmock.uapi import sev as S
from kmock.uapi import x86 as X

from .snpenv import Snp

GETS = ((X.KVM_GET_REGS, K.kvm_regs), (X.KVM_GET_SREGS, X.kvm_sregs),
        (X.KVM_GET_SREGS2, X.kvm_sregs2),
        (X.KVM_GET_XCRS, X.kvm_xcrs), (X.KVM_GET_DEBUGREGS, X.kvm_debugregs))


def sets():
    xcrs = X.kvm_xcrs(nr_xcrs=1)
    xcrs.xcrs[0].value = 1
    return ((X.KVM_SET_REGS, K.kvm_regs(rip=0x2000, rflags=2)),
            (X.KVM_SET_SREGS, X.kvm_sregs(cr0=0x60000010)),
            (X.KVM_SET_SREGS2, X.kvm_sregs2(cr0=0x60000010)),
            (X.KVM_SET_XCRS, xcrs),
            (X.KVM_SET_DEBUGREGS, X.kvm_debugregs(dr6=0xFFFF0FF0, dr7=0x401)))


def err(k, fd, req, arg):
    with pytest.raises(OSError) as e:
        k.ioctl(fd, req, arg)
    return e.value.errno


def saved(s):
    st = x86_state.state(s.vcpu(0))
    return (bytes(st.regs), bytes(st.sregs), st.xcr0, list(st.db), st.dr6, st.dr7)


def started():
    s = Snp()
    assert s.init2()[1] == 0
    s.create_vcpus()
    assert s.start()[1] == 0
    return s


def test_allowed_before_launch_finish_refused_after():
    s = started()
    v = s.vcpu_fds[0]
    for req, arg in sets():
        s.k.ioctl(v, req, arg)
    for req, t in GETS:
        s.k.ioctl(v, req, t())
    regs = K.kvm_regs()
    s.k.ioctl(v, X.KVM_GET_REGS, regs)
    assert regs.rip == 0x2000
    assert s.finish()[1] == errno.EINVAL  # sev_es_sync_vmsa: DR7 0x401 beyond DR7_FIXED_1
    s.k.ioctl(v, X.KVM_SET_DEBUGREGS, X.kvm_debugregs(dr6=0xFFFF0FF0, dr7=0x400))
    assert s.finish()[1] == 0
    before = saved(s)
    for req, t in GETS:
        assert err(s.k, v, req, t()) == errno.EINVAL
    for req, arg in sets():
        assert err(s.k, v, req, arg) == errno.EINVAL
    assert saved(s) == before


def test_fpu_msrs_cpuid_events_after_launch_finish():
    s = started()
    assert s.finish()[1] == 0
    k, v = s.k, s.vcpu_fds[0]
    k.ioctl(v, X.KVM_SET_FPU, X.kvm_fpu(fcw=0x27F))
    fpu = X.kvm_fpu()
    k.ioctl(v, X.KVM_GET_FPU, fpu)
    assert fpu.fcw == 0x27F  # KVM's own copy: SNP's fpstate is not confidential
    xs = X.kvm_xsave()
    k.ioctl(v, X.KVM_GET_XSAVE, xs)
    k.ioctl(v, X.KVM_SET_XSAVE, xs)
    k.ioctl(v, X.KVM_SET_CPUID2, bytes(8))
    assert k.ioctl(v, X.KVM_GET_MSRS, msrs_buf([(0x8B, 0)])) == 1  # intercepted: KVM's
    ev = X.kvm_vcpu_events()
    k.ioctl(v, X.KVM_GET_VCPU_EVENTS, ev)
    k.ioctl(v, X.KVM_SET_VCPU_EVENTS, ev)


def test_protected_once_the_vmsas_are_encrypted_even_if_the_firmware_finish_fails():
    s = started()
    kmock_snp.machine(s.k).fail_next("SNP_LAUNCH_FINISH", S.SEV_RET_INVALID_PARAM)
    assert s.finish()[1] != 0
    assert err(s.k, s.vcpu_fds[0], X.KVM_SET_REGS, K.kvm_regs()) == errno.EINVAL


def test_flags_refused_before_the_vmsas_leave_the_state_open():
    s = started()
    assert s.finish(flags=1)[1] == errno.EINVAL
    s.k.ioctl(s.vcpu_fds[0], X.KVM_SET_REGS, K.kvm_regs(rip=0x3000))


def test_which_types_have_protected_state():
    """svm_vm_init: SEV_ES_VM and SNP_VM; a plain SEV VM's vCPUs never refuse."""
    assert SnpVm.has_protected_state and SevEsVm.has_protected_state
    assert not SevVm.has_protected_state
    s = Snp(sev_vm_types=(K.KVM_X86_SEV_VM,))
    vm = s.k.ioctl(s.kvm, K.KVM_CREATE_VM, K.KVM_X86_SEV_VM)
    v = s.k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    s.k.ioctl(v, X.KVM_SET_REGS, K.kvm_regs(rip=0x1000))
    s.k.ioctl(v, X.KVM_GET_FPU, X.kvm_fpu())


def _msr_count(k, v, write, pairs):
    return k.ioctl(v, X.KVM_SET_MSRS if write else X.KVM_GET_MSRS, msrs_buf(pairs))


def test_msrs_the_vmsa_holds_are_refused_after_launch_finish():
    """svm_get_msr / svm_set_msr (6.18): sev_es_prevent_msr_access -> -EINVAL for an MSR the
    protected vCPU does not write-intercept (svm_recalc_msr_intercepts,
    sev_es_recalc_msr_intercepts, svm_enable_lbrv), XSS excepted; KVM_GET/SET_MSRS stop
    there and return the count done."""
    s = started()
    k, v = s.k, s.vcpu_fds[0]
    held = (0xC0000081, 0x174, 0xC0000102, 0xC0000082, 0xC0000083, 0xC0000084,
            0xC0000080, 0x277, 0x1D9, 0x1DB, 0x175, 0x176)
    for index in held:  # before LAUNCH_FINISH: KVM's copies, readable
        assert _msr_count(k, v, False, [(index, 0)]) == 1, hex(index)
    assert s.finish()[1] == 0
    for index in held + (0xC0000100, 0xC0000101, 0xC0010130):
        assert _msr_count(k, v, False, [(0x8B, 0), (index, 0), (0x8B, 0)]) == 1, hex(index)
        assert _msr_count(k, v, True, [(index, 0)]) == 0, hex(index)
    # intercepted ones still reach KVM: UCODE_REV, and SPEC_CTRL / TSC_AUX while the
    # guest's CPUID lacks the features that would pass them through
    assert _msr_count(k, v, False, [(0x8B, 0), (0x48, 0)]) == 2


def test_a_refused_read_zeroes_its_entry():
    """kvm_do_msr_access zeroes the data of a read the vendor's get_msr refused (here
    sev_es_prevent_msr_access, after LAUNCH_FINISH); the entries before it keep theirs."""
    s = started()
    k, v = s.k, s.vcpu_fds[0]
    assert s.finish()[1] == 0
    buf = msrs_buf([(0x8B, 0x1111), (0xC0000081, 0x2222), (0x8B, 0x3333)])
    assert k.ioctl(v, X.KVM_GET_MSRS, buf) == 1
    assert int.from_bytes(buf[32:40], "little") == 0
    assert int.from_bytes(buf[48:56], "little") == 0x3333  # never reached: as given


def test_msr_passthrough_follows_the_guest_cpuid():
    """SYSENTER_ESP/EIP are intercepted for an Intel-compatible guest vendor; TSC_AUX is
    passed through (V_TSC_AUX) once the guest has RDTSCP."""
    s = started()
    k, v = s.k, s.vcpu_fds[0]
    intel = (0, 0, 0, 0xD, 0x756E6547, 0x6C65746E, 0x49656E69)  # "GenuineIntel"
    assert kmock_snp.msrs._vendor([intel]) == b"GenuineIntel"
    ext = (0x80000001, 0, 0, 0, 0, 0, 1 << 27)
    kmock_snp.msrs.x86_state(s.vcpu(0)).cpuid = (intel, ext)
    assert s.finish()[1] == 0
    assert _msr_count(k, v, False, [(0x175, 0)]) == 1
    assert kmock_snp.msrs.write_intercepted(s.vcpu(0), 0x175)
    assert not kmock_snp.msrs.write_intercepted(s.vcpu(0), 0xC0000103)


@pytest.mark.parametrize("vm_type,readonly", [(K.KVM_X86_DEFAULT_VM, True), (2, True),
                                              (3, False), (K.KVM_X86_SNP_VM, False)])
def test_read_only_memslots_only_without_protected_state(vm_type, readonly):
    """kvm_arch_has_readonly_mem(kvm) = !kvm->arch.has_protected_state (x86, 6.18), which
    svm_vm_init sets for SEV-ES and SNP VMs: KVM_CAP_READONLY_MEM on the VM fd, and
    check_memory_region_flags' KVM_MEM_READONLY (EINVAL without it)."""
    import mmap as _mmap
    import ctypes

    from .snpenv import kernel

    k = kernel()
    vm = k.ioctl(k.open("/dev/kvm", 2), K.KVM_CREATE_VM, vm_type)
    assert k.ioctl(vm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_READONLY_MEM) == int(readonly)
    mem = _mmap.mmap(-1, 0x1000)
    region = K.kvm_userspace_memory_region(
        slot=0, flags=K.KVM_MEM_READONLY, memory_size=0x1000,
        userspace_addr=ctypes.addressof(ctypes.c_char.from_buffer(mem)))
    if readonly:
        assert k.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION, region) == 0
    else:
        assert err(k, vm, K.KVM_SET_USER_MEMORY_REGION, region) == errno.EINVAL
    region.slot, region.flags, region.guest_phys_addr = 1, 0, 0x10000
    assert k.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION, region) == 0
