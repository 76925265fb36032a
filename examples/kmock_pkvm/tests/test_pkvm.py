"""The protected VM type, end to end through the ioctls a pKVM VMM issues."""

import errno
import os

import pytest

import kmock
import kmock_pkvm
from kmock.testing.errnos import err
from kmock.uapi import kvm as K
from kmock_pkvm import uapi as A
from pvm import GPA, P

PROTECTED = A.KVM_VM_TYPE_ARM_PROTECTED
SHARE = A.ARM_SMCCC_VENDOR_HYP_KVM_MEM_SHARE_FUNC_ID
UNSHARE = A.ARM_SMCCC_VENDOR_HYP_KVM_MEM_UNSHARE_FUNC_ID
INVALID = A.SMCCC_RET_INVALID_PARAMETER


def kinds(k):
    return [v.kind for v in k.violations]


# --- KVM_CREATE_VM and the arm64 vCPU ------------------------------------------------------


def test_create_vm_machine_type(kernel):
    kvm = kernel.open("/dev/kvm", os.O_RDWR)
    for ipa in (0, 32, 40, 48):
        vm = kernel.ioctl(kvm, K.KVM_CREATE_VM, PROTECTED | ipa)
        assert kernel.vm(vm).arch.ipa_bits == (ipa or 40)
    for ipa in (31, 49, 0xFF):
        assert err(kernel.ioctl, kvm, K.KVM_CREATE_VM, PROTECTED | ipa) == errno.EINVAL
    assert err(kernel.ioctl, kvm, K.KVM_CREATE_VM, 1 << 8) == errno.EINVAL  # the 2022 RFC's bit
    assert err(kernel.ioctl, kvm, K.KVM_CREATE_VM, PROTECTED | 1 << 20) == errno.EINVAL
    # arm64 has no KVM_CAP_VM_TYPES; the IPA limit is reported
    assert kernel.ioctl(kvm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_VM_TYPES) == 0
    assert kernel.ioctl(kvm, K.KVM_CHECK_EXTENSION, A.KVM_CAP_ARM_VM_IPA_SIZE) == 48


def test_the_type_bit_is_a_setting():
    k = kmock.Kernel("linux-arm64-pkvm", only_plugins=[kmock_pkvm], pkvm_vm_type_bit=8)
    kvm = k.open("/dev/kvm", os.O_RDWR)
    k.ioctl(kvm, K.KVM_CREATE_VM, (1 << 8) | 40)
    assert err(k.ioctl, kvm, K.KVM_CREATE_VM, PROTECTED) == errno.EINVAL
    k.close_all()


def test_only_on_the_pkvm_platform():
    with kmock.Kernel(only_plugins=[kmock_pkvm]) as k:  # linux-6.18: x86, platform none
        assert k.vm_types.keys() == {K.KVM_X86_DEFAULT_VM}


def test_vcpu_init_and_one_reg(kernel):
    kvm = kernel.open("/dev/kvm", os.O_RDWR)
    vm = kernel.ioctl(kvm, K.KVM_CREATE_VM, PROTECTED)
    vcpu = kernel.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    assert err(kernel.ioctl, vcpu, K.KVM_RUN, 0) == errno.ENOEXEC
    init = A.kvm_vcpu_init()
    kernel.ioctl(vm, A.KVM_ARM_PREFERRED_TARGET, init)
    assert init.target == A.KVM_ARM_TARGET_GENERIC_V8
    assert err(kernel.ioctl, vcpu, A.KVM_ARM_VCPU_INIT, A.kvm_vcpu_init(target=0)) == errno.EINVAL
    bad = A.kvm_vcpu_init(target=init.target)
    bad.features[0] = 1 << A.KVM_VCPU_MAX_FEATURES
    assert err(kernel.ioctl, vcpu, A.KVM_ARM_VCPU_INIT, bad) == errno.ENOENT
    init.features[0] = 1 << A.KVM_ARM_VCPU_PSCI_0_2
    kernel.ioctl(vcpu, A.KVM_ARM_VCPU_INIT, init)
    init.features[0] = 0
    assert err(kernel.ioctl, vcpu, A.KVM_ARM_VCPU_INIT, init) == errno.EINVAL  # changed
    kernel.vm(vm).vcpus[0].guest.stop()  # (nothing to run: the vCPU would wait in WFI)
    assert err(kernel.ioctl, vcpu, K.KVM_RUN, 0) == errno.EINTR  # it ran, up to the stop
    assert kernel.vm(vm).vcpus[0].run.exit_reason == K.KVM_EXIT_INTR


def test_one_reg_ids(pvm):
    pvm.set_reg(5, 0x1234)
    assert pvm.get_reg(5) == 0x1234
    bad = A.kvm_one_reg(id=A.KVM_REG_ARM_CORE_X0 + 1, addr=0)
    assert err(pvm.k.ioctl, pvm.vcpu, A.KVM_GET_ONE_REG, bad) == errno.ENOENT
    bad = A.kvm_one_reg(id=A.core_reg(1), addr=8)  # an unmapped user address
    assert err(pvm.k.ioctl, pvm.vcpu, A.KVM_GET_ONE_REG, bad) == errno.EFAULT


# --- memory: donation, sharing, host access ---------------------------------------------------


def test_share_exits_to_the_vmm_which_converts(pvm):
    k, g = pvm.k, pvm.guest
    g.write(GPA + P, b"secret")
    share = g.pkvm.mem_share(GPA + P)
    assert pvm.kvm_run() == 0
    run = pvm.run
    assert run.exit_reason == K.KVM_EXIT_HYPERCALL and run.hypercall.nr == SHARE
    assert run.hypercall.flags == 0 and not share.done
    assert pvm.get_reg(1) == GPA + P == run.hypercall.args[0]
    pvm.convert(1, private=False)
    g.stop()
    assert pvm.run_exit() == K.KVM_EXIT_INTR and share.result == A.SMCCC_RET_SUCCESS
    assert pvm.m[P:P + 6] == b"secret"  # shared by the guest, converted by the VMM
    # unshare: back to the guest; the VMM converts back to private
    unshare = g.pkvm.mem_unshare(GPA + P)
    assert pvm.run_exit() == K.KVM_EXIT_HYPERCALL and run.hypercall.nr == UNSHARE
    pvm.convert(1, private=True)
    g.stop()
    assert pvm.run_exit() == K.KVM_EXIT_INTR
    assert unshare.result == 0
    with pytest.raises(kmock.SigBus):
        pvm.m[P]


def test_vmm_result_in_x0(pvm):
    share = pvm.guest.pkvm.mem_share(GPA)
    pvm.guest.stop()
    assert pvm.run_exit() == K.KVM_EXIT_HYPERCALL
    pvm.set_reg(0, A.SMCCC_RET_NOT_SUPPORTED & ((1 << 64) - 1))
    assert pvm.run_exit() == K.KVM_EXIT_INTR
    assert share.result == A.SMCCC_RET_NOT_SUPPORTED


def test_host_access_to_a_page_the_guest_did_not_share(pvm):
    """The VMM converts a page the guest owns without a MEM_SHARE: the host's stage-2
    still lacks it, so the access faults and is recorded."""
    pvm.guest.write(GPA + 2 * P, b"mine")
    pvm.guest.stop()
    assert pvm.run_exit() == K.KVM_EXIT_INTR
    with pytest.raises(kmock.SigBus):  # private: guest_memfd refuses the host fault
        pvm.m[2 * P]
    pvm.convert(2, private=False)
    with pytest.raises(kmock.SigBus, match="did not share it"):
        pvm.m[2 * P]
    v = pvm.k.violations.of_kind("host_access_fault")[-1]
    assert "SIGSEGV" in v.explanation and v["index"] == 2
    pvm.convert(3, private=False)  # page 3: never touched by the guest, still the host's
    assert bytes(pvm.m[3 * P:3 * P + 4]) == bytes(4)


def test_bad_calls_do_not_exit(pvm):
    g = pvm.guest.pkvm
    calls = [g.mem_share(GPA + 1), g.mem_share(GPA, 0, 1), g.mem_share(0x1000),
             g.mem_unshare(GPA), g.hyp_meminfo(1)]
    meminfo = g.hyp_meminfo()
    h = pvm.guest.hlt()  # WFI: waits inside KVM_RUN until the VMM's thread is signalled
    pvm.guest.stop()
    assert pvm.run_exit() == K.KVM_EXIT_INTR and h.done and h.exits == []
    assert [c.result for c in calls] == [INVALID] * 5 and meminfo.result == P
    assert all(not c.exits for c in calls)


def test_share_twice_is_invalid(pvm):
    pvm.guest.stop()
    assert pvm.serve() == K.KVM_EXIT_INTR
    first = pvm.guest.pkvm.mem_share(GPA)
    second = pvm.guest.pkvm.mem_share(GPA)
    pvm.guest.stop()
    assert pvm.serve() == K.KVM_EXIT_INTR
    assert (first.result, second.result) == (0, INVALID)


# --- consequences -----------------------------------------------------------------------------------


def test_punch_of_a_guest_page_is_reclaimed_and_run_fails(pvm):
    pvm.guest.write(GPA + 4 * P, b"x")
    pvm.guest.stop()
    assert pvm.run_exit() == K.KVM_EXIT_INTR
    pvm.k.fallocate(pvm.gmem, 3, 4 * P, P)  # PUNCH_HOLE | KEEP_SIZE
    assert kinds(pvm.k) == ["pkvm_reclaim"] and pvm.k.violations[-1].gpa == GPA + 4 * P
    pvm.guest.read(GPA + 4 * P, 1)
    assert err(pvm.kvm_run) == errno.EFAULT
    assert pvm.k.violations[-1].kind == "pkvm_access_reclaimed"
    pvm.k.fallocate(pvm.gmem, 3, 5 * P, P)  # a page the guest never touched: nothing
    assert len(pvm.k.violations) == 2


def test_the_vmm_loop_ends_on_system_off(pvm):
    """A guest that ends for good powers off (PSCI SYSTEM_OFF): serve() returns on the
    KVM_EXIT_SYSTEM_EVENT after serving the share before it."""
    share = pvm.guest.pkvm.mem_share(GPA)
    pvm.guest.pkvm.system_off()
    assert pvm.serve() == K.KVM_EXIT_SYSTEM_EVENT and share.result == A.SMCCC_RET_SUCCESS
    assert pvm.run.system_event.type == A.KVM_SYSTEM_EVENT_SHUTDOWN


def test_system_reset_is_repainted_as_off(pvm):
    pvm.guest.pkvm.system_reset()
    pvm.kvm_run()
    se = pvm.run.system_event
    assert pvm.run.exit_reason == K.KVM_EXIT_SYSTEM_EVENT
    assert (se.type, se.ndata, se.data[0]) == (A.KVM_SYSTEM_EVENT_SHUTDOWN, 1, 0)


def test_memslots_are_fixed_once_running(pvm):
    k = pvm.k
    ro = K.kvm_userspace_memory_region2(slot=1, flags=K.KVM_MEM_READONLY,
                                        guest_phys_addr=1 << 32, memory_size=P,
                                        userspace_addr=pvm.m.address)
    assert err(k.ioctl, pvm.vm, K.KVM_SET_USER_MEMORY_REGION2, ro) == errno.EPERM
    ro.flags = 0
    k.ioctl(pvm.vm, K.KVM_SET_USER_MEMORY_REGION2, ro)
    pvm.guest.stop()
    assert pvm.run_exit() == K.KVM_EXIT_INTR
    ro.memory_size = 0
    assert err(k.ioctl, pvm.vm, K.KVM_SET_USER_MEMORY_REGION2, ro) == errno.EPERM


def test_no_pre_fault(pvm):
    r = K.kvm_pre_fault_memory(gpa=GPA, size=P)
    assert err(pvm.k.ioctl, pvm.vcpu, K.KVM_PRE_FAULT_MEMORY, r) == errno.EOPNOTSUPP
