"""The numbers and structs pKVM's user ABI uses, under the kernel's names.

Sources (each number is checked in tests/test_uapi.py):

* ``KVM_VM_TYPE_ARM_PROTECTED``: bit 31 of KVM_CREATE_VM's machine type, with the
  IPA size in bits 7:0. Android's arch/arm64/kvm/pkvm.c (``pkvm_init_host_vm``
  tests ``type & KVM_VM_TYPE_ARM_PROTECTED`` and returns -EINVAL when
  ``!is_protected_kvm_enabled()``), the pKVM teardown selftest and rust-vmm's
  kvm-bindings (``1 << 31``); the CCA series moved KVM_VM_TYPE_ARM_REALM to bit 30
  in v14 "to coexist with pKVM". Will Deacon's 2022 RFC ([PATCH 89/89] series,
  include/uapi/linux/kvm.h) used bit 8: the bit is the platform setting
  ``pkvm_vm_type_bit``.
* The hypercalls: Documentation/virt/kvm/arm/hypercalls.rst, the vendor-hyp
  service range owned by KVM: ARM_SMCCC_KVM_FUNC_HYP_MEMINFO (2), MEM_SHARE (3),
  MEM_UNSHARE (4) as fast SMC64 calls, i.e. function IDs 0xC600000N.
* The arm64 vCPU ABI the example needs: struct kvm_vcpu_init, struct kvm_one_reg and
  the core register ids (arch/arm64/include/uapi/asm/kvm.h; KVM_REG_ARM64 |
  KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | offset / 4).
"""

import ctypes

from kmock.uapi.ioctl import _IOR, _IOW

KVMIO = 0xAE

# --- KVM_CREATE_VM's machine type on arm64 ---------------------------------------------------
KVM_VM_TYPE_ARM_IPA_SIZE_MASK = 0xFF
#: the bit of the mainline/Android ABI (the platform setting pkvm_vm_type_bit)
KVM_VM_TYPE_ARM_PROTECTED_BIT = 31
KVM_VM_TYPE_ARM_PROTECTED = 1 << KVM_VM_TYPE_ARM_PROTECTED_BIT
#: arm64's default IPA size when bits 7:0 are 0 (KVM_PHYS_SHIFT), and the smallest
#: one a VMM may ask for (ARM64_MIN_PARANGE_BITS)
KVM_PHYS_SHIFT = 40
ARM64_MIN_PARANGE_BITS = 32

# --- capabilities -------------------------------------------------------------------------------
KVM_CAP_ARM_PSCI_0_2 = 102
KVM_CAP_ARM_VM_IPA_SIZE = 165


# --- vCPU ----------------------------------------------------------------------------------------
class kvm_vcpu_init(ctypes.Structure):
    _fields_ = [("target", ctypes.c_uint32), ("features", ctypes.c_uint32 * 7)]


class kvm_one_reg(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint64), ("addr", ctypes.c_uint64)]


KVM_GET_ONE_REG = _IOW(KVMIO, 0xAB, kvm_one_reg)
KVM_SET_ONE_REG = _IOW(KVMIO, 0xAC, kvm_one_reg)
KVM_ARM_VCPU_INIT = _IOW(KVMIO, 0xAE, kvm_vcpu_init)
KVM_ARM_PREFERRED_TARGET = _IOR(KVMIO, 0xAF, kvm_vcpu_init)

KVM_ARM_TARGET_GENERIC_V8 = 5
#: KVM_VCPU_MAX_FEATURES: feature bits 0..7 exist (POWER_OFF, EL1_32BIT, PSCI_0_2, ...)
KVM_VCPU_MAX_FEATURES = 8
KVM_ARM_VCPU_PSCI_0_2 = 2

#: KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE: regs.regs[n] is + 2 * n, pc + 0x40
KVM_REG_ARM_CORE_X0 = 0x6030000000100000
KVM_REG_ARM_CORE_PC = KVM_REG_ARM_CORE_X0 + 0x40


def core_reg(n):
    """The KVM_{GET,SET}_ONE_REG id of general-purpose register Xn (0 <= n <= 30)."""
    return KVM_REG_ARM_CORE_X0 + 2 * n


# --- exits ----------------------------------------------------------------------------------------
#: kvm_run.hypercall.flags on arm64: the call was an SMC (else HVC), or a 16-bit immediate
KVM_HYPERCALL_EXIT_SMC = 1 << 0
KVM_HYPERCALL_EXIT_16BIT = 1 << 1
KVM_SYSTEM_EVENT_SHUTDOWN = 1
KVM_SYSTEM_EVENT_RESET = 2

# --- SMCCC ------------------------------------------------------------------------------------------
ARM_SMCCC_VENDOR_HYP_KVM = 0xC6000000  # fast call, SMC64, owner VENDOR_HYP
ARM_SMCCC_KVM_FUNC_HYP_MEMINFO = 2
ARM_SMCCC_KVM_FUNC_MEM_SHARE = 3
ARM_SMCCC_KVM_FUNC_MEM_UNSHARE = 4
ARM_SMCCC_VENDOR_HYP_KVM_HYP_MEMINFO_FUNC_ID = ARM_SMCCC_VENDOR_HYP_KVM | ARM_SMCCC_KVM_FUNC_HYP_MEMINFO
ARM_SMCCC_VENDOR_HYP_KVM_MEM_SHARE_FUNC_ID = ARM_SMCCC_VENDOR_HYP_KVM | ARM_SMCCC_KVM_FUNC_MEM_SHARE
ARM_SMCCC_VENDOR_HYP_KVM_MEM_UNSHARE_FUNC_ID = ARM_SMCCC_VENDOR_HYP_KVM | ARM_SMCCC_KVM_FUNC_MEM_UNSHARE
#: PSCI 0.2 SYSTEM_OFF / SYSTEM_RESET (SMC32 function IDs)
PSCI_0_2_FN_SYSTEM_OFF = 0x84000008
PSCI_0_2_FN_SYSTEM_RESET = 0x84000009

SMCCC_RET_SUCCESS = 0
SMCCC_RET_NOT_SUPPORTED = -1
SMCCC_RET_INVALID_PARAMETER = -3
