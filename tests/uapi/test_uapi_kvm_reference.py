"""kmock.uapi.kvm against reference/kvm-guest-memfd-6.18.md sections 1-3.

Every expected value below is a literal copied from the reference; the first element of
each row names the reference section (and table) it comes from.
"""

import ctypes

import pytest

from kmock.uapi import ioctl, kvm

from ._layout import field, ioc

REF = "kvm-guest-memfd-6.18.md"

# --- section 1: encoding ---------------------------------------------------------------------

ENCODING = [
    ("§1 encoding", "_IOC_NRBITS", 8),
    ("§1 encoding", "_IOC_TYPEBITS", 8),
    ("§1 encoding", "_IOC_SIZEBITS", 14),
    ("§1 encoding", "_IOC_DIRBITS", 2),
    ("§1 encoding", "_IOC_NRSHIFT", 0),
    ("§1 encoding", "_IOC_TYPESHIFT", 8),
    ("§1 encoding", "_IOC_SIZESHIFT", 16),
    ("§1 encoding", "_IOC_DIRSHIFT", 30),
    ("§1 encoding", "_IOC_NONE", 0),
    ("§1 encoding", "_IOC_WRITE", 1),
    ("§1 encoding", "_IOC_READ", 2),
]


@pytest.mark.parametrize("section,name,value", ENCODING, ids=[r[1] for r in ENCODING])
def test_ioc_encoding_constants(section, name, value):
    assert getattr(ioctl, name) == value, f"{REF} {section}"


def test_ioc_helpers_follow_the_formula():
    # §1: _IO=_IOC(0,..,0), _IOR=_IOC(2,..), _IOW=_IOC(1,..), _IOWR=_IOC(3,..)
    assert ioctl._IO(0xAE, 0x80) == ioc(0, 0xAE, 0x80, 0)
    assert ioctl._IOR(0xAE, 0x81, 144) == ioc(2, 0xAE, 0x81, 144)
    assert ioctl._IOW(0xAE, 0x82, 144) == ioc(1, 0xAE, 0x82, 144)
    assert ioctl._IOWR(0xAE, 0xD4, 64) == ioc(3, 0xAE, 0xD4, 64)
    n = 0xC040AED4
    assert (ioctl._IOC_DIR(n), ioctl._IOC_TYPE(n), ioctl._IOC_NR(n), ioctl._IOC_SIZE(n)) == (3, 0xAE, 0xD4, 64)


def test_kvmio():
    assert kvm.KVMIO == 0xAE  # §1 encoding: KVMIO = 0xAE


# --- section 1: ioctl table -------------------------------------------------------------------

# (section, name, value, struct size or None)
IOCTLS = [
    ("§1 table", "KVM_GET_API_VERSION", 0x0000AE00, None),
    ("§1 table", "KVM_CREATE_VM", 0x0000AE01, None),
    ("§1 table", "KVM_CHECK_EXTENSION", 0x0000AE03, None),
    ("§1 table", "KVM_GET_VCPU_MMAP_SIZE", 0x0000AE04, None),
    ("§1 table", "KVM_CREATE_VCPU", 0x0000AE41, None),
    ("§1 table", "KVM_SET_USER_MEMORY_REGION", 0x4020AE46, 32),
    ("§1 table", "KVM_SET_USER_MEMORY_REGION2", 0x40A0AE49, 160),
    ("§1 table", "KVM_RUN", 0x0000AE80, None),
    ("§1 table", "KVM_ENABLE_CAP", 0x4068AEA3, 104),
    ("§1 table", "KVM_MEMORY_ENCRYPT_OP", 0xC008AEBA, 8),
    ("§1 table", "KVM_SET_MEMORY_ATTRIBUTES", 0x4020AED2, 32),
    ("§1 table", "KVM_CREATE_GUEST_MEMFD", 0xC040AED4, 64),
    ("§1 table", "KVM_PRE_FAULT_MEMORY", 0xC040AED5, 64),
    # §1 "Other ioctl numbers used by the selftest library" (given as definitions)
    ("§1 other ioctls", "KVM_GET_REGS", ioc(2, 0xAE, 0x81, 144), 144),
    ("§1 other ioctls", "KVM_SET_REGS", ioc(1, 0xAE, 0x82, 144), 144),
    ("§1 other ioctls", "KVM_GET_SREGS", ioc(2, 0xAE, 0x83, 312), 312),
    ("§1 other ioctls", "KVM_SET_SREGS", ioc(1, 0xAE, 0x84, 312), 312),
]


@pytest.mark.parametrize("section,name,value,size", IOCTLS, ids=[r[1] for r in IOCTLS])
def test_kvm_ioctl_numbers(section, name, value, size):
    got = getattr(kvm, name)
    assert got == value, f"{REF} {section}: {name} = {got:#x}, reference {value:#x}"
    if size is not None:
        assert ioctl._IOC_SIZE(got) == size, f"{REF} {section}: {name} size field"


IOCTL_STRUCTS = [
    ("§1 table", "KVM_SET_USER_MEMORY_REGION", "kvm_userspace_memory_region"),
    ("§1 table", "KVM_SET_USER_MEMORY_REGION2", "kvm_userspace_memory_region2"),
    ("§1 table", "KVM_ENABLE_CAP", "kvm_enable_cap"),
    ("§1 table", "KVM_SET_MEMORY_ATTRIBUTES", "kvm_memory_attributes"),
    ("§1 table", "KVM_CREATE_GUEST_MEMFD", "kvm_create_guest_memfd"),
    ("§1 table", "KVM_PRE_FAULT_MEMORY", "kvm_pre_fault_memory"),
    ("§1 other ioctls", "KVM_GET_REGS", "kvm_regs"),
]


@pytest.mark.parametrize("section,name,struct", IOCTL_STRUCTS, ids=[r[1] for r in IOCTL_STRUCTS])
def test_kvm_ioctl_size_field_matches_struct(section, name, struct):
    assert ioctl._IOC_SIZE(getattr(kvm, name)) == ctypes.sizeof(getattr(kvm, struct)), f"{REF} {section}"


def test_vcpu_mmap_size_is_three_pages():
    # §1 table, KVM_GET_VCPU_MMAP_SIZE: returns 12288 (3 pages: run + PIO data page + coalesced-MMIO ring)
    assert kvm.KVM_PIO_PAGE_OFFSET == 1
    assert (kvm.KVM_COALESCED_MMIO_PAGE_OFFSET + 1) * 4096 == 12288


# --- section 2: constants -----------------------------------------------------------------------

CONSTANTS = [
    ("§2.1", "KVM_API_VERSION", 12),
    ("§2.1", "KVM_MEM_LOG_DIRTY_PAGES", 1 << 0),
    ("§2.1", "KVM_MEM_READONLY", 1 << 1),
    ("§2.1", "KVM_MEM_GUEST_MEMFD", 1 << 2),
    ("§2.1", "KVM_MEMSLOT_INVALID", 1 << 16),
    ("§2.1", "KVM_MEMSLOT_GMEM_ONLY", 1 << 17),
    ("§2.1", "KVM_MEMORY_ATTRIBUTE_PRIVATE", 1 << 3),
    ("§2.1", "GUEST_MEMFD_FLAG_MMAP", 1 << 0),
    ("§2.1", "GUEST_MEMFD_FLAG_INIT_SHARED", 1 << 1),
    ("§2.1", "KVM_MEMORY_EXIT_FLAG_PRIVATE", 1 << 3),
    ("§2.1", "KVM_EXIT_HYPERCALL_LONG_MODE", 1 << 0),
    ("§2.2", "KVM_CAP_USER_MEMORY", 3),
    ("§2.2", "KVM_CAP_NR_MEMSLOTS", 10),
    ("§2.2", "KVM_USER_MEM_SLOTS", 32764),
    ("§2.2", "KVM_CAP_EXIT_HYPERCALL", 201),
    ("§2.2", "KVM_EXIT_HYPERCALL_VALID_MASK", 0x1000),
    ("§2.2", "KVM_CAP_USER_MEMORY2", 231),
    ("§2.2", "KVM_CAP_MEMORY_FAULT_INFO", 232),
    ("§2.2", "KVM_CAP_MEMORY_ATTRIBUTES", 233),
    ("§2.2", "KVM_CAP_GUEST_MEMFD", 234),
    ("§2.2", "KVM_CAP_VM_TYPES", 235),
    ("§2.2", "KVM_CAP_PRE_FAULT_MEMORY", 236),
    ("§2.2", "KVM_CAP_GUEST_MEMFD_FLAGS", 244),
    ("§2.3", "KVM_X86_DEFAULT_VM", 0),
    ("§2.3", "KVM_X86_SW_PROTECTED_VM", 1),
    ("§2.3", "KVM_X86_SEV_VM", 2),
    ("§2.3", "KVM_X86_SEV_ES_VM", 3),
    ("§2.3", "KVM_X86_SNP_VM", 4),
    ("§2.3", "KVM_X86_TDX_VM", 5),
    ("§2.4", "KVM_EXIT_IO", 2),
    ("§2.4", "KVM_EXIT_HYPERCALL", 3),
    ("§2.4", "KVM_EXIT_HLT", 5),
    ("§2.4", "KVM_EXIT_MMIO", 6),
    ("§2.4", "KVM_EXIT_SHUTDOWN", 8),
    ("§2.4", "KVM_EXIT_INTR", 10),
    ("§2.4", "KVM_EXIT_INTERNAL_ERROR", 17),
    ("§2.4", "KVM_EXIT_MEMORY_FAULT", 39),
    ("§2.4", "KVM_EXIT_IO_IN", 0),
    ("§2.4", "KVM_EXIT_IO_OUT", 1),
    ("§2.5", "KVM_HC_MAP_GPA_RANGE", 12),
    ("§2.5", "KVM_ENOSYS", 1000),
    ("§2.5", "KVM_EINVAL", 22),
    ("§2.5", "KVM_EPERM", 1),
    ("§2.5", "KVM_MAP_GPA_RANGE_PAGE_SZ_4K", 0),
    ("§2.5", "KVM_MAP_GPA_RANGE_PAGE_SZ_2M", 1 << 0),
    ("§2.5", "KVM_MAP_GPA_RANGE_PAGE_SZ_1G", 1 << 1),
    ("§2.5", "KVM_MAP_GPA_RANGE_ENCRYPTED", 0x10),
    ("§2.5", "KVM_MAP_GPA_RANGE_DECRYPTED", 0x00),
]


@pytest.mark.parametrize("section,name,value", CONSTANTS, ids=[r[1] for r in CONSTANTS])
def test_kvm_constants(section, name, value):
    got = getattr(kvm, name)
    assert got == value, f"{REF} {section}: {name} = {got}, reference {value}"


# --- section 3: struct layouts ------------------------------------------------------------------

SIZES = [
    ("§3 kvm_create_guest_memfd", "kvm_create_guest_memfd", 64),
    ("§3 kvm_userspace_memory_region", "kvm_userspace_memory_region", 32),
    ("§3 kvm_userspace_memory_region2", "kvm_userspace_memory_region2", 160),
    ("§3 kvm_memory_attributes", "kvm_memory_attributes", 32),
    ("§3 kvm_pre_fault_memory", "kvm_pre_fault_memory", 64),
    ("§3 kvm_enable_cap", "kvm_enable_cap", 104),
    ("§3 kvm_run", "kvm_run", 2352),
    ("§3 kvm_run exit union", "kvm_run_exit", 256),
    ("§3 kvm_run hypercall", "kvm_run_hypercall", 72),
    ("§1 other ioctls (KVM_GET_REGS size)", "kvm_regs", 144),
]


@pytest.mark.parametrize("section,struct,size", SIZES, ids=[r[1] for r in SIZES])
def test_kvm_struct_sizes(section, struct, size):
    assert ctypes.sizeof(getattr(kvm, struct)) == size, f"{REF} {section}"


# (section, struct, field path, offset, size)
OFFSETS = [
    ("§3 kvm_create_guest_memfd", "kvm_create_guest_memfd", "size", 0, 8),
    ("§3 kvm_create_guest_memfd", "kvm_create_guest_memfd", "flags", 8, 8),
    ("§3 kvm_create_guest_memfd", "kvm_create_guest_memfd", "reserved", 16, 48),
    ("§3 kvm_userspace_memory_region", "kvm_userspace_memory_region", "slot", 0, 4),
    ("§3 kvm_userspace_memory_region", "kvm_userspace_memory_region", "flags", 4, 4),
    ("§3 kvm_userspace_memory_region", "kvm_userspace_memory_region", "guest_phys_addr", 8, 8),
    ("§3 kvm_userspace_memory_region", "kvm_userspace_memory_region", "memory_size", 16, 8),
    ("§3 kvm_userspace_memory_region", "kvm_userspace_memory_region", "userspace_addr", 24, 8),
    ("§3 kvm_userspace_memory_region2", "kvm_userspace_memory_region2", "slot", 0, 4),
    ("§3 kvm_userspace_memory_region2", "kvm_userspace_memory_region2", "flags", 4, 4),
    ("§3 kvm_userspace_memory_region2", "kvm_userspace_memory_region2", "guest_phys_addr", 8, 8),
    ("§3 kvm_userspace_memory_region2", "kvm_userspace_memory_region2", "memory_size", 16, 8),
    ("§3 kvm_userspace_memory_region2", "kvm_userspace_memory_region2", "userspace_addr", 24, 8),
    ("§3 kvm_userspace_memory_region2", "kvm_userspace_memory_region2", "guest_memfd_offset", 32, 8),
    ("§3 kvm_userspace_memory_region2", "kvm_userspace_memory_region2", "guest_memfd", 40, 4),
    ("§3 kvm_userspace_memory_region2", "kvm_userspace_memory_region2", "pad1", 44, 4),
    ("§3 kvm_userspace_memory_region2", "kvm_userspace_memory_region2", "pad2", 48, 112),
    ("§3 kvm_memory_attributes", "kvm_memory_attributes", "address", 0, 8),
    ("§3 kvm_memory_attributes", "kvm_memory_attributes", "size", 8, 8),
    ("§3 kvm_memory_attributes", "kvm_memory_attributes", "attributes", 16, 8),
    ("§3 kvm_memory_attributes", "kvm_memory_attributes", "flags", 24, 8),
    ("§3 kvm_pre_fault_memory", "kvm_pre_fault_memory", "gpa", 0, 8),
    ("§3 kvm_pre_fault_memory", "kvm_pre_fault_memory", "size", 8, 8),
    ("§3 kvm_pre_fault_memory", "kvm_pre_fault_memory", "flags", 16, 8),
    ("§3 kvm_pre_fault_memory", "kvm_pre_fault_memory", "padding", 24, 40),
    ("§3 kvm_enable_cap", "kvm_enable_cap", "cap", 0, 4),
    ("§3 kvm_enable_cap", "kvm_enable_cap", "flags", 4, 4),
    ("§3 kvm_enable_cap", "kvm_enable_cap", "args", 8, 32),
    ("§3 kvm_enable_cap", "kvm_enable_cap", "pad", 40, 64),
    # kvm_run header
    ("§3 kvm_run", "kvm_run", "request_interrupt_window", 0, 1),
    ("§3 kvm_run", "kvm_run", "immediate_exit", 1, 1),
    ("§3 kvm_run", "kvm_run", "padding1", 2, 6),
    ("§3 kvm_run", "kvm_run", "exit_reason", 8, 4),
    ("§3 kvm_run", "kvm_run", "ready_for_interrupt_injection", 12, 1),
    ("§3 kvm_run", "kvm_run", "if_flag", 13, 1),
    ("§3 kvm_run", "kvm_run", "flags", 14, 2),
    ("§3 kvm_run", "kvm_run", "cr8", 16, 8),
    ("§3 kvm_run", "kvm_run", "apic_base", 24, 8),
    ("§3 kvm_run", "kvm_run", "exit", 32, 256),
    ("§3 kvm_run", "kvm_run", "kvm_valid_regs", 288, 8),
    ("§3 kvm_run", "kvm_run", "kvm_dirty_regs", 296, 8),
    ("§3 kvm_run", "kvm_run", "s", 304, 2048),
    # exit-union members, absolute offsets within kvm_run
    ("§3 kvm_run exit memory_fault", "kvm_run", "exit.memory_fault.flags", 32, 8),
    ("§3 kvm_run exit memory_fault", "kvm_run", "exit.memory_fault.gpa", 40, 8),
    ("§3 kvm_run exit memory_fault", "kvm_run", "exit.memory_fault.size", 48, 8),
    ("§3 kvm_run exit hypercall", "kvm_run", "exit.hypercall", 32, 72),
    ("§3 kvm_run exit hypercall", "kvm_run", "exit.hypercall.nr", 32, 8),
    ("§3 kvm_run exit hypercall", "kvm_run", "exit.hypercall.args", 40, 48),
    ("§3 kvm_run exit hypercall", "kvm_run", "exit.hypercall.ret", 88, 8),
    ("§3 kvm_run exit hypercall", "kvm_run", "exit.hypercall.longmode", 96, 4),
    ("§3 kvm_run exit hypercall", "kvm_run", "exit.hypercall.flags", 96, 8),
    ("§3 kvm_run exit io", "kvm_run", "exit.io.direction", 32, 1),
    ("§3 kvm_run exit io", "kvm_run", "exit.io.size", 33, 1),
    ("§3 kvm_run exit io", "kvm_run", "exit.io.port", 34, 2),
    ("§3 kvm_run exit io", "kvm_run", "exit.io.count", 36, 4),
    ("§3 kvm_run exit io", "kvm_run", "exit.io.data_offset", 40, 8),
    ("§3 kvm_run exit mmio", "kvm_run", "exit.mmio.phys_addr", 32, 8),
    ("§3 kvm_run exit mmio", "kvm_run", "exit.mmio.data", 40, 8),
    ("§3 kvm_run exit mmio", "kvm_run", "exit.mmio.len", 48, 4),
    ("§3 kvm_run exit mmio", "kvm_run", "exit.mmio.is_write", 52, 1),
    ("§3 kvm_run exit internal", "kvm_run", "exit.internal.suberror", 32, 4),
    ("§3 kvm_run exit internal", "kvm_run", "exit.internal.ndata", 36, 4),
    ("§3 kvm_run exit internal", "kvm_run", "exit.internal.data", 40, 128),
]


@pytest.mark.parametrize(
    "section,struct,path,offset,size", OFFSETS, ids=[f"{r[1]}.{r[2]}" for r in OFFSETS]
)
def test_kvm_field_offsets(section, struct, path, offset, size):
    got = field(getattr(kvm, struct), path)
    assert got == (offset, size), f"{REF} {section}: {struct}.{path} (offset, size) = {got}"


def test_kvm_run_exit_members_are_reachable_by_name():
    # §3: the exit union is anonymous in C: run.memory_fault.gpa, run.hypercall.ret, ...
    run = kvm.kvm_run()
    run.memory_fault.gpa = 0x1234
    assert run.exit.memory_fault.gpa == 0x1234
    run.hypercall.longmode = 1
    assert run.hypercall.flags == 1
