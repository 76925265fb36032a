"""include/uapi/linux/kvm.h and arch/x86/include/uapi/asm/kvm.h, as of Linux 6.18 (x86-64).

Numbers and layouts: reference/kvm-guest-memfd-6.18.md sections 1-3. tests/uapi checks
every size, offset and ioctl number against the reference tables.
"""

import ctypes

from .ioctl import _IO, _IOR, _IOW, _IOWR

u8 = ctypes.c_uint8
u16 = ctypes.c_uint16
u32 = ctypes.c_uint32
u64 = ctypes.c_uint64
s32 = ctypes.c_int32

KVMIO = 0xAE
KVM_API_VERSION = 12

# --- structs ---------------------------------------------------------------------------


class kvm_create_guest_memfd(ctypes.Structure):
    _fields_ = [("size", u64), ("flags", u64), ("reserved", u64 * 6)]


class kvm_userspace_memory_region(ctypes.Structure):
    _fields_ = [
        ("slot", u32),
        ("flags", u32),
        ("guest_phys_addr", u64),
        ("memory_size", u64),
        ("userspace_addr", u64),
    ]


class kvm_userspace_memory_region2(ctypes.Structure):
    _fields_ = [
        ("slot", u32),
        ("flags", u32),
        ("guest_phys_addr", u64),
        ("memory_size", u64),
        ("userspace_addr", u64),
        ("guest_memfd_offset", u64),
        ("guest_memfd", u32),
        ("pad1", u32),
        ("pad2", u64 * 14),
    ]


class kvm_memory_attributes(ctypes.Structure):
    _fields_ = [("address", u64), ("size", u64), ("attributes", u64), ("flags", u64)]


class kvm_pre_fault_memory(ctypes.Structure):
    _fields_ = [("gpa", u64), ("size", u64), ("flags", u64), ("padding", u64 * 5)]


class kvm_enable_cap(ctypes.Structure):
    _fields_ = [("cap", u32), ("flags", u32), ("args", u64 * 4), ("pad", u8 * 64)]


class kvm_cpuid_entry2(ctypes.Structure):
    _fields_ = [
        ("function", u32),
        ("index", u32),
        ("flags", u32),
        ("eax", u32),
        ("ebx", u32),
        ("ecx", u32),
        ("edx", u32),
        ("padding", u32 * 3),
    ]


class kvm_cpuid2(ctypes.Structure):
    """Header of struct kvm_cpuid2; ``nent`` entries of kvm_cpuid_entry2 follow it."""

    _fields_ = [("nent", u32), ("padding", u32)]


class kvm_regs(ctypes.Structure):
    _fields_ = [
        (n, u64)
        for n in (
            "rax rbx rcx rdx rsi rdi rsp rbp r8 r9 r10 r11 r12 r13 r14 r15 rip rflags".split()
        )
    ]


# kvm_run and its exit union -------------------------------------------------------------


class kvm_run_memory_fault(ctypes.Structure):
    _fields_ = [("flags", u64), ("gpa", u64), ("size", u64)]


class _kvm_run_hypercall_u(ctypes.Union):
    _fields_ = [("longmode", u32), ("flags", u64)]


class kvm_run_hypercall(ctypes.Structure):
    _anonymous_ = ("_u",)
    _fields_ = [("nr", u64), ("args", u64 * 6), ("ret", u64), ("_u", _kvm_run_hypercall_u)]


class kvm_run_io(ctypes.Structure):
    _fields_ = [("direction", u8), ("size", u8), ("port", u16), ("count", u32), ("data_offset", u64)]


class kvm_run_mmio(ctypes.Structure):
    _fields_ = [("phys_addr", u64), ("data", u8 * 8), ("len", u32), ("is_write", u8)]


class kvm_run_internal(ctypes.Structure):
    _fields_ = [("suberror", u32), ("ndata", u32), ("data", u64 * 16)]


class kvm_run_system_event(ctypes.Structure):
    _fields_ = [("type", u32), ("ndata", u32), ("data", u64 * 16)]


class kvm_run_fail_entry(ctypes.Structure):
    """KVM_EXIT_FAIL_ENTRY: the vendor's entry failure reason (SVM: the exit code, e.g.
    SVM_EXIT_ERR; VMX: the VM-exit reason) and the host CPU (include/uapi/linux/kvm.h)."""
    _fields_ = [("hardware_entry_failure_reason", u64), ("cpu", u32)]


class kvm_run_exit(ctypes.Union):
    _fields_ = [
        ("memory_fault", kvm_run_memory_fault),
        ("fail_entry", kvm_run_fail_entry),
        ("hypercall", kvm_run_hypercall),
        ("io", kvm_run_io),
        ("mmio", kvm_run_mmio),
        ("internal", kvm_run_internal),
        ("system_event", kvm_run_system_event),
        ("padding", ctypes.c_char * 256),
    ]


class kvm_run(ctypes.Structure):
    _anonymous_ = ("exit",)
    _fields_ = [
        ("request_interrupt_window", u8),
        ("immediate_exit", u8),
        ("padding1", u8 * 6),
        ("exit_reason", u32),
        ("ready_for_interrupt_injection", u8),
        ("if_flag", u8),
        ("flags", u16),
        ("cr8", u64),
        ("apic_base", u64),
        ("exit", kvm_run_exit),
        ("kvm_valid_regs", u64),
        ("kvm_dirty_regs", u64),
        ("s", ctypes.c_char * 2048),
    ]


class kvm_stats_header(ctypes.Structure):
    """The header at offset 0 of a VM or vCPU binary stats fd."""

    _fields_ = [
        ("flags", u32),
        ("name_size", u32),
        ("num_desc", u32),
        ("id_offset", u32),
        ("desc_offset", u32),
        ("data_offset", u32),
    ]


class kvm_stats_desc(ctypes.Structure):
    """One stats descriptor; ``name`` (a flexible array of header.name_size bytes) follows."""

    _fields_ = [
        ("flags", u32),
        ("exponent", ctypes.c_int16),
        ("size", u16),
        ("offset", u32),
        ("bucket_size", u32),
    ]


# --- ioctls ----------------------------------------------------------------------------

KVM_GET_API_VERSION = _IO(KVMIO, 0x00)
KVM_CREATE_VM = _IO(KVMIO, 0x01)
KVM_CHECK_EXTENSION = _IO(KVMIO, 0x03)
KVM_GET_VCPU_MMAP_SIZE = _IO(KVMIO, 0x04)
KVM_GET_SUPPORTED_CPUID = _IOWR(KVMIO, 0x05, kvm_cpuid2)
KVM_GET_EMULATED_CPUID = _IOWR(KVMIO, 0x09, kvm_cpuid2)
KVM_CREATE_VCPU = _IO(KVMIO, 0x41)
KVM_SET_USER_MEMORY_REGION = _IOW(KVMIO, 0x46, kvm_userspace_memory_region)
KVM_SET_USER_MEMORY_REGION2 = _IOW(KVMIO, 0x49, kvm_userspace_memory_region2)
KVM_SET_NR_MMU_PAGES = _IO(KVMIO, 0x44)
KVM_GET_NR_MMU_PAGES = _IO(KVMIO, 0x45)  # removed from the kernel (ENOTTY); kept for tests
KVM_SET_TSS_ADDR = _IO(KVMIO, 0x47)
KVM_SET_IDENTITY_MAP_ADDR = _IOW(KVMIO, 0x48, ctypes.c_uint64)
KVM_SET_BOOT_CPU_ID = _IO(KVMIO, 0x78)
KVM_CREATE_IRQCHIP = _IO(KVMIO, 0x60)
KVM_RUN = _IO(KVMIO, 0x80)
KVM_GET_REGS = _IOR(KVMIO, 0x81, kvm_regs)
KVM_SET_REGS = _IOW(KVMIO, 0x82, kvm_regs)
KVM_GET_SREGS = _IOR(KVMIO, 0x83, 312)
KVM_SET_SREGS = _IOW(KVMIO, 0x84, 312)
KVM_ENABLE_CAP = _IOW(KVMIO, 0xA3, kvm_enable_cap)
KVM_MEMORY_ENCRYPT_OP = _IOWR(KVMIO, 0xBA, ctypes.c_ulong)


class kvm_enc_region(ctypes.Structure):
    """KVM_MEMORY_ENCRYPT_REG_REGION / UNREG_REGION's argument: a user address range
    (SEV's sev_mem_enc_register_region pins it)."""
    _fields_ = [("addr", ctypes.c_uint64), ("size", ctypes.c_uint64)]


KVM_MEMORY_ENCRYPT_REG_REGION = _IOR(KVMIO, 0xBB, kvm_enc_region)
KVM_MEMORY_ENCRYPT_UNREG_REGION = _IOR(KVMIO, 0xBC, kvm_enc_region)
KVM_SET_MEMORY_ATTRIBUTES = _IOW(KVMIO, 0xD2, kvm_memory_attributes)
KVM_CREATE_GUEST_MEMFD = _IOWR(KVMIO, 0xD4, kvm_create_guest_memfd)
KVM_PRE_FAULT_MEMORY = _IOWR(KVMIO, 0xD5, kvm_pre_fault_memory)
KVM_GET_STATS_FD = _IO(KVMIO, 0xCE)

# --- memslot flags -----------------------------------------------------------------------

KVM_MEM_LOG_DIRTY_PAGES = 1 << 0
KVM_MEM_READONLY = 1 << 1
KVM_MEM_GUEST_MEMFD = 1 << 2
KVM_SET_USER_MEMORY_REGION_V1_FLAGS = KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY
KVM_USER_MEM_SLOTS = 32764  # x86
KVM_MEMSLOT_INVALID = 1 << 16  # kernel-internal
KVM_MEMSLOT_GMEM_ONLY = 1 << 17  # kernel-internal

# --- guest_memfd and memory attributes -----------------------------------------------------

GUEST_MEMFD_FLAG_MMAP = 1 << 0
GUEST_MEMFD_FLAG_INIT_SHARED = 1 << 1
KVM_MEMORY_ATTRIBUTE_PRIVATE = 1 << 3
KVM_MEMORY_EXIT_FLAG_PRIVATE = 1 << 3

# --- capabilities --------------------------------------------------------------------------

KVM_CAP_IRQCHIP = 0
KVM_CAP_HLT = 1
KVM_CAP_USER_MEMORY = 3
KVM_CAP_SET_TSS_ADDR = 4
KVM_CAP_VAPIC = 6
KVM_CAP_EXT_CPUID = 7
KVM_CAP_CLOCKSOURCE = 8
KVM_CAP_NR_VCPUS = 9
KVM_CAP_NR_MEMSLOTS = 10
KVM_CAP_MAX_VCPUS = 66
KVM_CAP_READONLY_MEM = 81
KVM_CAP_DISABLE_QUIRKS = 116
KVM_CAP_SPLIT_IRQCHIP = 121
KVM_CAP_MAX_VCPU_ID = 128
KVM_CAP_X2APIC_API = 129
KVM_CAP_IMMEDIATE_EXIT = 136
KVM_CAP_X86_DISABLE_EXITS = 143
KVM_CAP_MSR_PLATFORM_INFO = 159
KVM_CAP_EXCEPTION_PAYLOAD = 164
KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 = 168
KVM_CAP_HALT_POLL = 182
KVM_CAP_X86_USER_SPACE_MSR = 188
KVM_CAP_ENFORCE_PV_FEATURE_CPUID = 190
KVM_CAP_X86_BUS_LOCK_EXIT = 193
#: KVM_CAP_X86_BUS_LOCK_EXIT modes
KVM_BUS_LOCK_DETECTION_OFF = 1 << 0
KVM_BUS_LOCK_DETECTION_EXIT = 1 << 1
KVM_CAP_EXIT_HYPERCALL = 201
KVM_CAP_BINARY_STATS_FD = 203
KVM_CAP_EXIT_ON_EMULATION_FAILURE = 204
KVM_CAP_DISABLE_QUIRKS2 = 213
KVM_CAP_X86_TRIPLE_FAULT_EVENT = 218
KVM_CAP_VM_DISABLE_NX_HUGE_PAGES = 220
KVM_CAP_X86_APIC_BUS_CYCLES_NS = 237
KVM_CAP_USER_MEMORY2 = 231
KVM_CAP_MEMORY_FAULT_INFO = 232
KVM_CAP_MEMORY_ATTRIBUTES = 233
KVM_CAP_GUEST_MEMFD = 234
KVM_CAP_VM_TYPES = 235
KVM_CAP_PRE_FAULT_MEMORY = 236
KVM_CAP_GUEST_MEMFD_FLAGS = 244

# --- eventfds and interrupt routing (kmock.kvm.eventfds) ----------------------------------

class kvm_ioeventfd(ctypes.Structure):
    _fields_ = [("datamatch", ctypes.c_uint64), ("addr", ctypes.c_uint64),
                ("len", ctypes.c_uint32), ("fd", ctypes.c_int32), ("flags", ctypes.c_uint32),
                ("pad", ctypes.c_uint8 * 36)]


class kvm_irqfd(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_uint32), ("gsi", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("resamplefd", ctypes.c_uint32), ("pad", ctypes.c_uint8 * 16)]


class kvm_irq_routing_irqchip(ctypes.Structure):
    _fields_ = [("irqchip", ctypes.c_uint32), ("pin", ctypes.c_uint32)]


class kvm_irq_routing_msi(ctypes.Structure):
    _fields_ = [("address_lo", ctypes.c_uint32), ("address_hi", ctypes.c_uint32),
                ("data", ctypes.c_uint32), ("devid", ctypes.c_uint32)]


class kvm_irq_routing_hv_sint(ctypes.Structure):
    _fields_ = [("vcpu", ctypes.c_uint32), ("sint", ctypes.c_uint32)]


class kvm_irq_routing_xen_evtchn(ctypes.Structure):
    _fields_ = [("port", ctypes.c_uint32), ("vcpu", ctypes.c_uint32),
                ("priority", ctypes.c_uint32)]


class _kvm_irq_routing_u(ctypes.Union):
    _fields_ = [("irqchip", kvm_irq_routing_irqchip), ("msi", kvm_irq_routing_msi),
                ("hv_sint", kvm_irq_routing_hv_sint),
                ("xen_evtchn", kvm_irq_routing_xen_evtchn), ("pad", ctypes.c_uint32 * 8)]


class kvm_irq_routing_entry(ctypes.Structure):
    _fields_ = [("gsi", ctypes.c_uint32), ("type", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("pad", ctypes.c_uint32), ("u", _kvm_irq_routing_u)]


class kvm_irq_routing(ctypes.Structure):
    _fields_ = [("nr", ctypes.c_uint32), ("flags", ctypes.c_uint32)]


class kvm_irq_level(ctypes.Structure):
    """``irq`` in, and for KVM_IRQ_LINE_STATUS ``status`` (a signed union member) out."""
    _fields_ = [("irq", ctypes.c_uint32), ("level", ctypes.c_uint32)]

    @property
    def status(self):
        return ctypes.c_int32(self.irq).value


class kvm_msi(ctypes.Structure):
    _fields_ = [("address_lo", ctypes.c_uint32), ("address_hi", ctypes.c_uint32),
                ("data", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("devid", ctypes.c_uint32), ("pad", ctypes.c_uint8 * 12)]


KVM_SIGNAL_MSI = _IOW(KVMIO, 0xA5, kvm_msi)


class kvm_coalesced_mmio_zone(ctypes.Structure):
    """``pio`` is the union member over ``pad`` (KVM_CAP_COALESCED_PIO)."""
    _fields_ = [("addr", ctypes.c_uint64), ("size", ctypes.c_uint32), ("pio", ctypes.c_uint32)]


KVM_REGISTER_COALESCED_MMIO = _IOW(KVMIO, 0x67, kvm_coalesced_mmio_zone)
KVM_UNREGISTER_COALESCED_MMIO = _IOW(KVMIO, 0x68, kvm_coalesced_mmio_zone)
KVM_IRQ_LINE = _IOW(KVMIO, 0x61, kvm_irq_level)
KVM_IRQ_LINE_STATUS = _IOWR(KVMIO, 0x67, kvm_irq_level)
KVM_IRQFD = _IOW(KVMIO, 0x76, kvm_irqfd)
KVM_IOEVENTFD = _IOW(KVMIO, 0x79, kvm_ioeventfd)
KVM_SET_GSI_ROUTING = _IOW(KVMIO, 0x6A, kvm_irq_routing)

KVM_IOEVENTFD_FLAG_DATAMATCH = 1 << 0
KVM_IOEVENTFD_FLAG_PIO = 1 << 1
KVM_IOEVENTFD_FLAG_DEASSIGN = 1 << 2
KVM_IOEVENTFD_FLAG_VIRTIO_CCW_NOTIFY = 1 << 3
#: KVM_IOEVENTFD_VALID_FLAG_MASK: (1 << kvm_ioeventfd_flag_nr_max) - 1, where the enum
#: also counts kvm_ioeventfd_flag_nr_fast_mmio (bit 4, no UAPI name, ignored): 0x1f
#: (probed: 0x10 accepted, 0x20 EINVAL)
KVM_IOEVENTFD_VALID_FLAG_MASK = 0x1F

KVM_IRQFD_FLAG_DEASSIGN = 1 << 0
KVM_IRQFD_FLAG_RESAMPLE = 1 << 1

KVM_IRQ_ROUTING_IRQCHIP = 1
KVM_IRQ_ROUTING_MSI = 2
KVM_IRQ_ROUTING_S390_ADAPTER = 3
KVM_IRQ_ROUTING_HV_SINT = 4
KVM_IRQ_ROUTING_XEN_EVTCHN = 5
KVM_IRQCHIP_PIC_MASTER = 0
KVM_IRQCHIP_PIC_SLAVE = 1
KVM_IRQCHIP_IOAPIC = 2
KVM_MSI_VALID_DEVID = 1 << 0
#: x86: KVM_MAX_IRQ_ROUTES (the KVM_CHECK_EXTENSION(KVM_CAP_IRQ_ROUTING) value)
KVM_MAX_IRQ_ROUTES = 4096


# --- VM types (x86) ------------------------------------------------------------------------

KVM_X86_DEFAULT_VM = 0
KVM_X86_SW_PROTECTED_VM = 1
KVM_X86_SEV_VM = 2
KVM_X86_SEV_ES_VM = 3
KVM_X86_SNP_VM = 4
KVM_X86_TDX_VM = 5

# --- exit reasons --------------------------------------------------------------------------

KVM_EXIT_UNKNOWN = 0
KVM_EXIT_EXCEPTION = 1
KVM_EXIT_IO = 2
KVM_EXIT_HYPERCALL = 3
KVM_EXIT_DEBUG = 4
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTR = 10
KVM_EXIT_INTERNAL_ERROR = 17
KVM_EXIT_SYSTEM_EVENT = 24
#: an SEV-ES/SNP AP parked in AP reset hold (sev_snp_ap_creation / GHCB AP_HLT_LOOP)
KVM_EXIT_AP_RESET_HOLD = 32
KVM_EXIT_MEMORY_FAULT = 39
KVM_EXIT_TDX = 40

#: run->system_event.type and its flags (include/uapi/linux/kvm.h)
KVM_SYSTEM_EVENT_SHUTDOWN = 1
KVM_SYSTEM_EVENT_RESET = 2
KVM_SYSTEM_EVENT_CRASH = 3
KVM_SYSTEM_EVENT_WAKEUP = 4
KVM_SYSTEM_EVENT_SUSPEND = 5
KVM_SYSTEM_EVENT_SEV_TERM = 6
KVM_SYSTEM_EVENT_TDX_FATAL = 7
KVM_SYSTEM_EVENT_RESET_FLAG_PSCI_RESET2 = 1 << 0
KVM_SYSTEM_EVENT_SHUTDOWN_FLAG_PSCI_OFF2 = 1 << 0

KVM_EXIT_IO_IN = 0
KVM_EXIT_IO_OUT = 1

KVM_EXIT_HYPERCALL_LONG_MODE = 1 << 0

# --- hypercalls (include/uapi/linux/kvm_para.h, arch/x86/include/uapi/asm/kvm_para.h) ----

KVM_HC_MAP_GPA_RANGE = 12
KVM_ENOSYS = 1000
KVM_EINVAL = 22
KVM_EPERM = 1
KVM_EXIT_HYPERCALL_VALID_MASK = 1 << KVM_HC_MAP_GPA_RANGE
KVM_MAP_GPA_RANGE_PAGE_SZ_4K = 0
KVM_MAP_GPA_RANGE_PAGE_SZ_2M = 1 << 0
KVM_MAP_GPA_RANGE_PAGE_SZ_1G = 1 << 1
KVM_MAP_GPA_RANGE_ENCRYPTED = 1 << 4
KVM_MAP_GPA_RANGE_DECRYPTED = 0

# --- binary stats descriptor flags (struct kvm_stats_desc.flags) ---------------------------

KVM_STATS_TYPE_SHIFT = 0
KVM_STATS_TYPE_MASK = 0xF << KVM_STATS_TYPE_SHIFT
KVM_STATS_TYPE_CUMULATIVE = 0x0 << KVM_STATS_TYPE_SHIFT
KVM_STATS_TYPE_INSTANT = 0x1 << KVM_STATS_TYPE_SHIFT
KVM_STATS_TYPE_PEAK = 0x2 << KVM_STATS_TYPE_SHIFT
KVM_STATS_TYPE_LINEAR_HIST = 0x3 << KVM_STATS_TYPE_SHIFT
KVM_STATS_TYPE_LOG_HIST = 0x4 << KVM_STATS_TYPE_SHIFT
KVM_STATS_TYPE_MAX = KVM_STATS_TYPE_LOG_HIST

KVM_STATS_UNIT_SHIFT = 4
KVM_STATS_UNIT_MASK = 0xF << KVM_STATS_UNIT_SHIFT
KVM_STATS_UNIT_NONE = 0x0 << KVM_STATS_UNIT_SHIFT
KVM_STATS_UNIT_BYTES = 0x1 << KVM_STATS_UNIT_SHIFT
KVM_STATS_UNIT_SECONDS = 0x2 << KVM_STATS_UNIT_SHIFT
KVM_STATS_UNIT_CYCLES = 0x3 << KVM_STATS_UNIT_SHIFT
KVM_STATS_UNIT_BOOLEAN = 0x4 << KVM_STATS_UNIT_SHIFT
KVM_STATS_UNIT_MAX = KVM_STATS_UNIT_BOOLEAN

KVM_STATS_BASE_SHIFT = 8
KVM_STATS_BASE_MASK = 0xF << KVM_STATS_BASE_SHIFT
KVM_STATS_BASE_POW10 = 0x0 << KVM_STATS_BASE_SHIFT
KVM_STATS_BASE_POW2 = 0x1 << KVM_STATS_BASE_SHIFT
KVM_STATS_BASE_MAX = KVM_STATS_BASE_POW2

# kvm_run page layout on x86: run struct, PIO data page, coalesced MMIO ring
KVM_PIO_PAGE_OFFSET = 1
KVM_COALESCED_MMIO_PAGE_OFFSET = 2


# --- kvmclock (include/uapi/linux/kvm.h) ------------------------------------------------------


class kvm_clock_data(ctypes.Structure):
    """KVM_GET_CLOCK / KVM_SET_CLOCK: 48 bytes."""
    _fields_ = [("clock", ctypes.c_uint64), ("flags", ctypes.c_uint32),
                ("pad0", ctypes.c_uint32), ("realtime", ctypes.c_uint64),
                ("host_tsc", ctypes.c_uint64), ("pad", ctypes.c_uint32 * 4)]


#: kvm_clock_data.flags
KVM_CLOCK_TSC_STABLE = 2
KVM_CLOCK_REALTIME = 1 << 2
KVM_CLOCK_HOST_TSC = 1 << 3
#: arch/x86/kvm/x86.c: what KVM_SET_CLOCK accepts and KVM_CAP_ADJUST_CLOCK reports
KVM_CLOCK_VALID_FLAGS = KVM_CLOCK_TSC_STABLE | KVM_CLOCK_REALTIME | KVM_CLOCK_HOST_TSC
KVM_CAP_ADJUST_CLOCK = 39
KVM_CAP_KVMCLOCK_CTRL = 76
KVM_SET_CLOCK = _IOW(KVMIO, 0x7B, kvm_clock_data)
KVM_GET_CLOCK = _IOR(KVMIO, 0x7C, kvm_clock_data)
KVM_KVMCLOCK_CTRL = _IO(KVMIO, 0xAD)


# --- dirty page logging (include/uapi/linux/kvm.h) --------------------------------------------


class kvm_dirty_log(ctypes.Structure):
    """KVM_GET_DIRTY_LOG: slot (as_id << 16 | id) and the bitmap's address."""
    _fields_ = [("slot", ctypes.c_uint32), ("padding1", ctypes.c_uint32),
                ("dirty_bitmap", ctypes.c_uint64)]


class kvm_clear_dirty_log(ctypes.Structure):
    _fields_ = [("slot", ctypes.c_uint32), ("num_pages", ctypes.c_uint32),
                ("first_page", ctypes.c_uint64), ("dirty_bitmap", ctypes.c_uint64)]


KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE = 1 << 0
KVM_DIRTY_LOG_INITIALLY_SET = 1 << 1
KVM_GET_DIRTY_LOG = _IOW(KVMIO, 0x42, kvm_dirty_log)
KVM_CLEAR_DIRTY_LOG = _IOWR(KVMIO, 0xC0, kvm_clear_dirty_log)


# --- KVM_GET/SET_MP_STATE (every architecture; the values each one accepts differ) ------------


class kvm_mp_state(ctypes.Structure):
    _fields_ = [("mp_state", ctypes.c_uint32)]


KVM_GET_MP_STATE = _IOR(KVMIO, 0x98, kvm_mp_state)
KVM_SET_MP_STATE = _IOW(KVMIO, 0x99, kvm_mp_state)

KVM_MP_STATE_RUNNABLE = 0
KVM_MP_STATE_UNINITIALIZED = 1
KVM_MP_STATE_INIT_RECEIVED = 2
KVM_MP_STATE_HALTED = 3
KVM_MP_STATE_SIPI_RECEIVED = 4
KVM_MP_STATE_STOPPED = 5
KVM_MP_STATE_CHECK_STOP = 6
KVM_MP_STATE_OPERATING = 7
KVM_MP_STATE_LOAD = 8
KVM_MP_STATE_AP_RESET_HOLD = 9
KVM_MP_STATE_SUSPENDED = 10


# --- device control: KVM_CREATE_DEVICE and the device attributes (linux/kvm.h) ----------------
# (kmock.uapi.arm64 and kmock.uapi.x86 have layout-identical copies of the two structs)


class kvm_create_device(ctypes.Structure):
    """KVM_CREATE_DEVICE: ``type`` in, ``fd`` out; ``flags`` KVM_CREATE_DEVICE_TEST."""
    _fields_ = [("type", u32), ("fd", u32), ("flags", u32)]


class kvm_device_attr(ctypes.Structure):
    _fields_ = [("flags", u32), ("group", u32), ("attr", u64), ("addr", u64)]


KVM_CAP_DEVICE_CTRL = 89
KVM_CREATE_DEVICE_TEST = 1
KVM_CREATE_DEVICE = _IOWR(KVMIO, 0xE0, kvm_create_device)
KVM_SET_DEVICE_ATTR = _IOW(KVMIO, 0xE1, kvm_device_attr)
KVM_GET_DEVICE_ATTR = _IOW(KVMIO, 0xE2, kvm_device_attr)
KVM_HAS_DEVICE_ATTR = _IOW(KVMIO, 0xE3, kvm_device_attr)

# enum kvm_device_type
KVM_DEV_TYPE_FSL_MPIC_20 = 1
KVM_DEV_TYPE_FSL_MPIC_42 = 2
KVM_DEV_TYPE_XICS = 3
KVM_DEV_TYPE_VFIO = 4
KVM_DEV_TYPE_ARM_VGIC_V2 = 5
KVM_DEV_TYPE_FLIC = 6
KVM_DEV_TYPE_ARM_VGIC_V3 = 7
KVM_DEV_TYPE_ARM_VGIC_ITS = 8
KVM_DEV_TYPE_XIVE = 9
KVM_DEV_TYPE_ARM_PV_TIME = 10
KVM_DEV_TYPE_RISCV_AIA = 11
KVM_DEV_TYPE_LOONGARCH_IPI = 12
KVM_DEV_TYPE_LOONGARCH_EIOINTC = 13
KVM_DEV_TYPE_LOONGARCH_PCHPIC = 14
KVM_DEV_TYPE_MAX = 15

# the kvm-vfio device's attributes (KVM_DEV_VFIO_GROUP* are the pre-cdev names of the same values)
KVM_DEV_VFIO_FILE = 1
KVM_DEV_VFIO_FILE_ADD = 1
KVM_DEV_VFIO_FILE_DEL = 2
KVM_DEV_VFIO_GROUP = KVM_DEV_VFIO_FILE
KVM_DEV_VFIO_GROUP_ADD = KVM_DEV_VFIO_FILE_ADD
KVM_DEV_VFIO_GROUP_DEL = KVM_DEV_VFIO_FILE_DEL
KVM_DEV_VFIO_GROUP_SET_SPAPR_TCE = 3


class kvm_vfio_spapr_tce(ctypes.Structure):
    _fields_ = [("groupfd", s32), ("tablefd", s32)]

#: the dirty ring's reset (virt/kvm/kvm_main.c; kmock has no dirty ring: always EINVAL)
KVM_RESET_DIRTY_RINGS = _IO(KVMIO, 0xC7)


# --- the dirty ring (KVM_CAP_DIRTY_LOG_RING; kmock.kvm.dirty_ring) ---------------------------

KVM_CAP_DIRTY_LOG_RING = 192
KVM_CAP_DIRTY_LOG_RING_ACQ_REL = 223
KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP = 228
KVM_EXIT_DIRTY_RING_FULL = 31
KVM_DIRTY_GFN_F_DIRTY = 1 << 0
KVM_DIRTY_GFN_F_RESET = 1 << 1
#: page offset of the ring in the vCPU mmap (arch/x86/include/uapi/asm/kvm.h; arm64 the same)
KVM_DIRTY_LOG_PAGE_OFFSET = 64


class kvm_dirty_gfn(ctypes.Structure):
    """One ring entry: flags, slot (as_id << 16 | slot id), offset in the slot (pages)."""

    _fields_ = [("flags", ctypes.c_uint32), ("slot", ctypes.c_uint32),
                ("offset", ctypes.c_uint64)]
