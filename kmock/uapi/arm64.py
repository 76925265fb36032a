"""arch/arm64/include/uapi/asm/kvm.h and the arm64 parts of include/uapi/linux/kvm.h.

What a VMM needs to create an arm64 VM (upstream, no CCA series): the IPA size in the
KVM_CREATE_VM type, the vCPU init struct and feature bits, and the device-control
ioctls it uses to create the in-kernel vGIC before the first KVM_RUN.

Sources (read, not copied; tests/uapi/test_uapi_arm64_cca.py checks every value):
- asm/kvm.h: kernelorg-mirror/linux_kernel_git_oupton_linux @7de94509
  arch/arm64/include/uapi/asm/kvm.h (targets, vCPU features, vGIC groups and address types).
- linux/kvm.h: KVM_ARM_VCPU_INIT 0xae, KVM_ARM_PREFERRED_TARGET 0xaf, KVM_ARM_VCPU_FINALIZE
  0xc2, KVM_CREATE_DEVICE 0xe0 and KVM_{SET,GET,HAS}_DEVICE_ATTR 0xe1-0xe3,
  struct kvm_create_device / kvm_device_attr, enum kvm_device_type, KVM_CAP_ARM_VM_IPA_SIZE
  165; KVM_VM_TYPE_ARM_IPA_SIZE_MASK and KVM_VM_TYPE_ARM_PROTECTED as they stand in the
  v7.1-rc1 base of the CCA v14 series (patch 16/44 context lines).

KVM_CREATE_DEVICE and the device-attribute ioctls are generic kvm.h; they live here until
kmock.uapi.kvm grows them (it has none today), and kvm.py may re-export them then.
"""

import ctypes

from .ioctl import _IOR, _IOW, _IOWR
from .kvm import KVMIO

u32 = ctypes.c_uint32
u64 = ctypes.c_uint64

# --- KVM_CREATE_VM machine type (linux/kvm.h) ---------------------------------------------

KVM_VM_TYPE_ARM_IPA_SIZE_MASK = 0xFF
KVM_VM_TYPE_ARM_PROTECTED = 1 << 31  # pKVM, upstream since 6.x; bit 31
KVM_VM_TYPE_ARM_MASK = KVM_VM_TYPE_ARM_IPA_SIZE_MASK | KVM_VM_TYPE_ARM_PROTECTED
KVM_ARM_DEFAULT_IPA_BITS = 40  # an IPA size of 0 means 40 bits (api.rst, "ARM64")


def KVM_VM_TYPE_ARM_IPA_SIZE(x):
    """Bits 7:0 of the KVM_CREATE_VM type: log2 of the IPA space (0 = 40 bits)."""
    return x & KVM_VM_TYPE_ARM_IPA_SIZE_MASK


# KVM_CHECK_EXTENSION numbers an arm64 VMM probes (include/uapi/linux/kvm.h)
KVM_CAP_MP_STATE = 14
KVM_CAP_ONE_REG = 70
KVM_CAP_READONLY_MEM = 81
KVM_CAP_ARM_PSCI = 87
KVM_CAP_ARM_SET_DEVICE_ADDR = 88
KVM_CAP_DEVICE_CTRL = 89
KVM_CAP_ARM_EL1_32BIT = 93
KVM_CAP_VM_ATTRIBUTES = 101
KVM_CAP_ARM_PSCI_0_2 = 102
KVM_CAP_ARM_PMU_V3 = 126
KVM_CAP_VCPU_ATTRIBUTES = 127
KVM_CAP_ARM_VM_IPA_SIZE = 165
KVM_CAP_ARM_SVE = 170
KVM_CAP_ARM_PTRAUTH_ADDRESS = 171
KVM_CAP_ARM_PTRAUTH_GENERIC = 172

# --- vCPU init (asm/kvm.h) ----------------------------------------------------------------


class kvm_vcpu_init(ctypes.Structure):
    _fields_ = [("target", u32), ("features", u32 * 7)]


KVM_ARM_TARGET_AEM_V8 = 0
KVM_ARM_TARGET_FOUNDATION_V8 = 1
KVM_ARM_TARGET_CORTEX_A57 = 2
KVM_ARM_TARGET_XGENE_POTENZA = 3
KVM_ARM_TARGET_CORTEX_A53 = 4
KVM_ARM_TARGET_GENERIC_V8 = 5
KVM_ARM_NUM_TARGETS = 6

# bit numbers within kvm_vcpu_init.features[]
KVM_ARM_VCPU_POWER_OFF = 0
KVM_ARM_VCPU_EL1_32BIT = 1
KVM_ARM_VCPU_PSCI_0_2 = 2
KVM_ARM_VCPU_PMU_V3 = 3
KVM_ARM_VCPU_SVE = 4
KVM_ARM_VCPU_PTRAUTH_ADDRESS = 5
KVM_ARM_VCPU_PTRAUTH_GENERIC = 6
KVM_ARM_VCPU_HAS_EL2 = 7
KVM_ARM_VCPU_HAS_EL2_E2H0 = 8
#: KVM_VCPU_MAX_FEATURES (arch/arm64/include/asm/kvm_host.h): bits 0-8 exist
KVM_VCPU_MAX_FEATURES = 9


class kvm_one_reg(ctypes.Structure):
    _fields_ = [("id", u64), ("addr", u64)]


# register ids (asm/kvm.h): KVM_REG_ARM64 | size | KVM_REG_ARM_CORE | offset / 4 into
# struct kvm_regs { struct user_pt_regs { u64 regs[31], sp, pc, pstate } regs; ... }
KVM_REG_ARM64 = 0x6000000000000000
KVM_REG_SIZE_MASK = 0x00F0000000000000
KVM_REG_SIZE_SHIFT = 52
KVM_REG_SIZE_U64 = 0x0030000000000000
KVM_REG_ARM_CORE = 0x0010 << 16


def KVM_REG_ARM_CORE_REG(offset_bytes):
    """The id of the 64-bit core register at byte ``offset_bytes`` of struct kvm_regs."""
    return KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | (offset_bytes // 4)


def KVM_REG_ARM64_X(n):
    return KVM_REG_ARM_CORE_REG(8 * n)


KVM_REG_ARM64_PC = KVM_REG_ARM_CORE_REG(8 * 32)

KVM_GET_ONE_REG = _IOW(KVMIO, 0xAB, kvm_one_reg)
KVM_SET_ONE_REG = _IOW(KVMIO, 0xAC, kvm_one_reg)

KVM_ARM_VCPU_INIT = _IOW(KVMIO, 0xAE, kvm_vcpu_init)
KVM_ARM_PREFERRED_TARGET = _IOR(KVMIO, 0xAF, kvm_vcpu_init)
KVM_ARM_VCPU_FINALIZE = _IOW(KVMIO, 0xC2, ctypes.c_int)  # arg: a feature (KVM_ARM_VCPU_SVE)

# --- device control (linux/kvm.h: generic, defined in kmock.uapi.kvm) ---------------------

from .kvm import (  # noqa: E402,F401  (re-exported: arm64 users name them A.*)
    KVM_CREATE_DEVICE, KVM_CREATE_DEVICE_TEST,
    KVM_DEV_TYPE_ARM_PV_TIME, KVM_DEV_TYPE_ARM_VGIC_ITS, KVM_DEV_TYPE_ARM_VGIC_V2,
    KVM_DEV_TYPE_ARM_VGIC_V3, KVM_DEV_TYPE_FLIC, KVM_DEV_TYPE_FSL_MPIC_20,
    KVM_DEV_TYPE_FSL_MPIC_42, KVM_DEV_TYPE_VFIO, KVM_DEV_TYPE_XICS, KVM_DEV_TYPE_XIVE,
    KVM_GET_DEVICE_ATTR, KVM_HAS_DEVICE_ATTR, KVM_SET_DEVICE_ATTR, kvm_create_device,
    kvm_device_attr)

# --- vGIC device attributes (asm/kvm.h) -----------------------------------------------------

KVM_DEV_ARM_VGIC_GRP_ADDR = 0
KVM_DEV_ARM_VGIC_GRP_DIST_REGS = 1
KVM_DEV_ARM_VGIC_GRP_CPU_REGS = 2
KVM_DEV_ARM_VGIC_GRP_NR_IRQS = 3
KVM_DEV_ARM_VGIC_GRP_CTRL = 4
KVM_DEV_ARM_VGIC_GRP_REDIST_REGS = 5
KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS = 6
KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO = 7
KVM_DEV_ARM_VGIC_GRP_ITS_REGS = 8
KVM_DEV_ARM_VGIC_GRP_MAINT_IRQ = 9

KVM_DEV_ARM_VGIC_CTRL_INIT = 0
KVM_DEV_ARM_ITS_SAVE_TABLES = 1
KVM_DEV_ARM_ITS_RESTORE_TABLES = 2
KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES = 3
KVM_DEV_ARM_ITS_CTRL_RESET = 4

KVM_VGIC_V2_ADDR_TYPE_DIST = 0
KVM_VGIC_V2_ADDR_TYPE_CPU = 1
KVM_VGIC_V2_DIST_SIZE = 0x1000
KVM_VGIC_V2_CPU_SIZE = 0x2000

KVM_VGIC_V3_ADDR_TYPE_DIST = 2
KVM_VGIC_V3_ADDR_TYPE_REDIST = 3
KVM_VGIC_ITS_ADDR_TYPE = 4
KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION = 5
KVM_VGIC_V3_DIST_SIZE = 0x10000
KVM_VGIC_V3_REDIST_SIZE = 2 * 0x10000
KVM_VGIC_V3_ITS_SIZE = 2 * 0x10000

# --- ONE_REG id space (asm/kvm.h, linux/kvm.h) ----------------------------------------------

KVM_REG_ARCH_MASK = 0xFF00000000000000
KVM_REG_SIZE_U32 = 0x0020000000000000
KVM_REG_SIZE_U128 = 0x0040000000000000
KVM_REG_SIZE_U256 = 0x0050000000000000
KVM_REG_SIZE_U512 = 0x0060000000000000
KVM_REG_SIZE_U2048 = 0x0080000000000000
KVM_REG_ARM_COPROC_MASK = 0x0FFF0000
KVM_REG_ARM_DEMUX = 0x0011 << 16
KVM_REG_ARM64_SYSREG = 0x0013 << 16
KVM_REG_ARM_FW = 0x0014 << 16
KVM_REG_ARM64_SVE = 0x0015 << 16
KVM_REG_ARM_FW_FEAT_BMAP = 0x0016 << 16
KVM_REG_ARM64_SYSREG_OP0_SHIFT = 14
KVM_REG_ARM64_SYSREG_OP1_SHIFT = 11
KVM_REG_ARM64_SYSREG_CRN_SHIFT = 7
KVM_REG_ARM64_SYSREG_CRM_SHIFT = 3
KVM_REG_ARM64_SYSREG_OP2_SHIFT = 0
#: the op0..op2 fields of a KVM_REG_ARM64_SYSREG id
KVM_REG_ARM64_SYSREG_FIELDS = 0xFFFF


def ARM64_SYS_REG(op0, op1, crn, crm, op2):
    return (KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM64_SYSREG | op0 << 14 | op1 << 11
            | crn << 7 | crm << 3 | op2)


#: the arch timer's registers (asm/kvm.h: CNT and CVAL's encodings are swapped on purpose)
KVM_REG_ARM_TIMER_CTL = ARM64_SYS_REG(3, 3, 14, 3, 1)
KVM_REG_ARM_TIMER_CNT = ARM64_SYS_REG(3, 3, 14, 3, 2)
KVM_REG_ARM_TIMER_CVAL = ARM64_SYS_REG(3, 3, 14, 0, 2)


def KVM_REG_ARM_FW_REG(r):
    return KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_FW | (r & 0xFFFF)


KVM_REG_ARM_PSCI_VERSION = KVM_REG_ARM_FW_REG(0)
KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_1 = KVM_REG_ARM_FW_REG(1)
KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2 = KVM_REG_ARM_FW_REG(2)
KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_3 = KVM_REG_ARM_FW_REG(3)


def KVM_REG_ARM_FW_FEAT_BMAP_REG(r):
    return KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_FW_FEAT_BMAP | (r & 0xFFFF)


KVM_REG_ARM_STD_BMAP = KVM_REG_ARM_FW_FEAT_BMAP_REG(0)
KVM_REG_ARM_STD_HYP_BMAP = KVM_REG_ARM_FW_FEAT_BMAP_REG(1)
KVM_REG_ARM_VENDOR_HYP_BMAP = KVM_REG_ARM_FW_FEAT_BMAP_REG(2)
#: since 6.16 (commit c0000e58c74e): DISCOVER_IMPL_VER (bit 0), DISCOVER_IMPL_CPUS (bit 1)
KVM_REG_ARM_VENDOR_HYP_BMAP_2 = KVM_REG_ARM_FW_FEAT_BMAP_REG(3)

#: kvm->arch.psci_version values (include/kvm/arm_psci.h: PSCI_VERSION(major, minor))
KVM_ARM_PSCI_0_1 = 1
KVM_ARM_PSCI_0_2 = 2
KVM_ARM_PSCI_1_0 = 1 << 16
KVM_ARM_PSCI_1_1 = 1 << 16 | 1
KVM_ARM_PSCI_1_2 = 1 << 16 | 2
KVM_ARM_PSCI_1_3 = 1 << 16 | 3

# SVE registers (asm/kvm.h): Z0-31 (2048-bit slices), P0-15 and FFR (256-bit), the VLS
KVM_REG_ARM64_SVE_ZREG_BASE = 0
KVM_REG_ARM64_SVE_PREG_BASE = 0x0400
KVM_REG_ARM64_SVE_FFR_BASE = 0x0600
KVM_ARM64_SVE_NUM_ZREGS = 32
KVM_ARM64_SVE_NUM_PREGS = 16
KVM_ARM64_SVE_MAX_SLICES = 32


def KVM_REG_ARM64_SVE_ZREG(n, i):
    return (KVM_REG_ARM64 | KVM_REG_ARM64_SVE | KVM_REG_ARM64_SVE_ZREG_BASE
            | KVM_REG_SIZE_U2048 | n << 5 | i)


def KVM_REG_ARM64_SVE_PREG(n, i):
    return (KVM_REG_ARM64 | KVM_REG_ARM64_SVE | KVM_REG_ARM64_SVE_PREG_BASE
            | KVM_REG_SIZE_U256 | n << 5 | i)


def KVM_REG_ARM64_SVE_FFR(i):
    return (KVM_REG_ARM64 | KVM_REG_ARM64_SVE | KVM_REG_ARM64_SVE_FFR_BASE
            | KVM_REG_SIZE_U256 | i)


KVM_REG_ARM64_SVE_VLS = KVM_REG_ARM64 | KVM_REG_ARM64_SVE | KVM_REG_SIZE_U512 | 0xFFFF
KVM_ARM64_SVE_VLS_WORDS = 8


class kvm_reg_list(ctypes.Structure):
    _fields_ = [("n", u64)]  # then __u64 reg[n]


KVM_GET_REG_LIST = _IOWR(KVMIO, 0xB0, kvm_reg_list)

# --- KVM_GET/SET_VCPU_EVENTS (asm/kvm.h, arm64 layout: 64 bytes like x86's) ---------------


class _arm64_events_exception(ctypes.Structure):
    _fields_ = [("serror_pending", ctypes.c_uint8), ("serror_has_esr", ctypes.c_uint8),
                ("ext_dabt_pending", ctypes.c_uint8), ("ext_iabt_pending", ctypes.c_uint8),
                ("pad", ctypes.c_uint8 * 4), ("serror_esr", u64)]


class kvm_vcpu_events(ctypes.Structure):
    _fields_ = [("exception", _arm64_events_exception), ("reserved", u32 * 12)]


KVM_GET_VCPU_EVENTS = _IOR(KVMIO, 0x9F, kvm_vcpu_events)
KVM_SET_VCPU_EVENTS = _IOW(KVMIO, 0xA0, kvm_vcpu_events)
KVM_CAP_VCPU_EVENTS = 41

# --- KVM_IRQ_LINE's irq field on arm64 (asm/kvm.h) -----------------------------------------

KVM_ARM_IRQ_VCPU2_SHIFT = 28
KVM_ARM_IRQ_VCPU2_MASK = 0xF
KVM_ARM_IRQ_TYPE_SHIFT = 24
KVM_ARM_IRQ_TYPE_MASK = 0xF
KVM_ARM_IRQ_VCPU_SHIFT = 16
KVM_ARM_IRQ_VCPU_MASK = 0xFF
KVM_ARM_IRQ_NUM_SHIFT = 0
KVM_ARM_IRQ_NUM_MASK = 0xFFFF
KVM_ARM_IRQ_TYPE_CPU = 0
KVM_ARM_IRQ_TYPE_SPI = 1
KVM_ARM_IRQ_TYPE_PPI = 2
KVM_ARM_IRQ_CPU_IRQ = 0
KVM_ARM_IRQ_CPU_FIQ = 1
KVM_CAP_ARM_USER_IRQ = 137
KVM_CAP_ARM_IRQ_LINE_LAYOUT_2 = 174


def KVM_ARM_IRQ(irq_type, vcpu, num):
    """The irq field of KVM_IRQ_LINE; vCPU indexes above 255 go in bits 31:28 (LAYOUT_2)."""
    return ((vcpu >> 8 & KVM_ARM_IRQ_VCPU2_MASK) << KVM_ARM_IRQ_VCPU2_SHIFT
            | irq_type << KVM_ARM_IRQ_TYPE_SHIFT | (vcpu & 0xFF) << KVM_ARM_IRQ_VCPU_SHIFT
            | num)


# --- legacy vGIC ioctls: KVM_CREATE_IRQCHIP (GICv2) and KVM_ARM_SET_DEVICE_ADDR ------------


class kvm_arm_device_addr(ctypes.Structure):
    _fields_ = [("id", u64), ("addr", u64)]


#: same number as KVM_GET_ONE_REG (_IOW 0xab, 16 bytes): a VM ioctl, not a vCPU one
KVM_ARM_SET_DEVICE_ADDR = _IOW(KVMIO, 0xAB, kvm_arm_device_addr)
KVM_ARM_DEVICE_ID_SHIFT = 16
KVM_ARM_DEVICE_ID_MASK = 0xFFFF << KVM_ARM_DEVICE_ID_SHIFT
KVM_ARM_DEVICE_TYPE_MASK = 0xFFFF
KVM_ARM_DEVICE_VGIC_V2 = 0

# KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION's value: index 11:0, flags 15:12, base 51:16, count 63:52
KVM_VGIC_V3_RDIST_INDEX_MASK = 0xFFF
KVM_VGIC_V3_RDIST_FLAGS_SHIFT = 12
KVM_VGIC_V3_RDIST_FLAGS_MASK = 0xF << 12
KVM_VGIC_V3_RDIST_BASE_MASK = ((1 << 52) - 1) & ~0xFFFF
KVM_VGIC_V3_RDIST_COUNT_SHIFT = 52
KVM_VGIC_V3_RDIST_COUNT_MASK = 0xFFF << 52

# --- vCPU device attributes (asm/kvm.h) ---------------------------------------------------

KVM_ARM_VCPU_PMU_V3_CTRL = 0
KVM_ARM_VCPU_PMU_V3_IRQ = 0
KVM_ARM_VCPU_PMU_V3_INIT = 1
KVM_ARM_VCPU_PMU_V3_FILTER = 2
KVM_ARM_VCPU_PMU_V3_SET_PMU = 3
KVM_ARM_VCPU_TIMER_CTRL = 1
KVM_ARM_VCPU_TIMER_IRQ_VTIMER = 0
KVM_ARM_VCPU_TIMER_IRQ_PTIMER = 1
KVM_ARM_VCPU_TIMER_IRQ_HVTIMER = 2
KVM_ARM_VCPU_TIMER_IRQ_HPTIMER = 3
KVM_ARM_VCPU_PVTIME_CTRL = 2
KVM_ARM_VCPU_PVTIME_IPA = 0


class kvm_pmu_event_filter(ctypes.Structure):
    _fields_ = [("base_event", ctypes.c_uint16), ("nevents", ctypes.c_uint16),
                ("action", ctypes.c_uint8), ("pad", ctypes.c_uint8 * 3)]


KVM_PMU_EVENT_ALLOW = 0
KVM_PMU_EVENT_DENY = 1
KVM_CAP_STEAL_TIME = 187
KVM_CAP_ARM_INJECT_SERROR_ESR = 158
KVM_CAP_ARM_INJECT_EXT_DABT = 178
KVM_CAP_ARM_NISV_TO_USER = 177
KVM_CAP_ARM_SYSTEM_SUSPEND = 216
