"""Decode a TDX module status (SEAMCALL/TDCALL RAX, ``kvm_tdx_cmd.hw_error``) for people.

A status is ``class:number`` in bits 63:32 and details in bits 31:0, usually the id of the
operand the error is about (tdx_errno.h TDX_SEAMCALL_STATUS_MASK, TDX_OPERAND_ID_*).
Bit 63 set means error, bit 62 non-recoverable; 0x00000B0A..., 0x00000B07... are warnings
(reference §1.3). Used for the explanation in violation records.
"""

from typing import NamedTuple

from kmock.uapi import tdx as T

_NAMES = {
    getattr(T, n): n
    for n in dir(T)
    if n.startswith("TDX_")
    and isinstance(getattr(T, n), int)
    and n not in ("TDX_SEAMCALL_STATUS_MASK", "TDX_SUCCESS")
    and not n.startswith(
        ("TDX_OPERAND_ID_", "TDX_PS_", "TDX_TD_ATTR", "TDX_MAP_GPA", "TDX_EXTENDMR", "TDX_HYPERCALL")
    )
}
_NAMES[T.TDX_SUCCESS] = "TDX_SUCCESS"

_OPERANDS = {
    T.TDX_OPERAND_ID_RAX: "RAX",
    T.TDX_OPERAND_ID_RCX: "RCX (the GPA and level)",
    T.TDX_OPERAND_ID_RDX: "RDX",
    T.TDX_OPERAND_ID_TDR: "the TDR",
    T.TDX_OPERAND_ID_SEPT: "the Secure-EPT",
    T.TDX_OPERAND_ID_TD_EPOCH: "the TD epoch",
}

_WHY = {
    "TDX_SUCCESS": "the operation completed",
    "TDX_OPERAND_INVALID": "an operand is not valid (alignment, level or reserved bits)",
    "TDX_OPERAND_BUSY": "another SEAMCALL or TD entry holds the resource; retry",
    "TDX_PREVIOUS_TLB_EPOCH_BUSY": "vCPUs still run in the previous TLB epoch",
    "TDX_OP_STATE_INCORRECT": "the TD is not in a state that allows this operation",
    "TDX_EPT_WALK_FAILED": "the Secure-EPT walk stopped above the requested level "
    "(a missing S-EPT page, or a larger leaf)",
    "TDX_EPT_ENTRY_STATE_INCORRECT": "the Secure-EPT entry is not in a state this operation allows",
    "TDX_GPA_RANGE_NOT_BLOCKED": "the page must be blocked (TDH.MEM.RANGE.BLOCK) first",
    "TDX_GPA_RANGE_ALREADY_BLOCKED": "the entry is already blocked",
    "TDX_TLB_TRACKING_NOT_DONE": "TDH.MEM.TRACK (and a kick of every vCPU) must follow the block",
    "TDX_EPT_INVALID_PROMOTE_CONDITIONS": "the 512 children are not leaves of one state over "
    "contiguous, aligned frames",
    "TDX_PAGE_ALREADY_ACCEPTED": "the page is already accepted (guest-accessible)",
    "TDX_PAGE_SIZE_MISMATCH": "the page is mapped at another size than requested",
    "TDX_GPA_RANGE_BLOCKED": "a blocked entry is on the way",
}


class TdxStatus(NamedTuple):
    """A decoded TDX status: ``TdxStatus.decode(code)``; ``str()`` gives an explanation."""

    code: int
    name: str
    operand: int
    error: bool
    non_recoverable: bool

    @classmethod
    def decode(cls, code):
        base = code & T.TDX_SEAMCALL_STATUS_MASK
        name = _NAMES.get(base, f"TDX status {base >> 32:#010x}")
        return cls(code, name, code & 0xFFFFFFFF, bool(code >> 63), bool((code >> 62) & 1))

    @property
    def operand_name(self):
        return _OPERANDS.get(self.operand, f"operand {self.operand:#x}")

    def explain(self):
        """One line: name, operand and why, e.g. for a violation record."""
        text = f"{self.name} ({self.code:#018x})"
        if self.code & 0xFFFFFFFF:
            text += f" about {self.operand_name}"
        why = _WHY.get(self.name)
        return f"{text}: {why}" if why else text

    def __str__(self):
        return self.explain()
