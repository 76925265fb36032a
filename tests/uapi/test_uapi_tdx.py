"""kmock.uapi.tdx against reference/arch-tdx-snp-cca.md section 1 and the kernel headers.

Every expected value is a literal; the first element of each row names where it comes from:
"§1.x" is the reference (its tables), "kvm.h" is include/uapi/linux/kvm.h's kvm_run ``tdx``
member (tools/ header sync, Aug 2025), "asm/kvm.h" arch/x86/include/uapi/asm/kvm.h,
"errno.h" arch/x86/kvm/vmx/tdx_errno.h, "shared/tdx.h" arch/x86/include/asm/shared/tdx.h,
"tdx.c" arch/x86/kvm/vmx/tdx.c, "TERMINATE" the unmerged KVM_TDX_TERMINATE_VM patch (2025).
"""

import ctypes

import pytest

from kmock.uapi import kvm, tdx

from ._layout import field

# --- numbers ------------------------------------------------------------------------------------

NUMBERS = [
    ("§0 / §4", "KVM_X86_TDX_VM", 5),
    ("§0", "KVM_EXIT_TDX", 40),
    ("§0", "KVM_SYSTEM_EVENT_TDX_FATAL", 7),
    ("§0", "KVM_HC_MAP_GPA_RANGE", 12),
    ("§0", "KVM_MAP_GPA_RANGE_ENCRYPTED", 1 << 4),
    ("§0", "KVM_MAP_GPA_RANGE_DECRYPTED", 0),
    ("§1.1", "KVM_TDX_CAPABILITIES", 0),
    ("§1.1", "KVM_TDX_INIT_VM", 1),
    ("§1.1", "KVM_TDX_INIT_VCPU", 2),
    ("§1.1", "KVM_TDX_INIT_MEM_REGION", 3),
    ("§1.1", "KVM_TDX_FINALIZE_VM", 4),
    ("§1.1", "KVM_TDX_GET_CPUID", 5),
    ("§1.1 [U] / TERMINATE (not upstream)", "KVM_TDX_TERMINATE_VM", 6),
    ("asm/kvm.h @3cfc1a8e enum kvm_tdx_cmd_id", "KVM_TDX_CMD_NR_MAX", 6),
    ("§1.1", "KVM_TDX_MEASURE_MEMORY_REGION", 1 << 0),
    ("shared/tdx.h", "TDX_TD_ATTR_DEBUG", 1 << 0),
    ("shared/tdx.h", "TDX_TD_ATTR_SEPT_VE_DISABLE", 1 << 28),
    # §1.2 MapGPA: status codes and sub-function
    ("§1.2", "TDVMCALL_MAP_GPA", 0x10001),
    ("shared/tdx.h", "TDVMCALL_GET_TD_VM_CALL_INFO", 0x10000),
    ("shared/tdx.h", "TDVMCALL_GET_QUOTE", 0x10002),
    ("shared/tdx.h", "TDVMCALL_REPORT_FATAL_ERROR", 0x10003),
    ("qemu tdx.h", "TDVMCALL_SETUP_EVENT_NOTIFY_INTERRUPT", 0x10004),
    ("§1.2", "TDVMCALL_STATUS_SUCCESS", 0),
    ("§1.2", "TDVMCALL_STATUS_RETRY", 1),
    ("§1.2", "TDVMCALL_STATUS_INVALID_OPERAND", 0x8000000000000000),
    ("qemu tdx.h", "TDVMCALL_STATUS_GPA_INUSE", 0x8000000000000001),
    ("§1.2", "TDVMCALL_STATUS_ALIGN_ERROR", 0x8000000000000002),
    ("§1.2", "TDVMCALL_STATUS_SUBFUNC_UNSUPPORTED", 0x8000000000000003),
    ("§1.2 / tdx.c", "TDX_MAP_GPA_MAX_LEN", 2 * 1024 * 1024),
    ("§1.2", "TDG_MEM_PAGE_ACCEPT", 6),
    ("§1.3", "TDG_MEM_PAGE_RELEASE", 30),
    ("§1.4", "TDCS_CONFIG_PAGE_RELEASE", 1 << 6),
    ("§1.4", "TDCS_CONFIG_TDX_CONNECT", 1 << 5),
    # §1.3 SEAMCALL leaves
    ("§1.3", "TDH_MEM_PAGE_ADD", 2),
    ("§1.3", "TDH_MEM_SEPT_ADD", 3),
    ("§1.3", "TDH_MEM_PAGE_AUG", 6),
    ("§1.3", "TDH_MEM_RANGE_BLOCK", 7),
    ("§1.3", "TDH_MEM_PAGE_DEMOTE", 15),
    ("§1.3", "TDH_MR_EXTEND", 16),
    ("§1.3", "TDH_MR_FINALIZE", 17),
    ("§1.3", "TDH_MEM_PAGE_PROMOTE", 23),
    ("§1.3", "TDH_MEM_PAGE_REMOVE", 29),
    ("§1.3", "TDH_MEM_SEPT_REMOVE", 30),
    ("§1.3", "TDH_MEM_TRACK", 38),
    ("§1.3", "TDH_MEM_RANGE_UNBLOCK", 39),
    ("§1.3", "TDH_PHYMEM_PAGE_WBINVD", 41),
    ("§1.3", "TDX_PS_4K", 0),
    ("§1.3", "TDX_PS_2M", 1),
    ("§1.3", "TDX_PS_1G", 2),
    # §1.3 TDX status codes (tdx_errno.h)
    ("§1.3", "TDX_SEAMCALL_STATUS_MASK", 0xFFFFFFFF00000000),
    ("§1.3", "TDX_SUCCESS", 0),
    ("§1.3", "TDX_NON_RECOVERABLE_TD", 0x6000000200000000),
    ("errno.h", "TDX_NON_RECOVERABLE_VCPU", 0x4000000100000000),
    ("errno.h", "TDX_INTERRUPTED_RESUMABLE", 0x8000000300000000),
    ("§1.3", "TDX_INTERRUPTED_RESTARTABLE", 0x8000000400000000),
    ("§1.3", "TDX_OPERAND_INVALID", 0xC000010000000000),
    ("§1.3", "TDX_OPERAND_BUSY", 0x8000020000000000),
    ("§1.3", "TDX_PREVIOUS_TLB_EPOCH_BUSY", 0x8000020100000000),
    ("§1.3", "TDX_RND_NO_ENTROPY", 0x8000020300000000),
    ("§1.3", "TDX_OPERAND_PAGE_METADATA_INCORRECT", 0xC000030000000000),
    ("§1.3", "TDX_TD_FATAL", 0xE000060400000000),
    ("§1.3", "TDX_OP_STATE_INCORRECT", 0xC000060800000000),
    ("errno.h", "TDX_FLUSHVP_NOT_DONE", 0x8000082400000000),
    ("§1.3", "TDX_EPT_WALK_FAILED", 0xC0000B0000000000),
    ("§1.3", "TDX_EPT_ENTRY_FREE", 0xC0000B0100000000),
    ("§1.3", "TDX_EPT_ENTRY_NOT_FREE", 0xC0000B0200000000),
    ("§1.3", "TDX_EPT_ENTRY_NOT_PRESENT", 0xC0000B0300000000),
    ("§1.3", "TDX_EPT_ENTRY_NOT_LEAF", 0xC0000B0400000000),
    ("§1.3", "TDX_EPT_ENTRY_LEAF", 0xC0000B0500000000),
    ("§1.3", "TDX_GPA_RANGE_NOT_BLOCKED", 0xC0000B0600000000),
    ("§1.3", "TDX_GPA_RANGE_ALREADY_BLOCKED", 0x00000B0700000000),
    ("§1.3", "TDX_TLB_TRACKING_NOT_DONE", 0xC0000B0800000000),
    ("§1.3", "TDX_EPT_INVALID_PROMOTE_CONDITIONS", 0xC0000B0900000000),
    ("§1.3", "TDX_PAGE_ALREADY_ACCEPTED", 0x00000B0A00000000),
    ("§1.3", "TDX_PAGE_SIZE_MISMATCH", 0xC0000B0B00000000),
    ("§1.3", "TDX_GPA_RANGE_BLOCKED", 0xC0000B0C00000000),
    ("§1.3", "TDX_EPT_ENTRY_STATE_INCORRECT", 0xC0000B0D00000000),
    ("§1.3", "TDX_OPERAND_ID_RCX", 0x01),
    ("§1.3", "TDX_OPERAND_ID_TDR", 0x80),
    ("§1.3", "TDX_OPERAND_ID_SEPT", 0x92),
    ("§1.3", "TDX_OPERAND_ID_TD_EPOCH", 0xA9),
]


@pytest.mark.parametrize("source,name,value", NUMBERS, ids=[r[1] for r in NUMBERS])
def test_tdx_numbers(source, name, value):
    got = getattr(tdx, name)
    assert got == value, f"{source}: {name} = {got:#x}, expected {value:#x}"


def test_reexports_are_kvm_py_values():
    # one source of truth: the VM type and the ioctl come from kvm.py
    assert tdx.KVM_X86_TDX_VM is kvm.KVM_X86_TDX_VM
    assert tdx.KVM_MEMORY_ENCRYPT_OP == kvm.KVM_MEMORY_ENCRYPT_OP == 0xC008AEBA  # §0


def test_status_codes_have_their_class_in_the_upper_half():
    # §1.3: class = bits 63:32; none of the codes carries an operand id of its own
    for name in dir(tdx):
        if name.startswith("TDX_") and name not in ("TDX_SEAMCALL_STATUS_MASK",) and not name.startswith(
            ("TDX_OPERAND_ID_", "TDX_PS_", "TDX_TD_ATTR", "TDX_MAP_GPA", "TDX_EXTENDMR", "TDX_HYPERCALL")
        ):
            assert getattr(tdx, name) & 0xFFFFFFFF == 0, name


# --- layouts ------------------------------------------------------------------------------------

SIZES = [
    ("§1.1 / asm/kvm.h", tdx.kvm_tdx_cmd, 24),
    ("§1.1 correction: cpuid at 2048, + kvm_cpuid2 header", tdx.kvm_tdx_capabilities, 2056),
    ("§1.1 / tdx.c BUILD_BUG_ON(sizeof(*init_vm) != 256 + sizeof(cpuid))", tdx.kvm_tdx_init_vm, 264),
    ("§1.1", tdx.kvm_tdx_init_mem_region, 24),
    ("kvm.h tdx member", tdx.kvm_run_tdx, 64),
]


@pytest.mark.parametrize("source,struct,size", SIZES, ids=[r[1].__name__ for r in SIZES])
def test_tdx_struct_sizes(source, struct, size):
    assert ctypes.sizeof(struct) == size, source


OFFSETS = [
    ("asm/kvm.h", tdx.kvm_tdx_cmd, "id", 0, 4),
    ("asm/kvm.h", tdx.kvm_tdx_cmd, "flags", 4, 4),
    ("asm/kvm.h", tdx.kvm_tdx_cmd, "data", 8, 8),
    ("asm/kvm.h", tdx.kvm_tdx_cmd, "hw_error", 16, 8),
    ("asm/kvm.h", tdx.kvm_tdx_capabilities, "supported_attrs", 0, 8),
    ("asm/kvm.h", tdx.kvm_tdx_capabilities, "supported_xfam", 8, 8),
    ("asm/kvm.h", tdx.kvm_tdx_capabilities, "kernel_tdvmcallinfo_1_r11", 16, 8),
    ("asm/kvm.h", tdx.kvm_tdx_capabilities, "user_tdvmcallinfo_1_r11", 24, 8),
    ("asm/kvm.h", tdx.kvm_tdx_capabilities, "kernel_tdvmcallinfo_1_r12", 32, 8),
    ("asm/kvm.h", tdx.kvm_tdx_capabilities, "user_tdvmcallinfo_1_r12", 40, 8),
    ("§1.1 correction (u64 reserved[250])", tdx.kvm_tdx_capabilities, "reserved", 48, 250 * 8),
    ("§1.1 correction", tdx.kvm_tdx_capabilities, "cpuid", 2048, 8),
    ("asm/kvm.h", tdx.kvm_tdx_init_vm, "attributes", 0, 8),
    ("asm/kvm.h", tdx.kvm_tdx_init_vm, "xfam", 8, 8),
    ("asm/kvm.h", tdx.kvm_tdx_init_vm, "mrconfigid", 16, 48),
    ("asm/kvm.h", tdx.kvm_tdx_init_vm, "mrowner", 64, 48),
    ("asm/kvm.h", tdx.kvm_tdx_init_vm, "mrownerconfig", 112, 48),
    ("asm/kvm.h", tdx.kvm_tdx_init_vm, "reserved", 160, 96),
    ("asm/kvm.h", tdx.kvm_tdx_init_vm, "cpuid", 256, 8),
    ("§1.1", tdx.kvm_tdx_init_mem_region, "source_addr", 0, 8),
    ("§1.1", tdx.kvm_tdx_init_mem_region, "gpa", 8, 8),
    ("§1.1", tdx.kvm_tdx_init_mem_region, "nr_pages", 16, 8),
    ("kvm.h", tdx.kvm_run_tdx, "flags", 0, 8),
    ("kvm.h", tdx.kvm_run_tdx, "nr", 8, 8),
    ("kvm.h", tdx.kvm_run_tdx, "unknown.ret", 16, 8),
    ("kvm.h", tdx.kvm_run_tdx, "unknown.data", 24, 40),
    ("kvm.h", tdx.kvm_run_tdx, "get_quote.ret", 16, 8),
    ("kvm.h", tdx.kvm_run_tdx, "get_quote.gpa", 24, 8),
    ("kvm.h", tdx.kvm_run_tdx, "get_quote.size", 32, 8),
    ("kvm.h", tdx.kvm_run_tdx, "get_tdvmcall_info.ret", 16, 8),
    ("kvm.h", tdx.kvm_run_tdx, "get_tdvmcall_info.leaf", 24, 8),
    ("kvm.h", tdx.kvm_run_tdx, "get_tdvmcall_info.r11", 32, 8),
    ("kvm.h", tdx.kvm_run_tdx, "get_tdvmcall_info.r14", 56, 8),
    ("kvm.h", tdx.kvm_run_tdx, "setup_event_notify.ret", 16, 8),
    ("kvm.h", tdx.kvm_run_tdx, "setup_event_notify.vector", 24, 8),
]


@pytest.mark.parametrize(
    "source,struct,path,offset,size", OFFSETS, ids=[f"{r[1].__name__}.{r[2]}" for r in OFFSETS]
)
def test_tdx_struct_offsets(source, struct, path, offset, size):
    assert field(struct, path) == (offset, size), source


def test_tdx_exit_fits_the_kvm_run_union():
    # kvm.h: the tdx member is one of the exit union's members ("Fix the size of the union":
    # 256 bytes), at offset 32 of kvm_run on x86-64 (§3 of kvm-guest-memfd-6.18.md).
    assert ctypes.sizeof(tdx.kvm_run_tdx) <= ctypes.sizeof(kvm.kvm_run_exit) == 256
    assert kvm.kvm_run.exit.offset == 32
    run = kvm.kvm_run()
    view = tdx.kvm_run_tdx.from_buffer(run, kvm.kvm_run.exit.offset)
    view.nr = tdx.TDVMCALL_GET_QUOTE
    view.get_quote.gpa = 0x1000
    assert bytes(run)[40:48] == (tdx.TDVMCALL_GET_QUOTE).to_bytes(8, "little")
    assert bytes(run)[56:64] == (0x1000).to_bytes(8, "little")


def test_cpuid_entries_follow_the_header():
    # asm/kvm.h: struct kvm_cpuid2 ends in a flexible array of 40-byte kvm_cpuid_entry2
    caps3 = tdx.with_cpuid_entries(tdx.kvm_tdx_capabilities, 3)
    assert ctypes.sizeof(caps3) == 2056 + 3 * 40
    assert caps3.entries.offset == 2056
    init1 = tdx.with_cpuid_entries(tdx.kvm_tdx_init_vm, 1)
    assert init1.entries.offset == 264 and ctypes.sizeof(init1) == 304
    get_cpuid = tdx.with_cpuid_entries(kvm.kvm_cpuid2, 2)  # KVM_TDX_GET_CPUID's data
    assert ctypes.sizeof(get_cpuid) == 8 + 80
