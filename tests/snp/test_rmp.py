"""kmock_snp.rmp: each RMP operation on each source state, KVM's uses of it, the access
checks, and a hypothesis state machine against a per-page dict model.

Codes: arch/x86/include/asm/sev.h (reference arch-tdx-snp-cca.md §2.3); KVM paths:
arch/x86/kvm/svm/sev.c sev_gmem_prepare / sev_gmem_invalidate / kvm_rmp_make_shared.
"""

import errno

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from kmock.uapi import sev as S
from kmock_snp.rmp import FIRMWARE, GUEST, HYPERVISOR, PRE_GUEST, Rmp

K4, M2 = S.RMP_PG_SIZE_4K, S.RMP_PG_SIZE_2M
ASID = 7
NFRAMES = 4 * 512


def rmp():
    return Rmp(NFRAMES)


def guest4k(r, pfn, gfn, validated=False):
    assert r.rmpupdate(pfn, assigned=True, gpa=gfn << 12, asid=ASID) == 0
    if validated:
        assert r.pvalidate(pfn, gfn << 12, ASID, True) == 0
    return r.entry(pfn)


def guest2m(r, block, gfn, validated=False):
    assert r.rmpupdate(block, assigned=True, pagesize=M2, gpa=gfn << 12, asid=ASID) == 0
    if validated:
        assert r.pvalidate(block, gfn << 12, ASID, True, M2) == 0


def assigned_runs(r):
    return [(x.start, x.end) for x in r.runs() if x.entry.assigned]


# --- owners and entries --------------------------------------------------------------------


def test_all_frames_start_hypervisor_owned_in_one_run():
    r = rmp()
    assert [(x.start, x.end, x.entry.owner) for x in r.runs()] == [(0, NFRAMES, HYPERVISOR)]


@pytest.mark.parametrize(
    "immutable,asid,owner",
    [(False, ASID, GUEST), (True, ASID, PRE_GUEST), (True, 0, FIRMWARE)],
)
def test_owner_table(immutable, asid, owner):
    # APM Table 15-35 (§2.3): guest = assigned + ASID; firmware = assigned, ASID 0, immutable
    r = rmp()
    assert r.rmpupdate(3, assigned=True, immutable=immutable, gpa=0x5000, asid=asid) == 0
    e = r.entry(3)
    assert (e.owner, e.assigned, e.immutable, e.asid, e.validated) == (owner, True, immutable, asid, False)


def test_entry_text_names_the_fields():
    r = rmp()
    guest4k(r, 9, 0x40, validated=True)
    text = str(r.entry(9))
    for word in ("pfn 0x9", "guest-owned", "asid 7", "gpa 0x40000", "4K", "validated"):
        assert word in text
    assert "hypervisor-owned" in str(r.entry(10))
    assert repr(r.entry(9)) == f"<{text}>"


# --- RMPUPDATE -------------------------------------------------------------------------------


def test_rmpupdate_assign_sets_fields_and_never_validated():
    r = rmp()
    e = guest4k(r, 5, 0x123)
    got = (e.assigned, e.pagesize, e.gpa, e.asid, e.validated, e.vmsa)
    assert got == (True, K4, 0x123000, ASID, False, False)


def test_rmpupdate_on_validated_guest_page_clears_validated():
    # §2.3: RMPUPDATE always clears Validated
    r = rmp()
    guest4k(r, 5, 0x123, validated=True)
    assert r.rmpupdate(5, assigned=True, gpa=0x123000, asid=ASID) == 0
    assert not r.entry(5).validated


def test_make_shared_loses_validated():
    r = rmp()
    guest4k(r, 5, 0x123, validated=True)
    assert r.rmpupdate(5, assigned=False) == 0
    assert r.entry(5).owner == HYPERVISOR and not r.entry(5).validated


@pytest.mark.parametrize("asid", [ASID, 0])
def test_rmpupdate_on_immutable_entry_is_fail_permission(asid):
    r = rmp()
    assert r.rmpupdate(5, assigned=True, immutable=True, gpa=0x1000, asid=asid) == 0
    before = r.entry(5)
    assert r.rmpupdate(5, assigned=False) == S.RMPUPDATE_FAIL_PERMISSION
    assert r.rmpupdate(5, assigned=True, gpa=0x1000, asid=ASID) == S.RMPUPDATE_FAIL_PERMISSION
    assert r.entry(5) == before


def test_rmpupdate_4k_inside_2m_entry_is_fail_overlap():
    r = rmp()
    guest2m(r, 512, 1024, validated=True)
    assert r.rmpupdate(600, assigned=False) == S.RMPUPDATE_FAIL_OVERLAP
    assert r.entry(600).pagesize == M2 and r.entry(600).validated


def test_rmpupdate_2m_over_assigned_4k_entry_is_fail_overlap():
    r = rmp()
    guest4k(r, 700, 3)
    assert r.rmpupdate(512, assigned=True, pagesize=M2, gpa=1024 << 12, asid=ASID) == S.RMPUPDATE_FAIL_OVERLAP
    assert r.entry(512).owner == HYPERVISOR and r.entry(700).gpa == 3 << 12


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(pfn=513, assigned=True, pagesize=M2, gpa=0, asid=ASID),  # unaligned 2M pfn
        dict(pfn=512, assigned=True, pagesize=M2, gpa=0x1000, asid=ASID),  # unaligned 2M gpa
        dict(pfn=NFRAMES, assigned=True, gpa=0, asid=ASID),  # outside the table
        dict(pfn=1, assigned=True, gpa=0, asid=1024),  # asid:10
        dict(pfn=1, assigned=True, gpa=1 << 51, asid=ASID),  # gpa:39 covers bits 50:12
        dict(pfn=1, assigned=True, pagesize=2, gpa=0, asid=ASID),
    ],
)
def test_rmpupdate_bad_input_is_fail_input(kwargs):
    r = rmp()
    pfn = kwargs.pop("pfn")
    assert r.rmpupdate(pfn, **kwargs) == S.RMPUPDATE_FAIL_INPUT
    assert assigned_runs(r) == []


def test_rmpupdate_2m_assign_then_2m_shared():
    r = rmp()
    guest2m(r, 1024, 2048)
    assert assigned_runs(r) == [(1024, 1536)]
    assert r.entry(1535).gpa == (2048 + 511) << 12 and r.entry(1535).pagesize == M2
    assert r.lookup(1100) == (True, M2)
    assert r.rmpupdate(1024, assigned=False, pagesize=M2) == 0
    assert assigned_runs(r) == []


def test_contiguous_assignment_stays_one_run():
    r = rmp()
    assert r.make_private_range(10, 1000, 0x777, ASID, False) == (1000, 0)
    runs = [x for x in r.runs() if x.entry.assigned]
    assert [(x.start, x.end) for x in runs] == [(10, 1010)]
    assert r.entry(1009).gpa == (0x777 + 999) << 12


def test_injected_rmpupdate_failure_changes_nothing():
    r = rmp()
    r.fail_next("rmpupdate", S.RMPUPDATE_FAIL_INUSE)
    assert r.rmpupdate(5, assigned=True, gpa=0, asid=ASID) == S.RMPUPDATE_FAIL_INUSE
    assert r.entry(5).owner == HYPERVISOR
    assert r.rmpupdate(5, assigned=True, gpa=0, asid=ASID) == 0


# --- PSMASH ----------------------------------------------------------------------------------


def test_psmash_keeps_every_field_and_validated():
    r = rmp()
    guest2m(r, 512, 1024, validated=True)
    assert r.psmash(512) == 0
    for pfn in (512, 700, 1023):
        e = r.entry(pfn)
        assert (e.pagesize, e.validated, e.asid, e.gpa) == (K4, True, ASID, (1024 + pfn - 512) << 12)
    assert assigned_runs(r) == [(512, 1024)]  # still one run of 4K entries
    assert r.rmpupdate(600, assigned=False) == 0  # 4K updates now allowed


@pytest.mark.parametrize(
    "setup,pfn,code",
    [
        ("none", 512, S.PSMASH_FAIL_INPUT),  # hypervisor-owned, not a 2M entry
        ("4k", 512, S.PSMASH_FAIL_INPUT),  # 4K entries
        ("2m", 513, S.PSMASH_FAIL_INPUT),  # unaligned
        ("2m", NFRAMES, S.PSMASH_FAIL_BADADDR),  # outside the table
    ],
)
def test_psmash_errors(setup, pfn, code):
    r = rmp()
    if setup == "4k":
        guest4k(r, 512, 1024)
    elif setup == "2m":
        guest2m(r, 512, 1024)
    before = r.snapshot()
    assert r.psmash(pfn) == code
    assert r.snapshot() == before


def test_psmash_injected_inuse_changes_nothing():
    r = rmp()
    guest2m(r, 512, 1024)
    r.fail_next("psmash", S.PSMASH_FAIL_INUSE)
    assert r.psmash(512) == S.PSMASH_FAIL_INUSE
    assert r.entry(512).pagesize == M2


# --- PVALIDATE -------------------------------------------------------------------------------


def test_pvalidate_validate_rescind_and_noupdate():
    r = rmp()
    guest4k(r, 5, 0x10)
    gpa = 0x10 << 12
    assert r.pvalidate(5, gpa, ASID, False) == S.PVALIDATE_FAIL_NOUPDATE  # already invalid
    assert r.pvalidate(5, gpa, ASID, True) == S.PVALIDATE_SUCCESS
    assert r.entry(5).validated
    assert r.pvalidate(5, gpa, ASID, True) == S.PVALIDATE_FAIL_NOUPDATE == 255
    assert r.pvalidate(5, gpa, ASID, False) == S.PVALIDATE_SUCCESS
    assert not r.entry(5).validated


def test_pvalidate_2m_on_4k_entries_is_sizemismatch():
    r = rmp()
    r.make_private_range(512, 512, 1024, ASID, False)
    assert r.pvalidate(512, 1024 << 12, ASID, True, M2) == S.PVALIDATE_FAIL_SIZEMISMATCH == 6
    assert not r.entry(512).validated


def test_pvalidate_4k_on_2m_entry_is_npf_sizem_then_psmash_retry():
    r = rmp()
    guest2m(r, 512, 1024)
    fault = r.pvalidate(515, 1027 << 12, ASID, True)
    assert fault.kind == "npf"
    assert fault.code & S.PFERR_GUEST_SIZEM_MASK and fault.code & S.PFERR_GUEST_RMP_MASK
    # KVM's sev_handle_rmp_fault PSMASHes the 2M entry; the guest retries
    assert r.psmash(512) == 0
    assert r.pvalidate(515, 1027 << 12, ASID, True) == 0
    assert r.entry(515).validated and not r.entry(516).validated


def test_pvalidate_2m_on_2m_entry_validates_512_frames():
    r = rmp()
    guest2m(r, 1024, 0)
    assert r.pvalidate(1024, 0, ASID, True, M2) == 0
    assert all(r.entry(p).validated for p in (1024, 1300, 1535))
    assert r.pvalidate(1024, 0, ASID, True, M2) == 255


@pytest.mark.parametrize(
    "setup,gpa,asid,why",
    [
        ("none", 0x10000, ASID, "not assigned"),
        ("guest", 0x10000, ASID + 1, "asid"),
        ("guest", 0x11000, ASID, "gpa"),
        ("pre-guest", 0x10000, ASID, "immutable"),
        ("firmware", 0x10000, 0, "immutable"),
    ],
)
def test_pvalidate_on_entry_not_owned_is_npf(setup, gpa, asid, why):
    r = rmp()
    if setup == "guest":
        guest4k(r, 5, 0x10)
    elif setup == "pre-guest":
        r.rmpupdate(5, assigned=True, immutable=True, gpa=0x10000, asid=ASID)
    elif setup == "firmware":
        r.rmpupdate(5, assigned=True, immutable=True, gpa=0x10000, asid=0)
    before = r.snapshot()
    fault = r.pvalidate(5, gpa, asid, True)
    assert fault.kind == "npf" and fault.code & S.PFERR_GUEST_RMP_MASK
    assert why in fault.reason
    assert r.snapshot() == before


@pytest.mark.parametrize(
    "pfn,gpa,size", [(5, 0x10800, K4), (512, 0x1000, M2), (513, 0, M2), (NFRAMES, 0, K4)]
)
def test_pvalidate_bad_input(pfn, gpa, size):
    r = rmp()
    assert r.pvalidate(pfn, gpa, ASID, True, size) == S.PVALIDATE_FAIL_INPUT


# --- firmware --------------------------------------------------------------------------------


def test_launch_update_makes_pre_guest_page_guest_validated():
    r = rmp()
    assert r.rmp_make_private(5, 0x10000, K4, ASID, True) == 0
    assert r.entry(5).owner == PRE_GUEST
    assert r.fw_launch_update(5) == S.SEV_RET_SUCCESS
    e = r.entry(5)
    assert (e.owner, e.validated, e.immutable) == (GUEST, True, False)
    assert r.fw_launch_update(5) == S.SEV_RET_INVALID_PAGE_STATE  # no longer pre-guest
    assert r.fw_launch_update(6) == S.SEV_RET_INVALID_PAGE_STATE  # hypervisor page


def test_page_reclaim_then_make_shared():
    r = rmp()
    r.rmp_make_private(5, 0, K4, 0, True)  # snp_alloc_firmware_page
    assert r.rmp_make_shared(5, K4) == -errno.EFAULT  # immutable: RMPUPDATE refuses
    assert r.fw_page_reclaim(5) == 0
    assert r.rmp_make_shared(5, K4) == 0
    assert r.entry(5).owner == HYPERVISOR
    assert r.fw_page_reclaim(5) == S.SEV_RET_INVALID_PAGE_STATE


# --- KVM: sev_gmem_prepare -------------------------------------------------------------------


def test_gmem_prepare_2m_when_folio_and_block_allow():
    r = rmp()
    assert r.gmem_prepare(512 + 7, 2048 + 7, 9, ASID) == 0
    assert assigned_runs(r) == [(512, 1024)]
    e = r.entry(519)
    assert (e.pagesize, e.gpa, e.validated, e.immutable) == (M2, (2048 + 7) << 12, False, False)


def test_gmem_prepare_4k_for_small_folio():
    r = rmp()
    assert r.gmem_prepare(519, 2055, 0, ASID) == 0
    assert assigned_runs(r) == [(519, 520)] and r.entry(519).pagesize == K4


def test_gmem_prepare_4k_when_block_partly_assigned():
    r = rmp()
    guest4k(r, 1000, 1)
    assert r.gmem_prepare(519, 2055, 9, ASID) == 0
    assert r.entry(519).pagesize == K4 and r.entry(520).owner == HYPERVISOR


def test_gmem_prepare_already_assigned_is_noop():
    r = rmp()
    guest4k(r, 519, 1, validated=True)
    before = r.snapshot()
    assert r.gmem_prepare(519, 2055, 9, ASID) == 0
    assert r.snapshot() == before


def test_gmem_prepare_rmpupdate_failure_is_einval():
    r = rmp()
    r.fail_next("rmpupdate", S.RMPUPDATE_FAIL_INUSE)
    assert r.gmem_prepare(519, 2055, 0, ASID) == -errno.EINVAL
    assert r.entry(519).owner == HYPERVISOR
    assert r.gmem_prepare(NFRAMES, 0, 0, ASID) == -errno.ENOENT


# --- KVM: sev_gmem_invalidate ----------------------------------------------------------------


def test_gmem_invalidate_partial_2m_psmashes_then_shares():
    r = rmp()
    guest2m(r, 512, 1024, validated=True)
    assert r.gmem_invalidate(600, 610) == []
    assert assigned_runs(r) == [(512, 600), (610, 1024)]
    assert r.entry(599).pagesize == K4 and r.entry(599).validated  # PSMASH kept Validated
    assert not r.entry(605).validated and r.entry(605).owner == HYPERVISOR  # Validated lost


def test_gmem_invalidate_whole_2m_entries_and_4k_runs():
    r = rmp()
    guest2m(r, 512, 1024, validated=True)
    guest2m(r, 1024, 1536, validated=True)
    r.make_private_range(1536, 10, 5000, ASID, False)
    assert r.gmem_invalidate(0, NFRAMES) == []
    assert assigned_runs(r) == []


def test_gmem_invalidate_immutable_frames_stay_assigned_and_are_reported():
    r = rmp()
    r.make_private_range(100, 4, 0, ASID, True)
    r.make_private_range(104, 4, 4, ASID, False)
    failures = r.gmem_invalidate(100, 108)
    assert failures == [(100, 104, "rmpupdate", S.RMPUPDATE_FAIL_PERMISSION)]
    assert assigned_runs(r) == [(100, 104)]
    assert r.leaked_count() == 0  # sev_gmem_invalidate only WARNs; no snp_leak_pages


def test_gmem_invalidate_psmash_failure_reported():
    r = rmp()
    guest2m(r, 512, 1024)
    r.fail_next("psmash", S.PSMASH_FAIL_INUSE)
    failures = r.gmem_invalidate(600, 601)
    assert failures[0] == (512, 1024, "psmash", S.PSMASH_FAIL_INUSE)
    assert r.entry(600).assigned


# --- KVM: kvm_rmp_make_shared and the leak ---------------------------------------------------


def test_kvm_rmp_make_shared_leaks_frames_rmpupdate_refuses():
    r = rmp()
    r.make_private_range(10, 3, 0, ASID, False)
    r.make_private_range(13, 2, 3, ASID, True)  # pre-guest: RMPUPDATE says FAIL_PERMISSION
    r.make_private_range(15, 3, 5, ASID, False)
    rc, leaked = r.kvm_rmp_make_shared(10, 8)
    assert rc == -errno.EIO and leaked == [(13, 15)]
    assert assigned_runs(r) == [(13, 15)]
    assert r.entry(13).leaked and not r.entry(12).leaked and r.leaked_count() == 2
    assert "(leaked)" in str(r.entry(14))


def test_kvm_rmp_make_shared_success():
    r = rmp()
    r.make_private_range(10, 8, 0, ASID, False)
    assert r.kvm_rmp_make_shared(10, 8) == (0, [])
    assert assigned_runs(r) == [] and r.leaked_count() == 0


def test_kvm_rmp_make_shared_injected_failure_leaks_that_frame_only():
    r = rmp()
    r.make_private_range(10, 4, 0, ASID, False)
    r.fail_next("rmpupdate", S.RMPUPDATE_FAIL_INUSE)
    assert r.kvm_rmp_make_shared(10, 4) == (-errno.EIO, [(10, 11)])
    assert assigned_runs(r) == [(10, 11)] and r.entry(10).leaked and r.leaked_count() == 1


def test_make_private_range_stops_at_first_refused_frame():
    r = rmp()
    r.rmpupdate(20, assigned=True, immutable=True, gpa=0, asid=0)
    assert r.make_private_range(10, 20, 100, ASID, False) == (10, -errno.EFAULT)
    assert assigned_runs(r) == [(10, 20), (20, 21)]
    assert r.entry(19).owner == GUEST and r.entry(21).owner == HYPERVISOR


# --- access checks ---------------------------------------------------------------------------


@pytest.mark.parametrize("setup", ["guest", "pre-guest", "firmware"])
def test_host_write_to_assigned_page_is_rmp_pf(setup):
    r = rmp()
    immutable, asid = {"guest": (False, ASID), "pre-guest": (True, ASID), "firmware": (True, 0)}[setup]
    r.rmpupdate(7, assigned=True, immutable=immutable, gpa=0x7000, asid=asid)
    fault = r.host_write(0, 16)
    assert (fault.kind, fault.pfn) == ("rmp_pf", 7)
    assert fault.code & S.X86_PF_RMP
    assert "pfn 0x7" in str(fault) and fault.entry.owner == setup


def test_host_write_to_shared_pages_passes():
    r = rmp()
    guest4k(r, 7, 1)
    assert r.host_write(0, 7) is None and r.host_write(8, 100) is None


@pytest.mark.parametrize("write", [True, False])
def test_dma_into_assigned_page_is_iommu_rmp_fault(write):
    r = rmp()
    guest4k(r, 40, 1)
    fault = r.dma(32, 16, write=write)
    assert (fault.kind, fault.code, fault.pfn) == ("iommu", 0xD, 40)
    assert r.dma(0, 40, write=write) is None


def test_dma_read_policy_setting():
    r = Rmp(64, dma_read_checked=False)
    r.rmpupdate(4, assigned=True, gpa=0, asid=ASID)
    assert r.dma(0, 8, write=False) is None and r.dma(0, 8, write=True).kind == "iommu"


def test_guest_private_access_not_validated_is_vc_404():
    r = rmp()
    guest4k(r, 7, 0x30)
    fault = r.guest_private_access(7, 0x30000, ASID)
    assert (fault.kind, fault.code) == ("vc", 0x404)
    assert "not validated" in str(fault)
    r.pvalidate(7, 0x30000, ASID, True)
    assert r.guest_private_access(7, 0x30000, ASID) is None


def test_guest_private_access_to_unowned_page_is_npf():
    r = rmp()
    fault = r.guest_private_access(7, 0x30000, ASID)
    assert fault.kind == "npf" and fault.code & S.PFERR_GUEST_ENC_MASK


def test_guest_c0_write_to_guest_page_is_npf_read_passes():
    r = rmp()
    guest4k(r, 7, 0x30, validated=True)
    fault = r.guest_shared_access(7, 0x30000, write=True)
    assert fault.kind == "npf" and fault.code & S.PFERR_GUEST_RMP_MASK
    assert r.guest_shared_access(7, 0x30000, write=False) is None
    assert r.guest_shared_access(8, 0x31000, write=True) is None
    strict = Rmp(16, shared_read_checked=True)
    strict.rmpupdate(7, assigned=True, gpa=0x30000, asid=ASID)
    assert strict.guest_shared_access(7, 0x30000, write=False).kind == "npf"


def test_punch_and_refault_leaves_page_not_validated():
    # §2.4 row 2: sev_gmem_invalidate loses Validated; the refault's prepare gives a fresh
    # assigned entry with validated = 0, so the guest's next private access is #VC 0x404
    r = rmp()
    r.gmem_prepare(7, 0x30, 0, ASID)
    r.pvalidate(7, 0x30000, ASID, True)
    assert r.guest_private_access(7, 0x30000, ASID) is None
    r.gmem_invalidate(7, 8)
    r.gmem_prepare(7, 0x30, 0, ASID)
    assert r.guest_private_access(7, 0x30000, ASID).code == S.VC_PAGE_NOT_VALIDATED


# --- state machine against a per-page model --------------------------------------------------

SM_FRAMES = 3 * 512
SM_ASIDS = (1, 2)


class Model:
    """Per-page dict: pfn -> None (hypervisor) or [size2m, immutable, gfn, asid, validated]."""

    def __init__(self):
        self.m = {p: None for p in range(SM_FRAMES)}
        self.leaked = set()

    def rmpupdate(self, pfn, assigned, size2m, immutable, gfn, asid):
        n = 512 if size2m else 1
        if pfn % n or pfn + n > SM_FRAMES or (assigned and gfn % n):
            return S.RMPUPDATE_FAIL_INPUT
        pages = range(pfn, pfn + n)
        if any(self.m[p] and self.m[p][1] for p in pages):
            return S.RMPUPDATE_FAIL_PERMISSION
        head = self.m[pfn]
        if n == 1 and head and head[0]:
            return S.RMPUPDATE_FAIL_OVERLAP
        if n > 1 and assigned and not (head and head[0]) and any(self.m[p] for p in pages):
            return S.RMPUPDATE_FAIL_OVERLAP
        for i, p in enumerate(pages):
            self.m[p] = [n > 1, immutable, gfn + i, asid, False] if assigned else None
        return 0

    def psmash(self, pfn):
        head = self.m[pfn]
        if pfn % 512 or not (head and head[0]):
            return S.PSMASH_FAIL_INPUT
        for p in range(pfn, pfn + 512):
            self.m[p][0] = False
        return 0

    def pvalidate(self, pfn, gfn, asid, validate, size2m):
        n = 512 if size2m else 1
        if pfn % n or gfn % n:
            return S.PVALIDATE_FAIL_INPUT
        e = self.m[pfn]
        if not e or e[1] or e[3] != asid or e[2] != gfn:
            return "npf"
        if size2m and not e[0]:
            return S.PVALIDATE_FAIL_SIZEMISMATCH
        if not size2m and e[0]:
            return "npf"
        if e[4] == validate:
            return S.PVALIDATE_FAIL_NOUPDATE
        for p in range(pfn, pfn + n):
            self.m[p][4] = validate
        return 0

    def gmem_prepare(self, pfn, gfn, order, asid):
        # transcription of sev_gmem_prepare
        if self.m[pfn]:
            return 0
        block = pfn - pfn % 512
        if order >= 9 and all(self.m[p] is None for p in range(block, block + 512)):
            rc = self.rmpupdate(block, True, True, False, gfn - gfn % 512, asid)
        else:
            rc = self.rmpupdate(pfn, True, False, False, gfn, asid)
        return -errno.EINVAL if rc else 0

    def gmem_invalidate(self, start, end):
        # transcription of sev_gmem_invalidate's per-pfn loop
        pfn = start
        while pfn < end:
            e = self.m[pfn]
            use_2m = bool(e) and pfn % 512 == 0 and end >= pfn + 512 and e[0]
            if e:
                if not use_2m and e[0]:
                    self.psmash(pfn - pfn % 512)
                self.rmpupdate(pfn, False, use_2m, False, 0, 0)
            pfn += 512 if use_2m else 1

    def make_private_range(self, pfn, n, gfn, asid, immutable):
        for i in range(n):
            if self.rmpupdate(pfn + i, True, False, immutable, gfn + i, asid):
                return i, -errno.EFAULT
        return n, 0

    def kvm_rmp_make_shared(self, pfn, n):
        failed = False
        for p in range(pfn, pfn + n):
            if self.rmpupdate(p, False, False, False, 0, 0):
                self.leaked.add(p)
                failed = True
        return -errno.EIO if failed else 0


pfns = st.integers(0, SM_FRAMES - 1)
blocks = st.sampled_from([0, 512, 1024])
gfns = st.integers(0, 4096)
asids = st.sampled_from(SM_ASIDS)


@settings(
    max_examples=60, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
class RmpMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.rmp = Rmp(SM_FRAMES)
        self.model = Model()

    @rule(pfn=pfns, gfn=gfns, asid=asids, immutable=st.booleans(), assigned=st.booleans())
    def rmpupdate_4k(self, pfn, gfn, asid, immutable, assigned):
        got = self.rmp.rmpupdate(pfn, assigned=assigned, immutable=immutable, gpa=gfn << 12, asid=asid)
        assert got == self.model.rmpupdate(pfn, assigned, False, immutable, gfn, asid)

    @rule(block=blocks, gfn=st.sampled_from([0, 512, 1024, 1536, 7]), asid=asids, assigned=st.booleans())
    def rmpupdate_2m(self, block, gfn, asid, assigned):
        got = self.rmp.rmpupdate(block, assigned=assigned, pagesize=M2, gpa=gfn << 12, asid=asid)
        assert got == self.model.rmpupdate(block, assigned, True, False, gfn, asid)

    @rule(block=blocks)
    def psmash(self, block):
        assert self.rmp.psmash(block) == self.model.psmash(block)

    @rule(pfn=pfns, asid=asids, validate=st.booleans(), size2m=st.booleans(), data=st.data())
    def pvalidate(self, pfn, asid, validate, size2m, data):
        if size2m:
            pfn -= pfn % 512
        e = self.model.m[pfn]
        gfn = data.draw(st.sampled_from([e[2] if e else 0, 3]))
        got = self.rmp.pvalidate(pfn, gfn << 12, asid, validate, M2 if size2m else K4)
        want = self.model.pvalidate(pfn, gfn, asid, validate, size2m)
        assert (got.kind if hasattr(got, "kind") else got) == want

    @rule(pfn=pfns, gfn=gfns, order=st.sampled_from([0, 9]), asid=asids)
    def gmem_prepare(self, pfn, gfn, order, asid):
        gfn = gfn - gfn % 512 + pfn % 512  # gmem keeps gfn and pfn congruent within 2M
        assert self.rmp.gmem_prepare(pfn, gfn, order, asid) == self.model.gmem_prepare(pfn, gfn, order, asid)

    @rule(start=pfns, length=st.integers(1, 1100))
    def gmem_invalidate(self, start, length):
        end = min(start + length, SM_FRAMES)
        self.rmp.gmem_invalidate(start, end)
        self.model.gmem_invalidate(start, end)

    @rule(start=pfns, length=st.integers(1, 40))
    def kvm_rmp_make_shared(self, start, length):
        n = min(length, SM_FRAMES - start)
        rc, _ = self.rmp.kvm_rmp_make_shared(start, n)
        assert rc == self.model.kvm_rmp_make_shared(start, n)

    @rule(start=pfns, length=st.integers(1, 600), gfn=gfns, asid=asids, immutable=st.booleans())
    def make_private_range(self, start, length, gfn, asid, immutable):
        n = min(length, SM_FRAMES - start)
        got = self.rmp.make_private_range(start, n, gfn, asid, immutable)
        assert got == self.model.make_private_range(start, n, gfn, asid, immutable)

    @rule(pfn=pfns)
    def page_reclaim(self, pfn):
        e = self.model.m[pfn]
        want = S.SEV_RET_INVALID_PAGE_STATE
        if e and e[1]:
            e[1], e[4], want = False, False, 0
        assert self.rmp.fw_page_reclaim(pfn) == want

    @rule(pfn=pfns)
    def launch_update(self, pfn):
        e = self.model.m[pfn]
        want = S.SEV_RET_INVALID_PAGE_STATE
        if e and e[1] and e[3] != 0 and not e[0]:
            e[1], e[4], want = False, True, 0
        assert self.rmp.fw_launch_update(pfn) == want

    @invariant()
    def same_as_model(self):
        for run in self.rmp.runs():
            for p in range(run.start, run.end):
                e = self.model.m[p]
                got = (run.entry.pagesize == M2, run.entry.immutable, (run.entry.gpa >> 12) + p - run.start,
                       run.entry.asid, run.entry.validated) if run.entry.assigned else None
                assert got == (tuple(e) if e else None), p
        assert self.rmp.leaked_count() == len(self.model.leaked)

    @invariant()
    def two_m_entries_are_uniform_blocks(self):
        for run in self.rmp.runs():
            if run.entry.pagesize == M2:
                assert run.start % 512 == 0 and run.end % 512 == 0


TestRmpMachine = RmpMachine.TestCase
