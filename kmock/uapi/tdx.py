"""Intel TDX UAPI: arch/x86/include/uapi/asm/kvm.h (KVM_TDX_*), the TDX member of
kvm_run, and the TDX status values a VMM sees (TDVMCALL status in the guest's R10, the
SEAMCALL status in ``kvm_tdx_cmd.hw_error``).

Sources, cited per block below and in docs/arch/tdx.md:
- reference/arch-tdx-snp-cca.md section 1 (tables of 1.1, 1.2 and 1.3);
- include/uapi/linux/kvm.h, the ``tdx`` member of kvm_run (tools/ header sync, Aug 2025);
- arch/x86/include/uapi/asm/kvm.h and Documentation/virt/kvm/x86/intel-tdx.rst;
- arch/x86/kvm/vmx/tdx_errno.h and tdx.c (torvalds/linux, 6.16-6.18 era);
- arch/x86/include/asm/shared/tdx.h (TDVMCALL leaves and status codes).

Like kvm.py, this module imports nothing from kmock but kmock.uapi.ioctl; a VMM may use it
against the real kernel. The VM type number and KVM_MEMORY_ENCRYPT_OP live in kvm.py and
are re-exported here.
"""

import ctypes

from .ioctl import _IO, _IOW
from .kvm import (  # noqa: F401  (re-exported for TDX users)
    KVM_EXIT_TDX,
    KVM_HC_MAP_GPA_RANGE,
    KVM_MAP_GPA_RANGE_DECRYPTED,
    KVM_MAP_GPA_RANGE_ENCRYPTED,
    KVM_CAP_SPLIT_IRQCHIP,
    KVM_MEMORY_ENCRYPT_OP,
    KVM_X86_TDX_VM,
    kvm_cpuid2,
    kvm_cpuid_entry2,
)

u32 = ctypes.c_uint32
u64 = ctypes.c_uint64

# --- generic x86 KVM numbers the TDX launch uses (include/uapi/linux/kvm.h) -----------------

KVM_NMI = _IO(0xAE, 0x9A)
KVM_SET_CPUID2 = _IOW(0xAE, 0x90, kvm_cpuid2)
#: arch/x86/include/asm/kvm_host.h KVM_MAX_CPUID_ENTRIES (INIT_VM's nent bound)
KVM_MAX_CPUID_ENTRIES = 256
#: VMX basic exit reason of a TDCALL (TDG.VP.VMCALL): what tdx->vp_enter_ret holds for a
#: TDVMCALL exit, so ReportFatalError's data[0] (arch/x86/include/uapi/asm/vmx.h)
EXIT_REASON_TDCALL = 77

# --- KVM_MEMORY_ENCRYPT_OP sub-commands (enum kvm_tdx_cmd_id) ------------------------------

KVM_TDX_CAPABILITIES = 0
KVM_TDX_INIT_VM = 1
KVM_TDX_INIT_VCPU = 2
KVM_TDX_INIT_MEM_REGION = 3
KVM_TDX_FINALIZE_VM = 4
KVM_TDX_GET_CPUID = 5
KVM_TDX_CMD_NR_MAX = 6
#: Proposed (Sean Christopherson, "KVM: TDX: Add sub-ioctl KVM_TDX_TERMINATE_VM", Jul 2025)
#: but absent from upstream asm/kvm.h (kvm-x86 @3cfc1a8e): upstream answers id 6 with -EINVAL.
KVM_TDX_TERMINATE_VM = 6

#: kvm_tdx_cmd.flags of KVM_TDX_INIT_MEM_REGION: extend the TD measurement (TDH.MR.EXTEND).
KVM_TDX_MEASURE_MEMORY_REGION = 1 << 0

# TD attributes (kvm_tdx_init_vm.attributes; asm/shared/tdx.h TDX_TD_ATTR_*_BIT).
TDX_TD_ATTR_DEBUG = 1 << 0
TDX_TD_ATTR_SEPT_VE_DISABLE = 1 << 28

# --- structs ----------------------------------------------------------------------------------


class kvm_tdx_cmd(ctypes.Structure):
    """The argument of KVM_MEMORY_ENCRYPT_OP on a TD's VM or vCPU fd.

    ``hw_error`` must be 0 on input (else -EINVAL); on output it carries the SEAMCALL status.
    """

    _fields_ = [("id", u32), ("flags", u32), ("data", u64), ("hw_error", u64)]


class kvm_tdx_capabilities(ctypes.Structure):
    """Header of struct kvm_tdx_capabilities; ``cpuid.nent`` kvm_cpuid_entry2 follow it.

    ``reserved`` is u64[250] (reference §1.1 correction), so ``cpuid`` is at 2048. The
    unmerged TERMINATE_VM patch would take reserved[0] as ``supported_caps``.
    """

    _fields_ = [
        ("supported_attrs", u64),
        ("supported_xfam", u64),
        ("kernel_tdvmcallinfo_1_r11", u64),
        ("user_tdvmcallinfo_1_r11", u64),
        ("kernel_tdvmcallinfo_1_r12", u64),
        ("user_tdvmcallinfo_1_r12", u64),
        ("reserved", u64 * 250),
        ("cpuid", kvm_cpuid2),
    ]


class kvm_tdx_init_vm(ctypes.Structure):
    """Header of struct kvm_tdx_init_vm (256 bytes of TD_PARAMS input, then kvm_cpuid2)."""

    _fields_ = [
        ("attributes", u64),
        ("xfam", u64),
        ("mrconfigid", u64 * 6),
        ("mrowner", u64 * 6),
        ("mrownerconfig", u64 * 6),
        ("reserved", u64 * 12),
        ("cpuid", kvm_cpuid2),
    ]


class kvm_tdx_init_mem_region(ctypes.Structure):
    """KVM_TDX_INIT_MEM_REGION's data; written back advanced on -EINTR."""

    _fields_ = [("source_addr", u64), ("gpa", u64), ("nr_pages", u64)]


def with_cpuid_entries(header, nent):
    """A ctypes type: ``header`` (kvm_cpuid2 or a struct ending in it) + nent cpuid entries.

    The kernel reads the header, then ``cpuid.nent`` entries right after it (a C flexible
    array member); this builds the matching buffer type for a VMM or a test.
    """
    return type(
        f"{header.__name__}_{nent}",
        (ctypes.Structure,),
        {"_fields_": [("hdr", header), ("entries", kvm_cpuid_entry2 * nent)]},
    )


# --- kvm_run: the KVM_EXIT_TDX member of the exit union --------------------------------------


class kvm_tdx_exit_unknown(ctypes.Structure):
    _fields_ = [("ret", u64), ("data", u64 * 5)]


class kvm_tdx_exit_get_quote(ctypes.Structure):
    _fields_ = [("ret", u64), ("gpa", u64), ("size", u64)]


class kvm_tdx_exit_get_tdvmcall_info(ctypes.Structure):
    _fields_ = [
        ("ret", u64),
        ("leaf", u64),
        ("r11", u64),
        ("r12", u64),
        ("r13", u64),
        ("r14", u64),
    ]


class kvm_tdx_exit_setup_event_notify(ctypes.Structure):
    _fields_ = [("ret", u64), ("vector", u64)]


class _kvm_tdx_exit_u(ctypes.Union):
    _fields_ = [
        ("unknown", kvm_tdx_exit_unknown),
        ("get_quote", kvm_tdx_exit_get_quote),
        ("get_tdvmcall_info", kvm_tdx_exit_get_tdvmcall_info),
        ("setup_event_notify", kvm_tdx_exit_setup_event_notify),
    ]


class kvm_run_tdx(ctypes.Structure):
    """``run->tdx`` for KVM_EXIT_TDX: ``nr`` is the TDVMCALL leaf (e.g. TDVMCALL_GET_QUOTE)."""

    _anonymous_ = ("_u",)
    _fields_ = [("flags", u64), ("nr", u64), ("_u", _kvm_tdx_exit_u)]


# --- system events --------------------------------------------------------------------------

# KVM_SYSTEM_EVENT_TDX_FATAL (kmock.uapi.kvm, re-exported): TDG.VP.VMCALL<ReportFatalError>;
# ndata = 16 (the GPRs)
from .kvm import KVM_SYSTEM_EVENT_TDX_FATAL  # noqa: E402,F401

# --- TDG.VP.VMCALL (GHCI): leaves (guest R11) and status (guest R10) ------------------------

TDX_HYPERCALL_STANDARD = 0  # guest R10 on input: a GHCI-defined TDVMCALL
TDVMCALL_GET_TD_VM_CALL_INFO = 0x10000
TDVMCALL_MAP_GPA = 0x10001
TDVMCALL_GET_QUOTE = 0x10002
TDVMCALL_REPORT_FATAL_ERROR = 0x10003
TDVMCALL_SETUP_EVENT_NOTIFY_INTERRUPT = 0x10004

TDVMCALL_STATUS_SUCCESS = 0x0000000000000000
TDVMCALL_STATUS_RETRY = 0x0000000000000001
TDVMCALL_STATUS_INVALID_OPERAND = 0x8000000000000000
TDVMCALL_STATUS_GPA_INUSE = 0x8000000000000001
TDVMCALL_STATUS_ALIGN_ERROR = 0x8000000000000002
TDVMCALL_STATUS_SUBFUNC_UNSUPPORTED = 0x8000000000000003

#: KVM splits MapGPA into exits of at most this many bytes (tdx.c TDX_MAP_GPA_MAX_LEN).
TDX_MAP_GPA_MAX_LEN = 2 * 1024 * 1024

# --- TDCALL leaves (guest -> TDX module; asm/shared/tdx.h, Linux guest RFCs) -----------------

TDG_VP_VMCALL = 0
TDG_VP_INFO = 1
TDG_VP_VEINFO_GET = 3
TDG_MR_REPORT = 4
TDG_MEM_PAGE_ACCEPT = 6
TDG_VM_RD = 7
TDG_VM_WR = 8
TDG_MEM_PAGE_RELEASE = 30  # TDX Connect / PAGE_RELEASE (TDCS config flag bit 6)

TDCS_CONFIG_PAGE_RELEASE = 1 << 6
TDCS_CONFIG_TDX_CONNECT = 1 << 5  # reference 1.4 [U]

# --- SEAMCALL leaves (host -> TDX module; arch/x86/virt/vmx/tdx/tdx.h) ----------------------

TDH_VP_ENTER = 0
TDH_MNG_ADDCX = 1
TDH_MEM_PAGE_ADD = 2
TDH_MEM_SEPT_ADD = 3
TDH_VP_ADDCX = 4
TDH_MEM_PAGE_RELOCATE = 5
TDH_MEM_PAGE_AUG = 6
TDH_MEM_RANGE_BLOCK = 7
TDH_MNG_KEY_CONFIG = 8
TDH_MNG_CREATE = 9
TDH_VP_CREATE = 10
TDH_MNG_RD = 11
TDH_MEM_RD = 12
TDH_MEM_WR = 14
TDH_MEM_PAGE_DEMOTE = 15
TDH_MR_EXTEND = 16
TDH_MR_FINALIZE = 17
TDH_VP_FLUSH = 18
TDH_MNG_KEY_FREEID = 20
TDH_MNG_INIT = 21
TDH_VP_INIT = 22
TDH_MEM_PAGE_PROMOTE = 23
TDH_PHYMEM_PAGE_RDMD = 24
TDH_MEM_SEPT_RD = 25
TDH_PHYMEM_PAGE_RECLAIM = 28
TDH_MEM_PAGE_REMOVE = 29
TDH_MEM_SEPT_REMOVE = 30
TDH_MEM_TRACK = 38
TDH_MEM_RANGE_UNBLOCK = 39
TDH_PHYMEM_CACHE_WB = 40
TDH_PHYMEM_PAGE_WBINVD = 41
TDH_PHYMEM_PAMT_ADD = 58
TDH_PHYMEM_PAMT_REMOVE = 59

#: Page size in the GPA operand of S-EPT SEAMCALLs and TDCALLs: RCX = gpa | level.
TDX_PS_4K = 0
TDX_PS_2M = 1
TDX_PS_1G = 2

#: TDX_EXTENDMR_CHUNKSIZE: TDH.MR.EXTEND measures 256 bytes per call.
TDX_EXTENDMR_CHUNKSIZE = 256

# --- TDX module status codes (RAX of a SEAMCALL/TDCALL; kvm_tdx_cmd.hw_error) ----------------
# Bits 63:32 are the status class and number, bits 31:0 details (often the operand id).

TDX_SEAMCALL_STATUS_MASK = 0xFFFFFFFF00000000

TDX_SUCCESS = 0
TDX_NON_RECOVERABLE_VCPU = 0x4000000100000000
TDX_NON_RECOVERABLE_TD = 0x6000000200000000
TDX_INTERRUPTED_RESUMABLE = 0x8000000300000000
TDX_INTERRUPTED_RESTARTABLE = 0x8000000400000000
TDX_OPERAND_INVALID = 0xC000010000000000
TDX_OPERAND_BUSY = 0x8000020000000000
TDX_PREVIOUS_TLB_EPOCH_BUSY = 0x8000020100000000
TDX_RND_NO_ENTROPY = 0x8000020300000000
TDX_OPERAND_PAGE_METADATA_INCORRECT = 0xC000030000000000
TDX_TD_FATAL = 0xE000060400000000
TDX_OP_STATE_INCORRECT = 0xC000060800000000
TDX_VCPU_NOT_ASSOCIATED = 0x8000070200000000
TDX_KEY_GENERATION_FAILED = 0x8000080000000000
TDX_KEY_STATE_INCORRECT = 0xC000081100000000
TDX_KEY_CONFIGURED = 0x0000081500000000
TDX_NO_HKID_READY_TO_WBCACHE = 0x0000082100000000
TDX_FLUSHVP_NOT_DONE = 0x8000082400000000
TDX_EPT_WALK_FAILED = 0xC0000B0000000000
TDX_EPT_ENTRY_FREE = 0xC0000B0100000000
TDX_EPT_ENTRY_NOT_FREE = 0xC0000B0200000000
TDX_EPT_ENTRY_NOT_PRESENT = 0xC0000B0300000000
TDX_EPT_ENTRY_NOT_LEAF = 0xC0000B0400000000
TDX_EPT_ENTRY_LEAF = 0xC0000B0500000000
TDX_GPA_RANGE_NOT_BLOCKED = 0xC0000B0600000000
TDX_GPA_RANGE_ALREADY_BLOCKED = 0x00000B0700000000
TDX_TLB_TRACKING_NOT_DONE = 0xC0000B0800000000
TDX_EPT_INVALID_PROMOTE_CONDITIONS = 0xC0000B0900000000
TDX_PAGE_ALREADY_ACCEPTED = 0x00000B0A00000000
TDX_PAGE_SIZE_MISMATCH = 0xC0000B0B00000000
TDX_GPA_RANGE_BLOCKED = 0xC0000B0C00000000
TDX_EPT_ENTRY_STATE_INCORRECT = 0xC0000B0D00000000
TDX_METADATA_FIELD_NOT_READABLE = 0xC0000C0200000000

# Operand ids (bits 31:0 of a status: which operand the error is about). RCX, TDR, SEPT and
# TD_EPOCH are tdx_errno.h's; RAX and RDX follow the module's register numbering [U].
TDX_OPERAND_ID_RAX = 0x00
TDX_OPERAND_ID_RCX = 0x01
TDX_OPERAND_ID_RDX = 0x02
TDX_OPERAND_ID_TDR = 0x80
TDX_OPERAND_ID_SEPT = 0x92
TDX_OPERAND_ID_TD_EPOCH = 0xA9
