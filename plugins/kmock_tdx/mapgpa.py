"""TDG.VP.VMCALL<MapGPA> as KVM runs it, without a Kernel: checks, 2 MB chunks, completion.

Mirrors arch/x86/kvm/vmx/tdx.c (6.16-6.18): tdx_map_gpa() checks the guest's R12 (GPA) and
R13 (size) and starts the first chunk; __tdx_map_gpa() fills KVM_EXIT_HYPERCALL for one
chunk; tdx_complete_vmcall_map_gpa() runs when userspace re-enters KVM_RUN. The guest's
answer is R10 (TDVMCALL status) and R11:

- KVM_HC_MAP_GPA_RANGE exits not enabled (KVM_CAP_EXIT_HYPERCALL) -> SUBFUNC_UNSUPPORTED;
- size 0 or gpa + size wraps, either end beyond MAXPHYADDR, or the range straddles the
  shared bit -> INVALID_OPERAND;
- gpa or size not 4K-aligned -> ALIGN_ERROR; each of these with R11 = the guest's gpa;
- else one exit per chunk of at most TDX_MAP_GPA_MAX_LEN bytes starting at the guest's gpa
  (chunks are not 2M-aligned): nr 12, args[0] = chunk gpa without the shared bit, args[1] =
  4K pages, args[2] = ENCRYPTED for a private gpa else DECRYPTED, ret = 0, flags = LONG_MODE;
  KVM leaves args[3..5] as they were;
- completion: ret != 0 -> INVALID_OPERAND, R11 = that chunk's gpa (shared bit included);
  then next += 2 MB; past the end -> done; else an event pending for the vCPU
  (kvm_vcpu_has_events) -> RETRY, R11 = the next gpa; else the next chunk's exit.
On success KVM writes neither R10 nor R11: R10 keeps TDX_HYPERCALL_STANDARD (0 = SUCCESS)
and R11 the leaf number TDVMCALL_MAP_GPA, which is what ``result`` reports.
"""

from typing import NamedTuple, Optional, Tuple

from kmock.uapi import kvm as K
from kmock.uapi import tdx as T

_U64 = (1 << 64) - 1
PAGE_SIZE = 4096
_PAGE_SHIFT = 12
_PAGE_MASK = PAGE_SIZE - 1
_MAX_LEN = T.TDX_MAP_GPA_MAX_LEN
_HC_MAP_GPA_RANGE = K.KVM_HC_MAP_GPA_RANGE
_ENCRYPTED, _DECRYPTED = K.KVM_MAP_GPA_RANGE_ENCRYPTED, K.KVM_MAP_GPA_RANGE_DECRYPTED
_LONG_MODE = K.KVM_EXIT_HYPERCALL_LONG_MODE
_SUCCESS, _MAP_GPA = T.TDVMCALL_STATUS_SUCCESS, T.TDVMCALL_MAP_GPA


class HypercallExit(NamedTuple):
    """What KVM writes into run->hypercall for one chunk (args[3..5] are not written)."""

    nr: int
    args: Tuple[int, int, int]
    ret: int
    flags: int


#: the nr and flags of every MapGPA exit (its ret is 0)
EXIT_NR, EXIT_FLAGS = _HC_MAP_GPA_RANGE, _LONG_MODE


class MapGpa:
    """One MapGPA TDVMCALL in flight on one vCPU.

    ``start()`` returns the first exit (or None when the call fails its checks); after the
    VMM's answer, ``complete(ret, has_events)`` returns the next exit or None. ``result`` is
    then ``(r10, r11)``. ``run(vmm)`` drives the whole exchange with a callback.
    ``begin()`` and ``answer(ret, has_events)`` are start() and complete() for KVM's own
    loop (kmock_tdx.guest): True when a chunk's exit is pending, whose ``args`` (nr
    EXIT_NR, ret 0, flags EXIT_FLAGS) are a plain tuple, without building its
    HypercallExit (``exit``).
    ``maxphyaddr`` defaults to the GPAW: KVM reports the GPAW as the TD's guest physical
    address width (tdx_read_cpuid(), CPUID 0x80000008 EAX[23:16]).
    """

    def __init__(self, gpa, size, *, gpaw, exit_enabled=True, maxphyaddr=None):
        if gpaw != 48 and gpaw != 52:
            raise ValueError(f"GPAW must be 48 or 52, got {gpaw}")
        if not 0 <= gpa <= _U64:
            raise ValueError(f"gpa {gpa:#x} is not a u64 register value")
        if not 0 <= size <= _U64:
            raise ValueError(f"size {size:#x} is not a u64 register value")
        self.gpa = gpa
        self.size = size
        self.shared_bit = 1 << (gpaw - 1)
        self.maxphyaddr = gpaw if maxphyaddr is None else maxphyaddr
        self.exit_enabled = exit_enabled
        self.next = gpa
        self.end = None
        self.result: Optional[Tuple[int, int]] = None
        #: the pending exit's args (chunk gpa without the shared bit, 4K pages,
        #: ENCRYPTED/DECRYPTED), None when no exit is pending
        self.args: Optional[Tuple[int, int, int]] = None

    @property
    def exit(self) -> Optional[HypercallExit]:
        """The pending chunk's exit, or None."""
        args = self.args
        return None if args is None else HypercallExit(EXIT_NR, args, 0, EXIT_FLAGS)

    def is_private(self, gpa):
        """vt_is_tdx_private_gpa(): the shared bit is clear."""
        return not gpa & self.shared_bit

    def _finish(self, r10, r11):
        self.result = (r10, r11)
        self.args = None
        return False

    def start(self):
        """tdx_map_gpa(): the checks, then the first chunk's exit (None if it failed)."""
        return self.exit if self.begin() else None

    def complete(self, ret, has_events=False):
        """tdx_complete_vmcall_map_gpa(): the VMM answered ``ret`` for the pending exit."""
        return self.exit if self.answer(ret, has_events) else None

    def begin(self):
        """tdx_map_gpa(): the checks, then the first chunk; True when its exit is pending."""
        if self.result is not None or self.args is not None:
            raise RuntimeError("MapGPA already started")
        gpa, size = self.gpa, self.size
        if not self.exit_enabled:
            return self._finish(T.TDVMCALL_STATUS_SUBFUNC_UNSUPPORTED, gpa)
        # the checks with few operations (C integers when compiled: mapgpa.pxd): "empty or
        # gpa + size wraps past 2**64" without computing a sum that could wrap; then
        # gpa <= last, so last >> maxphyaddr covers gpa >> maxphyaddr (not
        # kvm_vcpu_is_legal_gpa())
        if not size or size > _U64 - gpa:
            return self._finish(T.TDVMCALL_STATUS_INVALID_OPERAND, gpa)
        end = gpa + size
        last = end - 1
        shared_bit = self.shared_bit
        if last >> self.maxphyaddr or (gpa ^ last) & shared_bit:  # is_private() differs
            return self._finish(T.TDVMCALL_STATUS_INVALID_OPERAND, gpa)
        if (gpa | size) & _PAGE_MASK:
            return self._finish(T.TDVMCALL_STATUS_ALIGN_ERROR, gpa)
        self.end = end
        return self._chunk()

    def _chunk(self):
        """__tdx_map_gpa(): the exit for [next, next + min(end - next, 2 MB))."""
        nxt, end, shared_bit = self.next, self.end, self.shared_bit
        size = end - nxt
        if size > _MAX_LEN:  # (not min(): the builtin call costs more than the compare)
            size = _MAX_LEN
        shared = nxt & shared_bit  # (nxt - shared == nxt & ~bit)
        self.args = (nxt - shared, size >> _PAGE_SHIFT, _DECRYPTED if shared else _ENCRYPTED)
        return True

    def answer(self, ret, has_events=False):
        """tdx_complete_vmcall_map_gpa(): the VMM answered ``ret`` for the pending exit;
        True when the next chunk's exit is pending."""
        if self.args is None:
            raise RuntimeError("no MapGPA exit is pending")
        if ret and ret & _U64:  # (0, the common answer: no big-int operation)
            return self._finish(T.TDVMCALL_STATUS_INVALID_OPERAND, self.next)
        self.next += _MAX_LEN
        if self.next >= self.end:
            return self._finish(_SUCCESS, _MAP_GPA)
        if has_events:
            return self._finish(T.TDVMCALL_STATUS_RETRY, self.next)
        return self._chunk()

    def run(self, vmm, has_events=lambda: False):
        """Drive the call: ``vmm(exit) -> ret`` per chunk; returns ``(r10, r11)``."""
        ex = self.start()
        while ex is not None:
            ex = self.complete(vmm(ex), has_events())
        return self.result
