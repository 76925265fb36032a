"""kmock.uapi.sev against reference/arch-tdx-snp-cca.md section 2 and the header sources.

Each row names where its literal comes from: "§2.x" is the reference, a path is the kernel
header read for docs/arch/snp.md (arch/x86/include/uapi/asm/kvm.h = "asm/kvm.h",
include/uapi/linux/psp-sev.h = "psp-sev.h", arch/x86/include/asm/sev-common.h =
"sev-common.h", arch/x86/include/asm/sev.h = "asm/sev.h").
"""

import ctypes

import pytest

from kmock.uapi import sev

from ._layout import field, ioc

# (source, name, value)
NUMBERS = [
    ("§0 / asm/kvm.h", "KVM_X86_SEV_VM", 2),
    ("§0 / asm/kvm.h", "KVM_X86_SEV_ES_VM", 3),
    ("§0 / asm/kvm.h", "KVM_X86_SNP_VM", 4),
    ("§0", "KVM_MEMORY_ENCRYPT_OP", ioc(3, 0xAE, 0xBA, 8)),
    ("asm/kvm.h enum sev_cmd_id", "KVM_SEV_INIT", 0),
    ("asm/kvm.h enum sev_cmd_id", "KVM_SEV_ES_INIT", 1),
    ("§2.1 (LAUNCH_FINISH 7)", "KVM_SEV_LAUNCH_FINISH", 7),
    ("asm/kvm.h enum sev_cmd_id", "KVM_SEV_GUEST_STATUS", 16),
    ("§2.1 (SEND_CANCEL 21)", "KVM_SEV_SEND_CANCEL", 21),
    ("§2.1 table", "KVM_SEV_INIT2", 22),
    ("§2.1 table", "KVM_SEV_SNP_LAUNCH_START", 100),
    ("§2.1 table", "KVM_SEV_SNP_LAUNCH_UPDATE", 101),
    ("§2.1 table", "KVM_SEV_SNP_LAUNCH_FINISH", 102),
    ("§2.1 table", "KVM_SEV_SNP_PAGE_TYPE_NORMAL", 1),
    ("§2.1 table", "KVM_SEV_SNP_PAGE_TYPE_ZERO", 3),
    ("§2.1 table", "KVM_SEV_SNP_PAGE_TYPE_UNMEASURED", 4),
    ("§2.1 table", "KVM_SEV_SNP_PAGE_TYPE_SECRETS", 5),
    ("§2.1 table", "KVM_SEV_SNP_PAGE_TYPE_CPUID", 6),
    ("§2.1 table (VMSA 2, internal)", "SNP_PAGE_TYPE_VMSA", 2),
    ("asm/kvm.h", "KVM_SEV_SNP_ID_BLOCK_SIZE", 96),
    ("asm/kvm.h", "KVM_SEV_SNP_ID_AUTH_SIZE", 4096),
    ("asm/kvm.h", "KVM_SEV_SNP_FINISH_DATA_SIZE", 32),
    ("§0 system events", "KVM_SYSTEM_EVENT_SEV_TERM", 6),
    ("svm/sev.c SNP_POLICY_MASK_SMT", "SNP_POLICY_MASK_SMT", 1 << 16),
    ("§2.1 (must-be-one bit 17)", "SNP_POLICY_MASK_RSVD_MBO", 1 << 17),
    ("svm/sev.c", "SNP_POLICY_MASK_DEBUG", 1 << 19),
    ("svm/sev.c", "SNP_POLICY_MASK_SINGLE_SOCKET", 1 << 20),
    ("svm/sev.c", "SNP_POLICY_MASK_VALID", 0x1BFFFF),
    # psp-sev.h sev_ret_code
    ("psp-sev.h", "SEV_RET_NO_FW_CALL", -1),
    ("psp-sev.h", "SEV_RET_SUCCESS", 0),
    ("§2.1 fw codes", "SEV_RET_INVALID_PLATFORM_STATE", 1),
    ("§2.1 fw codes", "SEV_RET_INVALID_GUEST_STATE", 2),
    ("psp-sev.h", "SEV_RET_INVALID_CONFIG", 3),
    ("psp-sev.h", "SEV_RET_INVALID_LEN", 4),
    ("psp-sev.h", "SEV_RET_POLICY_FAILURE", 7),
    ("§2.1 fw codes", "SEV_RET_INVALID_ADDRESS", 9),
    ("psp-sev.h", "SEV_RET_INVALID_ASID", 13),
    ("psp-sev.h", "SEV_RET_INVALID_GUEST", 16),
    ("psp-sev.h", "SEV_RET_UNSUPPORTED", 21),
    ("§2.1 fw codes", "SEV_RET_INVALID_PARAM", 0x16),
    ("psp-sev.h", "SEV_RET_RESOURCE_LIMIT", 23),
    ("psp-sev.h", "SEV_RET_SECURE_DATA_INVALID", 24),
    ("§2.1 fw codes", "SEV_RET_INVALID_PAGE_SIZE", 0x19),
    ("§2.1 fw codes", "SEV_RET_INVALID_PAGE_STATE", 0x1A),
    ("psp-sev.h", "SEV_RET_INVALID_PAGE_OWNER", 0x1C),
    ("psp-sev.h", "SEV_RET_INVALID_KEY", 0x27),
    ("psp-sev.h", "SEV_IOC_TYPE", ord("S")),
    ("psp-sev.h", "SEV_ISSUE_CMD", ioc(3, ord("S"), 0, 16)),
    # GHCB MSR protocol
    ("§2.2 MSR protocol", "GHCB_MSR_PSC_REQ", 0x014),
    ("§2.2 MSR protocol", "GHCB_MSR_PSC_RESP", 0x015),
    ("§2.2 MSR protocol", "GHCB_MSR_PSC_RESP_ERROR", (1 << 63) | 0x015),
    ("§2.2 (1 = PRIVATE)", "SNP_PAGE_STATE_PRIVATE", 1),
    ("§2.2 (2 = SHARED)", "SNP_PAGE_STATE_SHARED", 2),
    ("sev-common.h", "GHCB_MSR_TERM_REQ", 0x100),
    ("sev-common.h", "GHCB_MSR_INFO_MASK", 0xFFF),
    # NAE PSC
    ("§2.2 NAE", "SVM_VMGEXIT_PSC", 0x80000010),
    ("§2.2 (at most 253 entries) / sev-common.h", "VMGEXIT_PSC_MAX_COUNT", 253),
    ("sev-common.h (Linux guest buffer)", "VMGEXIT_PSC_MAX_ENTRY", 64),
    ("§2.2 NAE", "VMGEXIT_PSC_ERROR_GENERIC", 0x100 << 32),
    ("§2.2 NAE", "VMGEXIT_PSC_ERROR_INVALID_HDR", (1 << 32) | 1),
    ("§2.2 NAE", "VMGEXIT_PSC_ERROR_INVALID_ENTRY", (1 << 32) | 2),
    ("§2.2 NAE ops", "VMGEXIT_PSC_OP_PRIVATE", 1),
    ("§2.2 NAE ops", "VMGEXIT_PSC_OP_SHARED", 2),
    ("§2.2 NAE ops", "VMGEXIT_PSC_OP_PSMASH", 3),
    ("§2.2 NAE ops", "VMGEXIT_PSC_OP_UNSMASH", 4),
    # instructions
    ("§2.5", "RMP_PG_SIZE_4K", 0),
    ("§2.5", "RMP_PG_SIZE_2M", 1),
    ("asm/sev.h", "PVALIDATE_SUCCESS", 0),
    ("§2.3 PVALIDATE", "PVALIDATE_FAIL_INPUT", 1),
    ("§2.3 PVALIDATE", "PVALIDATE_FAIL_SIZEMISMATCH", 6),
    ("§2.3 PVALIDATE (Linux 255)", "PVALIDATE_FAIL_NOUPDATE", 255),
    ("§2.3 RMPUPDATE", "RMPUPDATE_FAIL_INPUT", 1),
    ("§2.3 RMPUPDATE", "RMPUPDATE_FAIL_PERMISSION", 2),
    ("§2.3 RMPUPDATE", "RMPUPDATE_FAIL_INUSE", 3),
    ("§2.3 RMPUPDATE", "RMPUPDATE_FAIL_OVERLAP", 4),
    ("§2.3 PSMASH", "PSMASH_FAIL_INPUT", 1),
    ("§2.3 PSMASH", "PSMASH_FAIL_PERMISSION", 2),
    ("§2.3 PSMASH", "PSMASH_FAIL_INUSE", 3),
    ("§2.3 PSMASH", "PSMASH_FAIL_BADADDR", 4),
    # faults
    ("§2.4 (#VC PAGE_NOT_VALIDATED)", "VC_PAGE_NOT_VALIDATED", 0x404),
    ("§2.4 (NPF bit 31 RMP)", "PFERR_GUEST_RMP_MASK", 1 << 31),
    ("§0 / §2.4 (bit 34 ENC)", "PFERR_GUEST_ENC_MASK", 1 << 34),
    ("§2.4 (bit 35 SIZEM)", "PFERR_GUEST_SIZEM_MASK", 1 << 35),
    ("§2.4 (bit 36 VMPL)", "PFERR_GUEST_VMPL_MASK", 1 << 36),
    ("§2.4 (#PF bit 31 X86_PF_RMP)", "X86_PF_RMP", 1 << 31),
    ("§2.4 (EVENT_TYPE_RMP_FAULT)", "EVENT_TYPE_RMP_FAULT", 0xD),
    ("§2.4 (RMP_HW_ERR)", "EVENT_TYPE_RMP_HW_ERR", 0xE),
]


@pytest.mark.parametrize("source,name,value", NUMBERS, ids=[r[1] for r in NUMBERS])
def test_number(source, name, value):
    assert getattr(sev, name) == value, source


# (source, struct, size, {field: (offset, size)})
LAYOUTS = [
    (
        "§2.1 kvm_sev_cmd",
        "kvm_sev_cmd",
        24,
        {"id": (0, 4), "pad0": (4, 4), "data": (8, 8), "error": (16, 4), "sev_fd": (20, 4)},
    ),
    (
        "§2.1 kvm_sev_init",
        "kvm_sev_init",
        48,
        {
            "vmsa_features": (0, 8),
            "flags": (8, 4),
            "ghcb_version": (12, 2),
            "pad1": (14, 2),
            "pad2": (16, 32),
        },
    ),
    (
        "§2.1 kvm_sev_snp_launch_start",
        "kvm_sev_snp_launch_start",
        64,
        {"policy": (0, 8), "gosvw": (8, 16), "flags": (24, 2), "pad0": (26, 6), "pad1": (32, 32)},
    ),
    (
        "§2.1 kvm_sev_snp_launch_update",
        "kvm_sev_snp_launch_update",
        64,
        {
            "gfn_start": (0, 8),
            "uaddr": (8, 8),
            "len": (16, 8),
            "type": (24, 1),
            "pad0": (25, 1),
            "flags": (26, 2),
            "pad1": (28, 4),
            "pad2": (32, 32),
        },
    ),
    (
        "§2.1 kvm_sev_snp_launch_finish",
        "kvm_sev_snp_launch_finish",
        88,
        {
            "id_block_uaddr": (0, 8),
            "id_auth_uaddr": (8, 8),
            "id_block_en": (16, 1),
            "auth_key_en": (17, 1),
            "vcek_disabled": (18, 1),
            "host_data": (19, 32),
            "pad0": (51, 3),
            "flags": (54, 2),
            "pad1": (56, 32),
        },
    ),
    (
        "psp-sev.h sev_issue_cmd (__packed)",
        "sev_issue_cmd",
        16,
        {"cmd": (0, 4), "data": (4, 8), "error": (12, 4)},
    ),
    (
        "§2.2 psc_hdr",
        "psc_hdr",
        8,
        {"cur_entry": (0, 2), "end_entry": (2, 2), "reserved": (4, 4)},
    ),
    ("§2.2 psc_hdr + 253 entries", "snp_psc_desc", 8 + 253 * 8, {"hdr": (0, 8), "entries": (8, 253 * 8)}),
]


@pytest.mark.parametrize("source,name,size,fields", LAYOUTS, ids=[r[1] for r in LAYOUTS])
def test_layout(source, name, size, fields):
    cls = getattr(sev, name)
    assert ctypes.sizeof(cls) == size, source
    for fname, expected in fields.items():
        assert field(cls, fname) == expected, f"{source}: {fname}"


def test_psc_entry_bit_layout():
    # §2.2: u64 cur_page:12, gfn:40, operation:4, pagesize:1, reserved:7 (8 bytes, LSB first)
    assert ctypes.sizeof(sev.psc_entry) == 8
    e = sev.psc_entry(cur_page=0xABC, gfn=(1 << 40) - 1, operation=2, pagesize=1, reserved=0)
    raw = int.from_bytes(bytes(e), "little")
    assert raw & 0xFFF == 0xABC
    assert (raw >> 12) & ((1 << 40) - 1) == (1 << 40) - 1
    assert (raw >> 52) & 0xF == 2
    assert (raw >> 56) & 1 == 1
    assert raw >> 57 == 0
    raw = 0x5 | (0x1234 << 12) | (1 << 52) | (1 << 56)
    back = sev.psc_entry.from_buffer_copy(raw.to_bytes(8, "little"))
    assert (back.cur_page, back.gfn, back.operation, back.pagesize) == (5, 0x1234, 1, 1)


def test_msr_encoders():
    # sev-common.h GHCB_MSR_PSC_REQ_GFN: op in [55:52], gfn in [51:12], 0x014 in [11:0]
    v = sev.ghcb_msr_psc_req(0x12345, sev.SNP_PAGE_STATE_SHARED)
    assert v == (2 << 52) | (0x12345 << 12) | 0x014
    # GHCB_SEV_TERM_REASON: set in [15:12], code in [23:16], GHCB_MSR_TERM_REQ in [11:0]
    assert sev.ghcb_sev_term_reason(1, 2) == (1 << 12) | (2 << 16) | 0x100
