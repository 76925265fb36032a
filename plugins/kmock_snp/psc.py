"""Guest page-state changes (PSC) as KVM turns them into KVM_HC_MAP_GPA_RANGE exits.

Pure logic, independent of kmock's Kernel: the input is the guest's request (a GHCB MSR
value, or the PSC buffer of an SVM_VMGEXIT_PSC), the output is the hypercall exits KVM makes
and, given the VMM's ``run->hypercall.ret`` answers, the value the guest reads back.
Mirrors arch/x86/kvm/svm/sev.c: snp_begin_psc_msr / snp_complete_psc_msr for the MSR
protocol, snp_begin_psc / snp_complete_one_psc / __snp_complete_one_psc for the NAE event.
The quirks of that code are kept on purpose (docs/arch/snp.md, "PSC").
"""

from typing import NamedTuple

from kmock.uapi import kvm as K
from kmock.uapi import sev as S


class HypercallExit(NamedTuple):
    """The KVM_EXIT_HYPERCALL KVM makes: ``run->hypercall.{nr, args[0..2]}``."""

    nr: int
    gpa: int
    npages: int
    attrs: int

    @property
    def private(self):
        return bool(self.attrs & K.KVM_MAP_GPA_RANGE_ENCRYPTED)


class MsrPsc(NamedTuple):
    """Outcome of one GHCB MSR protocol PSC request: ``exit`` (forward to userspace) or
    ``response`` (the GHCB MSR value the guest reads at once) or ``terminate`` (not an SNP
    guest: KVM_EXIT_SYSTEM_EVENT SEV_TERM with data[0] = the MSR)."""

    exit: "HypercallExit | None"
    response: "int | None"
    terminate: bool = False


#: (a NamedTuple's own __new__ is interpreted Python: these are built without its frame)
_tuple_new = tuple.__new__
_GFN_SHIFT, _GFN_MASK = S.GHCB_MSR_PSC_GFN_SHIFT, S.GHCB_MSR_PSC_GFN_MASK
_OP_SHIFT, _OP_MASK = S.GHCB_MSR_PSC_OP_SHIFT, S.GHCB_MSR_PSC_OP_MASK
_TO_PRIVATE = K.KVM_MAP_GPA_RANGE_ENCRYPTED | K.KVM_MAP_GPA_RANGE_PAGE_SZ_4K
_TO_SHARED = K.KVM_MAP_GPA_RANGE_DECRYPTED | K.KVM_MAP_GPA_RANGE_PAGE_SZ_4K
_PRIVATE, _SHARED = S.SNP_PAGE_STATE_PRIVATE, S.SNP_PAGE_STATE_SHARED
_MAP_GPA_RANGE = K.KVM_HC_MAP_GPA_RANGE
_RESP, _RESP_ERROR = S.GHCB_MSR_PSC_RESP, S.GHCB_MSR_PSC_RESP_ERROR


def psc_msr(ghcb_msr, *, snp=True, hypercall_exit_enabled=True):
    """snp_begin_psc_msr(): one page, one exit. A bad operation or a VMM that did not enable
    KVM_CAP_EXIT_HYPERCALL for KVM_HC_MAP_GPA_RANGE gets GHCB_MSR_PSC_RESP_ERROR."""
    if not snp:
        return MsrPsc(None, None, True)
    gfn = (ghcb_msr >> _GFN_SHIFT) & _GFN_MASK
    op = (ghcb_msr >> _OP_SHIFT) & _OP_MASK
    if op == _PRIVATE:
        attrs = _TO_PRIVATE
    elif op == _SHARED:
        attrs = _TO_SHARED
    else:
        return MsrPsc(None, _RESP_ERROR)
    if not hypercall_exit_enabled:
        return MsrPsc(None, _RESP_ERROR)
    return _tuple_new(MsrPsc, (_tuple_new(HypercallExit, (_MAP_GPA_RANGE, gfn << 12, 1, attrs)),
                               None, False))


def psc_msr_complete(ret):
    """snp_complete_psc_msr(): the GHCB MSR value after the VMM answered ``ret``."""
    return _RESP_ERROR if ret else _RESP


def psc_desc(entries, cur_entry=0, end_entry=None):
    """Build a guest PSC buffer from ``(gfn, operation, pagesize[, cur_page])`` tuples;
    ``end_entry`` defaults to the last entry (the header holds the index, not a count)."""
    desc = S.snp_psc_desc()
    if len(entries) > S.VMGEXIT_PSC_MAX_COUNT:
        raise ValueError(f"a PSC buffer holds at most {S.VMGEXIT_PSC_MAX_COUNT} entries")
    for i, item in enumerate(entries):
        gfn, op, size = item[:3]
        e = desc.entries[i]
        e.gfn, e.operation, e.pagesize = gfn, op, size
        e.cur_page = item[3] if len(item) > 3 else 0
    desc.hdr.cur_entry = cur_entry
    desc.hdr.end_entry = (len(entries) - 1 if entries else 0) if end_entry is None else end_entry
    return desc


class NaePsc:
    """One SVM_VMGEXIT_PSC in flight. ``desc`` (an snp_psc_desc) is the guest's buffer and
    is updated as KVM updates it (hdr.cur_entry, entries[].cur_page).

    ``exit`` is the pending HypercallExit or None; once ``exit`` is None, ``result`` is the
    sw_exit_info_2 the guest reads: 0, VMGEXIT_PSC_ERROR_GENERIC (VMM answered ret != 0, or
    hypercall exits not enabled), _INVALID_HDR (end_entry >= 253) or _INVALID_ENTRY
    (cur_page beyond the entry, or gfn not aligned to its page size)."""

    def __init__(self, desc, *, hypercall_exit_enabled=True):
        self.desc = desc
        self.exit = None
        self.result = None
        self._idx = 0
        self._inflight = 0
        if not hypercall_exit_enabled:
            self._finish(S.VMGEXIT_PSC_ERROR_GENERIC)
        else:
            self._begin()

    @property
    def done(self):
        return self.exit is None

    def complete(self, ret):
        """snp_complete_one_psc(): the VMM answered the pending exit with ``ret``."""
        if self.exit is None:
            raise RuntimeError("no PSC exit is pending")
        if ret:
            self._finish(S.VMGEXIT_PSC_ERROR_GENERIC)
            return
        self._complete_inflight()
        self._begin()

    def run(self, answer):
        """Drive to the end: ``answer(exit) -> ret`` for each exit. Returns (exits, result)."""
        exits = []
        while self.exit is not None:
            exits.append(self.exit)
            self.complete(answer(self.exit))
        return exits, self.result

    def _finish(self, code):
        self.exit = None
        self._inflight = 0
        self._idx = 0
        self.result = code

    def _complete_inflight(self):
        """__snp_complete_one_psc(): mark the in-flight entries done, advance cur_entry."""
        entries = self.desc.entries
        idx = self._idx
        while self._inflight:
            entries[idx].cur_page = 512 if entries[idx].pagesize else 1
            self._inflight -= 1
            idx += 1
        self.desc.hdr.cur_entry = idx

    def _begin(self):
        """snp_begin_psc() from its next_range label."""
        hdr, entries = self.desc.hdr, self.desc.entries
        while True:
            idx_start, idx_end = hdr.cur_entry, hdr.end_entry
            if idx_end >= S.VMGEXIT_PSC_MAX_COUNT:
                return self._finish(S.VMGEXIT_PSC_ERROR_INVALID_HDR)
            idx = idx_start
            while idx <= idx_end:
                start = entries[idx]
                gfn, huge = start.gfn, bool(start.pagesize)
                npages = 512 if huge else 1
                if start.cur_page > npages or gfn % npages:
                    return self._finish(S.VMGEXIT_PSC_ERROR_INVALID_ENTRY)
                if start.cur_page:
                    # a partly done 2M entry: the rest is handled as 4K pages
                    npages -= start.cur_page
                    gfn += start.cur_page
                    huge = False
                if npages:
                    break
                idx += 1
                hdr.cur_entry += 1
            if idx > idx_end:
                return self._finish(0)
            self._idx = idx
            self._inflight = 1
            # Coalesce following entries of the same operation. KVM compares with the
            # *original* gfn of the first entry plus the running count (kept as is).
            start_gfn, op, start_2m = start.gfn, start.operation, start.pagesize
            nxt = idx + 1
            while nxt <= idx_end:
                e = entries[nxt]
                if e.operation != op or e.gfn != start_gfn + npages or e.cur_page or bool(e.pagesize) != huge:
                    break
                self._inflight += 1
                npages += 512 if huge else 1
                nxt += 1
            if op in (S.VMGEXIT_PSC_OP_PRIVATE, S.VMGEXIT_PSC_OP_SHARED):
                private = op == S.VMGEXIT_PSC_OP_PRIVATE
                attrs = K.KVM_MAP_GPA_RANGE_ENCRYPTED if private else K.KVM_MAP_GPA_RANGE_DECRYPTED
                # the size flag follows the first entry's pagesize, even when partly done
                attrs |= K.KVM_MAP_GPA_RANGE_PAGE_SZ_2M if start_2m else K.KVM_MAP_GPA_RANGE_PAGE_SZ_4K
                self.exit = HypercallExit(K.KVM_HC_MAP_GPA_RANGE, gfn << 12, npages, attrs)
                return None
            # PSMASH, UNSMASH and any other operation: treated as done, no exit
            self._complete_inflight()
