"""The Secure-EPT model: each SEAMCALL/TDCALL on each source state, levels, TDX Connect pins,
and a hypothesis state machine against a per-page model.

Expected states and statuses: reference/arch-tdx-snp-cca.md §1.3 (sept_state_lookup.c rows),
intel/tdx-module tdh_mem_range_block.c / tdh_mem_page_remove.c (check order, operand id RCX),
docs/arch/tdx.md for the [U] choices (named in the test that pins them).
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from kmock.uapi import tdx as T
from kmock_tdx import sept as SE
from kmock_tdx.sept import Sept, SeptState as S
from kmock_tdx.status import TdxStatus

RCX = T.TDX_OPERAND_ID_RCX
M2 = 512
G1 = 512 * 512
PFN = 0x100000  # 1G-aligned frame base for the tests


def new(npages=4 * G1, walk=True, **kw):
    s = Sept(npages, **kw)
    if walk:
        assert s.ensure_walk(0, npages).ok
    return s


def pending(s, gfn, n=1, pfn=None):
    assert s.aug(gfn, n, 0, PFN + gfn if pfn is None else pfn).ok


def mapped(s, gfn, n=1):
    pending(s, gfn, n)
    assert s.accept(gfn, n).ok


def blocked(s, gfn, n=1):
    mapped(s, gfn, n)
    assert s.block(gfn, n).ok


def pending_blocked(s, gfn, n=1):
    pending(s, gfn, n)
    assert s.block(gfn, n).ok


MAKE = {
    S.FREE: lambda s, g: None,
    S.PENDING: pending,
    S.MAPPED: mapped,
    S.BLOCKED: blocked,
    S.PENDING_BLOCKED: pending_blocked,
}


def state_of(s, gfn):
    return s.lookup(gfn)[0]


# --- basic shape ----------------------------------------------------------------------------------


def test_state_indices_are_the_modules_lookup_indices():
    # sept_state_lookup.c: index order of the allowed-state rows (reference §1.3 table)
    assert [int(x) for x in (S.FREE, S.REMOVED, S.NL_MAPPED, S.NL_BLOCKED, S.MAPPED, S.BLOCKED,
                             S.BLOCKEDW, S.PENDING, S.PENDING_BLOCKED, S.PENDING_BLOCKEDW)] == [
        0, 1, 2, 3, 4, 5, 6, 10, 11, 12]


def test_for_gpaw_covers_the_private_half():
    assert Sept.for_gpaw(48).npages == 1 << 35  # shared bit 47
    assert Sept.for_gpaw(52).npages == 1 << 39  # shared bit 51
    with pytest.raises(ValueError):
        Sept.for_gpaw(50)


def test_fresh_sept_is_free_and_needs_its_walk():
    s = Sept(4 * G1)
    assert s.counts() == {S.FREE: 4 * G1}
    assert s.entry_state(0, 0) is None and s.entry_state(0, 2) == S.FREE
    r = s.aug(0, 1, 0, PFN)
    assert (r.status, r.gfn) == (SE.WALK_FAILED, 0)  # no S-EPT page below the 2M entry
    assert s.sept_add(0, G1, 2).ok and s.sept_add(0, M2, 1).ok
    assert s.entry_state(0, 1) == S.NL_MAPPED and s.entry_state(0, 0) == S.FREE
    assert s.aug(0, 1, 0, PFN).ok


def test_sept_add_twice_and_without_walk():
    s = Sept(4 * G1)
    assert s.sept_add(0, M2, 1).status == SE.WALK_FAILED
    assert s.sept_add(0, G1, 2).ok
    assert s.sept_add(0, G1, 2).status == SE.STATE_INCORRECT  # NL_MAPPED is not FREE
    assert s.sept_add(0, 1, 0).status == SE.OPERAND_INVALID


def test_a_big_range_is_one_run():
    s = new()
    pending(s, 0, 2 * G1)
    runs = list(s.runs())
    assert runs[0] == SE.SeptRun(0, 2 * G1, S.PENDING, 0, PFN)
    assert s.count(S.PENDING) == 2 * G1 and s.count(S.FREE) == 2 * G1


def test_operand_checks():
    s = new()
    assert s.aug(1, M2, 1, PFN).status == T.TDX_OPERAND_INVALID | RCX  # gfn not 2M-aligned
    assert s.aug(0, 1, 3, PFN).status == T.TDX_OPERAND_INVALID | RCX  # no level 3 leaf
    with pytest.raises(ValueError):
        s.aug(0, 3, 1, PFN)  # not whole 2M entries
    with pytest.raises(ValueError):
        s.aug(4 * G1 - 1, 2, 0, PFN)  # beyond the S-EPT
    with pytest.raises(ValueError):
        s.aug(0, M2, 1, PFN + 1)  # frame not 2M-aligned


# --- AUG / ADD ------------------------------------------------------------------------------------


@pytest.mark.parametrize("src", [S.PENDING, S.MAPPED, S.BLOCKED, S.PENDING_BLOCKED])
def test_aug_needs_a_free_entry(src):
    s = new()
    MAKE[src](s, 5)
    r = s.aug(4, 4, 0, PFN)
    assert (r.status, r.gfn) == (SE.STATE_INCORRECT, 5)
    assert state_of(s, 4) == S.FREE and state_of(s, 5) == src  # all or nothing


def test_aug_maps_pending_with_the_frames():
    s = new()
    assert s.aug(8, 3, 0, 0x777).ok
    assert [s.lookup(g) for g in (8, 9, 10)] == [(S.PENDING, 0, 0x777), (S.PENDING, 0, 0x778),
                                                 (S.PENDING, 0, 0x779)]
    assert s.lookup(11) == (S.FREE, 0, None)


def test_aug_2m_over_4k_leaves_is_state_incorrect_and_4k_in_a_2m_leaf_is_walk_failed():
    s = new(walk=False)
    assert s.ensure_walk(0, 4 * G1, level=1).ok  # S-EPT pages down to the 2M entries only
    assert s.ensure_walk(M2, 1, level=0).ok  # and below the second 2M entry
    pending(s, M2 + 7)
    assert s.aug(M2, M2, 1, PFN).status == SE.STATE_INCORRECT  # the 2M entry is NL_MAPPED
    assert s.aug(0, M2, 1, PFN).ok
    assert s.lookup(3) == (S.PENDING, 1, PFN + 3)
    assert s.aug(3, 1, 0, PFN).status == SE.WALK_FAILED  # the 2M leaf ends the walk
    assert s.ensure_walk(3, 1, level=0).status == SE.WALK_FAILED  # KVM would have to demote


def test_aug_2m_where_the_sept_page_exists_is_state_incorrect():
    s = new()  # ensure_walk(level 0) created the S-EPT pages below every 2M entry
    assert s.entry_state(0, 1) == S.NL_MAPPED
    s2 = Sept(4 * G1)
    assert s2.ensure_walk(0, 4 * G1, level=1).ok
    assert s2.entry_state(0, 1) == S.FREE
    assert s2.aug(0, M2, 1, PFN).ok


def test_add_before_finalize_only():
    s = new()
    assert s.add(0, 4, PFN).ok
    assert s.lookup(2) == (S.MAPPED, 0, PFN + 2)
    assert s.add(3, 1, PFN).status == SE.STATE_INCORRECT  # second add of a gfn
    s.runnable = True
    assert s.add(10, 1, PFN).status == T.TDX_OP_STATE_INCORRECT


# --- BLOCK / TRACK / REMOVE -----------------------------------------------------------------------

BLOCK_ROWS = [
    (S.FREE, SE.STATE_INCORRECT, S.FREE),
    (S.PENDING, 0, S.PENDING_BLOCKED),
    (S.MAPPED, 0, S.BLOCKED),
    (S.BLOCKED, SE.ALREADY_BLOCKED, S.BLOCKED),
    (S.PENDING_BLOCKED, SE.ALREADY_BLOCKED, S.PENDING_BLOCKED),
]


@pytest.mark.parametrize("src,status,after", BLOCK_ROWS, ids=[r[0].name for r in BLOCK_ROWS])
def test_block_on_each_state(src, status, after):
    s = new()
    s.runnable = True
    MAKE[src](s, 9)
    r = s.block(9, 1)
    assert r.status == status
    assert state_of(s, 9) == after


def test_block_values_match_tdh_mem_range_block():
    # tdh_mem_range_block.c: the wrong-state status carries the RCX operand id
    assert SE.ALREADY_BLOCKED == 0x00000B0700000001
    assert SE.STATE_INCORRECT == 0xC0000B0D00000001


def test_block_of_a_non_leaf_entry():
    s = new()
    mapped(s, 0, 4)
    assert s.block(0, M2, 1).ok
    assert s.entry_state(0, 1) == S.NL_BLOCKED
    assert state_of(s, 0) == S.MAPPED  # the children keep their state
    assert s.first_inaccessible(0, 1) == (0, S.BLOCKED)  # but the guest cannot reach them
    assert s.block(0, M2, 1).status == SE.ALREADY_BLOCKED


REMOVE_ROWS = [  # (source, runnable, tracked, status, after)
    (S.FREE, True, True, SE.STATE_INCORRECT, S.FREE),
    (S.PENDING, True, True, SE.NOT_BLOCKED, S.PENDING),
    (S.MAPPED, True, True, SE.NOT_BLOCKED, S.MAPPED),
    (S.BLOCKED, True, False, SE.TRACKING_NOT_DONE, S.BLOCKED),
    (S.PENDING_BLOCKED, True, False, SE.TRACKING_NOT_DONE, S.PENDING_BLOCKED),
    (S.BLOCKED, True, True, 0, S.FREE),
    (S.PENDING_BLOCKED, True, True, 0, S.FREE),
    (S.MAPPED, False, False, 0, S.FREE),  # before FINALIZE no BLOCK/TRACK is needed
    (S.PENDING, False, False, 0, S.FREE),
    (S.FREE, False, False, SE.STATE_INCORRECT, S.FREE),
]


@pytest.mark.parametrize("src,runnable,tracked,status,after", REMOVE_ROWS,
                         ids=[f"{r[0].name}-{'run' if r[1] else 'init'}-{'trk' if r[2] else 'notrk'}"
                              for r in REMOVE_ROWS])
def test_remove_on_each_state(src, runnable, tracked, status, after):
    s = new()
    s.runnable = runnable
    MAKE[src](s, 9)
    if tracked:
        s.track()
    r = s.remove(9, 1)
    assert r.status == status
    assert state_of(s, 9) == after


def test_block_in_the_new_epoch_needs_a_new_track():
    s = new()
    s.runnable = True
    blocked(s, 1)
    s.track()
    blocked(s, 2)  # blocked in the epoch the track opened
    r = s.remove(1, 2)
    assert (r.status, r.gfn) == (SE.TRACKING_NOT_DONE, 2)
    assert state_of(s, 1) == S.BLOCKED  # nothing removed
    s.track()
    assert s.remove(1, 2).ok


def test_kvm_zap_sequence_block_track_remove():
    # tdx_sept_remove_private_spte(): BLOCK, TRACK (+ kick), REMOVE
    s = new()
    s.runnable = True
    mapped(s, 0, 1024)
    assert s.block(0, 1024).ok and s.track().ok and s.remove(0, 1024).ok
    assert s.counts() == {S.FREE: 4 * G1}


def test_remove_level_rules():
    s = new()
    pending(s, 0)
    assert s.remove(0, M2, 1).status == SE.STATE_INCORRECT  # the 2M entry is a non-leaf
    assert s.aug(M2, M2, 1, PFN).status == SE.STATE_INCORRECT
    t = new(walk=False)
    assert t.ensure_walk(0, 4 * G1, level=1).ok
    assert t.aug(M2, M2, 1, PFN + M2).ok
    assert t.remove(M2 + 5, 1, 0).status == SE.WALK_FAILED  # a 2M leaf is in the way
    assert t.remove(M2, M2, 1).ok


def test_remove_is_all_or_nothing_and_names_the_first_failing_entry():
    s = new()
    s.runnable = True
    blocked(s, 0, 4)
    mapped(s, 4, 4)  # not blocked
    s.track()
    r = s.remove(0, 8)
    assert (r.status, r.gfn) == (SE.NOT_BLOCKED, 4)
    assert s.count(S.BLOCKED, 0, 8) == 4


# --- ACCEPT / RELEASE -------------------------------------------------------------------------------

ACCEPT_ROWS = [  # (source, status, td_exit, after)
    (S.FREE, None, True, S.FREE),
    (S.PENDING, 0, False, S.MAPPED),
    (S.MAPPED, SE.ALREADY_ACCEPTED, False, S.MAPPED),
    (S.BLOCKED, None, True, S.BLOCKED),
    (S.PENDING_BLOCKED, None, True, S.PENDING_BLOCKED),
]


@pytest.mark.parametrize("src,status,td_exit,after", ACCEPT_ROWS, ids=[r[0].name for r in ACCEPT_ROWS])
def test_accept_on_each_state(src, status, td_exit, after):
    s = new()
    s.runnable = True
    MAKE[src](s, 3)
    r = s.accept(3, 1)
    assert (r.status, r.td_exit, r.ok) == (status, td_exit, status == 0)
    assert state_of(s, 3) == after


def test_accept_levels():
    s = new(walk=False)
    assert s.ensure_walk(0, 4 * G1, level=1).ok
    assert s.aug(0, M2, 1, PFN).ok
    r = s.accept(5, 1, 0)
    assert r.td_exit and r.gfn == 5  # 4K accept in a 2M pending leaf: the host must demote
    assert s.accept(0, M2, 1).ok
    # inside an accepted 2M leaf: bits 31:0 carry the level where the walk ended (1)
    assert s.accept(5, 1, 0).status == 0x00000B0A00000001
    assert s.accept(0, G1, 2).status == SE.OPERAND_INVALID  # 4K and 2M only
    t = new()
    pending(t, 0, M2)
    assert t.accept(0, M2, 1).status == 0xC0000B0B00000001  # 4K leaves under the 2M entry
    mapped(t, M2)
    assert t.accept(M2, 1, 0).status == 0x00000B0A00000000  # 4K: level 0, as Linux's old define


def test_accept_under_a_blocked_non_leaf_exits_even_if_accepted():
    # tdg_mem_page_accept.c case 2: an inaccessible intermediate entry ends the walk -> TD exit
    s = new()
    mapped(s, 0)
    pending(s, 1)
    assert s.block(0, M2, 1).ok
    assert s.accept(0, 1).td_exit and s.accept(1, 1).td_exit
    assert state_of(s, 1) == S.PENDING


def test_accept_of_a_missing_sept_page_exits():
    s = Sept(4 * G1)
    assert s.accept(0, 1).td_exit


def test_release_needs_tdx_connect():
    s = new()
    mapped(s, 0)
    assert s.release(0, 1).status == SE.RELEASE_NOT_ENABLED
    assert state_of(s, 0) == S.MAPPED


RELEASE_ROWS = [
    (S.FREE, SE.STATE_INCORRECT, S.FREE),
    (S.PENDING, SE.STATE_INCORRECT, S.PENDING),
    (S.MAPPED, 0, S.PENDING),
    (S.BLOCKED, SE.STATE_INCORRECT, S.BLOCKED),
]


@pytest.mark.parametrize("src,status,after", RELEASE_ROWS, ids=[r[0].name for r in RELEASE_ROWS])
def test_release_on_each_state(src, status, after):
    s = new(connect=True)
    MAKE[src](s, 7)
    assert s.release(7, 1).status == status
    assert state_of(s, 7) == after


def test_tdx_connect_pinned_page_cannot_be_blocked_until_released():
    # seeds/004 (Yan Zhao, Xu Yilun): the TDX module fails the unmap of a TD-DMA-pinned page;
    # after TDG.MEM.PAGE.RELEASE (MAPPED -> PENDING) the host can block, track and remove it.
    s = new(connect=True)
    s.runnable = True
    mapped(s, 0, 8)
    r = s.block(0, 8)
    assert (r.status, r.gfn) == (SE.CONNECT_PINNED, 0)
    assert s.count(S.MAPPED, 0, 8) == 8  # nothing changed
    assert s.release(0, 4).ok
    r = s.block(0, 8)
    assert (r.status, r.gfn) == (SE.CONNECT_PINNED, 4)
    assert s.block(0, 4).ok and s.track().ok and s.remove(0, 4).ok
    assert state_of(s, 0) == S.FREE and state_of(s, 4) == S.MAPPED


def test_tdx_connect_pins_only_once_the_td_runs():
    s = new(connect=True)
    assert s.add(0, 2, PFN).ok
    assert s.block(0, 2).ok  # before FINALIZE the guest has not run: nothing pinned


# --- DEMOTE / PROMOTE ------------------------------------------------------------------------------


def test_aug_at_1g_is_operand_invalid():
    # tdh_mem_page_aug.c: verify_page_info_input(gpa, LVL_PT, LVL_PD) -> 4K and 2M only
    s = new(walk=False)
    assert s.ensure_walk(0, 4 * G1, level=2).ok
    assert s.aug(0, G1, 2, PFN).status == T.TDX_OPERAND_INVALID | RCX
    assert s.counts() == {S.FREE: 4 * G1}


def test_promote_to_1g_and_demote_2m_and_1g():
    s = new(walk=False)
    assert s.ensure_walk(0, 4 * G1, level=1).ok
    assert s.aug(0, G1, 1, PFN).ok  # 512 2M leaves over contiguous frames
    assert s.promote(0, G1, 2).ok
    assert s.lookup(M2 + 3) == (S.PENDING, 2, PFN + M2 + 3)
    assert s.demote(0, G1, 2).ok
    assert s.lookup(M2 + 3) == (S.PENDING, 1, PFN + M2 + 3)
    assert s.entry_state(0, 2) == S.NL_MAPPED and s.entry_state(0, 1) == S.PENDING
    assert s.demote(M2, M2, 1).ok
    assert s.lookup(M2 + 3) == (S.PENDING, 0, PFN + M2 + 3)
    assert s.lookup(3) == (S.PENDING, 1, PFN + 3)
    assert s.demote(M2, M2, 1).status == SE.STATE_INCORRECT  # now a non-leaf
    assert s.demote(0, 1, 0).status == SE.OPERAND_INVALID


def test_demote_while_runnable_needs_block_and_track():
    s = new(walk=False)
    assert s.ensure_walk(0, 4 * G1, level=1).ok
    s.runnable = True
    assert s.aug(0, M2, 1, PFN).ok and s.accept(0, M2, 1).ok
    assert s.demote(0, M2, 1).status == SE.NOT_BLOCKED
    assert s.block(0, M2, 1).ok
    assert s.demote(0, M2, 1).status == SE.TRACKING_NOT_DONE
    s.track()
    assert s.demote(0, M2, 1).ok
    assert s.lookup(100) == (S.MAPPED, 0, PFN + 100)  # children unblocked


def test_demote_of_free_and_pending_blocked():
    s = new(walk=False)
    assert s.ensure_walk(0, 4 * G1, level=1).ok
    assert s.demote(0, M2, 1).status == SE.STATE_INCORRECT
    assert s.aug(0, M2, 1, PFN).ok and s.block(0, M2, 1).ok
    assert s.demote(0, M2, 1).ok  # TD not runnable: no tracking needed
    assert s.lookup(1) == (S.PENDING, 0, PFN + 1)


def test_promote():
    s = new()
    mapped(s, 0, M2)
    assert s.promote(0, M2, 1).ok
    assert s.lookup(7) == (S.MAPPED, 1, PFN + 7)
    assert s.entry_state(0, 1) == S.MAPPED
    assert s.promote(0, M2, 1).status == SE.STATE_INCORRECT  # a leaf now


@pytest.mark.parametrize("breakage", ["hole", "mixed", "noncontiguous", "misaligned"])
def test_promote_conditions(breakage):
    s = new()
    if breakage == "hole":
        mapped(s, 0, M2 - 1)
    elif breakage == "mixed":
        mapped(s, 0, M2 - 1)
        pending(s, M2 - 1)
    elif breakage == "noncontiguous":
        mapped(s, 0, 10)
        assert s.aug(10, M2 - 10, 0, PFN + 0x1000).ok and s.accept(10, M2 - 10).ok
    else:
        assert s.aug(0, M2, 0, PFN + 1).ok
    r = s.promote(0, M2, 1)
    assert (r.status, r.gfn) == (SE.PROMOTE_CONDITIONS, 0)
    assert s.entry_state(0, 1) == S.NL_MAPPED


def test_promote_while_runnable_needs_block_and_track():
    s = new()
    s.runnable = True
    mapped(s, 0, M2)
    assert s.promote(0, M2, 1).status == SE.NOT_BLOCKED
    assert s.block(0, M2, 1).ok
    assert s.promote(0, M2, 1).status == SE.TRACKING_NOT_DONE
    s.track()
    assert s.promote(0, M2, 1).ok
    assert s.lookup(3) == (S.MAPPED, 1, PFN + 3)
    assert s.first_inaccessible(0, M2) is None


# --- queries --------------------------------------------------------------------------------------


def test_first_inaccessible_names_the_reason():
    s = new()
    mapped(s, 0, 4)
    pending(s, 4)
    assert s.first_inaccessible(0, 4) is None
    assert s.first_inaccessible(0, 8) == (4, S.PENDING)
    assert s.first_inaccessible(5, 3) == (5, S.FREE)


def test_status_decoder_explains():
    st = TdxStatus.decode(SE.NOT_BLOCKED)
    assert st.name == "TDX_GPA_RANGE_NOT_BLOCKED" and st.operand == RCX and st.error
    assert "RANGE.BLOCK" in str(st) and "RCX" in str(st)
    assert TdxStatus.decode(0).name == "TDX_SUCCESS" and not TdxStatus.decode(0).error
    w = TdxStatus.decode(SE.ALREADY_ACCEPTED)
    assert w.name == "TDX_PAGE_ALREADY_ACCEPTED" and not w.error  # a warning class
    assert TdxStatus.decode(T.TDX_NON_RECOVERABLE_TD).non_recoverable
    assert "0xc0000b9900000000" in TdxStatus.decode(0xC0000B9900000000).explain()


# --- state machine against a per-page model -------------------------------------------------------

N = 64  # pages in the model (4K level; the walk is built once)
_BLOCKABLE = {S.MAPPED: S.BLOCKED, S.PENDING: S.PENDING_BLOCKED}


class Model:
    """Per-page dict model written from the §1.3 table, independent of sept.py's encoding."""

    def __init__(self, connect):
        self.connect = connect
        self.runnable = False
        self.epoch = 1
        self.pages = {g: (S.FREE, None, 0) for g in range(N)}  # state, pfn, bepoch

    def _batch(self, gfns, check, apply):
        for g in gfns:
            status = check(g, *self.pages[g])
            if status is not None:
                return status, g
        for g in gfns:
            self.pages[g] = apply(g, *self.pages[g])
        return 0, None

    def aug(self, g0, n, pfn):
        return self._batch(range(g0, g0 + n),
                           lambda g, st, p, b: None if st == S.FREE else SE.STATE_INCORRECT,
                           lambda g, st, p, b: (S.PENDING, pfn + g - g0, 0))

    def add(self, g0, n, pfn):
        if self.runnable:
            return T.TDX_OP_STATE_INCORRECT, g0
        return self._batch(range(g0, g0 + n),
                           lambda g, st, p, b: None if st == S.FREE else SE.STATE_INCORRECT,
                           lambda g, st, p, b: (S.MAPPED, pfn + g - g0, 0))

    def block(self, g0, n):
        def check(g, st, p, b):
            if st in (S.BLOCKED, S.PENDING_BLOCKED):
                return SE.ALREADY_BLOCKED
            if st not in _BLOCKABLE:
                return SE.STATE_INCORRECT
            if self.connect and self.runnable and st == S.MAPPED:
                return SE.CONNECT_PINNED
            return None
        return self._batch(range(g0, g0 + n), check,
                           lambda g, st, p, b: (_BLOCKABLE[st], p, self.epoch))

    def remove(self, g0, n):
        def check(g, st, p, b):
            if st == S.FREE:
                return SE.STATE_INCORRECT
            if self.runnable:
                if st not in (S.BLOCKED, S.PENDING_BLOCKED):
                    return SE.NOT_BLOCKED
                if b >= self.epoch:
                    return SE.TRACKING_NOT_DONE
            return None
        return self._batch(range(g0, g0 + n), check, lambda g, st, p, b: (S.FREE, None, 0))

    def accept(self, g0, n):
        for g in range(g0, g0 + n):
            st = self.pages[g][0]
            if st == S.MAPPED:
                return SE.ALREADY_ACCEPTED, g, False
            if st != S.PENDING:
                return None, g, True
        for g in range(g0, g0 + n):
            self.pages[g] = (S.MAPPED,) + self.pages[g][1:]
        return 0, None, False

    def release(self, g0, n):
        if not self.connect:
            return SE.RELEASE_NOT_ENABLED, g0
        return self._batch(range(g0, g0 + n),
                           lambda g, st, p, b: None if st == S.MAPPED else SE.STATE_INCORRECT,
                           lambda g, st, p, b: (S.PENDING, p, b))


ranges = st.integers(0, N - 1).flatmap(lambda g: st.tuples(st.just(g), st.integers(1, min(8, N - g))))


class SeptMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.connect = False
        self.s = None
        self.m = None
        self.next_pfn = 0x5000

    @precondition(lambda self: self.s is None)
    @rule(connect=st.booleans())
    def create(self, connect):
        self.s = Sept(N, connect=connect)
        assert self.s.ensure_walk(0, N).ok
        self.m = Model(connect)

    def _pfn(self, n):
        self.next_pfn += n + 3
        return self.next_pfn

    @precondition(lambda self: self.s is not None and not self.s.runnable)
    @rule()
    def finalize(self):
        self.s.runnable = self.m.runnable = True

    @precondition(lambda self: self.s is not None)
    @rule(r=ranges)
    def aug(self, r):
        pfn = self._pfn(r[1])
        got = self.s.aug(r[0], r[1], 0, pfn)
        assert (got.status, got.gfn) == self.m.aug(r[0], r[1], pfn)

    @precondition(lambda self: self.s is not None)
    @rule(r=ranges)
    def add(self, r):
        pfn = self._pfn(r[1])
        got = self.s.add(r[0], r[1], pfn)
        want = self.m.add(r[0], r[1], pfn)
        assert (got.status, got.gfn) == want

    @precondition(lambda self: self.s is not None)
    @rule(r=ranges)
    def block(self, r):
        got = self.s.block(*r)
        assert (got.status, got.gfn) == self.m.block(*r)

    @precondition(lambda self: self.s is not None)
    @rule()
    def track(self):
        assert self.s.track().ok
        self.m.epoch += 1

    @precondition(lambda self: self.s is not None)
    @rule(r=ranges)
    def remove(self, r):
        got = self.s.remove(*r)
        assert (got.status, got.gfn) == self.m.remove(*r)

    @precondition(lambda self: self.s is not None)
    @rule(r=ranges)
    def accept(self, r):
        got = self.s.accept(*r)
        assert (got.status, got.gfn, got.td_exit) == self.m.accept(*r)

    @precondition(lambda self: self.s is not None)
    @rule(r=ranges)
    def release(self, r):
        got = self.s.release(*r)
        assert (got.status, got.gfn) == self.m.release(*r)

    @invariant()
    def same_pages(self):
        if self.s is None:
            return
        flat = {}
        for run in self.s.runs():
            for i in range(run.npages):  # test side: expanding runs is fine
                g = run.gfn + i
                flat[g] = (run.state, None if run.pfn is None else run.pfn + i)
        assert flat == {g: v[:2] for g, v in self.m.pages.items()}
        assert sum(self.s.counts().values()) == N


TestSeptMachine = SeptMachine.TestCase
TestSeptMachine.settings = settings(max_examples=120, stateful_step_count=40, deadline=None)


@given(st.lists(st.tuples(st.integers(0, N - 1), st.integers(1, 8)), max_size=12))
def test_runs_coalesce_contiguous_frames(spans):
    s = Sept(N)
    s.ensure_walk(0, N)
    for g, n in spans:
        n = min(n, N - g)
        s.aug(g, n, 0, 0x9000 + g)  # the same gfn -> pfn line everywhere
    runs = list(s.runs())
    for a, b in zip(runs, runs[1:]):  # neighbours always differ in state
        assert a.state != b.state
