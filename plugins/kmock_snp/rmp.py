"""The SEV-SNP Reverse Map Table: one entry per 4K host frame, keyed by pfn as hardware keys it.

Fields (reference arch-tdx-snp-cca.md §2.3, raw layout of arch/x86/virt/svm/sev.c struct
rmpentry_raw): assigned, pagesize (4K/2M), immutable, gpa, asid, vmsa, validated. Owners
(APM Table 15-35): hypervisor (assigned 0), guest (assigned, ASID != 0), firmware (assigned,
ASID 0, immutable). An assigned, immutable entry with a guest ASID is the SNP firmware ABI's
"pre-guest" page: a launch page between rmp_make_private(immutable) and SNP_LAUNCH_UPDATE.

Storage: one kmock.mm.RangeMap of packed u64 values. The GPA is stored as the offset
``gfn - pfn`` so that a contiguous assignment stays one run. A hypervisor-owned entry is
stored as 0 whatever RMPUPDATE wrote into its other fields (kmock's choice: no KVM path
reads gpa/asid/pagesize of an unassigned entry), so "assigned" is "value != 0" and the
host/DMA checks are single find_not() calls. A 2M entry is stored on all 512 frames of its
aligned block with the pagesize bit set: every operation keeps a 2M entry uniform.

Every operation works on ranges of frames (runs of equal values), never per page.
Instruction return codes come from arch/x86/include/asm/sev.h; the rules that decide them
are the APM's (read second-hand) and are marked in docs/arch/snp.md.
"""

import errno
from typing import NamedTuple

from kmock.mm import RangeMap
from kmock.uapi import sev as S

PAGE_SHIFT = 12
PAGES_PER_2M = 512
MAX_ASID = (1 << 10) - 1  # rmpentry_raw.asid:10
MAX_GFN = (1 << 39) - 1  # rmpentry_raw.gpa:39 holds GPA bits 50:12

_ASSIGNED = 1 << 0
_PAGESIZE = 1 << 1
_IMMUTABLE = 1 << 2
_VMSA = 1 << 3
_VALIDATED = 1 << 4
_ASID_SHIFT = 5
_DELTA_SHIFT = 16
_DELTA_BITS = 48
_DELTA_MASK = (1 << _DELTA_BITS) - 1
_FIELDS_MASK = (1 << _DELTA_SHIFT) - 1

HYPERVISOR = "hypervisor"
GUEST = "guest"
PRE_GUEST = "pre-guest"
FIRMWARE = "firmware"

X86_PF_WRITE = 1 << 1  # arch/x86/include/asm/trap_pf.h


def _pack(assigned, pagesize, immutable, vmsa, validated, asid, gfn, pfn):
    if not assigned:
        return 0
    delta = (gfn - pfn) & _DELTA_MASK
    return (
        _ASSIGNED
        | (_PAGESIZE if pagesize else 0)
        | (_IMMUTABLE if immutable else 0)
        | (_VMSA if vmsa else 0)
        | (_VALIDATED if validated else 0)
        | (asid << _ASID_SHIFT)
        | (delta << _DELTA_SHIFT)
    )


def _gfn(value, pfn):
    delta = value >> _DELTA_SHIFT
    if delta >> (_DELTA_BITS - 1):
        delta -= 1 << _DELTA_BITS
    return pfn + delta


#: (module constants: PVALIDATE reads them on every call)
_PG_4K, _PG_2M = S.RMP_PG_SIZE_4K, S.RMP_PG_SIZE_2M
_SUCCESS, _NOUPDATE = S.PVALIDATE_SUCCESS, S.PVALIDATE_FAIL_NOUPDATE


class RmpEntry(NamedTuple):
    """One frame's RMP entry, as RMPREAD would show it (plus kernel's leak bookkeeping)."""

    pfn: int
    assigned: bool
    pagesize: int  # RMP_PG_SIZE_4K / RMP_PG_SIZE_2M
    immutable: bool
    gpa: int
    asid: int
    vmsa: bool
    validated: bool
    leaked: bool = False

    @property
    def owner(self):
        if not self.assigned:
            return HYPERVISOR
        if self.asid == 0:
            return FIRMWARE
        return PRE_GUEST if self.immutable else GUEST

    def __str__(self):
        if not self.assigned:
            text = f"RMP[pfn {self.pfn:#x}]: hypervisor-owned (shared)"
        else:
            size = "2M" if self.pagesize == S.RMP_PG_SIZE_2M else "4K"
            flags = [size, "validated" if self.validated else "not validated"]
            if self.immutable:
                flags.append("immutable")
            if self.vmsa:
                flags.append("vmsa")
            owner = f"{self.owner}-owned asid {self.asid} gpa {self.gpa:#x}"
            text = f"RMP[pfn {self.pfn:#x}]: {owner} " + " ".join(flags)
        return text + (" (leaked)" if self.leaked else "")

    def __repr__(self):
        return f"<{self}>"


class RmpRun(NamedTuple):
    """Frames [start, end) with equal entries; frame start + i maps gpa entry.gpa + i * 4096."""

    start: int
    end: int
    entry: RmpEntry


class Fault(NamedTuple):
    """What an RMP check refused: ``kind`` is "npf", "vc", "rmp_pf" or "iommu"; ``code`` is
    the NPF/#PF error code, the #VC code or the IOMMU event type."""

    kind: str
    code: int
    pfn: int
    entry: RmpEntry
    reason: str

    def __str__(self):
        return f"{self.kind} {self.code:#x} at pfn {self.pfn:#x}: {self.reason}; {self.entry}"


#: op -> (kernel.faults point, errno, the instruction's failure code when it fires)
_FAULT_POINTS = {
    "rmpupdate": ("snp.rmpupdate", errno.EFAULT, S.RMPUPDATE_FAIL_PERMISSION),
    "psmash": ("snp.psmash", errno.EFAULT, S.PSMASH_FAIL_INUSE),
}


class Rmp:
    """The RMP of ``nframes`` host frames, all hypervisor-owned at start."""

    def __init__(self, nframes, *, shared_read_checked=False, dma_read_checked=True, faults=None):
        self._map = RangeMap(nframes, 0)
        #: kernel.faults (points "snp.rmpupdate", "snp.psmash"), or None
        self.faults = faults
        self._leaked = RangeMap(nframes, 0)
        self._n = nframes
        self._inject = {}
        # APM checks host and guest C=0 *writes*; whether reads are checked is [U]
        # (reference §2.4): guest C=0 reads pass, DMA reads are blocked by default.
        self.shared_read_checked = shared_read_checked
        self.dma_read_checked = dma_read_checked

    # -- queries ----------------------------------------------------------------------
    @property
    def nframes(self):
        return self._n

    def _entry(self, pfn, value):
        leaked = bool(self._leaked.get(pfn))
        if not value & _ASSIGNED:
            return RmpEntry(pfn, False, S.RMP_PG_SIZE_4K, False, 0, 0, False, False, leaked)
        return RmpEntry(
            pfn,
            True,
            S.RMP_PG_SIZE_2M if value & _PAGESIZE else S.RMP_PG_SIZE_4K,
            bool(value & _IMMUTABLE),
            _gfn(value, pfn) << PAGE_SHIFT,
            (value >> _ASID_SHIFT) & MAX_ASID,
            bool(value & _VMSA),
            bool(value & _VALIDATED),
            leaked,
        )

    def entry(self, pfn):
        """The RMP entry of one frame (IndexError outside the table)."""
        return self._entry(pfn, self._map.get(pfn))

    def runs(self, start=0, end=None):
        """Runs of equal entries over [start, end), for snapshots and explanations."""
        for s, e, v in self._map.ranges(start, end):
            yield RmpRun(s, e, self._entry(s, v))

    def lookup(self, pfn):
        """snp_lookup_rmpentry(): (assigned, level) with level from the 2M-aligned entry."""
        value = self._map.get(pfn)
        return bool(value & _ASSIGNED), S.RMP_PG_SIZE_2M if value & _PAGESIZE else S.RMP_PG_SIZE_4K

    def snp_leak_pages(self, pfn, npages):
        """snp_leak_pages(): frames the host can never use again (kept in their state)."""
        self._leaked.set(pfn, pfn + npages, 1)

    def leaked_count(self):
        return self._leaked.count(1)

    def snapshot(self):
        """An independent copy of the table's state (for rollback or comparison)."""
        return self._map.copy(), self._leaked.copy()

    def restore(self, snap):
        self._map, self._leaked = snap[0].copy(), snap[1].copy()

    def fail_next(self, op, code, after=0):
        """Make the ``after``-th next ``op`` ("rmpupdate", "psmash", "fw") fail with
        ``code`` (fail-nth; 0 = the next one)."""
        self._inject.setdefault(op, []).append([code, after])

    def _injected(self, op):
        codes = self._inject.get(op)
        if not codes:
            if self.faults is not None and op in _FAULT_POINTS:
                point, err, code = _FAULT_POINTS[op]
                if self.faults.should_fail(point, err):
                    return code
            return 0
        if codes[0][1]:
            codes[0][1] -= 1
            return 0
        return codes.pop(0)[0]

    def _in_table(self, pfn, npages=1):
        return 0 <= pfn and npages >= 0 and pfn + npages <= self._n

    def _first_with(self, start, end, bit):
        """First frame in [start, end) whose value has ``bit``, or -1 (per run)."""
        for s, _e, v in self._map.ranges(start, end):
            if v & bit:
                return s
        return -1

    # -- instructions -------------------------------------------------------------------
    def rmpupdate(self, pfn, *, assigned, pagesize=S.RMP_PG_SIZE_4K, immutable=False, gpa=0, asid=0):
        """RMPUPDATE of the entry at ``pfn`` (4K, or the 2M entry of an aligned block).

        Writes the new state and always clears Validated (and VMSA). Returns the
        instruction's code: 0, FAIL_INPUT, FAIL_PERMISSION (immutable entry) or
        FAIL_OVERLAP (a 4K update inside an assigned 2M entry, or a 2M update over
        assigned 4K entries)."""
        npages = PAGES_PER_2M if pagesize == S.RMP_PG_SIZE_2M else 1
        gfn = gpa >> PAGE_SHIFT
        if (
            pagesize not in (S.RMP_PG_SIZE_4K, S.RMP_PG_SIZE_2M)
            or not self._in_table(pfn, npages)
            or pfn % npages
            or not 0 <= asid <= MAX_ASID
            or not 0 <= gfn <= MAX_GFN
            or (assigned and gfn % npages)
        ):
            return S.RMPUPDATE_FAIL_INPUT
        injected = self._injected("rmpupdate")
        if injected:
            return injected
        end = pfn + npages
        block = pfn - pfn % PAGES_PER_2M
        current = self._map.get(pfn)
        if self._first_with(pfn, end, _IMMUTABLE) != -1:
            return S.RMPUPDATE_FAIL_PERMISSION
        if npages == 1 and current & _PAGESIZE:
            return S.RMPUPDATE_FAIL_OVERLAP
        if npages > 1 and assigned and not current & _PAGESIZE and self._map.find_not(block, end, 0) != -1:
            return S.RMPUPDATE_FAIL_OVERLAP
        value = _pack(assigned, npages > 1, immutable, False, False, asid, gfn, pfn)
        self._map.set(pfn, end, value)
        return S.RMPUPDATE_SUCCESS

    def psmash(self, pfn):
        """PSMASH: split the assigned 2M entry at aligned ``pfn`` into 512 4K entries that keep
        every field, Validated included. FAIL_INPUT for an unaligned pfn or a block that is
        not an assigned 2M entry; FAIL_BADADDR outside the table."""
        if not self._in_table(pfn, PAGES_PER_2M):
            return S.PSMASH_FAIL_BADADDR
        if pfn % PAGES_PER_2M:
            return S.PSMASH_FAIL_INPUT
        value = self._map.get(pfn)
        if not value & _PAGESIZE:
            return S.PSMASH_FAIL_INPUT
        injected = self._injected("psmash")
        if injected:
            return injected
        self._map.set(pfn, pfn + PAGES_PER_2M, value & ~_PAGESIZE)
        return S.PSMASH_SUCCESS

    def _guest_owns(self, pfn, value, gpa, asid):
        """The RMP ownership check of a guest C=1 access or PVALIDATE; a reason or ''."""
        if not value & _ASSIGNED:
            return "page is not assigned to the guest"
        if value & _IMMUTABLE:
            return "page is immutable (firmware or launch state)"
        entry_asid = (value >> _ASID_SHIFT) & MAX_ASID
        if entry_asid != asid:
            return f"page belongs to asid {entry_asid}, not {asid}"
        # _gfn(value, pfn), inlined (hot: every PVALIDATE and private access)
        delta = value >> _DELTA_SHIFT
        if delta >> (_DELTA_BITS - 1):
            delta -= 1 << _DELTA_BITS
        if pfn + delta != gpa >> PAGE_SHIFT:
            return f"RMP gpa {(pfn + delta) << PAGE_SHIFT:#x} differs from the access gpa {gpa:#x}"
        return ""

    def pvalidate(self, pfn, gpa, asid, validate, pagesize=S.RMP_PG_SIZE_4K):
        """PVALIDATE by the guest of ``asid`` on ``gpa`` backed by host frame ``pfn``.

        Returns PVALIDATE_SUCCESS, PVALIDATE_FAIL_NOUPDATE (255: already in that state),
        PVALIDATE_FAIL_SIZEMISMATCH (2M request on 4K entries) or PVALIDATE_FAIL_INPUT,
        or a Fault("npf") for an entry the guest does not own, or for a 4K request on a 2M
        entry (PFERR_GUEST_SIZEM: KVM PSMASHes and the guest retries)."""
        npages = PAGES_PER_2M if pagesize == _PG_2M else 1
        if (
            (pagesize != _PG_4K and pagesize != _PG_2M)
            or pfn < 0 or pfn + npages > self._n  # (not self._in_table(pfn, npages), inlined)
            or gpa % (npages << PAGE_SHIFT)
            or pfn % npages
        ):
            return S.PVALIDATE_FAIL_INPUT
        value = self._map.get(pfn)
        reason = self._guest_owns(pfn, value, gpa, asid)
        if reason:
            code = S.PFERR_GUEST_RMP_MASK | S.PFERR_GUEST_ENC_MASK
            return self._npf(pfn, value, code, "PVALIDATE: " + reason)
        if npages > 1 and not value & _PAGESIZE:
            return S.PVALIDATE_FAIL_SIZEMISMATCH
        if npages == 1 and value & _PAGESIZE:
            code = S.PFERR_GUEST_RMP_MASK | S.PFERR_GUEST_ENC_MASK | S.PFERR_GUEST_SIZEM_MASK
            return self._npf(pfn, value, code, "PVALIDATE 4K on a 2M RMP entry (size mismatch)")
        if bool(value & _VALIDATED) == bool(validate):
            return _NOUPDATE
        self._map.set(pfn, pfn + npages, (value | _VALIDATED) if validate else (value & ~_VALIDATED))
        return _SUCCESS

    def _npf(self, pfn, value, code, reason):
        return Fault("npf", code, pfn, self._entry(pfn, value), reason)

    # -- firmware (SNP firmware ABI commands, as far as they touch the RMP) -----------------
    def fw_launch_update(self, pfn, vmsa=False):
        """SNP_LAUNCH_UPDATE on a pre-guest page: firmware measures it, sets Validated and
        clears immutable [U: reference §2.1 step 4]; a VMSA page also gets the VMSA bit.
        SEV_RET_INVALID_PAGE_STATE otherwise."""
        if not self._in_table(pfn):
            return S.SEV_RET_INVALID_ADDRESS
        value = self._map.get(pfn)
        if self._entry(pfn, value).owner != PRE_GUEST or value & _PAGESIZE:
            return S.SEV_RET_INVALID_PAGE_STATE
        injected = self._injected("fw")
        if injected:
            return injected
        self._map.set(pfn, pfn + 1, (value | _VALIDATED | (_VMSA if vmsa else 0)) & ~_IMMUTABLE)
        return S.SEV_RET_SUCCESS

    def fw_page_reclaim(self, pfn):
        """SNP_PAGE_RECLAIM: firmware releases an immutable (firmware or pre-guest) page so
        RMPUPDATE can make it shared [U: exact resulting state]."""
        if not self._in_table(pfn):
            return S.SEV_RET_INVALID_ADDRESS
        value = self._map.get(pfn)
        if not value & _IMMUTABLE:
            return S.SEV_RET_INVALID_PAGE_STATE
        injected = self._injected("fw")
        if injected:
            return injected
        self._map.set(pfn, pfn + 1, value & ~(_IMMUTABLE | _VALIDATED))
        return S.SEV_RET_SUCCESS

    # -- kernel wrappers (arch/x86/virt/svm/sev.c) -----------------------------------------
    def rmp_make_private(self, pfn, gpa, pagesize, asid, immutable):
        """rmp_make_private(): RMPUPDATE assigned; any failure is -EFAULT. The kernel retries
        FAIL_OVERLAP forever as a transient race; here an overlap is persistent, so it is
        reported as a failure instead of spinning (kmock choice)."""
        rc = self.rmpupdate(pfn, assigned=True, pagesize=pagesize, immutable=immutable, gpa=gpa, asid=asid)
        return -errno.EFAULT if rc else 0

    def rmp_make_shared(self, pfn, pagesize):
        """rmp_make_shared(): RMPUPDATE to hypervisor-owned (Validated lost); -EFAULT on failure."""
        rc = self.rmpupdate(pfn, assigned=False, pagesize=pagesize)
        return -errno.EFAULT if rc else 0

    def make_private_range(self, pfn, npages, gfn, asid, immutable):
        """rmp_make_private() at 4K on each frame of [pfn, pfn + npages) with gpa gfn + i,
        stopping at the first failure as the kernel's per-page loops do.
        Returns (frames done, 0 or -EFAULT)."""
        if npages <= 0:
            return 0, 0
        valid_gfns = 0 <= gfn <= MAX_GFN - npages + 1
        if not self._in_table(pfn, npages) or not 0 <= asid <= MAX_ASID or not valid_gfns:
            return 0, -errno.EFAULT
        end = pfn + npages
        if self._injected("rmpupdate"):
            return 0, -errno.EFAULT
        bad = self._first_with(pfn, end, _IMMUTABLE | _PAGESIZE)
        done = npages if bad == -1 else bad - pfn
        if done:
            self._map.set(pfn, pfn + done, _pack(True, False, immutable, False, False, asid, gfn, pfn))
        return done, (0 if bad == -1 else -errno.EFAULT)

    def kvm_rmp_make_shared(self, pfn, npages):
        """KVM's kvm_rmp_make_shared() at 4K on each frame: a frame RMPUPDATE refuses is
        leaked (snp_leak_pages) and KVM_BUG_ON marks the VM bugged. Every other frame is
        still made shared, as in sev_gmem_post_populate's cleanup loop.
        Returns (0 or -EIO, [(start, end) of leaked frames])."""
        if npages <= 0:
            return 0, []
        if not self._in_table(pfn, npages):
            raise IndexError(f"frames [{pfn:#x}, {pfn + npages:#x}) outside the RMP")
        end = pfn + npages
        failed = []
        if self._injected("rmpupdate"):
            failed.append((pfn, pfn + 1))  # the first RMPUPDATE of the loop fails
        for s, e, v in list(self._map.ranges(pfn, end)):
            if v & (_IMMUTABLE | _PAGESIZE):
                failed.append((s, e))
        keep = sorted(failed)
        pos = pfn
        for s, e in keep:
            if pos < s:
                self._map.set(pos, s, 0)
            pos = max(pos, e)
        if pos < end:
            self._map.set(pos, end, 0)
        for s, e in keep:
            self._leaked.set(s, e, 1)
        return (-errno.EIO if keep else 0), keep

    # -- KVM's gmem callbacks (arch/x86/kvm/svm/sev.c) -----------------------------------
    def gmem_prepare(self, pfn, gfn, max_order, asid):
        """sev_gmem_prepare(): make a gmem page private on its first fault. 2M when the
        folio is 2M (max_order >= 9) and the whole aligned 2M block is unassigned, else 4K;
        immutable 0, Validated 0. Already assigned: 0, nothing done. -EINVAL when RMPUPDATE
        fails, -ENOENT outside the table (snp_lookup_rmpentry failing)."""
        if not self._in_table(pfn):
            return -errno.ENOENT
        if self._map.get(pfn) & _ASSIGNED:
            return 0
        block = pfn - pfn % PAGES_PER_2M
        large = (
            max_order >= 9
            and self._in_table(block, PAGES_PER_2M)
            and self._map.find_not(block, block + PAGES_PER_2M, 0) == -1
        )
        if large:
            gfn_aligned = gfn - gfn % PAGES_PER_2M
            rc = self.rmp_make_private(block, gfn_aligned << PAGE_SHIFT, S.RMP_PG_SIZE_2M, asid, False)
        else:
            rc = self.rmp_make_private(pfn, gfn << PAGE_SHIFT, S.RMP_PG_SIZE_4K, asid, False)
        return -errno.EINVAL if rc else 0

    def gmem_prepare_range(self, pfn, npages, gfn, asid, max_order=0):
        """sev_gmem_prepare() over frames [pfn, pfn + npages) mapping gfns from ``gfn``, run
        by run: assigned frames are left alone; unassigned ones become guest-owned, not
        validated, not immutable: 2M entries where ``max_order >= 9``, the frame and gfn
        agree modulo 2M and the whole aligned block is unassigned, else 4K. Returns 0
        (RMPUPDATE cannot fail on unassigned, non-immutable frames here) or -ENOENT
        outside the table."""
        if npages <= 0:
            return 0
        if not self._in_table(pfn, npages):
            return -errno.ENOENT
        end = pfn + npages
        huge_ok = max_order >= 9 and (gfn - pfn) % PAGES_PER_2M == 0
        if npages == 1:  # a 4K fault: its one run, without building the run list
            runs = ((pfn, end, self._map.get(pfn)),)
        else:
            runs = list(self._map.ranges(pfn, end))  # (a list: the loop changes the map)
        for s, e, v in runs:
            if v:
                continue
            g = gfn + (s - pfn)
            if huge_ok:
                lo = -(-s // PAGES_PER_2M) * PAGES_PER_2M
                hi = e - e % PAGES_PER_2M
                # a block reaching outside [s, e) may still be wholly unassigned
                if s % PAGES_PER_2M and self._map.find_not(s - s % PAGES_PER_2M, s, 0) == -1:
                    lo = s - s % PAGES_PER_2M
                if e % PAGES_PER_2M and e + PAGES_PER_2M - e % PAGES_PER_2M <= self._n and \
                        self._map.find_not(e, e + PAGES_PER_2M - e % PAGES_PER_2M, 0) == -1:
                    hi = e + PAGES_PER_2M - e % PAGES_PER_2M
                if lo < hi:
                    self._map.set(lo, hi, _pack(True, True, False, False, False, asid, g + lo - s, lo))
                    if s < lo:
                        self._map.set(s, lo, _pack(True, False, False, False, False, asid, g, s))
                    if hi < e:
                        self._map.set(hi, e, _pack(True, False, False, False, False, asid, g + hi - s, hi))
                    continue
            self._map.set(s, e, _pack(True, False, False, False, False, asid, g, s))
        return 0

    def gmem_invalidate(self, start, end):
        """sev_gmem_invalidate(): frames [start, end) leave guest_memfd. A 2M entry wholly
        inside the range is made shared at 2M; a 2M entry only partly inside is PSMASHed
        first; then the frames are made shared (Validated is lost). Failures only WARN in
        the kernel: those frames stay assigned and are returned as
        [(start, end, "psmash"|"rmpupdate", code)] for the caller to record."""
        failures = []
        pfn = max(start, 0)
        end = min(end, self._n)
        while pfn < end:
            if end - pfn == 1:  # (a 4K punch: its entry with get(), not a ranges() generator)
                s, e, value = pfn, end, self._map.get(pfn)
            else:
                s, e, value = next(self._map.ranges(pfn, end))
            if not value & _ASSIGNED:
                pfn = e
                continue
            if value & _PAGESIZE:
                block = pfn - pfn % PAGES_PER_2M
                if pfn == block and end >= block + PAGES_PER_2M:
                    nblocks = (min(e, end) - pfn) // PAGES_PER_2M
                    stop = pfn + nblocks * PAGES_PER_2M
                    code = self._shared_or_code(pfn, stop, value)
                    if code:
                        failures.append((pfn, stop, "rmpupdate", code))
                    pfn = stop
                    continue
                code = self.psmash(block)
                if code:
                    failures.append((block, block + PAGES_PER_2M, "psmash", code))
                    # the kernel still tries the 4K update; it fails on the 2M entry
                    stop = min(block + PAGES_PER_2M, end)
                    failures.append((pfn, stop, "rmpupdate", S.RMPUPDATE_FAIL_OVERLAP))
                    pfn = stop
                continue
            stop = min(e, end)
            code = self._shared_or_code(pfn, stop, value)
            if code:
                failures.append((pfn, stop, "rmpupdate", code))
            pfn = stop
        return failures

    def _shared_or_code(self, start, stop, value):
        """Make one run of equal entries shared, or return the RMPUPDATE failure code. An
        injected failure fails the run's first update only; the rest proceeds."""
        if value & _IMMUTABLE:
            return S.RMPUPDATE_FAIL_PERMISSION
        injected = self._injected("rmpupdate")
        if injected:
            first = PAGES_PER_2M if value & _PAGESIZE else 1
            if start + first < stop:
                self._map.set(start + first, stop, 0)
            return injected
        self._map.set(start, stop, 0)
        return 0

    def find_assigned(self, pfn, npages):
        """The first assigned frame of [pfn, pfn + npages), or -1."""
        return self._map.find_not(pfn, pfn + npages, 0)

    def launch_pages(self, pfn, npages, gfn, asid):
        """rmp_make_private(immutable) then a successful firmware SNP_LAUNCH_UPDATE on each
        unassigned frame of [pfn, pfn + npages): guest-owned 4K entries, validated, gpas
        from ``gfn`` (one range update). The caller checked the frames are unassigned."""
        if npages > 0:
            self._map.set(pfn, pfn + npages, _pack(True, False, False, False, True, asid, gfn, pfn))

    def smash_range(self, pfn, npages):
        """PSMASH every 2M entry that frames [pfn, pfn + npages) fall in (a loop over 2M
        blocks, never pages); returns the blocks split."""
        blocks = []
        for s, e, v in list(self._map.ranges(pfn, pfn + npages)):
            if v & _PAGESIZE:
                first = s - s % PAGES_PER_2M
                for block in range(first, e, PAGES_PER_2M):
                    if self.psmash(block) == S.PSMASH_SUCCESS:
                        blocks.append(block)
        return blocks

    def guest_private_range(self, pfn, npages, gfn, asid, write=False):
        """guest_private_access() over frames [pfn, pfn + npages) mapping gfns from ``gfn``,
        run by run: the first Fault, or None."""
        for s, _e, _v in list(self._map.ranges(pfn, pfn + npages)):
            fault = self.guest_private_access(s, (gfn + s - pfn) << PAGE_SHIFT, asid, write)
            if fault is not None:
                return fault
        return None

    # -- access checks -------------------------------------------------------------------
    def host_write(self, pfn, npages=1):
        """A host CPU write to frames [pfn, pfn + npages): RMP #PF (X86_PF_RMP) on the first
        assigned frame (guest- or firmware-owned), else None. Host reads are not checked."""
        bad = self._map.find_not(pfn, pfn + npages, 0)
        if bad == -1:
            return None
        entry = self.entry(bad)
        reason = f"host write to a {entry.owner}-owned page"
        return Fault("rmp_pf", S.X86_PF_RMP | X86_PF_WRITE, bad, entry, reason)

    def dma(self, pfn, npages=1, write=True):
        """A device DMA to frames [pfn, pfn + npages): the IOMMU blocks it on the first
        assigned frame with event RMP_FAULT (0xd), else None."""
        if not write and not self.dma_read_checked:
            return None
        bad = self._map.find_not(pfn, pfn + npages, 0)
        if bad == -1:
            return None
        entry = self.entry(bad)
        kind = "write" if write else "read"
        return Fault("iommu", S.EVENT_TYPE_RMP_FAULT, bad, entry, f"DMA {kind} of a {entry.owner}-owned page")

    def guest_private_access(self, pfn, gpa, asid, write=False):
        """A guest C=1 access to ``gpa`` backed by ``pfn``: NPF (RMP|ENC) if the guest does
        not own the entry, #VC PAGE_NOT_VALIDATED (0x404) if it is not validated, else None."""
        value = self._map.get(pfn)
        reason = self._guest_owns(pfn, value, gpa, asid)
        if reason:
            code = S.PFERR_GUEST_RMP_MASK | S.PFERR_GUEST_ENC_MASK | (X86_PF_WRITE if write else 0)
            return self._npf(pfn, value, code, "private access: " + reason)
        if not value & _VALIDATED:
            entry = self._entry(pfn, value)
            reason = f"private access to gpa {gpa:#x}: page not validated"
            return Fault("vc", S.VC_PAGE_NOT_VALIDATED, pfn, entry, reason)
        return None

    def guest_shared_access(self, pfn, gpa, write=True):
        """A guest C=0 access to ``gpa`` backed by ``pfn``: a write to an assigned page is an
        NPF (RMP); reads pass unless ``shared_read_checked``."""
        if not write and not self.shared_read_checked:
            return None
        value = self._map.get(pfn)
        if not value & _ASSIGNED:
            return None
        code = S.PFERR_GUEST_RMP_MASK | (X86_PF_WRITE if write else 0)
        entry = self._entry(pfn, value)
        reason = f"shared (C=0) access to gpa {gpa:#x} of a {entry.owner}-owned page"
        return self._npf(pfn, value, code, reason)
