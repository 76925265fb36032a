"""AMD SEV / SEV-SNP: the KVM launch UAPI, the PSP status codes and the GHCB/RMP numbers.

Sources (see docs/arch/snp.md for the per-fact citations):
- arch/x86/include/uapi/asm/kvm.h: enum sev_cmd_id, struct kvm_sev_cmd, kvm_sev_init,
  kvm_sev_snp_launch_{start,update,finish}, KVM_SEV_SNP_PAGE_TYPE_*, KVM_X86_*_VM.
- include/uapi/linux/kvm.h: KVM_SYSTEM_EVENT_SEV_TERM.
- include/uapi/linux/psp-sev.h: sev_ret_code (SEV_RET_*), struct sev_issue_cmd, SEV_ISSUE_CMD.
- arch/x86/include/asm/sev-common.h: GHCB MSR protocol, struct psc_hdr/psc_entry,
  VMGEXIT_PSC_* (kernel-internal, mirrored because a guest script speaks this protocol).
- arch/x86/include/asm/sev.h: PVALIDATE/RMPUPDATE/PSMASH return codes, RMP_PG_SIZE_*.
- arch/x86/include/asm/trapnr.h / svm.h and drivers/iommu/amd/amd_iommu_types.h: the
  #VC, NPF and IOMMU event codes of reference arch-tdx-snp-cca.md section 2.4.

Stdlib ctypes only; imports nothing from kmock but its sibling uapi modules.
"""

import ctypes

from .ioctl import _IOWR
from .kvm import (  # noqa: F401  (re-exported: the SEV-family VM types live in asm/kvm.h)
    KVM_MEMORY_ENCRYPT_OP,
    KVM_MEMORY_ENCRYPT_REG_REGION,
    KVM_MEMORY_ENCRYPT_UNREG_REGION,
    KVM_X86_SEV_ES_VM,
    KVM_X86_SEV_VM,
    KVM_X86_SNP_VM,
    kvm_enc_region,
)

u8 = ctypes.c_uint8
u16 = ctypes.c_uint16
u32 = ctypes.c_uint32
u64 = ctypes.c_uint64

# --- KVM: enum sev_cmd_id (arch/x86/include/uapi/asm/kvm.h) ------------------------------

KVM_SEV_INIT = 0
KVM_SEV_ES_INIT = 1
KVM_SEV_LAUNCH_START = 2
KVM_SEV_LAUNCH_UPDATE_DATA = 3
KVM_SEV_LAUNCH_UPDATE_VMSA = 4
KVM_SEV_LAUNCH_SECRET = 5
KVM_SEV_LAUNCH_MEASURE = 6
KVM_SEV_LAUNCH_FINISH = 7
KVM_SEV_SEND_START = 8
KVM_SEV_SEND_UPDATE_DATA = 9
KVM_SEV_SEND_UPDATE_VMSA = 10
KVM_SEV_SEND_FINISH = 11
KVM_SEV_RECEIVE_START = 12
KVM_SEV_RECEIVE_UPDATE_DATA = 13
KVM_SEV_RECEIVE_UPDATE_VMSA = 14
KVM_SEV_RECEIVE_FINISH = 15
KVM_SEV_GUEST_STATUS = 16
KVM_SEV_DBG_DECRYPT = 17
KVM_SEV_DBG_ENCRYPT = 18
KVM_SEV_CERT_EXPORT = 19
KVM_SEV_GET_ATTESTATION_REPORT = 20
KVM_SEV_SEND_CANCEL = 21
KVM_SEV_INIT2 = 22
KVM_SEV_SNP_LAUNCH_START = 100
KVM_SEV_SNP_LAUNCH_UPDATE = 101
KVM_SEV_SNP_LAUNCH_FINISH = 102


class kvm_sev_cmd(ctypes.Structure):
    """Argument of KVM_MEMORY_ENCRYPT_OP on an SEV-family VM; ``error`` is the PSP status out."""

    _fields_ = [("id", u32), ("pad0", u32), ("data", u64), ("error", u32), ("sev_fd", u32)]


class kvm_sev_init(ctypes.Structure):
    _fields_ = [
        ("vmsa_features", u64),
        ("flags", u32),
        ("ghcb_version", u16),
        ("pad1", u16),
        ("pad2", u32 * 8),
    ]


class kvm_sev_snp_launch_start(ctypes.Structure):
    _fields_ = [
        ("policy", u64),
        ("gosvw", u8 * 16),
        ("flags", u16),
        ("pad0", u8 * 6),
        ("pad1", u64 * 4),
    ]


# Kept in sync with the firmware's page types (asm/kvm.h comment); 2 (VMSA) is KVM-internal.
KVM_SEV_SNP_PAGE_TYPE_NORMAL = 0x1
KVM_SEV_SNP_PAGE_TYPE_ZERO = 0x3
KVM_SEV_SNP_PAGE_TYPE_UNMEASURED = 0x4
KVM_SEV_SNP_PAGE_TYPE_SECRETS = 0x5
KVM_SEV_SNP_PAGE_TYPE_CPUID = 0x6
SNP_PAGE_TYPE_VMSA = 0x2  # include/linux/psp-sev.h; never accepted from userspace


class kvm_sev_snp_launch_update(ctypes.Structure):
    _fields_ = [
        ("gfn_start", u64),
        ("uaddr", u64),
        ("len", u64),
        ("type", u8),
        ("pad0", u8),
        ("flags", u16),
        ("pad1", u32),
        ("pad2", u64 * 4),
    ]


KVM_SEV_SNP_ID_BLOCK_SIZE = 96
KVM_SEV_SNP_ID_AUTH_SIZE = 4096
KVM_SEV_SNP_FINISH_DATA_SIZE = 32


class kvm_sev_snp_launch_finish(ctypes.Structure):
    _fields_ = [
        ("id_block_uaddr", u64),
        ("id_auth_uaddr", u64),
        ("id_block_en", u8),
        ("auth_key_en", u8),
        ("vcek_disabled", u8),
        ("host_data", u8 * KVM_SEV_SNP_FINISH_DATA_SIZE),
        ("pad0", u8 * 3),
        ("flags", u16),
        ("pad1", u64 * 4),
    ]


# Guest policy bits KVM checks in snp_launch_start (arch/x86/kvm/svm/sev.c, SNP_POLICY_MASK_*).
SNP_POLICY_MASK_API_MINOR = 0xFF
SNP_POLICY_MASK_API_MAJOR = 0xFF << 8
SNP_POLICY_MASK_SMT = 1 << 16
SNP_POLICY_MASK_RSVD_MBO = 1 << 17
SNP_POLICY_MASK_DEBUG = 1 << 19
SNP_POLICY_MASK_SINGLE_SOCKET = 1 << 20
SNP_POLICY_MASK_VALID = (
    SNP_POLICY_MASK_API_MINOR
    | SNP_POLICY_MASK_API_MAJOR
    | SNP_POLICY_MASK_SMT
    | SNP_POLICY_MASK_RSVD_MBO
    | SNP_POLICY_MASK_DEBUG
    | SNP_POLICY_MASK_SINGLE_SOCKET
)

# arch/x86/include/asm/svm.h: VMSA SEV features KVM_SEV_INIT2 may ask for (vmsa_features);
# SNP_ACTIVE is set by KVM itself for SNP VMs and is never accepted from userspace.
SVM_SEV_FEAT_SNP_ACTIVE = 1 << 0
SVM_SEV_FEAT_DEBUG_SWAP = 1 << 5
SVM_SEV_FEAT_SECURE_TSC = 1 << 9

# --- /dev/kvm attributes (arch/x86/include/uapi/asm/kvm.h "attributes for system fd") ---
# KVM_GET_DEVICE_ATTR / KVM_HAS_DEVICE_ATTR on /dev/kvm, group KVM_X86_GRP_SEV: answered by
# sev_dev_get_attr (arch/x86/kvm/svm/sev.c). 6.18 has one attribute; KVM_X86_SNP_POLICY_BITS
# (1) came later ("KVM: SEV: Publish supported SNP policy bits").
KVM_X86_GRP_SEV = 1
KVM_X86_SEV_VMSA_FEATURES = 0

# arch/x86/kvm/svm/sev.c: the highest GHCB protocol version KVM speaks (GHCB_VERSION_MAX).
GHCB_VERSION_MAX = 2
# arch/x86/kvm/svm/sev.c: the GPA firmware records for every initial VMSA (INITIAL_VMSA_GPA).
INITIAL_VMSA_GPA = 0xFFFFFFFFF000

# include/uapi/linux/kvm.h: kvm_run->system_event.type for a guest termination request
# (kmock.uapi.kvm, re-exported)
from .kvm import KVM_SYSTEM_EVENT_SEV_TERM  # noqa: E402,F401

# --- PSP: include/uapi/linux/psp-sev.h ---------------------------------------------------

SEV_RET_NO_FW_CALL = -1
SEV_RET_SUCCESS = 0
SEV_RET_INVALID_PLATFORM_STATE = 1
SEV_RET_INVALID_GUEST_STATE = 2
SEV_RET_INVALID_CONFIG = 3
SEV_RET_INVALID_LEN = 4
SEV_RET_ALREADY_OWNED = 5
SEV_RET_INVALID_CERTIFICATE = 6
SEV_RET_POLICY_FAILURE = 7
SEV_RET_INACTIVE = 8
SEV_RET_INVALID_ADDRESS = 9
SEV_RET_BAD_SIGNATURE = 10
SEV_RET_BAD_MEASUREMENT = 11
SEV_RET_ASID_OWNED = 12
SEV_RET_INVALID_ASID = 13
SEV_RET_WBINVD_REQUIRED = 14
SEV_RET_DFFLUSH_REQUIRED = 15
SEV_RET_INVALID_GUEST = 16
SEV_RET_INVALID_COMMAND = 17
SEV_RET_ACTIVE = 18
SEV_RET_HWSEV_RET_PLATFORM = 19
SEV_RET_HWSEV_RET_UNSAFE = 20
SEV_RET_UNSUPPORTED = 21
SEV_RET_INVALID_PARAM = 22
SEV_RET_RESOURCE_LIMIT = 23
SEV_RET_SECURE_DATA_INVALID = 24
SEV_RET_INVALID_PAGE_SIZE = 0x19
SEV_RET_INVALID_PAGE_STATE = 0x1A
SEV_RET_INVALID_MDATA_ENTRY = 0x1B
SEV_RET_INVALID_PAGE_OWNER = 0x1C
SEV_RET_AEAD_OFLOW = 0x1D
SEV_RET_EXIT_RING_BUFFER = 0x1F
SEV_RET_RMP_INIT_REQUIRED = 0x20
SEV_RET_BAD_SVN = 0x21
SEV_RET_BAD_VERSION = 0x22
SEV_RET_SHUTDOWN_REQUIRED = 0x23
SEV_RET_UPDATE_FAILED = 0x24
SEV_RET_RESTORE_REQUIRED = 0x25
SEV_RET_RMP_INITIALIZATION_FAILED = 0x26
SEV_RET_INVALID_KEY = 0x27


class sev_issue_cmd(ctypes.Structure):
    """Argument of SEV_ISSUE_CMD on /dev/sev (``__packed``: 16 bytes)."""

    _pack_ = 1
    _fields_ = [("cmd", u32), ("data", u64), ("error", u32)]


# /dev/sev commands (psp-sev.h anonymous enum: SEV_FACTORY_RESET 0 ... SNP_VLEK_LOAD 12).
SEV_PLATFORM_STATUS = 1
SNP_PLATFORM_STATUS = 9
SEV_MAX = 13

SEV_IOC_TYPE = ord("S")
SEV_ISSUE_CMD = _IOWR(SEV_IOC_TYPE, 0x0, sev_issue_cmd)

# --- GHCB MSR protocol (arch/x86/include/asm/sev-common.h) -------------------------------

GHCB_MSR_INFO_MASK = (1 << 12) - 1
GHCB_MSR_PSC_REQ = 0x014
GHCB_MSR_PSC_RESP = 0x015
GHCB_MSR_PSC_RESP_ERROR = (1 << 63) | GHCB_MSR_PSC_RESP
GHCB_MSR_PSC_GFN_SHIFT = 12  # GHCBData[51:12]
GHCB_MSR_PSC_GFN_MASK = (1 << 40) - 1
GHCB_MSR_PSC_OP_SHIFT = 52  # GHCBData[55:52]
GHCB_MSR_PSC_OP_MASK = 0xF
SNP_PAGE_STATE_PRIVATE = 1
SNP_PAGE_STATE_SHARED = 2

GHCB_MSR_TERM_REQ = 0x100
GHCB_MSR_TERM_REASON_SET_POS = 12
GHCB_MSR_TERM_REASON_SET_MASK = 0xF
GHCB_MSR_TERM_REASON_POS = 16
GHCB_MSR_TERM_REASON_MASK = 0xFF
SEV_TERM_SET_GEN = 0
SEV_TERM_SET_LINUX = 1
GHCB_TERM_PSC = 1
GHCB_TERM_PVALIDATE = 2


def ghcb_msr_psc_req(gfn, op):
    """GHCB_MSR_PSC_REQ_GFN(gfn, op): the MSR value of a one-page PSC request."""
    return ((op & GHCB_MSR_PSC_OP_MASK) << GHCB_MSR_PSC_OP_SHIFT) | (
        (gfn & GHCB_MSR_PSC_GFN_MASK) << GHCB_MSR_PSC_GFN_SHIFT
    ) | GHCB_MSR_PSC_REQ


def ghcb_sev_term_reason(reason_set, reason_code):
    """GHCB_MSR_TERM_REQ | GHCB_SEV_TERM_REASON(reason_set, reason_code)."""
    return (
        ((reason_set & GHCB_MSR_TERM_REASON_SET_MASK) << GHCB_MSR_TERM_REASON_SET_POS)
        | ((reason_code & GHCB_MSR_TERM_REASON_MASK) << GHCB_MSR_TERM_REASON_POS)
        | GHCB_MSR_TERM_REQ
    )


# --- GHCB NAE page state change (SVM_VMGEXIT_PSC) ----------------------------------------

SVM_VMGEXIT_PSC = 0x80000010  # arch/x86/include/uapi/asm/svm.h
# VMGEXIT_PSC_MAX_ENTRY (64) is only the Linux *guest's* buffer size; the GHCB limit that
# KVM enforces on the hypervisor side is VMGEXIT_PSC_MAX_COUNT (253).
VMGEXIT_PSC_MAX_ENTRY = 64
VMGEXIT_PSC_MAX_COUNT = 253
VMGEXIT_PSC_ERROR_GENERIC = 0x100 << 32
VMGEXIT_PSC_ERROR_INVALID_HDR = (1 << 32) | 1
VMGEXIT_PSC_ERROR_INVALID_ENTRY = (1 << 32) | 2
VMGEXIT_PSC_OP_PRIVATE = 1
VMGEXIT_PSC_OP_SHARED = 2
# GHCB spec operations KVM does not implement (it skips them): PSMASH 3, UNSMASH 4.
VMGEXIT_PSC_OP_PSMASH = 3
VMGEXIT_PSC_OP_UNSMASH = 4


class psc_hdr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("cur_entry", u16), ("end_entry", u16), ("reserved", u32)]


class psc_entry(ctypes.Structure):
    """``u64 cur_page:12, gfn:40, operation:4, pagesize:1, reserved:7`` (__packed, 8 bytes)."""

    _pack_ = 1
    _fields_ = [
        ("cur_page", u64, 12),
        ("gfn", u64, 40),
        ("operation", u64, 4),
        ("pagesize", u64, 1),
        ("reserved", u64, 7),
    ]


class snp_psc_desc(ctypes.Structure):
    """The scratch buffer of a PSC NAE event at the GHCB maximum (hdr + 253 entries)."""

    _pack_ = 1
    _fields_ = [("hdr", psc_hdr), ("entries", psc_entry * VMGEXIT_PSC_MAX_COUNT)]


# --- Instructions (arch/x86/include/asm/sev.h) --------------------------------------------

RMP_PG_SIZE_4K = 0
RMP_PG_SIZE_2M = 1
PVALIDATE_SUCCESS = 0
PVALIDATE_FAIL_INPUT = 1
PVALIDATE_FAIL_SIZEMISMATCH = 6
PVALIDATE_FAIL_NOUPDATE = 255  # software-defined: rFLAGS.CF = 1, nothing changed
RMPUPDATE_SUCCESS = 0
RMPUPDATE_FAIL_INPUT = 1
RMPUPDATE_FAIL_PERMISSION = 2
RMPUPDATE_FAIL_INUSE = 3
RMPUPDATE_FAIL_OVERLAP = 4
PSMASH_SUCCESS = 0
PSMASH_FAIL_INPUT = 1
PSMASH_FAIL_PERMISSION = 2
PSMASH_FAIL_INUSE = 3
PSMASH_FAIL_BADADDR = 4

# --- Faults of section 2.4 -----------------------------------------------------------------

# #VC error code for a C=1 access to a page whose RMP Validated bit is 0 (APM vol.2 15.36;
# reference section 2.4; the kernel's own macro name was not confirmed).
VC_PAGE_NOT_VALIDATED = 0x404
# #NPF error-code bits (arch/x86/include/asm/kvm_host.h PFERR_GUEST_*).
PFERR_GUEST_RMP_MASK = 1 << 31
PFERR_GUEST_ENC_MASK = 1 << 34
PFERR_GUEST_SIZEM_MASK = 1 << 35
PFERR_GUEST_VMPL_MASK = 1 << 36
# Host #PF error-code bit for an RMP violation (arch/x86/include/asm/trapnr.h X86_PF_RMP).
X86_PF_RMP = 1 << 31
# AMD IOMMU event types (drivers/iommu/amd/amd_iommu_types.h).
EVENT_TYPE_RMP_FAULT = 0xD
EVENT_TYPE_RMP_HW_ERR = 0xE
