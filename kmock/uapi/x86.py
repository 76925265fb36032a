"""arch/x86/include/uapi/asm/kvm.h: the vCPU register and state structs and their ioctls.

Layouts checked against the x86-64 UAPI header (tests/uapi/test_uapi_x86_vcpu.py).
struct kvm_regs and struct kvm_cpuid2 live in kmock.uapi.kvm (older users).
"""

import ctypes

from .ioctl import _IO, _IOR, _IOW, _IOWR
from .kvm import KVMIO, kvm_cpuid2, kvm_regs
from .kvm import (  # noqa: F401  (re-exported: generic in kvm.h, used by x86 users as X.*)
    KVM_GET_MP_STATE, KVM_MP_STATE_AP_RESET_HOLD, KVM_MP_STATE_CHECK_STOP, KVM_MP_STATE_HALTED,
    KVM_MP_STATE_INIT_RECEIVED, KVM_MP_STATE_LOAD, KVM_MP_STATE_OPERATING, KVM_MP_STATE_RUNNABLE,
    KVM_MP_STATE_SIPI_RECEIVED, KVM_MP_STATE_STOPPED, KVM_MP_STATE_SUSPENDED,
    KVM_MP_STATE_UNINITIALIZED, KVM_SET_MP_STATE, kvm_mp_state)

u8, u16, u32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64

KVM_NR_INTERRUPTS = 256
KVM_MAX_XCRS = 16


class kvm_segment(ctypes.Structure):
    _fields_ = [("base", u64), ("limit", u32), ("selector", u16),
                ("type", u8), ("present", u8), ("dpl", u8), ("db", u8),
                ("s", u8), ("l", u8), ("g", u8), ("avl", u8),
                ("unusable", u8), ("padding", u8)]


class kvm_dtable(ctypes.Structure):
    _fields_ = [("base", u64), ("limit", u16), ("padding", u16 * 3)]


#: the segment fields of kvm_sregs, in order
SREGS_SEGMENTS = ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt")


class kvm_sregs(ctypes.Structure):
    _fields_ = [(name, kvm_segment) for name in SREGS_SEGMENTS] + [
        ("gdt", kvm_dtable), ("idt", kvm_dtable),
        ("cr0", u64), ("cr2", u64), ("cr3", u64), ("cr4", u64), ("cr8", u64),
        ("efer", u64), ("apic_base", u64),
        ("interrupt_bitmap", u64 * ((KVM_NR_INTERRUPTS + 63) // 64))]


class kvm_sregs2(ctypes.Structure):
    """kvm_sregs without interrupt_bitmap, then flags and the four PAE PDPTRs."""
    _fields_ = kvm_sregs._fields_[:-1] + [("flags", u64), ("pdptrs", u64 * 4)]


KVM_SREGS2_FLAGS_PDPTRS_VALID = 1

KVM_APIC_REG_SIZE = 0x400


class kvm_guest_debug(ctypes.Structure):
    """struct kvm_guest_debug with x86's kvm_guest_debug_arch (debugreg[8]) inlined."""
    _fields_ = [("control", u32), ("pad", u32), ("debugreg", u64 * 8)]


KVM_GUESTDBG_ENABLE = 0x1
KVM_GUESTDBG_SINGLESTEP = 0x2
KVM_GUESTDBG_USE_SW_BP = 0x10000
KVM_GUESTDBG_USE_HW_BP = 0x20000
KVM_GUESTDBG_INJECT_DB = 0x40000
KVM_GUESTDBG_INJECT_BP = 0x80000
KVM_GUESTDBG_BLOCKIRQ = 0x100000


class kvm_lapic_state(ctypes.Structure):
    _fields_ = [("regs", ctypes.c_char * KVM_APIC_REG_SIZE)]


class kvm_fpu(ctypes.Structure):
    _fields_ = [("fpr", (u8 * 16) * 8), ("fcw", u16), ("fsw", u16), ("ftwx", u8),
                ("pad1", u8), ("last_opcode", u16), ("last_ip", u64), ("last_dp", u64),
                ("xmm", (u8 * 16) * 16), ("mxcsr", u32), ("pad2", u32)]


class kvm_msr_entry(ctypes.Structure):
    _fields_ = [("index", u32), ("reserved", u32), ("data", u64)]


class kvm_msrs(ctypes.Structure):
    """Header; ``nmsrs`` kvm_msr_entry follow."""
    _fields_ = [("nmsrs", u32), ("pad", u32)]


class kvm_msr_list(ctypes.Structure):
    """Header; ``nmsrs`` u32 indices follow."""
    _fields_ = [("nmsrs", u32)]


class _events_exception(ctypes.Structure):
    _fields_ = [("injected", u8), ("nr", u8), ("has_error_code", u8), ("pending", u8),
                ("error_code", u32)]


class _events_interrupt(ctypes.Structure):
    _fields_ = [("injected", u8), ("nr", u8), ("soft", u8), ("shadow", u8)]


class _events_nmi(ctypes.Structure):
    _fields_ = [("injected", u8), ("pending", u8), ("masked", u8), ("pad", u8)]


class _events_smi(ctypes.Structure):
    _fields_ = [("smm", u8), ("pending", u8), ("smm_inside_nmi", u8), ("latched_init", u8)]


class _events_triple_fault(ctypes.Structure):
    _fields_ = [("pending", u8)]


class kvm_vcpu_events(ctypes.Structure):
    _fields_ = [("exception", _events_exception), ("interrupt", _events_interrupt),
                ("nmi", _events_nmi), ("sipi_vector", u32), ("flags", u32),
                ("smi", _events_smi), ("triple_fault", _events_triple_fault),
                ("reserved", u8 * 26), ("exception_has_payload", u8),
                ("exception_payload", u64)]


class kvm_debugregs(ctypes.Structure):
    _fields_ = [("db", u64 * 4), ("dr6", u64), ("dr7", u64), ("flags", u64),
                ("reserved", u64 * 9)]


class kvm_xcr(ctypes.Structure):
    _fields_ = [("xcr", u32), ("reserved", u32), ("value", u64)]


class kvm_xcrs(ctypes.Structure):
    _fields_ = [("nr_xcrs", u32), ("flags", u32), ("xcrs", kvm_xcr * KVM_MAX_XCRS),
                ("padding", u64 * 16)]


class kvm_xsave(ctypes.Structure):
    """The legacy 4 KiB buffer; KVM_GET_XSAVE2 writes KVM_CHECK_EXTENSION(XSAVE2) bytes."""
    _fields_ = [("region", u32 * 1024)]


class kvm_signal_mask(ctypes.Structure):
    """Header; ``len`` bytes of sigset follow."""
    _fields_ = [("len", u32)]


# /dev/kvm
KVM_GET_MSR_INDEX_LIST = _IOWR(KVMIO, 0x02, kvm_msr_list)
KVM_GET_MSR_FEATURE_INDEX_LIST = _IOWR(KVMIO, 0x0A, kvm_msr_list)

# vCPU
KVM_GET_LAPIC = _IOR(KVMIO, 0x8E, kvm_lapic_state)
KVM_SET_LAPIC = _IOW(KVMIO, 0x8F, kvm_lapic_state)
KVM_NMI = _IO(KVMIO, 0x9A)
KVM_SMI = _IO(KVMIO, 0xB7)
KVM_SET_GUEST_DEBUG = _IOW(KVMIO, 0x9B, kvm_guest_debug)
KVM_GET_REGS = _IOR(KVMIO, 0x81, kvm_regs)
KVM_SET_REGS = _IOW(KVMIO, 0x82, kvm_regs)
KVM_GET_SREGS = _IOR(KVMIO, 0x83, kvm_sregs)
KVM_SET_SREGS = _IOW(KVMIO, 0x84, kvm_sregs)
KVM_GET_MSRS = _IOWR(KVMIO, 0x88, kvm_msrs)
KVM_SET_MSRS = _IOW(KVMIO, 0x89, kvm_msrs)
KVM_SET_SIGNAL_MASK = _IOW(KVMIO, 0x8B, kvm_signal_mask)
KVM_GET_FPU = _IOR(KVMIO, 0x8C, kvm_fpu)
KVM_SET_FPU = _IOW(KVMIO, 0x8D, kvm_fpu)
KVM_SET_CPUID2 = _IOW(KVMIO, 0x90, kvm_cpuid2)
KVM_GET_CPUID2 = _IOWR(KVMIO, 0x91, kvm_cpuid2)
KVM_GET_VCPU_EVENTS = _IOR(KVMIO, 0x9F, kvm_vcpu_events)
KVM_SET_VCPU_EVENTS = _IOW(KVMIO, 0xA0, kvm_vcpu_events)
KVM_GET_DEBUGREGS = _IOR(KVMIO, 0xA1, kvm_debugregs)
KVM_SET_DEBUGREGS = _IOW(KVMIO, 0xA2, kvm_debugregs)
KVM_SET_TSC_KHZ = _IO(KVMIO, 0xA2)
KVM_GET_TSC_KHZ = _IO(KVMIO, 0xA3)
KVM_GET_XSAVE = _IOR(KVMIO, 0xA4, kvm_xsave)
KVM_SET_XSAVE = _IOW(KVMIO, 0xA5, kvm_xsave)
KVM_GET_XCRS = _IOR(KVMIO, 0xA6, kvm_xcrs)
KVM_SET_XCRS = _IOW(KVMIO, 0xA7, kvm_xcrs)
KVM_GET_XSAVE2 = _IOR(KVMIO, 0xCF, kvm_xsave)
KVM_GET_SREGS2 = _IOR(KVMIO, 0xCC, kvm_sregs2)
KVM_SET_SREGS2 = _IOW(KVMIO, 0xCD, kvm_sregs2)

KVM_CAP_TSC_CONTROL = 60
KVM_CAP_GET_TSC_KHZ = 61
KVM_CAP_GET_MSR_FEATURES = 153
KVM_CAP_SREGS2 = 200
KVM_CAP_XSAVE2 = 208


KVM_VCPUEVENT_VALID_NMI_PENDING = 0x01
KVM_VCPUEVENT_VALID_SIPI_VECTOR = 0x02
KVM_VCPUEVENT_VALID_SHADOW = 0x04
KVM_VCPUEVENT_VALID_SMM = 0x08
KVM_VCPUEVENT_VALID_PAYLOAD = 0x10
KVM_VCPUEVENT_VALID_TRIPLE_FAULT = 0x20

KVM_DEBUGREGS_VALID_FLAGS = 0  # kvm_vcpu_ioctl_x86_set_debugregs: any flag is EINVAL

# --- TPR access reporting and the VAPIC page (QEMU's kvmvapic) --------------------------


class kvm_tpr_access_ctl(ctypes.Structure):
    _fields_ = [("enabled", u32), ("flags", u32), ("reserved", u32 * 8)]


class kvm_vapic_addr(ctypes.Structure):
    _fields_ = [("vapic_addr", u64)]


KVM_TPR_ACCESS_REPORTING = _IOWR(KVMIO, 0x92, kvm_tpr_access_ctl)
KVM_SET_VAPIC_ADDR = _IOW(KVMIO, 0x93, kvm_vapic_addr)

# --- KVM_X86_SET_MSR_FILTER (VM ioctl; the filter applies to the guest's RDMSR/WRMSR) ----

KVM_MSR_FILTER_MAX_BITMAP_SIZE = 0x600
KVM_MSR_FILTER_READ = 1 << 0
KVM_MSR_FILTER_WRITE = 1 << 1
KVM_MSR_FILTER_RANGE_VALID_MASK = KVM_MSR_FILTER_READ | KVM_MSR_FILTER_WRITE
KVM_MSR_FILTER_MAX_RANGES = 16
KVM_MSR_FILTER_DEFAULT_ALLOW = 0
KVM_MSR_FILTER_DEFAULT_DENY = 1 << 0
KVM_MSR_FILTER_VALID_MASK = KVM_MSR_FILTER_DEFAULT_DENY
KVM_CAP_X86_MSR_FILTER = 189


class kvm_msr_filter_range(ctypes.Structure):
    _fields_ = [("flags", u32), ("nmsrs", u32), ("base", u32),
                ("bitmap", u64)]  # __u8 *: a user pointer


class kvm_msr_filter(ctypes.Structure):
    _fields_ = [("flags", u32),
                ("ranges", kvm_msr_filter_range * KVM_MSR_FILTER_MAX_RANGES)]


KVM_X86_SET_MSR_FILTER = _IOW(KVMIO, 0xC6, kvm_msr_filter)

X86_CR0_PE = 1 << 0
X86_CR0_NW = 1 << 29
X86_CR0_CD = 1 << 30
X86_CR0_PG = 1 << 31
X86_CR4_PAE = 1 << 5
EFER_LME = 1 << 8
EFER_LMA = 1 << 10

# --- machine check (KVM_CAP_MCE) and the /dev/kvm attributes (KVM_CAP_SYS_ATTRIBUTES) -----

KVM_CAP_MCE = 31
KVM_CAP_SYS_ATTRIBUTES = 209


class kvm_x86_mce(ctypes.Structure):
    _fields_ = [("status", u64), ("addr", u64), ("misc", u64), ("mcg_status", u64),
                ("bank", ctypes.c_uint8), ("pad1", ctypes.c_uint8 * 7), ("pad2", u64 * 3)]


KVM_X86_SETUP_MCE = _IOW(KVMIO, 0x9C, ctypes.c_uint64)
KVM_X86_GET_MCE_CAP_SUPPORTED = _IOR(KVMIO, 0x9D, ctypes.c_uint64)
KVM_X86_SET_MCE = _IOW(KVMIO, 0x9E, kvm_x86_mce)


class kvm_device_attr(ctypes.Structure):
    _fields_ = [("flags", u32), ("group", u32), ("attr", u64), ("addr", u64)]


KVM_GET_DEVICE_ATTR = _IOW(KVMIO, 0xE2, kvm_device_attr)
KVM_HAS_DEVICE_ATTR = _IOW(KVMIO, 0xE3, kvm_device_attr)
#: /dev/kvm group 0 attribute: the XCR0 bits KVM supports (kvm_caps.supported_xcr0)
KVM_X86_XCOMP_GUEST_SUPP = 0

# --- the in-kernel PIC / I/O APIC state and the PIT (VM ioctls; kmock.kvm.x86_irq, x86_pit) ---

KVM_IOAPIC_NUM_PINS = 24


class kvm_pic_state(ctypes.Structure):
    """One 8259 (i8259.c struct kvm_kpic_state begins with the same 16 bytes)."""
    _fields_ = [(name, u8) for name in (
        "last_irr", "irr", "imr", "isr", "priority_add", "irq_base", "read_reg_select",
        "poll", "special_mask", "init_state", "auto_eoi", "rotate_on_auto_eoi",
        "special_fully_nested_mode", "init4", "elcr", "elcr_mask")]


class kvm_ioapic_state(ctypes.Structure):
    """``redirtbl`` as the u64 ``bits`` of each entry: vector 7:0, delivery_mode 10:8,
    dest_mode 11, delivery_status 12, polarity 13, remote_irr 14, trig_mode 15, mask 16,
    dest_id 63:56 (IOAPIC_* below)."""
    _fields_ = [("base_address", u64), ("ioregsel", u32), ("id", u32), ("irr", u32),
                ("pad", u32), ("redirtbl", u64 * KVM_IOAPIC_NUM_PINS)]


IOAPIC_REDIR_MASK = 1 << 16
IOAPIC_REDIR_LEVEL = 1 << 15
IOAPIC_REDIR_REMOTE_IRR = 1 << 14
IOAPIC_REDIR_DEST_LOGICAL = 1 << 11
IOAPIC_DEFAULT_BASE_ADDRESS = 0xFEC00000


class _irqchip_union(ctypes.Union):
    _fields_ = [("dummy", ctypes.c_char * 512), ("pic", kvm_pic_state),
                ("ioapic", kvm_ioapic_state)]


class kvm_irqchip(ctypes.Structure):
    _fields_ = [("chip_id", u32), ("pad", u32), ("chip", _irqchip_union)]


class kvm_pit_config(ctypes.Structure):
    _fields_ = [("flags", u32), ("pad", u32 * 15)]


KVM_PIT_SPEAKER_DUMMY = 1


class kvm_pit_channel_state(ctypes.Structure):
    _fields_ = [("count", u32), ("latched_count", u16), ("count_latched", u8),
                ("status_latched", u8), ("status", u8), ("read_state", u8),
                ("write_state", u8), ("write_latch", u8), ("rw_mode", u8), ("mode", u8),
                ("bcd", u8), ("gate", u8), ("count_load_time", ctypes.c_int64)]


class kvm_pit_state(ctypes.Structure):
    _fields_ = [("channels", kvm_pit_channel_state * 3)]


class kvm_pit_state2(ctypes.Structure):
    _fields_ = [("channels", kvm_pit_channel_state * 3), ("flags", u32),
                ("reserved", u32 * 9)]


KVM_PIT_FLAGS_HPET_LEGACY = 0x1
KVM_PIT_FLAGS_SPEAKER_DATA_ON = 0x2


class kvm_reinject_control(ctypes.Structure):
    _fields_ = [("pit_reinject", u8), ("reserved", u8 * 31)]


KVM_GET_IRQCHIP = _IOWR(KVMIO, 0x62, kvm_irqchip)
KVM_SET_IRQCHIP = _IOR(KVMIO, 0x63, kvm_irqchip)
KVM_CREATE_PIT = _IO(KVMIO, 0x64)
KVM_GET_PIT = _IOWR(KVMIO, 0x65, kvm_pit_state)
KVM_SET_PIT = _IOR(KVMIO, 0x66, kvm_pit_state)
KVM_REINJECT_CONTROL = _IO(KVMIO, 0x71)
KVM_CREATE_PIT2 = _IOW(KVMIO, 0x77, kvm_pit_config)
KVM_GET_PIT2 = _IOR(KVMIO, 0x9F, kvm_pit_state2)
KVM_SET_PIT2 = _IOW(KVMIO, 0xA0, kvm_pit_state2)

KVM_CAP_PIT = 11
KVM_CAP_REINJECT_CONTROL = 24
KVM_CAP_PIT2 = 33
KVM_CAP_PIT_STATE2 = 35

# --- KVM_INTERRUPT, KVM_TRANSLATE, the legacy KVM_SET_CPUID, vCPU attributes, ONE_REG ---------
# (linux/kvm.h, arch/x86/include/uapi/asm/kvm.h; kmock.kvm.x86_vcpu_misc)


class kvm_interrupt(ctypes.Structure):
    _fields_ = [("irq", u32)]


class kvm_translation(ctypes.Structure):
    _fields_ = [("linear_address", u64), ("physical_address", u64), ("valid", u8),
                ("writeable", u8), ("usermode", u8), ("pad", u8 * 5)]


class kvm_cpuid_entry(ctypes.Structure):
    _fields_ = [("function", u32), ("eax", u32), ("ebx", u32), ("ecx", u32), ("edx", u32),
                ("padding", u32)]


class kvm_cpuid(ctypes.Structure):
    _fields_ = [("nent", u32), ("padding", u32)]  # then struct kvm_cpuid_entry entries[]


class kvm_one_reg(ctypes.Structure):
    _fields_ = [("id", u64), ("addr", u64)]


class kvm_reg_list(ctypes.Structure):
    _fields_ = [("n", u64)]  # then __u64 reg[]


KVM_TRANSLATE = _IOWR(KVMIO, 0x85, kvm_translation)
KVM_INTERRUPT = _IOW(KVMIO, 0x86, kvm_interrupt)
KVM_SET_CPUID = _IOW(KVMIO, 0x8A, kvm_cpuid)
KVM_GET_ONE_REG = _IOW(KVMIO, 0xAB, kvm_one_reg)
KVM_SET_ONE_REG = _IOW(KVMIO, 0xAC, kvm_one_reg)
KVM_GET_REG_LIST = _IOWR(KVMIO, 0xB0, kvm_reg_list)
KVM_SET_DEVICE_ATTR = _IOW(KVMIO, 0xE1, kvm_device_attr)

#: vCPU device-attribute group and attribute (asm/kvm.h)
KVM_VCPU_TSC_CTRL = 0
KVM_VCPU_TSC_OFFSET = 0

#: ONE_REG ids (linux/kvm.h, asm/kvm.h of 6.18)
KVM_REG_ARCH_MASK = 0xFF00000000000000
KVM_REG_X86 = 0x2000000000000000
KVM_REG_SIZE_MASK = 0x00F0000000000000
KVM_REG_SIZE_U64 = 0x0030000000000000
KVM_X86_REG_TYPE_MSR = 2
KVM_X86_REG_TYPE_KVM = 3
KVM_REG_GUEST_SSP = 0


def KVM_X86_REG_ID(type_, index):
    """KVM_X86_REG_ID: 64-bit size for MSRs and for KVM_REG_GUEST_SSP, none otherwise."""
    size = KVM_REG_SIZE_U64 if (type_ == KVM_X86_REG_TYPE_MSR or (
        type_ == KVM_X86_REG_TYPE_KVM and index == KVM_REG_GUEST_SSP)) else 0
    return KVM_REG_X86 | type_ << 32 | size | index


def KVM_X86_REG_MSR(index):
    return KVM_X86_REG_ID(KVM_X86_REG_TYPE_MSR, index)


def KVM_X86_REG_KVM(index):
    return KVM_X86_REG_ID(KVM_X86_REG_TYPE_KVM, index)


# --- KVM_SET_PMU_EVENT_FILTER (asm/kvm.h) ------------------------------------------------


class kvm_pmu_event_filter(ctypes.Structure):
    """include/uapi/asm-x86/kvm.h header; ``nevents`` u64 events follow it."""

    _fields_ = [("action", u32), ("nevents", u32), ("fixed_counter_bitmap", u32),
                ("flags", u32), ("pad", u32 * 4)]


KVM_SET_PMU_EVENT_FILTER = _IOW(KVMIO, 0xB2, kvm_pmu_event_filter)
KVM_PMU_EVENT_ALLOW = 0
KVM_PMU_EVENT_DENY = 1
KVM_PMU_EVENT_FLAG_MASKED_EVENTS = 1 << 0
KVM_PMU_EVENT_FLAGS_VALID_MASK = KVM_PMU_EVENT_FLAG_MASKED_EVENTS
#: the masked entry encoding (uapi asm/kvm.h KVM_PMU_ENCODE_MASKED_ENTRY)
KVM_PMU_MASKED_ENTRY_EVENT_SELECT = 0xFF | 0xF << 32
KVM_PMU_MASKED_ENTRY_UMASK_MATCH = 0xFF << 8
KVM_PMU_MASKED_ENTRY_UMASK_MASK = 0xFF << 56
KVM_PMU_MASKED_ENTRY_EXCLUDE = 1 << 55
KVM_PMU_MASKED_ENTRY_UMASK_MASK_SHIFT = 56
