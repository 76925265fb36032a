"""The numbers kmock_pkvm uses, against their sources (see kmock_pkvm/uapi.py)."""

import ctypes

from kmock_pkvm import uapi as A


def test_machine_type():
    # Android pkvm.c / the pKVM selftests / kvm-bindings: bit 31; IPA size in bits 7:0
    assert A.KVM_VM_TYPE_ARM_PROTECTED == 0x8000_0000
    assert A.KVM_VM_TYPE_ARM_PROTECTED & A.KVM_VM_TYPE_ARM_IPA_SIZE_MASK == 0


def test_hypercall_function_ids():
    # Documentation/virt/kvm/arm/hypercalls.rst
    assert A.ARM_SMCCC_VENDOR_HYP_KVM_HYP_MEMINFO_FUNC_ID == 0xC6000002
    assert A.ARM_SMCCC_VENDOR_HYP_KVM_MEM_SHARE_FUNC_ID == 0xC6000003
    assert A.ARM_SMCCC_VENDOR_HYP_KVM_MEM_UNSHARE_FUNC_ID == 0xC6000004
    assert A.SMCCC_RET_INVALID_PARAMETER == -3


def test_arm64_vcpu_abi():
    assert ctypes.sizeof(A.kvm_vcpu_init) == 32 and ctypes.sizeof(A.kvm_one_reg) == 16
    assert A.KVM_GET_ONE_REG == 0x4010AEAB and A.KVM_SET_ONE_REG == 0x4010AEAC
    assert A.KVM_ARM_VCPU_INIT == 0x4020AEAE and A.KVM_ARM_PREFERRED_TARGET == 0x8020AEAF
    # the pKVM teardown selftest: REG_X(n) = 0x6030000000100000 + n * 2, REG_PC ...40
    assert A.core_reg(3) == 0x6030000000100006 and A.KVM_REG_ARM_CORE_PC == 0x6030000000100040


def test_capabilities_and_exits():
    # include/uapi/linux/kvm.h
    assert (A.KVM_CAP_ARM_PSCI_0_2, A.KVM_CAP_ARM_VM_IPA_SIZE) == (102, 165)
    assert (A.KVM_SYSTEM_EVENT_SHUTDOWN, A.KVM_SYSTEM_EVENT_RESET) == (1, 2)
    assert (A.KVM_HYPERCALL_EXIT_SMC, A.KVM_HYPERCALL_EXIT_16BIT) == (1, 2)
    # include/uapi/linux/psci.h: PSCI_0_2_FN_BASE 0x84000000 + 8 / + 9
    assert (A.PSCI_0_2_FN_SYSTEM_OFF, A.PSCI_0_2_FN_SYSTEM_RESET) == (0x84000008, 0x84000009)
