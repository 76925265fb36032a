"""kmock_snp.psc against arch/x86/kvm/svm/sev.c (snp_begin_psc_msr, snp_complete_psc_msr,
snp_begin_psc, snp_complete_one_psc) and reference arch-tdx-snp-cca.md §2.2."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kmock.uapi import kvm as K
from kmock.uapi import sev as S
from kmock_snp.psc import NaePsc, psc_desc, psc_msr, psc_msr_complete

PRIV, SHARED, PSMASH, UNSMASH = 1, 2, 3, 4
ENC = K.KVM_MAP_GPA_RANGE_ENCRYPTED
SZ2M = K.KVM_MAP_GPA_RANGE_PAGE_SZ_2M


def ok(_exit):
    return 0


# --- GHCB MSR protocol -----------------------------------------------------------------------


@pytest.mark.parametrize("op,attrs", [(S.SNP_PAGE_STATE_PRIVATE, ENC), (S.SNP_PAGE_STATE_SHARED, 0)])
def test_msr_psc_is_one_exit_for_one_page(op, attrs):
    r = psc_msr(S.ghcb_msr_psc_req(0x1234, op))
    assert r.response is None and not r.terminate
    assert (r.exit.nr, r.exit.gpa, r.exit.npages, r.exit.attrs) == (12, 0x1234000, 1, attrs)
    assert r.exit.private == (op == S.SNP_PAGE_STATE_PRIVATE)


def test_msr_psc_response_after_the_vmm():
    assert psc_msr_complete(0) == S.GHCB_MSR_PSC_RESP == 0x15
    assert psc_msr_complete(1) == S.GHCB_MSR_PSC_RESP_ERROR == (1 << 63) | 0x15


@pytest.mark.parametrize("op", [0, 3, 4, 15])
def test_msr_psc_bad_operation_answers_error_without_exit(op):
    r = psc_msr(S.ghcb_msr_psc_req(5, op))
    assert (r.exit, r.response) == (None, S.GHCB_MSR_PSC_RESP_ERROR)


def test_msr_psc_without_hypercall_exit_enabled_answers_error():
    r = psc_msr(S.ghcb_msr_psc_req(5, 1), hypercall_exit_enabled=False)
    assert (r.exit, r.response) == (None, S.GHCB_MSR_PSC_RESP_ERROR)


def test_msr_psc_on_non_snp_guest_terminates():
    assert psc_msr(S.ghcb_msr_psc_req(5, 1), snp=False).terminate


def test_msr_psc_ignores_bits_above_the_operation():
    r = psc_msr(S.ghcb_msr_psc_req((1 << 40) - 1, 2) | (0xFF << 56))
    assert r.exit.gpa == ((1 << 40) - 1) << 12


# --- NAE event -------------------------------------------------------------------------------


def test_adjacent_entries_of_one_operation_coalesce():
    d = psc_desc([(0x100, PRIV, 0), (0x101, PRIV, 0), (0x102, PRIV, 0)])
    exits, result = NaePsc(d).run(ok)
    assert [(e.gpa, e.npages, e.attrs) for e in exits] == [(0x100000, 3, ENC)]
    assert result == 0 and d.hdr.cur_entry == 3
    assert [d.entries[i].cur_page for i in range(3)] == [1, 1, 1]


@pytest.mark.parametrize(
    "second",
    [(0x201, PRIV, 0), (0x200, SHARED, 0), (0x200, PRIV, 1)],
    ids=["not-adjacent", "other-operation", "other-size"],
)
def test_entries_that_do_not_coalesce(second):
    d = psc_desc([(0x1FF, PRIV, 0), second])
    exits, result = NaePsc(d).run(ok)
    assert len(exits) == 2 and result == 0


def test_2m_entries_coalesce_with_page_sz_2m():
    d = psc_desc([(0x200, SHARED, 1), (0x400, SHARED, 1)])
    exits, _ = NaePsc(d).run(ok)
    assert [(e.gpa, e.npages, e.attrs) for e in exits] == [(0x200000, 1024, SZ2M)]
    assert d.entries[0].cur_page == d.entries[1].cur_page == 512


def test_cur_entry_advances_one_range_at_a_time():
    d = psc_desc([(0x10, PRIV, 0), (0x11, PRIV, 0), (0x20, SHARED, 0), (0x30, PRIV, 0)])
    p = NaePsc(d)
    seen = []
    while not p.done:
        seen.append((d.hdr.cur_entry, p.exit.gpa >> 12, p.exit.npages))
        p.complete(0)
    assert seen == [(0, 0x10, 2), (2, 0x20, 1), (3, 0x30, 1)]
    assert d.hdr.cur_entry == 4 and p.result == 0


@pytest.mark.parametrize("op", [PSMASH, UNSMASH, 0, 7])
def test_psmash_unsmash_and_unknown_operations_are_skipped(op):
    d = psc_desc([(0x200, op, 1), (0x400, PRIV, 0)])
    exits, result = NaePsc(d).run(ok)
    assert [(e.gpa >> 12, e.npages) for e in exits] == [(0x400, 1)]
    assert result == 0 and d.entries[0].cur_page == 512 and d.hdr.cur_entry == 2


def test_only_skipped_entries_make_no_exit():
    d = psc_desc([(0x200, PSMASH, 1), (0x201, PSMASH, 1)][:1] + [(0x400, UNSMASH, 1)])
    p = NaePsc(d)
    assert p.done and p.result == 0 and d.hdr.cur_entry == 2


def test_end_entry_253_is_invalid_hdr():
    d = psc_desc([(i, PRIV, 0) for i in range(5)], end_entry=253)
    p = NaePsc(d)
    assert p.done and p.result == S.VMGEXIT_PSC_ERROR_INVALID_HDR
    assert d.hdr.cur_entry == 0


def test_253_entries_are_accepted():
    d = psc_desc([(2 * i, PRIV if i % 2 else SHARED, 0) for i in range(253)])
    assert d.hdr.end_entry == 252
    exits, result = NaePsc(d).run(ok)
    assert len(exits) == 253 and result == 0 and d.hdr.cur_entry == 253


def test_more_than_253_entries_cannot_be_built():
    with pytest.raises(ValueError):
        psc_desc([(i, PRIV, 0) for i in range(254)])


@pytest.mark.parametrize("bad", [(0x201, PRIV, 1), (0x10, PRIV, 0, 2), (0x200, PRIV, 1, 513)],
                         ids=["unaligned-2m", "cur_page>1", "cur_page>512"])
def test_invalid_entry_after_done_ranges(bad):
    d = psc_desc([(0x10, SHARED, 0), bad, (0x30, PRIV, 0)])
    exits, result = NaePsc(d).run(ok)
    assert [(e.gpa >> 12) for e in exits] == [0x10]
    assert result == S.VMGEXIT_PSC_ERROR_INVALID_ENTRY
    assert d.hdr.cur_entry == 1  # points at the bad entry
    assert d.entries[0].cur_page == 1 and d.entries[2].cur_page == 0


def test_partly_done_2m_entry_continues_as_4k_pages():
    d = psc_desc([(0x200, PRIV, 1, 100)])
    exits, result = NaePsc(d).run(ok)
    # gpa after the done pages, the 412 remaining pages; the size flag still says 2M (KVM
    # takes it from the entry's pagesize field)
    assert [(e.gpa >> 12, e.npages, e.attrs) for e in exits] == [(0x200 + 100, 412, ENC | SZ2M)]
    assert result == 0 and d.entries[0].cur_page == 512


def test_done_entries_are_skipped():
    d = psc_desc([(0x10, PRIV, 0, 1), (0x200, PRIV, 1, 512), (0x30, SHARED, 0)])
    exits, result = NaePsc(d).run(ok)
    assert [(e.gpa >> 12, e.npages) for e in exits] == [(0x30, 1)] and result == 0


def test_partly_done_first_entry_coalesces_with_the_original_gfn():
    # KVM compares the next entry's gfn with the first entry's *original* gfn + npages
    d = psc_desc([(0x200, PRIV, 1, 510), (0x202, PRIV, 0), (0x400, PRIV, 0)])
    exits, _ = NaePsc(d).run(ok)
    assert [(e.gpa >> 12, e.npages) for e in exits] == [(0x200 + 510, 3), (0x400, 1)]


def test_vmm_error_gives_generic_and_keeps_cur_entry():
    d = psc_desc([(0x10, PRIV, 0), (0x20, SHARED, 0), (0x21, SHARED, 0), (0x30, PRIV, 0)])
    p = NaePsc(d)
    p.complete(0)
    assert p.exit.gpa >> 12 == 0x20
    p.complete(-22)
    assert p.done and p.result == S.VMGEXIT_PSC_ERROR_GENERIC == 0x100 << 32
    assert d.hdr.cur_entry == 1
    assert [d.entries[i].cur_page for i in range(4)] == [1, 0, 0, 0]
    # the guest issues the same buffer again: KVM resumes at cur_entry
    exits, result = NaePsc(d).run(ok)
    assert [(e.gpa >> 12, e.npages) for e in exits] == [(0x20, 2), (0x30, 1)] and result == 0


def test_hypercall_exit_not_enabled_is_generic_without_exit():
    d = psc_desc([(0x10, PRIV, 0)])
    p = NaePsc(d, hypercall_exit_enabled=False)
    assert p.done and p.result == S.VMGEXIT_PSC_ERROR_GENERIC and d.entries[0].cur_page == 0


def test_complete_without_pending_exit_is_an_error():
    p = NaePsc(psc_desc([(0x10, PSMASH, 0)]))
    with pytest.raises(RuntimeError):
        p.complete(0)


def test_start_past_end_is_success_without_exit():
    d = psc_desc([(0x10, PRIV, 0)] * 3, cur_entry=3, end_entry=2)
    p = NaePsc(d)
    assert p.done and p.result == 0


entry_st = st.tuples(st.integers(0, 40), st.sampled_from([PRIV, SHARED, PSMASH, UNSMASH]), st.booleans())


@settings(max_examples=300, deadline=None)
@given(st.lists(entry_st, min_size=1, max_size=40))
def test_exits_apply_exactly_the_entries_in_order(raw):
    entries = [((g * 512) if big else g, op, int(big)) for g, op, big in raw]
    d = psc_desc(entries)
    exits, result = NaePsc(d).run(ok)
    # the state the VMM builds from the exits equals the guest's entries applied in order
    want, got = {}, {}
    for gfn, op, big in entries:
        if op in (PRIV, SHARED):
            for p in range(gfn, gfn + (512 if big else 1)):
                want[p] = op == PRIV
    for e in exits:
        base = e.gpa >> 12
        for p in range(base, base + e.npages):
            got[p] = e.private
    assert got == want
    assert result == 0 and d.hdr.cur_entry == len(entries)
    assert all(d.entries[i].cur_page == (512 if entries[i][2] else 1) for i in range(len(entries)))
    # an exit never mixes page sizes: 2M exits cover whole 2M entries
    assert all(e.npages % 512 == 0 for e in exits if e.attrs & SZ2M)
