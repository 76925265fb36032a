"""The fail-nth sweep over the TDX scenarios (kmock_tdx.scenarios): every failure point of
each scenario, the SEAMCALLs included, is failed in turn, and the sweep reports no problem.

What tdx.c itself does when a step fails (a call's work kept after a later step failed,
the TD bugged by KVM_BUG_ON) is declared by the plugin (kmock_tdx/scenarios.py, with its
source); these tests check the sweep reports those runs as expected outcomes, and that
each declaration is still needed.
"""

import pytest
from kmock_tdx import scenarios as S

from kmock.testing import fail_nth

SCENARIOS = S.scenarios()


@pytest.fixture(scope="module")
def results():
    return {name: fail_nth.sweep(fn, make) for name, (fn, make) in SCENARIOS.items()}


@pytest.mark.parametrize("name", ["launch", "conversion"])
def test_sweep_every_failure_point(results, name):
    result = results[name]
    assert result.platform == "tdx"
    assert result.problems == []
    assert len(result.runs) == len(result.points)
    tdx_points = {p for p in result.points if p.startswith("tdx.")}
    want = {"tdx.seamcall.mng_create", "tdx.seamcall.mng_init", "tdx.seamcall.mem_page_add",
            "tdx.seamcall.mr_finalize", "tdx.seamcall.mem_range_block",
            "tdx.seamcall.mem_track", "tdx.seamcall.mem_page_remove"}
    if name == "conversion":
        want.add("tdx.seamcall.mem_page_aug")
    assert tdx_points == want
    by_point = {}
    for run in result.runs:
        by_point.setdefault(run.point, run)
    assert by_point["tdx.seamcall.mng_create"].errno == 5  # EIO (WARN_ON_ONCE)
    assert by_point["tdx.seamcall.mr_finalize"].errno == 16  # EBUSY, the module was busy
    assert by_point["tdx.seamcall.mr_finalize"].outcome == "raised"  # nothing changed
    assert by_point["tdx.seamcall.mr_finalize"].expected == []


def test_a_failed_page_aug_bugs_the_td_as_expected(results):
    aug = next(r for r in results["conversion"].runs if r.point == "tdx.seamcall.mem_page_aug")
    assert (aug.call, aug.errno) == ("ioctl KVM_RUN", 5)
    assert aug.violations == ["td_bugged"]
    assert aug.outcome.startswith("expected: tdx_mem_page_aug")
    assert aug.outcome.endswith("(records td_bugged)")
    assert aug.problems == []


def test_kept_progress_is_reported_as_partial(results):
    runs = results["launch"].runs
    add = next(r for r in runs if r.point == "tdx.seamcall.mem_page_add")
    assert add.changed == ["guest_memfds"]  # the failing page's folio, nothing else
    assert add.outcome.startswith("partial: kvm_gmem_populate")
    copies = [r for r in runs if r.point == "copy_to_user" and r.changed]
    assert copies and all(r.outcome.startswith("partial: tdx_vm_ioctl") for r in copies)
    zaps = [r for r in runs if r.point == "tdx.seamcall.mem_range_block"]
    assert zaps and all(r.violations == ["td_bugged"] and r.outcome.startswith("expected:")
                        for r in zaps)


def test_every_declaration_is_used(results):
    """A declaration no run needs would hide a regression."""
    assert fail_nth.unused_declarations("tdx", results.values()) == []
    for d in fail_nth.declarations("tdx"):  # each cites its kernel source
        assert "tdx.c" in d.reason or "guest_memfd.c" in d.reason


def test_registered_through_register():
    for name, (fn, make) in SCENARIOS.items():
        fail_nth.register("tdx", name, fn, make)
    assert {"launch", "conversion"} <= set(fail_nth.SCENARIOS["tdx"])
