"""kmock_cca.rtt: every RMI command on every source state, the RSI protocol, the access
outcomes, and a state machine against a per-granule model of RIPAS x HIPAS.

Expected codes come from TF-RMM runtime/rmi/rtt.c (RMM 1.0), granule.c, realm.c,
runtime/rsi/memory.c and rec.c complete_set_ripas; each test names the function.
"""

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from kmock_cca.rtt import (
    RSI_ACCEPT,
    RSI_CHANGE_DESTROYED,
    RSI_NO_CHANGE_DESTROYED,
    RSI_REJECT,
    REC_ENTER_FLAG_RIPAS_RESPONSE,
    Access,
    GranuleState,
    GranuleTable,
    Hipas,
    Realm,
    Rec,
    RipasChangeExit,
    Ripas,
    RmiStatus,
    RmmRealmState,
    RsiStatus,
    rmi_index,
    rmi_return,
    rmi_status,
)

K = 4096
MB2 = 2 << 20
GB = 1 << 30
BASE = 0x8000_0000  # granule table base (2 MB aligned)
NGRAN = 1536

OK = rmi_return(RmiStatus.SUCCESS)
INPUT = rmi_return(RmiStatus.ERROR_INPUT)
REALM = rmi_return(RmiStatus.ERROR_REALM)
REC = rmi_return(RmiStatus.ERROR_REC)


def RTT(level):
    return rmi_return(RmiStatus.ERROR_RTT, level)


def gpa(i):
    """PA of granule i of the table."""
    return BASE + i * K


class Alloc:
    """Hands out delegated granules from the top of the table."""

    def __init__(self, granules, start=NGRAN - 1):
        self.g = granules
        self.next = start

    def __call__(self):
        pa = gpa(self.next)
        self.next -= 1
        assert self.g.delegate(pa).ret == OK
        return pa


@pytest.fixture
def g():
    return GranuleTable(NGRAN, base=BASE)


@pytest.fixture
def realm(g):
    g.delegate(gpa(NGRAN - 1))
    res, r = Realm.create(g, gpa(NGRAN - 1), 32)
    assert res.ret == OK
    r.alloc = Alloc(g, NGRAN - 2)
    return r


def tables(r, ipa, level=3):
    """Create the RTTs down to ``level`` for ``ipa``."""
    if r.level(ipa) < 2:
        assert r.rtt_create(r.alloc(), ipa & ~(GB - 1), 2).ret == OK
    if level == 3 and r.level(ipa) < 3:
        assert r.rtt_create(r.alloc(), ipa & ~(MB2 - 1), 3).ret == OK


def delegate(g, first, n=1):
    for i in range(first, first + n):
        assert g.delegate(gpa(i)).ret == OK


def ent(r, ipa):
    e = r.entry(ipa)
    return e.hipas, e.ripas


# --- return code encoding -------------------------------------------------------------------


def test_return_code_packs_status_and_index():
    # TF-RMM pack_return_code / v14 rmi_smc.h RMI_RETURN_STATUS/INDEX
    assert rmi_return(RmiStatus.ERROR_RTT, 2) == 0x204
    assert rmi_status(0x204) == RmiStatus.ERROR_RTT and rmi_index(0x204) == 2


# --- granules (granule.c) -------------------------------------------------------------------

ALL_STATES = list(GranuleState)


@pytest.mark.parametrize("state", ALL_STATES, ids=[s.name for s in ALL_STATES])
def test_delegate_only_from_undelegated(g, state):
    g.set_state(5, 1, state)
    res = g.delegate(gpa(5))
    if state == GranuleState.UNDELEGATED:
        assert res.ret == OK and g.state(gpa(5)) == GranuleState.DELEGATED
    else:
        assert res.ret == INPUT and g.state(gpa(5)) == state


@pytest.mark.parametrize("state", ALL_STATES, ids=[s.name for s in ALL_STATES])
def test_undelegate_only_from_delegated(g, state):
    g.set_state(5, 1, state)
    res = g.undelegate(gpa(5))
    if state == GranuleState.DELEGATED:
        assert res.ret == OK and g.state(gpa(5)) == GranuleState.UNDELEGATED
    else:
        assert res.ret == INPUT and g.state(gpa(5)) == state


@pytest.mark.parametrize("pa", [BASE + 1, BASE - K, BASE + NGRAN * K], ids=["unaligned", "below", "above"])
def test_delegate_of_an_untracked_address_is_input(g, pa):
    assert g.delegate(pa).ret == INPUT
    assert g.undelegate(pa).ret == INPUT


def test_delegate_range_stops_at_the_first_non_ns_granule(g):
    g.set_state(10, 1, GranuleState.DATA)
    res, done = g.delegate_range(gpa(4), 10 * K)
    assert res.ret == INPUT and done == 6 * K
    assert g.count(GranuleState.DELEGATED) == 6


def test_host_access_to_realm_pas_is_a_gpf_and_ns_is_not(g):
    assert g.host_access(gpa(3), 3 * K) is None
    g.delegate(gpa(4))
    f = g.host_access(gpa(3), 3 * K, write=True)
    assert f.kind == Access.GPF and f.pa == gpa(4) and f.state == GranuleState.DELEGATED
    assert "DELEGATED" in f.explanation and "write" in f.explanation
    d = g.dma_access(gpa(4), 8)
    assert d.kind == Access.SMMU_GPF and d.pa == gpa(4)
    assert g.dma_access(gpa(5), K) is None


# --- realm create / activate (realm.c) ------------------------------------------------------


def test_realm_create_needs_a_delegated_rd(g):
    res, r = Realm.create(g, gpa(1), 32)
    assert res.ret == INPUT and r is None
    g.delegate(gpa(1))
    res, r = Realm.create(g, gpa(1), 32)
    assert res.ret == OK and g.state(gpa(1)) == GranuleState.RD


def test_activate_only_from_new(realm):
    assert realm.activate().ret == OK and realm.rmm_state == RmmRealmState.ACTIVE
    assert realm.activate().ret == REALM


def test_initial_entries(realm):
    assert ent(realm, 0) == (Hipas.UNASSIGNED, Ripas.EMPTY)
    e = realm.entry(realm.par_size + 5 * K)
    assert e.hipas == Hipas.UNASSIGNED and e.ripas is None and not e.protected
    assert realm.level(0) == 1


# --- RTT_CREATE / FOLD / DESTROY (rtt.c) ----------------------------------------------------


def test_rtt_create_errors_and_success(realm, g):
    pa = realm.alloc()
    g.set_state(g.index(pa), 1, GranuleState.UNDELEGATED)
    assert realm.rtt_create(pa, 0, 2).ret == INPUT  # not DELEGATED
    pa = realm.alloc()
    assert realm.rtt_create(pa, 0, 1).ret == INPUT  # level below start + 1
    assert realm.rtt_create(pa, 0, 4).ret == INPUT
    assert realm.rtt_create(pa, MB2, 2).ret == INPUT  # not aligned to the parent (1 GB)
    assert realm.rtt_create(pa, 1 << 32, 2).ret == INPUT  # outside the IPA space
    assert realm.rtt_create(pa, 0, 3).ret == RTT(1)  # walk stops at level 1
    assert realm.rtt_create(pa, 0, 2).ret == OK
    assert g.state(pa) == GranuleState.RTT and realm.level(0) == 2
    assert realm.rtt_create(realm.alloc(), 0, 2).ret == RTT(1)  # parent is a table
    pa3 = realm.alloc()
    assert realm.rtt_create(pa3, K, 3).ret == INPUT  # not 2 MB aligned
    assert realm.rtt_create(pa3, 0, 3).ret == OK and realm.level(0) == 3
    assert realm.rtt_create(realm.alloc(), 0, 3).ret == RTT(2)


def test_rtt_create_children_inherit_the_parent(realm, g):
    tables(realm, 0, 2)
    assert realm.rtt_init_ripas(0, MB2).ret == OK  # the 2 MB level-2 entry becomes RAM
    tables(realm, 0, 3)
    assert ent(realm, 0) == ent(realm, MB2 - K) == (Hipas.UNASSIGNED, Ripas.RAM)


def test_fold_of_homogeneous_unassigned_table(realm, g):
    tables(realm, 0)
    res = realm.rtt_fold(0, 3)
    assert res.ret == OK and realm.level(0) == 2
    assert g.state(res.x1) == GranuleState.DELEGATED
    assert realm.rtt_fold(0, 3).ret == RTT(2)  # no level-3 RTT any more


def test_fold_mixed_table_is_rtt_level(realm):
    tables(realm, 0)
    delegate(realm.granules, 0)
    assert realm.data_create(gpa(0), 0, gpa(600)).ret == OK
    assert realm.rtt_fold(0, 3).ret == RTT(3)


def test_fold_of_a_contiguous_aligned_assigned_table_makes_a_block(realm, g):
    tables(realm, 0)
    delegate(g, 512, 512)  # granules 512..1023: PA 0x80200000, 2 MB aligned
    res, done = realm.data_create_range(gpa(512), 0, gpa(0), MB2)
    assert res.ret == OK and done == MB2
    assert realm.rtt_fold(0, 3).ret == OK
    e = realm.entry(5 * K)
    assert (e.level, e.hipas, e.ripas, e.pa) == (2, Hipas.ASSIGNED, Ripas.RAM, gpa(517))
    # DATA_DESTROY of a block: the walk stops at level 2 (split first with RTT_CREATE)
    assert realm.data_destroy(0).ret == RTT(2)
    tables(realm, 0)
    assert realm.data_destroy(K).ret == OK
    assert ent(realm, K) == (Hipas.UNASSIGNED, Ripas.DESTROYED)
    assert ent(realm, 2 * K) == (Hipas.ASSIGNED, Ripas.RAM)


def test_fold_of_a_misaligned_assigned_table_is_refused(realm, g):
    tables(realm, 0)
    delegate(g, 513, 512)  # PA not 2 MB aligned
    assert realm.data_create_range(gpa(513), 0, gpa(0), MB2)[0].ret == OK
    assert realm.rtt_fold(0, 3).ret == RTT(3)


def test_fold_of_level2_table(realm):
    tables(realm, 0, 2)
    assert realm.rtt_fold(0, 2).ret == OK and realm.level(0) == 1
    tables(realm, 0)
    assert realm.rtt_fold(0, 2).ret == RTT(2)  # a child level-3 RTT: mixed


def test_destroy_live_table_is_rtt_level(realm, g):
    tables(realm, 0)
    delegate(g, 0)
    realm.data_create(gpa(0), 0, gpa(600))
    res = realm.rtt_destroy(0, 3)
    assert res.ret == RTT(3)


def test_destroy_of_non_live_table_makes_ripas_destroyed(realm, g):
    tables(realm, 0)
    assert realm.rtt_init_ripas(0, 4 * K).x1 == 4 * K
    res = realm.rtt_destroy(0, 3)
    assert res.ret == OK and g.state(res.x1) == GranuleState.DELEGATED and res.x2 == MB2
    assert realm.level(0) == 2
    assert ent(realm, 0) == ent(realm, MB2 - K) == (Hipas.UNASSIGNED, Ripas.DESTROYED)
    assert realm.rtt_destroy(0, 3).ret == RTT(2)  # nothing there any more


def test_destroy_of_unprotected_table_makes_unassigned_ns(realm):
    ipa = realm.par_size
    tables(realm, ipa)
    assert realm.rtt_map_unprotected(ipa, 3, 0x1000_0000).ret == OK
    assert realm.rtt_destroy(ipa, 3).ret == OK  # NS mappings hold no reference
    assert realm.entry(ipa).hipas == Hipas.UNASSIGNED


# --- DATA_CREATE / DATA_CREATE_UNKNOWN / DATA_DESTROY (rtt.c data_create, smc_data_destroy) --


def test_data_create_error_order(realm, g):
    tables(realm, 0)
    delegate(g, 0)
    assert realm.data_create(gpa(0), 0, gpa(600), flags=2).ret == INPUT  # flags first
    g.set_state(600, 1, GranuleState.DELEGATED)
    assert realm.data_create(gpa(0), 0, gpa(600)).ret == INPUT  # src not NS
    g.set_state(600, 1, GranuleState.UNDELEGATED)
    assert realm.data_create(gpa(1), 0, gpa(600)).ret == INPUT  # data not DELEGATED
    assert realm.data_create(gpa(0), realm.par_size, gpa(600)).ret == INPUT  # unprotected
    assert realm.data_create(gpa(0), 1 * GB, gpa(600)).ret == RTT(1)
    tables(realm, GB, 2)
    assert realm.data_create(gpa(0), GB, gpa(600)).ret == RTT(2)
    assert realm.data_create(gpa(0), K + 1, gpa(600)).ret == INPUT  # unaligned IPA
    realm.activate()
    assert realm.data_create(gpa(0), 0, gpa(600)).ret == REALM  # before the walk
    assert realm.data_create(gpa(0), K + 1, gpa(600)).ret == REALM  # and before the IPA checks
    assert realm.data_create_unknown(gpa(0), K + 1).ret == INPUT  # UNKNOWN: any realm state
    assert g.state(gpa(0)) == GranuleState.DELEGATED  # nothing half-done


@pytest.mark.parametrize("ripas", [Ripas.EMPTY, Ripas.RAM, Ripas.DESTROYED])
def test_data_create_from_each_unassigned_state_gives_assigned_ram(realm, g, ripas):
    tables(realm, 0)
    _make_unassigned(realm, 0, ripas)
    delegate(g, 0)
    assert realm.data_create(gpa(0), 0, gpa(600), flags=1).ret == OK
    assert ent(realm, 0) == (Hipas.ASSIGNED, Ripas.RAM)
    assert realm.entry(0).pa == gpa(0) and g.state(gpa(0)) == GranuleState.DATA
    assert realm.rim[-1] == ("DATA_CREATE", 0, K, True)
    delegate(g, 1)
    assert realm.data_create(gpa(1), 0, gpa(600)).ret == RTT(3)  # already ASSIGNED


@pytest.mark.parametrize("ripas", [Ripas.EMPTY, Ripas.RAM, Ripas.DESTROYED])
def test_data_create_unknown_keeps_ripas_in_any_realm_state(realm, g, ripas):
    tables(realm, 0)
    _make_unassigned(realm, 0, ripas)
    realm.activate()
    delegate(g, 0)
    assert realm.data_create_unknown(gpa(0), 0).ret == OK
    assert ent(realm, 0) == (Hipas.ASSIGNED, ripas)


def _make_unassigned(realm, ipa, ripas):
    """Bring the level-3 entry at ipa to UNASSIGNED ripas (realm NEW)."""
    if ripas == Ripas.RAM:
        assert realm.rtt_init_ripas(ipa, ipa + K).ret == OK
    elif ripas == Ripas.DESTROYED:
        g = realm.granules
        realm.rtt_init_ripas(ipa, ipa + K)
        g.delegate(gpa(700))
        assert realm.data_create(gpa(700), ipa, gpa(601)).ret == OK
        assert realm.data_destroy(ipa).ret == OK
    assert ent(realm, ipa) == (Hipas.UNASSIGNED, ripas)


@pytest.mark.parametrize(
    "ripas,after", [(Ripas.RAM, Ripas.DESTROYED), (Ripas.EMPTY, Ripas.EMPTY), (Ripas.DESTROYED, Ripas.DESTROYED)]
)
def test_data_destroy_from_each_assigned_state(realm, g, ripas, after):
    tables(realm, 0)
    _make_unassigned(realm, 0, ripas)
    realm.activate()
    delegate(g, 0)
    realm.data_create_unknown(gpa(0), 0)
    res = realm.data_destroy(0)
    assert res.ret == OK and res.x1 == gpa(0) and res.x2 == K
    assert ent(realm, 0) == (Hipas.UNASSIGNED, after)
    assert g.state(gpa(0)) == GranuleState.DELEGATED


def test_data_destroy_errors(realm):
    assert realm.data_destroy(realm.par_size).ret == INPUT
    assert realm.data_destroy(K + 1).ret == INPUT
    assert realm.data_destroy(0).ret == RTT(1)
    tables(realm, 0, 2)
    assert realm.data_destroy(0).ret == RTT(2)
    tables(realm, 0)
    res = realm.data_destroy(0)
    assert res.ret == RTT(3) and res.x2 == MB2  # nothing live in this RTT


def test_data_create_range_stops_at_the_first_failure_and_reports_it(realm, g):
    tables(realm, 0)
    delegate(g, 0, 8)
    g.set_state(5, 1, GranuleState.UNDELEGATED)
    res, done = realm.data_create_range(gpa(0), 0, gpa(600), 8 * K)
    assert res.ret == INPUT and done == 5 * K
    assert realm.assigned_pages() == 5
    res, done = realm.data_destroy_range(0, 8 * K)
    assert res.ret == RTT(3) and done == 5 * K


def test_data_create_range_stops_where_the_level3_rtts_end(realm, g):
    tables(realm, 0)
    delegate(g, 0, 4)
    res, done = realm.data_create_range(gpa(0), MB2 - 2 * K, gpa(600), 4 * K)
    assert res.ret == RTT(2) and done == 2 * K
    assert ent(realm, MB2) == (Hipas.UNASSIGNED, Ripas.EMPTY)
    assert g.state(gpa(2)) == GranuleState.DELEGATED


# --- RTT_INIT_RIPAS (smc_rtt_init_ripas) ----------------------------------------------------


def test_init_ripas_errors(realm):
    assert realm.rtt_init_ripas(K, K).ret == INPUT
    assert realm.rtt_init_ripas(1, K).ret == INPUT
    assert realm.rtt_init_ripas(realm.par_size - K, realm.par_size + K).ret == INPUT
    assert realm.rtt_init_ripas(0, MB2).ret == RTT(1)  # a 1 GB level-1 entry, top inside it
    realm.activate()
    assert realm.rtt_init_ripas(0, K).ret == REALM


def test_init_ripas_whole_level1_entry_without_tables(realm):
    res = realm.rtt_init_ripas(0, GB)
    assert res.ret == OK and res.x1 == GB
    assert ent(realm, GB - K) == (Hipas.UNASSIGNED, Ripas.RAM)
    assert ent(realm, GB) == (Hipas.UNASSIGNED, Ripas.EMPTY)


def test_init_ripas_stops_at_the_end_of_the_rtt_and_at_assigned(realm, g):
    tables(realm, 0)
    assert realm.rtt_init_ripas(0, 2 * MB2).x1 == MB2  # one level-3 RTT per call
    tables(realm, MB2)
    delegate(g, 0)
    realm.data_create(gpa(0), MB2 + 3 * K, gpa(600))
    assert realm.rtt_init_ripas(MB2, 2 * MB2).x1 == MB2 + 3 * K
    assert realm.rtt_init_ripas(MB2 + 3 * K, 2 * MB2).ret == RTT(3)  # no progress


def test_init_ripas_over_populated_pages_is_a_setting(g):
    for skip, x1 in ((False, 2 * K), (True, 4 * K)):
        gt = GranuleTable(NGRAN, base=BASE)
        gt.delegate(gpa(NGRAN - 1))
        r = Realm.create(gt, gpa(NGRAN - 1), 32, init_ripas_skips_assigned_ram=skip)[1]
        r.alloc = Alloc(gt, NGRAN - 2)
        tables(r, 0)
        delegate(gt, 0)
        assert r.data_create(gpa(0), 2 * K, gpa(600)).ret == OK
        assert r.rtt_init_ripas(0, 4 * K).x1 == x1
        assert ent(r, 3 * K) == (Hipas.UNASSIGNED, Ripas.RAM if skip else Ripas.EMPTY)
        assert ent(r, 2 * K) == (Hipas.ASSIGNED, Ripas.RAM)


def test_init_ripas_stops_at_destroyed(realm):
    tables(realm, 0)
    _make_unassigned(realm, 2 * K, Ripas.DESTROYED)
    assert realm.rtt_init_ripas(0, 4 * K).x1 == 2 * K
    assert realm.rtt_init_ripas(2 * K, 4 * K).ret == RTT(3)
    assert ent(realm, 2 * K) == (Hipas.UNASSIGNED, Ripas.DESTROYED)


# --- RSI_IPA_STATE_SET + RTT_SET_RIPAS + completion (memory.c, update_ripas, rec.c) ---------

SET_RIPAS_TABLE = [
    # (source hipas, source ripas, request, CHANGE_DESTROYED) -> new ripas or None (no progress)
    (Hipas.UNASSIGNED, Ripas.EMPTY, Ripas.RAM, False, Ripas.RAM),
    (Hipas.UNASSIGNED, Ripas.RAM, Ripas.RAM, False, Ripas.RAM),
    (Hipas.UNASSIGNED, Ripas.DESTROYED, Ripas.RAM, False, None),
    (Hipas.UNASSIGNED, Ripas.DESTROYED, Ripas.RAM, True, Ripas.RAM),
    (Hipas.ASSIGNED, Ripas.EMPTY, Ripas.RAM, False, Ripas.RAM),
    (Hipas.ASSIGNED, Ripas.DESTROYED, Ripas.RAM, False, None),
    (Hipas.ASSIGNED, Ripas.DESTROYED, Ripas.RAM, True, Ripas.RAM),
    (Hipas.UNASSIGNED, Ripas.RAM, Ripas.EMPTY, False, Ripas.EMPTY),
    (Hipas.UNASSIGNED, Ripas.EMPTY, Ripas.EMPTY, False, Ripas.EMPTY),
    (Hipas.UNASSIGNED, Ripas.DESTROYED, Ripas.EMPTY, False, None),
    (Hipas.UNASSIGNED, Ripas.DESTROYED, Ripas.EMPTY, True, Ripas.EMPTY),
    (Hipas.ASSIGNED, Ripas.RAM, Ripas.EMPTY, False, Ripas.EMPTY),
    (Hipas.ASSIGNED, Ripas.DESTROYED, Ripas.EMPTY, True, Ripas.EMPTY),
]


@pytest.mark.parametrize("hipas,ripas,req,cd,new", SET_RIPAS_TABLE)
def test_set_ripas_on_each_source_state(realm, g, hipas, ripas, req, cd, new):
    tables(realm, 0)
    _make_unassigned(realm, 0, ripas)
    realm.activate()
    if hipas == Hipas.ASSIGNED:
        delegate(g, 0)
        assert realm.data_create_unknown(gpa(0), 0).ret == OK
    rec = Rec(realm)
    flags = RSI_CHANGE_DESTROYED if cd else RSI_NO_CHANGE_DESTROYED
    ex = rec.ipa_state_set(0, K, req, flags)
    assert ex == RipasChangeExit(0, K, req)
    res = realm.rtt_set_ripas(rec, 0, K)
    if new is None:
        assert res.ret == RTT(3) and ent(realm, 0) == (hipas, ripas)
        assert rec.enter() == (RsiStatus.SUCCESS, 0, RSI_ACCEPT)  # incomplete: new_base == base
    else:
        assert res.ret == OK and res.x1 == K and ent(realm, 0) == (hipas, new)
        assert rec.enter() == (RsiStatus.SUCCESS, K, RSI_ACCEPT)


def test_set_ripas_checks_the_rec_and_the_range(realm):
    tables(realm, 0)
    realm.activate()
    rec = Rec(realm)
    rec.ipa_state_set(0, 4 * K, Ripas.RAM)
    assert realm.rtt_set_ripas(rec, 2 * K, 2 * K).ret == INPUT  # top <= base
    assert realm.rtt_set_ripas(rec, 0, K + 1).ret == INPUT  # top not granule aligned
    other = Rec(Realm(realm.granules, 0, 32))
    assert realm.rtt_set_ripas(other, 0, K).ret == REC
    rec.running = True
    assert realm.rtt_set_ripas(rec, 0, K).ret == REC
    rec.running = False
    assert realm.rtt_set_ripas(rec, K, 2 * K).ret == INPUT  # base != rec.ripas_addr
    assert realm.rtt_set_ripas(rec, 0, 5 * K).ret == INPUT  # beyond the request
    assert realm.rtt_set_ripas(rec, 0, 2 * K).x1 == 2 * K
    assert realm.rtt_set_ripas(rec, 0, 4 * K).ret == INPUT  # must continue from 2 * K
    assert realm.rtt_set_ripas(rec, 2 * K, 4 * K).x1 == 4 * K


@pytest.mark.parametrize(
    "args",
    [(0, K, 2, 0), (0, K, 3, 0), (1, K, 1, 0), (0, K + 1, 1, 0), (K, K, 1, 0), ("par", None, 1, 0)],
    ids=["ripas-destroyed", "ripas-dev", "base-unaligned", "top-unaligned", "empty", "beyond-par"],
)
def test_ipa_state_set_bad_input_returns_to_the_realm(realm, args):
    rec = Rec(realm)
    base, top, ripas, flags = args
    if base == "par":
        base, top = realm.par_size - K, realm.par_size + K
    assert rec.ipa_state_set(base, top, ripas, flags) == (RsiStatus.ERROR_INPUT, 0, 0)
    assert not rec.ripas_pending


def test_partial_progress_and_reject_table(realm):
    """§3.2: (new_base, response) for base/middle/top with ACCEPT and REJECT."""
    tables(realm, 0)
    realm.activate()

    def run(ripas, progress_pages, reject):
        rec = Rec(realm)
        rec.ipa_state_set(0, 4 * K, ripas)
        if progress_pages:
            realm.rtt_set_ripas(rec, 0, progress_pages * K)
        return rec.enter(REC_ENTER_FLAG_RIPAS_RESPONSE if reject else 0)

    assert run(Ripas.RAM, 0, False) == (RsiStatus.SUCCESS, 0, RSI_ACCEPT)
    assert run(Ripas.RAM, 2, False) == (RsiStatus.SUCCESS, 2 * K, RSI_ACCEPT)
    assert run(Ripas.RAM, 4, False) == (RsiStatus.SUCCESS, 4 * K, RSI_ACCEPT)
    assert run(Ripas.RAM, 0, True) == (RsiStatus.SUCCESS, 0, RSI_REJECT)
    assert run(Ripas.RAM, 2, True) == (RsiStatus.SUCCESS, 2 * K, RSI_REJECT)
    assert run(Ripas.RAM, 4, True) == (RsiStatus.SUCCESS, 4 * K, RSI_ACCEPT)  # done: nothing left
    assert run(Ripas.EMPTY, 0, True) == (RsiStatus.SUCCESS, 0, RSI_ACCEPT)  # EMPTY is never rejected


def test_enter_without_a_pending_request_returns_none(realm):
    assert Rec(realm).enter() is None


def test_change_destroyed_flag_is_compared_whole(realm):
    # runtime/rsi/memory.c stores X4 as the enum; only RSI_CHANGE_DESTROYED (1) counts
    tables(realm, 0)
    _make_unassigned(realm, 0, Ripas.DESTROYED)
    realm.activate()
    rec = Rec(realm)
    rec.ipa_state_set(0, K, Ripas.RAM, flags=3)
    assert realm.rtt_set_ripas(rec, 0, K).ret == RTT(3)


def test_ipa_state_get(realm, g):
    tables(realm, 0)
    realm.rtt_init_ripas(0, 3 * K)
    rec = Rec(realm)
    assert rec.ipa_state_get(0, 8 * K) == (RsiStatus.SUCCESS, 3 * K, Ripas.RAM)
    assert rec.ipa_state_get(3 * K, 8 * K) == (RsiStatus.SUCCESS, 8 * K, Ripas.EMPTY)
    assert rec.ipa_state_get(K, K)[0] == RsiStatus.ERROR_INPUT
    assert rec.ipa_state_get(0, realm.par_size + K)[0] == RsiStatus.ERROR_INPUT


# --- unprotected IPA (map_unmap_ns) ---------------------------------------------------------


def test_map_and_unmap_unprotected(realm):
    ipa = realm.par_size + MB2
    assert realm.rtt_map_unprotected(ipa, 1, 0).ret == INPUT  # level
    assert realm.rtt_map_unprotected(ipa, 3, 0x1001).ret == INPUT  # output address
    assert realm.rtt_map_unprotected(0, 3, 0x1000).ret == INPUT  # protected IPA
    assert realm.rtt_map_unprotected(ipa, 3, 0x1000).ret == RTT(1)
    tables(realm, ipa, 2)
    assert realm.rtt_map_unprotected(ipa, 3, 0x1000).ret == RTT(2)
    tables(realm, ipa)
    assert realm.rtt_map_unprotected(ipa, 2, 0x20_0000).ret == RTT(2)  # a table is there
    assert realm.rtt_map_unprotected(ipa, 3, 0x1000).ret == OK
    e = realm.entry(ipa)
    assert e.hipas == Hipas.ASSIGNED and e.pa == 0x1000 and not e.protected
    assert realm.rtt_map_unprotected(ipa, 3, 0x2000).ret == RTT(3)
    assert realm.rtt_unmap_unprotected(ipa + K, 3).ret == RTT(3)
    res = realm.rtt_unmap_unprotected(ipa, 3)
    assert res.ret == OK and res.x1 == ipa + K
    assert realm.entry(ipa).hipas == Hipas.UNASSIGNED


# --- realm accesses (rmm A5.2, §3.3 table) --------------------------------------------------


def test_realm_access_outcomes(realm, g):
    tables(realm, 0)
    _make_unassigned(realm, 0, Ripas.DESTROYED)
    realm.rtt_init_ripas(K, 2 * K)
    delegate(g, 3)
    realm.data_create(gpa(3), 2 * K, gpa(600))
    delegate(g, 4)
    realm.data_create_unknown(gpa(4), 3 * K)  # ASSIGNED EMPTY
    assert realm.realm_access(0)[0] == Access.DESTROYED
    assert realm.realm_access(K)[0] == Access.REC_EXIT  # RAM, UNASSIGNED: KVM maps it
    assert realm.realm_access(2 * K)[0] == Access.OK
    assert realm.realm_access(3 * K)[0] == Access.SEA  # EMPTY, ASSIGNED
    assert realm.realm_access(4 * K)[0] == Access.SEA  # EMPTY, UNASSIGNED
    ns = realm.par_size
    assert realm.realm_access(ns)[0] == Access.REC_EXIT
    assert realm.realm_access(ns, fetch=True)[0] == Access.SEA


def test_entry_repr_and_runs(realm, g):
    tables(realm, 0)
    delegate(g, 0, 2)
    realm.data_create_range(gpa(0), 0, gpa(600), 2 * K)
    assert str(realm.entry(K)) == f"IPA {K:#x} (protected, level 3): ASSIGNED RAM, PA {gpa(1):#x}"
    assert str(realm.entry(realm.par_size)).endswith("(unprotected, level 1): UNASSIGNED_NS")
    runs = list(realm.runs(0, 4 * K))
    assert runs == [
        (0, 2 * K, Hipas.ASSIGNED, Ripas.RAM, gpa(0)),
        (2 * K, 4 * K, Hipas.UNASSIGNED, Ripas.EMPTY, None),
    ]


# --- state machine against a per-granule model ----------------------------------------------

WIN_BLOCKS = 2  # the model covers the first 2 x 2 MB of the protected half
WIN = WIN_BLOCKS * 512
NG = 12  # granules the machine uses for DATA and RTTs (few, so that rules meet)
NS_SRC = NG + 100  # a granule that stays UNDELEGATED: a valid DATA_CREATE source
PAGES = st.one_of(st.integers(0, 7), st.integers(508, 515), st.integers(WIN - 8, WIN - 1))


class RttMachine(RuleBasedStateMachine):
    """Per-granule model: page -> (hipas, ripas, frame); set of level-3 RTT blocks; granule
    states; REC request. Every command's return code and the full state are compared."""

    @initialize()
    def setup(self):
        self.g = GranuleTable(NGRAN, base=BASE)
        self.g.delegate(gpa(NGRAN - 1))
        self.r = Realm.create(self.g, gpa(NGRAN - 1), 32)[1]
        self.g.delegate(gpa(NGRAN - 2))
        assert self.r.rtt_create(gpa(NGRAN - 2), 0, 2).ret == OK  # the level-2 RTT stays
        self.pages = {p: (Hipas.UNASSIGNED, Ripas.EMPTY, None) for p in range(WIN)}
        self.l3 = {}
        self.gs = {i: GranuleState.UNDELEGATED for i in range(NG)}
        # start with both level-3 RTTs and half of the pool delegated, so rules meet early
        for i in range(NG // 2):
            self.delegate(i)
        self.rtt_create(0, NG - 1)
        self.rtt_create(1, NG - 2)
        assert len(self.l3) == 0  # NG - 1, NG - 2 are not delegated: create them for real
        self.delegate(NG - 1)
        self.delegate(NG - 2)
        self.rtt_create(0, NG - 1)
        self.rtt_create(1, NG - 2)
        assert len(self.l3) == 2
        self.new = True
        self.rec = Rec(self.r)
        self.req = None  # (addr, top, ripas, cd)

    # helpers of the model ----------------------------------------------------------------
    def level(self, p):
        return 3 if p // 512 in self.l3 else 2

    def m_data_check(self, gi, p, src, flags, known):
        if known:
            if flags not in (0, 1):
                return INPUT
            if src is None or self.gs.get(src, GranuleState.UNDELEGATED) != GranuleState.UNDELEGATED:
                return INPUT
        if gi >= NG or self.gs[gi] != GranuleState.DELEGATED:
            return INPUT
        if known and not self.new:
            return REALM
        if p >= WIN:
            return None  # out of the window: not generated
        if self.level(p) != 3:
            return RTT(2)
        if self.pages[p][0] != Hipas.UNASSIGNED:
            return RTT(3)
        return None

    # rules ---------------------------------------------------------------------------------
    @rule(i=st.integers(0, NG - 1))
    def delegate(self, i):
        exp = OK if self.gs[i] == GranuleState.UNDELEGATED else INPUT
        assert self.g.delegate(gpa(i)).ret == exp
        if exp == OK:
            self.gs[i] = GranuleState.DELEGATED

    @rule(i=st.integers(0, NG - 1), n=st.integers(1, NG))
    def delegate_range(self, i, n):
        n = min(n, NG - i)
        k = 0
        while k < n and self.gs[i + k] == GranuleState.UNDELEGATED:
            self.gs[i + k] = GranuleState.DELEGATED
            k += 1
        res, done = self.g.delegate_range(gpa(i), n * K)
        assert (res.ret, done) == (OK if k == n else INPUT, k * K)

    @rule(i=st.integers(0, NG - 1))
    def undelegate(self, i):
        exp = OK if self.gs[i] == GranuleState.DELEGATED else INPUT
        assert self.g.undelegate(gpa(i)).ret == exp
        if exp == OK:
            self.gs[i] = GranuleState.UNDELEGATED

    @rule(b=st.integers(0, WIN_BLOCKS - 1), i=st.integers(0, NG - 1))
    def rtt_create(self, b, i):
        if self.gs[i] != GranuleState.DELEGATED:
            exp = INPUT
        elif b in self.l3:
            exp = RTT(2)
        else:
            exp = OK
        assert self.r.rtt_create(gpa(i), b * MB2, 3).ret == exp
        if exp == OK:
            self.l3[b] = i
            self.gs[i] = GranuleState.RTT

    # fold and destroy succeed on any empty table: weighted down so that tables live longer
    @rule(b=st.integers(0, WIN_BLOCKS - 1), go=st.integers(0, 3))
    def rtt_fold(self, b, go):
        if go:
            return
        ps = [self.pages[p] for p in range(b * 512, b * 512 + 512)]
        if b not in self.l3:
            exp = RTT(2)
        elif any(x[:2] != ps[0][:2] for x in ps):
            exp = RTT(3)
        elif ps[0][0] == Hipas.ASSIGNED and (
            any(x[2] != ps[0][2] + k for k, x in enumerate(ps)) or ps[0][2] % 512
        ):
            exp = RTT(3)
        else:
            exp = OK
        assert self.r.rtt_fold(b * MB2, 3).ret == exp
        if exp == OK:
            self.gs[self.l3.pop(b)] = GranuleState.DELEGATED

    @rule(b=st.integers(0, WIN_BLOCKS - 1), go=st.integers(0, 3))
    def rtt_destroy(self, b, go):
        if go:
            return
        ps = range(b * 512, b * 512 + 512)
        if b not in self.l3:
            exp = RTT(2)
        elif any(self.pages[p][0] == Hipas.ASSIGNED for p in ps):
            exp = RTT(3)
        else:
            exp = OK
        assert self.r.rtt_destroy(b * MB2, 3).ret == exp
        if exp == OK:
            self.gs[self.l3.pop(b)] = GranuleState.DELEGATED
            for p in ps:
                self.pages[p] = (Hipas.UNASSIGNED, Ripas.DESTROYED, None)

    @rule(
        gi=st.integers(0, NG // 2),
        p=PAGES,
        n=st.integers(1, 4),
        src=st.one_of(st.just(NS_SRC), st.integers(0, NG - 1)),
        flags=st.sampled_from([0, 1, 0, 1, 2]),
        known=st.booleans(),
    )
    def data_create(self, gi, p, n, src, flags, known):
        n = min(n, WIN - p, NG - gi)
        if known and src < NG:
            n = min(n, NG - src)
        exp, done = OK, 0
        for k in range(n):
            err = self.m_data_check(gi + k, p + k, src + k if known else None, flags, known)
            if err is not None:
                exp = err
                break
            h, rp, _ = self.pages[p + k]
            self.pages[p + k] = (Hipas.ASSIGNED, Ripas.RAM if known else rp, (BASE >> 12) + gi + k)
            self.gs[gi + k] = GranuleState.DATA
            done += 1
        src_pa = gpa(src) if known else None
        res, got = self.r.data_create_range(gpa(gi), p * K, src_pa, n * K, flags)
        assert (res.ret, got) == (exp, done * K)

    @rule(p=PAGES, n=st.integers(1, 4))
    def data_destroy(self, p, n):
        n = min(n, WIN - p)
        exp, done = OK, 0
        for k in range(n):
            q = p + k
            if self.level(q) != 3:
                exp = RTT(2)
                break
            h, rp, fr = self.pages[q]
            if h != Hipas.ASSIGNED:
                exp = RTT(3)
                break
            self.pages[q] = (Hipas.UNASSIGNED, Ripas.EMPTY if rp == Ripas.EMPTY else Ripas.DESTROYED, None)
            self.gs[fr - (BASE >> 12)] = GranuleState.DELEGATED
            done += 1
        res, got = self.r.data_destroy_range(p * K, n * K)
        assert (res.ret, got) == (exp, done * K)

    def m_walk(self, base, top, update):
        """Shared loop of INIT_RIPAS / SET_RIPAS over the entries of one RTT."""
        lvl = self.level(base)
        step = 1 if lvl == 3 else 512
        if base % step:
            return RTT(lvl), base
        end = (base // 512 + 1) * 512 if lvl == 3 else WIN
        a = base
        while a + step <= min(top, end):
            if lvl == 2 and a // 512 in self.l3:
                break  # a table entry
            new = update(self.pages[a])
            if new is None:
                break
            for q in range(a, a + step):
                h, _, fr = self.pages[q]
                self.pages[q] = (h, new, fr)
            a += step
        return (OK if a > base else RTT(lvl)), a

    @rule(base=PAGES, ln=st.integers(1, 600))
    def init_ripas(self, base, ln):
        top = min(base + ln, WIN)
        if not self.new:
            exp, a = REALM, base
        else:

            def upd(e):
                return Ripas.RAM if e[0] == Hipas.UNASSIGNED and e[1] in (Ripas.EMPTY, Ripas.RAM) else None

            exp, a = self.m_walk(base, top, upd)
        res = self.r.rtt_init_ripas(base * K, top * K)
        assert res.ret == exp
        if exp == OK:
            assert res.x1 == a * K

    @rule()
    def activate(self):
        assert self.r.activate().ret == (OK if self.new else REALM)
        self.new = False

    @rule(base=PAGES, ln=st.integers(1, 600), ripas=st.sampled_from([0, 1]), cd=st.booleans())
    def ipa_state_set(self, base, ln, ripas, cd):
        top = min(base + ln, WIN)
        ex = self.rec.ipa_state_set(base * K, top * K, ripas, RSI_CHANGE_DESTROYED if cd else 0)
        assert ex == RipasChangeExit(base * K, top * K, ripas)
        self.req = [base, top, Ripas(ripas), cd]

    @precondition(lambda self: self.req is not None)
    @rule()
    def set_ripas(self):
        a, top, ripas, cd = self.req

        def upd(e):
            if e[1] == Ripas.DESTROYED and ripas != Ripas.DESTROYED and not cd:
                return None
            return ripas

        if a >= top:
            exp, na = INPUT, a  # RTT_SET_RIPAS: top <= base
        else:
            exp, na = self.m_walk(a, top, upd)
        res = self.r.rtt_set_ripas(self.rec, a * K, top * K)
        assert res.ret == exp
        if exp == OK:
            self.req[0] = na
            assert res.x1 == na * K

    @precondition(lambda self: self.req is not None)
    @rule(reject=st.booleans())
    def enter(self, reject):
        a, top, ripas, _ = self.req
        resp = RSI_REJECT if reject and ripas == Ripas.RAM and a != top else RSI_ACCEPT
        assert self.rec.enter(REC_ENTER_FLAG_RIPAS_RESPONSE if reject else 0) == (RsiStatus.SUCCESS, a * K, resp)
        self.req = None

    # invariants ------------------------------------------------------------------------------
    @invariant()
    def tables_match(self):
        got = {}
        for s, e, h, rp, pa in self.r.runs(0, WIN * K):
            for p in range(s // K, e // K):
                got[p] = (h, rp, None if pa is None else (pa >> 12) + p - s // K)
        assert got == self.pages
        assert self.r.table_count(3) == len(self.l3)
        for b in range(WIN_BLOCKS):
            assert self.r.level(b * MB2) == (3 if b in self.l3 else 2)

    @invariant()
    def granules_match(self):
        got = {}
        for s, e, stt in self.g.runs(BASE, NG * K):
            for i in range((s - BASE) // K, (e - BASE) // K):
                got[i] = stt
        assert got == self.gs

    @invariant()
    def access_follows_the_table(self):
        for p in (0, 1, 511, 512, WIN - 1):
            h, rp, _ = self.pages[p]
            kind = self.r.realm_access(p * K)[0]
            if rp == Ripas.DESTROYED:
                assert kind == Access.DESTROYED
            elif rp == Ripas.EMPTY:
                assert kind == Access.SEA
            else:
                assert kind == (Access.OK if h == Hipas.ASSIGNED else Access.REC_EXIT)


TestRttMachine = RttMachine.TestCase
TestRttMachine.settings = settings(max_examples=120, stateful_step_count=50, deadline=None)
