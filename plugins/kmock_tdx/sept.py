"""The Secure-EPT of one TD, as the TDX module keeps it: one entry per private GPA.

States and the allowed source state of each SEAMCALL/TDCALL come from the TDX module
(intel/tdx-module include/auto_gen/sept_state_lookup.{h,c}; reference §1.3). The checks and
their order follow tdh_mem_range_block.c and tdh_mem_page_remove.c; the rest of the status
choices are listed in docs/arch/tdx.md (each [C] or [U]).

Storage: one kmock.mm.RangeMap over the private gfns (shared bit stripped), the value of a
gfn packing
  bits 0-3   the state of the leaf that maps it (FREE when none),
  bits 4-5   that leaf's level (TDX_PS_4K/2M/1G),
  bits 6-7   the entry at level 1 (2M) when it is not a leaf: 0 none, 1 NL_MAPPED, 2 NL_BLOCKED,
  bits 8-9   the same for the entry at level 2 (1G),
  bits 16-63 (pfn - gfn) mod 2**48, so that a contiguous mapping is one run.
The levels above 1G always exist (KVM builds the S-EPT root at TD creation). Block epochs
(PAMT.BEPOCH) are kept per gfn in a second RangeMap for leaves and one per level for
non-leaf entries.

Every operation takes a gfn range of whole entries of one level and acts as KVM's loop of
one SEAMCALL per entry would, but all or nothing: the range is checked first and, when an
entry fails, nothing changes and the result names that entry's gfn and status (the first
SEAMCALL of the loop that would have failed). Work is per run of equal values, never per page.
"""

from enum import IntEnum
from typing import NamedTuple, Optional

from kmock.mm import RangeMap
from kmock.uapi import tdx as T


class SeptState(IntEnum):
    """Secure-EPT entry states; values are the module's lookup-table index."""

    FREE = 0
    REMOVED = 1
    NL_MAPPED = 2
    NL_BLOCKED = 3
    MAPPED = 4
    BLOCKED = 5
    BLOCKEDW = 6
    PENDING = 10
    PENDING_BLOCKED = 11
    PENDING_BLOCKEDW = 12


S = SeptState
#: plain-int twins of the states the single-page fast paths use (an enum member read
#: through its class costs as much as the rest of a fast path; the values are equal)
_FREE, _PENDING, _MAPPED = int(S.FREE), int(S.PENDING), int(S.MAPPED)
LEVEL_PAGES = (1, 512, 512 * 512)  # TDX_PS_4K, TDX_PS_2M, TDX_PS_1G in 4K pages

_RCX = T.TDX_OPERAND_ID_RCX
WALK_FAILED = T.TDX_EPT_WALK_FAILED | _RCX
STATE_INCORRECT = T.TDX_EPT_ENTRY_STATE_INCORRECT | _RCX
ALREADY_BLOCKED = T.TDX_GPA_RANGE_ALREADY_BLOCKED | _RCX
NOT_BLOCKED = T.TDX_GPA_RANGE_NOT_BLOCKED | _RCX
TRACKING_NOT_DONE = T.TDX_TLB_TRACKING_NOT_DONE | _RCX
OPERAND_INVALID = T.TDX_OPERAND_INVALID | _RCX
# TDG.MEM.PAGE.ACCEPT puts the S-EPT level where the walk ended in bits 31:0, not an operand
# id (tdg_mem_page_accept.c: api_error_with_operand_id(TDX_PAGE_ALREADY_ACCEPTED, ept_level)).
ALREADY_ACCEPTED = T.TDX_PAGE_ALREADY_ACCEPTED  # | level
SIZE_MISMATCH = T.TDX_PAGE_SIZE_MISMATCH  # | level
PROMOTE_CONDITIONS = T.TDX_EPT_INVALID_PROMOTE_CONDITIONS | _RCX
#: TDX Connect: what BLOCK returns for an accepted page the guest did not release. The
#: module source does not show it (reference §1.4, §5 item 1); kmock's choice, documented
#: in docs/arch/tdx.md: the class the table-driven state check returns.
CONNECT_PINNED = STATE_INCORRECT
#: RELEASE without the PAGE_RELEASE TD configuration: the leaf is not enabled [U].
RELEASE_NOT_ENABLED = T.TDX_OPERAND_INVALID | T.TDX_OPERAND_ID_RAX

# allowed source states (sept_state_lookup.c, rows by SEAMCALL / TDCALL leaf)
_AUG_FROM = frozenset((S.FREE, S.REMOVED))
_ADD_FROM = frozenset((S.FREE,))
_SEPT_ADD_FROM = frozenset((S.FREE,))
_BLOCK_FROM = frozenset((S.NL_MAPPED, S.MAPPED, S.BLOCKEDW, S.PENDING, S.PENDING_BLOCKEDW))
_ANY_BLOCKED = frozenset((S.NL_BLOCKED, S.BLOCKED, S.PENDING_BLOCKED))
_REMOVE_FROM = frozenset(
    (S.MAPPED, S.BLOCKED, S.BLOCKEDW, S.PENDING, S.PENDING_BLOCKED, S.PENDING_BLOCKEDW)
)
_DEMOTE_FROM = frozenset((S.MAPPED, S.BLOCKED, S.PENDING, S.PENDING_BLOCKED))
_PROMOTE_FROM = frozenset((S.NL_MAPPED, S.NL_BLOCKED))
_ACCESSIBLE = frozenset((S.MAPPED, S.BLOCKEDW))  # guest_accessible_leaf
_BLOCK_TO = {
    S.NL_MAPPED: S.NL_BLOCKED,
    S.MAPPED: S.BLOCKED,
    S.BLOCKEDW: S.BLOCKED,
    S.PENDING: S.PENDING_BLOCKED,
    S.PENDING_BLOCKEDW: S.PENDING_BLOCKED,
}
_UNBLOCKED = {S.BLOCKED: S.MAPPED, S.PENDING_BLOCKED: S.PENDING, S.MAPPED: S.MAPPED, S.PENDING: S.PENDING}

_WALK = -1  # _entry(): the walk does not reach the level
_NL_NONE, _NL_MAPPED, _NL_BLOCKED = 0, 1, 2
#: bits of a value saying an entry above ``level`` is NL_BLOCKED (code 2 at bits 6-7 / 8-9)
_NL_BLOCKED_ABOVE = (0x80 | 0x200, 0x200, 0)
_NL_BLOCKED_ABOVE_4K = _NL_BLOCKED_ABOVE[0]
_NL_STATE = {_NL_MAPPED: S.NL_MAPPED, _NL_BLOCKED: S.NL_BLOCKED}
_NL_CODE = {S.NL_MAPPED: _NL_MAPPED, S.NL_BLOCKED: _NL_BLOCKED}
_STATE_MEMBERS = {int(x): x for x in S}
_DBITS = 48
_DMASK = (1 << _DBITS) - 1


def _pack(state, level, nl1, nl2, delta):
    return int(state) | level << 4 | nl1 << 6 | nl2 << 8 | (delta & _DMASK) << 16


def _state(v):
    return v & 0xF


def _level(v):
    return (v >> 4) & 3


def _nl(v, level):
    return (v >> (4 + 2 * level)) & 3  # level 1 -> bits 6-7, level 2 -> bits 8-9


def _with_nl(v, level, code):
    shift = 4 + 2 * level
    return (v & ~(3 << shift)) | code << shift


def _delta(v):
    return v >> 16


def _pfn(v, gfn):
    return (gfn + _delta(v)) & _DMASK


def _entry_of(v, level):
    """The state of the entry at ``level`` over a gfn whose value is v, or _WALK."""
    st, lv = _state(v), _level(v)
    for upper in (2, 1):
        if upper <= level:
            continue
        if st != S.FREE and lv == upper:
            return _WALK  # a larger leaf ends the walk
        if _nl(v, upper) == _NL_NONE:
            return _WALK  # no S-EPT page below that entry
    if st != S.FREE and lv == level:
        return _STATE_MEMBERS.get(st, st)
    if level and _nl(v, level) != _NL_NONE:
        return _NL_STATE.get(_nl(v, level), _WALK)  # code 3 is never stored
    return S.FREE


# _entry_of() depends only on the low 10 bits of a value: precomputed per level
_ENTRY_TABLE = tuple(tuple(_entry_of(low, level) for low in range(1 << 10)) for level in range(3))


def _entry(v, level):
    """The state of the entry at ``level`` over a gfn whose value is v, or _WALK."""
    return _ENTRY_TABLE[level][v & 0x3FF]


class SeptResult(NamedTuple):
    """The outcome of a batch: ``status`` (TDX_SUCCESS when ``ok``) and the failing entry.

    For TDG.MEM.PAGE.ACCEPT, ``td_exit`` means the TDCALL did not complete: the TD exits
    with an EPT violation at ``gfn`` (no leaf yet, a larger pending leaf, a blocked entry)
    so that the host can map (AUG), demote or unblock; ``status`` is then None.
    """

    status: Optional[int]
    gfn: Optional[int] = None
    td_exit: bool = False

    @property
    def ok(self):
        return self.status == T.TDX_SUCCESS and not self.td_exit


OK = SeptResult(T.TDX_SUCCESS)
_tuple_new = tuple.__new__


class SeptRun(NamedTuple):
    """A run of gfns mapped alike: leaf state and level, first pfn (None when FREE)."""

    gfn: int
    npages: int
    state: SeptState
    level: int
    pfn: Optional[int]


class _Fail(Exception):
    def __init__(self, status, gfn, td_exit=False):
        self.result = SeptResult(status, gfn, td_exit)


class Sept:
    """The Secure-EPT of one TD over ``npages`` private gfns.

    ``runnable``: the TD's op_state is RUNNABLE (after TDH.MR.FINALIZE); it decides whether
    REMOVE/DEMOTE need BLOCK + TRACK and whether PAGE.ADD is allowed.
    ``connect``: the TD has TDX Connect with PAGE_RELEASE: while it runs, a page it accepted
    stays pinned (BLOCK fails with CONNECT_PINNED) until TDG.MEM.PAGE.RELEASE.
    """

    def __init__(self, npages, *, connect=False):
        self.npages = npages
        self.connect = connect
        self.runnable = False
        self.epoch = 1  # TDCS.TD_EPOCH; TDH.MEM.TRACK advances it
        self._map = RangeMap(npages)
        self._bepoch = RangeMap(npages)  # PAMT.BEPOCH of blocked leaves, per gfn
        self._nl_bepoch = {1: RangeMap(npages), 2: RangeMap(npages)}

    @classmethod
    def for_gpaw(cls, gpaw, **kw):
        """A Sept over the private half of a GPAW-48 (shared bit 47) or GPAW-52 TD."""
        if gpaw not in (48, 52):
            raise ValueError(f"GPAW must be 48 or 52, got {gpaw}")
        return cls(1 << (gpaw - 1 - 12), **kw)

    # -- argument checks ----------------------------------------------------------------------
    def _range(self, gfn, npages, level):
        """Validate a batch; returns None or the OPERAND_INVALID result of the module."""
        if level not in (0, 1, 2):
            return SeptResult(OPERAND_INVALID, gfn)
        lp = LEVEL_PAGES[level]
        if gfn % lp:
            return SeptResult(OPERAND_INVALID, gfn)
        if npages <= 0 or npages % lp or gfn < 0 or gfn + npages > self.npages:
            raise ValueError(
                f"range [{gfn:#x}, +{npages:#x}) is not whole level-{level} entries of the S-EPT"
            )
        return None

    def _segments(self, gfn, npages):
        return list(self._map.ranges(gfn, gfn + npages))

    @staticmethod
    def _entry_gfn(s, level, gfn):
        return max(s - s % LEVEL_PAGES[level], gfn)

    def _tracked(self, bepoch):
        # is_tlb_tracked(): bepoch < td_epoch - 1, or == td_epoch - 1 with no vCPU left in
        # that epoch, which KVM's kick after TDH.MEM.TRACK guarantees (tdx_track())
        return bepoch < self.epoch

    def _leaf_tracked_fail(self, s, e):
        """gfn of the first page in [s, e) blocked in the current epoch, or None."""
        for bs, _be, be in self._bepoch.ranges(s, e):
            if not self._tracked(be):
                return bs
        return None

    # -- host side: SEAMCALLs ----------------------------------------------------------------
    def _check_states(self, segs, level, gfn, allowed):
        """The entry checks every SEAMCALL starts with, on each entry of ``segs``: the walk
        reaches it, and its state is one of ``allowed``. Raises _Fail at the first failure."""
        for s, _e, v in segs:
            st = _entry(v, level)
            if st == _WALK:
                raise _Fail(WALK_FAILED, self._entry_gfn(s, level, gfn))
            if st not in allowed:
                raise _Fail(STATE_INCORRECT, self._entry_gfn(s, level, gfn))

    def _check_blocked_leaves(self, segs, level, gfn, allowed):
        """REMOVE's and DEMOTE's checks on each entry of ``segs``, in the module's order:
        the walk reaches it, its state is one of ``allowed``, and once the TD runs it is
        blocked in an epoch TRACK has completed. Raises _Fail at the first entry that fails."""
        for s, e, v in segs:
            st = _entry(v, level)
            where = self._entry_gfn(s, level, gfn)
            if st == _WALK:
                raise _Fail(WALK_FAILED, where)
            if st not in allowed:
                raise _Fail(STATE_INCORRECT, where)
            if self.runnable:
                if st not in _ANY_BLOCKED:
                    raise _Fail(NOT_BLOCKED, where)
                hit = self._leaf_tracked_fail(s, e)
                if hit is not None:
                    raise _Fail(TRACKING_NOT_DONE, self._entry_gfn(hit, level, gfn))

    def _checked_segments(self, gfn, npages, level, check, allowed, nonleaf=False):
        """What TDH.MEM.SEPT.ADD, PAGE.REMOVE and PAGE.DEMOTE start with: the operand
        range (a level-0 operand is OPERAND_INVALID where the call takes a non-leaf level),
        then ``check`` (_check_states or _check_blocked_leaves) over the segments. Returns
        (segments, None), or (None, the SeptResult to return)."""
        bad = self._range(gfn, npages, level)
        if bad or (nonleaf and level == 0):
            return None, bad or SeptResult(OPERAND_INVALID, gfn)
        try:
            segs = self._segments(gfn, npages)
            check(segs, level, gfn, allowed)
        except _Fail as f:
            return None, f.result
        return segs, None

    def sept_add(self, gfn, npages, level):
        """TDH.MEM.SEPT.ADD on each level-``level`` entry (1 or 2): FREE -> NL_MAPPED."""
        segs, fail = self._checked_segments(gfn, npages, level, self._check_states,
                                            _SEPT_ADD_FROM, nonleaf=True)
        if fail is not None:
            return fail
        for s, e, v in segs:
            self._map.set(s, e, _with_nl(v, level, _NL_MAPPED))
        return OK

    def walk_missing(self, gfn, npages, level=0):
        """True when ensure_walk would run TDH.MEM.SEPT.ADD (an entry above ``level`` over
        the range is FREE); read per run."""
        if npages == 1 and level == 0 and 0 <= gfn < self.npages and \
                _ENTRY_TABLE[0][self._map.get(gfn) & 0x3FF] != _WALK:
            return False
        return any(_entry(v, upper) == S.FREE for s, _e, v in self._segments(gfn, npages)
                   for upper in (2, 1) if upper > level)

    def ensure_walk(self, gfn, npages, level=0):
        """What KVM's TDP MMU does before AUG/ADD: SEPT.ADD every missing entry above ``level``.

        Fails (WALK_FAILED) without change if a larger leaf is in the way. Only the range's
        own runs are read: every gfn under an upper-level entry shows that entry's state,
        and a FREE upper entry covers a uniform region (no leaf can be below it), which one
        RangeMap.set turns into NL_MAPPED.
        """
        if npages == 1 and level == 0 and 0 <= gfn < self.npages and \
                _ENTRY_TABLE[0][self._map.get(gfn) & 0x3FF] != _WALK:
            return OK  # the single-page fast path: the walk is there
        if level not in (0, 1, 2):
            return SeptResult(OPERAND_INVALID, gfn)
        for s, _e, v in self._segments(gfn, npages):
            if _state(v) != S.FREE and _level(v) > level:
                return SeptResult(WALK_FAILED, max(s, gfn))
        for upper in (2, 1):
            if upper <= level:
                continue
            lp = LEVEL_PAGES[upper]
            for s, e, v in self._segments(gfn, npages):
                if _entry(v, upper) == S.FREE:
                    rs, re = s - s % lp, min(-(-e // lp) * lp, self.npages)
                    self._map.set(rs, re, _with_nl(v, upper, _NL_MAPPED))
        return OK

    def aug_page(self, gfn, pfn):
        """KVM's map of one private 4K gfn after FINALIZE, when it needs no SEAMCALL but
        TDH.MEM.PAGE.AUG: returns True when gfn had no leaf and the walk reaches level 0
        (AUG done: PENDING at 4K over pfn), or when a leaf already maps gfn (nothing to
        do); False when the walk is missing, for the general path (ensure_walk, aug).
        One RangeMap get and at most one set: the single-page case of Td.sept_map."""
        v = self._map.get(gfn)
        if v & 0xF:
            return True  # a leaf (of any level) maps gfn already
        if _ENTRY_TABLE[0][v & 0x3FF] == _WALK:
            return False
        # == _pack(PENDING, 0, _nl(v, 1), _nl(v, 2), pfn - gfn), inlined for speed
        delta = pfn - gfn
        self._map.set(gfn, gfn + 1, (v & 0x3C0) | _PENDING | (delta & _DMASK) << 16)
        return True

    def aug(self, gfn, npages, level, pfn):
        """TDH.MEM.PAGE.AUG: FREE -> PENDING at ``level`` (4K or 2M: tdh_mem_page_aug.c checks
        the level against LVL_PD), mapping frames pfn.."""
        if npages == 1 and level == 0 and 0 <= gfn < self.npages:
            v = self._map.get(gfn)
            if _ENTRY_TABLE[0][v & 0x3FF] in _AUG_FROM:  # single-page fast path
                self._map.set(gfn, gfn + 1, _pack(_PENDING, 0, _nl(v, 1), _nl(v, 2), pfn - gfn))
                return OK
        if level == 2:
            return SeptResult(OPERAND_INVALID, gfn)
        bad = self._range(gfn, npages, level)
        if bad:
            return bad
        if pfn % LEVEL_PAGES[level]:
            raise ValueError(f"pfn {pfn:#x} is not aligned to a level-{level} page")
        return self._map_new(gfn, npages, level, pfn, S.PENDING, _AUG_FROM)

    def add(self, gfn, npages, pfn):
        """TDH.MEM.PAGE.ADD (4K): FREE -> MAPPED; only before FINALIZE (op_state INITIALIZED)."""
        bad = self._range(gfn, npages, 0)
        if bad:
            return bad
        if self.runnable:
            return SeptResult(T.TDX_OP_STATE_INCORRECT, gfn)
        return self._map_new(gfn, npages, 0, pfn, S.MAPPED, _ADD_FROM)

    def _map_new(self, gfn, npages, level, pfn, new_state, allowed):
        try:
            segs = self._segments(gfn, npages)
            self._check_states(segs, level, gfn, allowed)
        except _Fail as f:
            return f.result
        # the walk reached `level` everywhere: the entries above are NL, none at `level`
        v0 = segs[0][2]
        nl1 = _nl(v0, 1) if level == 0 else _NL_NONE
        nl2 = _nl(v0, 2) if level <= 1 else _NL_NONE
        if all(_nl(v, 1) == _nl(v0, 1) and _nl(v, 2) == _nl(v0, 2) for _s, _e, v in segs):
            self._map.set(gfn, gfn + npages, _pack(new_state, level, nl1, nl2, pfn - gfn))
        else:
            for s, e, v in segs:
                nl1 = _nl(v, 1) if level == 0 else _NL_NONE
                nl2 = _nl(v, 2) if level <= 1 else _NL_NONE
                self._map.set(s, e, _pack(new_state, level, nl1, nl2, pfn - gfn))
        return OK

    def block(self, gfn, npages, level=0):
        """TDH.MEM.RANGE.BLOCK: MAPPED/BLOCKEDW -> BLOCKED, PENDING* -> PENDING_BLOCKED,
        NL_MAPPED -> NL_BLOCKED; records the block epoch (PAMT.BEPOCH)."""
        if npages == 1 and level == 0 and 0 <= gfn < self.npages:
            v = self._map.get(gfn)
            st = _ENTRY_TABLE[0][v & 0x3FF]
            if st in _BLOCK_FROM and not (self.connect and self.runnable and st in _ACCESSIBLE):
                self._map.set(gfn, gfn + 1, (v & ~0xF) | _BLOCK_TO[st])  # fast path
                self._bepoch.set(gfn, gfn + 1, self.epoch)
                return OK
        bad = self._range(gfn, npages, level)
        if bad:
            return bad
        try:
            segs = self._segments(gfn, npages)
            for s, _e, v in segs:
                st = _entry(v, level)
                where = self._entry_gfn(s, level, gfn)
                if st == _WALK:
                    raise _Fail(WALK_FAILED, where)
                if st not in _BLOCK_FROM:
                    raise _Fail(ALREADY_BLOCKED if st in _ANY_BLOCKED else STATE_INCORRECT, where)
                if self.connect and self.runnable and st in _ACCESSIBLE:
                    raise _Fail(CONNECT_PINNED, where)
        except _Fail as f:
            return f.result
        for s, e, v in segs:
            st = _entry(v, level)
            if st in _NL_CODE:
                self._map.set(s, e, _with_nl(v, level, _NL_BLOCKED))
                self._nl_bepoch[level].set(s, e, self.epoch)
            else:
                self._map.set(s, e, (v & ~0xF) | _BLOCK_TO[st])
                self._bepoch.set(s, e, self.epoch)
        return OK

    def zap_page(self, gfn):
        """KVM's zap of one private 4K gfn: TDH.MEM.RANGE.BLOCK, TDH.MEM.TRACK (when
        runnable), TDH.MEM.PAGE.REMOVE of the 4K leaf mapping gfn, when the three
        succeed. Returns the leaf's state before (an int), FREE (0) when no leaf maps
        gfn (nothing to do), or None when a larger leaf maps it or one of the SEAMCALLs
        would fail: nothing changed, the caller runs them one by one for the status.
        One RangeMap get and two sets: the single-page case of Td.sept_remove."""
        v = self._map.get(gfn)
        st = v & 0xF
        if not st:
            return st
        # BLOCK's checks (the fast path of block()); a larger leaf is _WALK at level 0
        e = _ENTRY_TABLE[0][v & 0x3FF]
        if e not in _BLOCK_FROM or (self.connect and self.runnable and e in _ACCESSIBLE):
            return None
        # BLOCK records bepoch = epoch and TRACK advances the epoch, so REMOVE's checks
        # (a blocked leaf, tracked when runnable) pass; REMOVE clears the leaf and bepoch
        if self.runnable:
            self.epoch += 1
        self._map.set(gfn, gfn + 1, v & 0x3C0)  # == _pack(FREE, 0, nl1, nl2, 0)
        self._bepoch.set(gfn, gfn + 1, 0)
        return st

    def track(self):
        """TDH.MEM.TRACK: advance the TD epoch (KVM then kicks every vCPU out of the TD)."""
        self.epoch += 1
        return OK

    def remove(self, gfn, npages, level=0):
        """TDH.MEM.PAGE.REMOVE: a leaf -> FREE. While the TD is RUNNABLE the leaf must be
        blocked (GPA_RANGE_NOT_BLOCKED) in an epoch that was tracked (TLB_TRACKING_NOT_DONE)."""
        if npages == 1 and level == 0 and 0 <= gfn < self.npages:
            v = self._map.get(gfn)
            st = _ENTRY_TABLE[0][v & 0x3FF]
            if st in _REMOVE_FROM and (not self.runnable or (
                    st in _ANY_BLOCKED and self._tracked(self._bepoch.get(gfn)))):
                self._map.set(gfn, gfn + 1, _pack(_FREE, 0, _nl(v, 1), _nl(v, 2), 0))  # fast
                self._bepoch.set(gfn, gfn + 1, 0)
                return OK
        segs, fail = self._checked_segments(gfn, npages, level, self._check_blocked_leaves,
                                            _REMOVE_FROM)
        if fail is not None:
            return fail
        for s, e, v in segs:
            self._map.set(s, e, _pack(S.FREE, 0, _nl(v, 1), _nl(v, 2), 0))
        self._bepoch.set(gfn, gfn + npages, 0)
        return OK

    def demote(self, gfn, npages, level):
        """TDH.MEM.PAGE.DEMOTE: a level-``level`` leaf -> NL_MAPPED + 512 unblocked children of
        level-1 with the same (MAPPED or PENDING) state over the same frames."""
        segs, fail = self._checked_segments(gfn, npages, level, self._check_blocked_leaves,
                                            _DEMOTE_FROM, nonleaf=True)
        if fail is not None:
            return fail
        for s, e, v in segs:
            child = _UNBLOCKED[S(_state(v))]
            nv = _with_nl((v & ~0x3F) | child | (level - 1) << 4, level, _NL_MAPPED)
            self._map.set(s, e, nv)
        self._bepoch.set(gfn, gfn + npages, 0)
        return OK

    def promote(self, gfn, npages, level):
        """TDH.MEM.PAGE.PROMOTE: NL entry with 512 leaves of one (MAPPED/PENDING) state over
        contiguous, aligned frames -> one leaf at ``level``. RUNNABLE: NL_BLOCKED + tracked."""
        bad = self._range(gfn, npages, level)
        if bad or level == 0:
            return bad or SeptResult(OPERAND_INVALID, gfn)
        lp = LEVEL_PAGES[level]
        try:
            segs = self._segments(gfn, npages)
            for s, _e, v in segs:
                st = _entry(v, level)
                where = self._entry_gfn(s, level, gfn)
                if st == _WALK:
                    raise _Fail(WALK_FAILED, where)
                if st not in _PROMOTE_FROM:
                    raise _Fail(STATE_INCORRECT, where)
                if self.runnable:
                    if st != S.NL_BLOCKED:
                        raise _Fail(NOT_BLOCKED, where)
                    for bs, _be, be in self._nl_bepoch[level].ranges(s, _e):
                        if not self._tracked(be):
                            raise _Fail(TRACKING_NOT_DONE, self._entry_gfn(bs, level, gfn))
            for g in range(gfn, gfn + npages, lp):  # per entry (512 or 512*512 pages), not per page
                s, e, v = next(self._map.ranges(g, g + lp))
                if (
                    e < g + lp
                    or _state(v) not in (S.MAPPED, S.PENDING)
                    or _level(v) != level - 1
                    or _pfn(v, g) % lp
                ):
                    raise _Fail(PROMOTE_CONDITIONS, g)
        except _Fail as f:
            return f.result
        for g in range(gfn, gfn + npages, lp):
            v = self._map.get(g)
            nv = _with_nl((v & ~0x30) | level << 4, level, _NL_NONE)
            self._map.set(g, g + lp, nv)
        self._nl_bepoch[level].set(gfn, gfn + npages, 0)
        return OK

    # -- guest side: TDCALLs -------------------------------------------------------------------
    def accept(self, gfn, npages, level=0):
        """TDG.MEM.PAGE.ACCEPT (4K or 2M): PENDING -> MAPPED; the module zeroes the page
        (the caller clears the frames of the returned range)."""
        if npages == 1 and level == 0:
            done = self.accept_page(gfn)
            if done is not None:
                # (== SeptResult(None, gfn, td_exit=True), without the frame of its __new__)
                return OK if done else _tuple_new(SeptResult, (None, gfn, True))
        if level not in (0, 1):
            return SeptResult(OPERAND_INVALID, gfn)
        bad = self._range(gfn, npages, level)
        if bad:
            return bad
        try:
            segs = self._segments(gfn, npages)
            for s, _e, v in segs:
                where = self._entry_gfn(s, level, gfn)
                st = _entry(v, level)
                # check_tdaccept_failure(): a walk that stops above the level (missing or
                # blocked S-EPT page, larger leaf) is ALREADY_ACCEPTED for a guest-accessible
                # larger leaf, else a TD exit (EPT violation, "accept" qualification)
                if st == _WALK or v & _NL_BLOCKED_ABOVE[level]:
                    if st == _WALK and _state(v) in _ACCESSIBLE and _level(v) > level:
                        raise _Fail(ALREADY_ACCEPTED | _level(v), where)
                    raise _Fail(None, where, td_exit=True)
                if st in _PROMOTE_FROM:
                    raise _Fail(SIZE_MISMATCH | level, where)  # non-free non-leaf at the level
                if st in _ACCESSIBLE:
                    raise _Fail(ALREADY_ACCEPTED | level, where)
                if st != S.PENDING:
                    raise _Fail(None, where, td_exit=True)  # FREE, BLOCKED, PENDING_BLOCKED
        except _Fail as f:
            return f.result
        for s, e, v in segs:
            self._map.set(s, e, (v & ~0xF) | S.MAPPED)
        return OK

    def accept_page(self, gfn):
        """The single-page fast paths of accept() (4K, no blocked S-EPT page above gfn),
        without a result object: True when gfn's 4K leaf was PENDING (now MAPPED:
        TDX_SUCCESS), False when no leaf maps gfn and the walk reaches it (a TD exit: the
        EPT violation at gfn), None for every other case (accept() decides)."""
        if not 0 <= gfn < self.npages:
            return None
        v = self._map.get(gfn)
        if v & _NL_BLOCKED_ABOVE_4K:
            return None
        st = _ENTRY_TABLE[0][v & 0x3FF]
        if st == _PENDING:
            self._map.set(gfn, gfn + 1, (v & ~0xF) | _MAPPED)
            return True
        if st == _FREE:
            return False
        return None

    def release(self, gfn, npages, level=0):
        """TDG.MEM.PAGE.RELEASE (TDX Connect PAGE_RELEASE): MAPPED -> PENDING, unpinning it."""
        if not self.connect:
            return SeptResult(RELEASE_NOT_ENABLED, gfn)
        bad = self._range(gfn, npages, level)
        if bad:
            return bad
        try:
            segs = self._segments(gfn, npages)
            for s, _e, v in segs:
                where = self._entry_gfn(s, level, gfn)
                st = _entry(v, level)
                if st == _WALK:
                    larger = _state(v) != S.FREE and _level(v) > level
                    raise _Fail(SIZE_MISMATCH | _level(v) if larger else WALK_FAILED, where)
                if st in _PROMOTE_FROM:
                    raise _Fail(SIZE_MISMATCH | level, where)
                if st != S.MAPPED:
                    raise _Fail(STATE_INCORRECT, where)
        except _Fail as f:
            return f.result
        for s, e, v in segs:
            self._map.set(s, e, (v & ~0xF) | S.PENDING)
        return OK

    # -- queries -----------------------------------------------------------------------------
    def lookup(self, gfn):
        """(state, level, pfn) of the leaf mapping gfn; (FREE, 0, None) when none."""
        v = self._map.get(gfn)
        st = S(_state(v))
        if st == S.FREE:
            return S.FREE, 0, None
        return st, _level(v), _pfn(v, gfn)

    def leaves(self, gfn, npages):
        """(start, end, state, level) of the runs of [gfn, gfn + npages) a leaf maps (state
        and level as ints), in order; the raw runs, for the callers' fast paths."""
        return [(s, e, v & 0xF, (v >> 4) & 3)
                for s, e, v in self._map.ranges(gfn, gfn + npages) if v & 0xF]

    def entry_state(self, gfn, level):
        """The state of the entry at ``level`` covering gfn, or None if the walk stops above."""
        st = _entry(self._map.get(gfn), level)
        return None if st == _WALK else S(st)

    def runs(self, gfn=0, npages=None):
        """SeptRun for each run of gfns mapped alike in [gfn, gfn + npages) (for snapshots)."""
        end = self.npages if npages is None else gfn + npages
        prev = None
        for s, e, v in self._map.ranges(gfn, end):
            st = S(_state(v))
            lv = _level(v) if st != S.FREE else 0
            pfn = None if st == S.FREE else _pfn(v, s)
            if prev and prev.state == st and prev.level == lv and prev.gfn + prev.npages == s and (
                pfn is None or prev.pfn + prev.npages == pfn
            ):
                prev = prev._replace(npages=prev.npages + e - s)
                continue
            if prev:
                yield prev
            prev = SeptRun(s, e - s, st, lv, pfn)
        if prev:
            yield prev

    def count(self, state, gfn=0, npages=None):
        """Pages in [gfn, gfn + npages) whose leaf is in ``state``."""
        return sum(r.npages for r in self.runs(gfn, npages) if r.state == state)

    def counts(self):
        """{state: pages} over the whole S-EPT, states with no page left out."""
        out = {}
        for r in self.runs():
            out[r.state] = out.get(r.state, 0) + r.npages
        return out

    def first_inaccessible(self, gfn, npages):
        """(gfn, state) of the first page the guest cannot use privately right now, or None:
        FREE (EPT violation, KVM maps it), PENDING (pending EPT violation: the TD is killed
        with SEPT_VE_DISABLE), or blocked (EPT violation)."""
        for s, _e, v in self._map.ranges(gfn, gfn + npages):
            st = S(_state(v))
            lv = _level(v)
            nl_blocked = any(_nl(v, up) == _NL_BLOCKED for up in (1, 2) if up > lv)
            if st not in _ACCESSIBLE or nl_blocked:
                return s, (S.BLOCKED if nl_blocked and st in _ACCESSIBLE else st)
        return None
