"""The fail-nth sweep over the snp platform's scenarios (kmock_snp.scenarios).

Every failure point each scenario reaches is failed in turn, and the sweep reports no
problem. What the kernel itself does when a step fails (a call's work kept after a later
step failed, the WARN / KVM_BUG a refused RMPUPDATE leads to) is declared by the plugin
(kmock_snp/scenarios.py, with its source); these tests check the sweep reports those runs
as expected outcomes, and that each declaration is still needed.
"""

import importlib.metadata

import pytest

from kmock.testing import fail_nth
from kmock_snp import scenarios as snp_scenarios

SCENARIOS = snp_scenarios.scenarios()


@pytest.fixture(scope="module")
def results():
    return {name: fail_nth.sweep(fn, make) for name, (fn, make) in SCENARIOS.items()}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_sweep_every_failure_point(results, name):
    result = results[name]
    assert result.platform == "snp"
    assert result.problems == []
    points = set(result.points)
    # the firmware steps of the launch are each failed at least once
    assert {"snp.fw.gctx_create", "snp.fw.launch_start", "snp.fw.activate",
            "snp.fw.launch_update", "snp.fw.launch_update_vmsa", "snp.fw.launch_finish",
            "snp.rmpupdate"} <= points
    # each firmware failure reached the VMM with the kernel's errno
    by_point = {}
    for run in result.runs:
        if run.call is not None:
            by_point.setdefault(run.point, set()).add(run.errno)
    assert by_point["snp.fw.gctx_create"] == {25}  # ENOTTY
    assert by_point["snp.fw.launch_update"] == {5}  # EIO


def test_expected_outcomes_are_reported_as_such(results):
    runs = results["launch"].runs
    update = next(r for r in runs if r.point == "snp.fw.launch_update")
    assert update.changed == ["guest_memfds"]  # the failing page's folio stays
    assert update.outcome.startswith("partial: kvm_gmem_populate")
    refused = [r for r in runs if r.point == "snp.rmpupdate" and r.violations]
    assert {v for r in refused for v in r.violations} == {"rmp_invalidate_failed", "rmp_leak"}
    assert all(r.outcome.startswith("expected: sev_gmem_invalidate") for r in refused)


def test_every_declaration_is_used(results):
    """A declaration no run needs would hide a regression."""
    assert fail_nth.unused_declarations("snp", results.values()) == []
    for d in fail_nth.declarations("snp"):  # each cites its kernel source
        assert "sev.c" in d.reason or "guest_memfd.c" in d.reason


def test_registered_through_register():
    for name, (fn, make) in SCENARIOS.items():
        fail_nth.register("snp", name, fn, make)
    assert {"launch", "conversion", "dma"} <= set(fail_nth.scenarios("snp"))


@pytest.mark.skipif(not any(ep.name == "snp" for ep in
                            importlib.metadata.entry_points(group="kmock.fail_nth")),
                    reason="the kmock.fail_nth entry point is not installed yet")
def test_entry_point_offers_the_scenarios():
    assert {"launch", "conversion", "dma"} <= set(fail_nth.scenarios("snp"))
