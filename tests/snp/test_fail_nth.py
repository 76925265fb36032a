"""The fail-nth sweep over the snp platform's scenarios (kmock_snp.scenarios).

Every failure point each scenario reaches is failed in turn; the only problems the sweep
may report are the kernel's own: a call whose work the kernel does not undo when a later
step fails (``KERNEL_KEEPS``), and the WARN / KVM_BUG a failed RMPUPDATE leads to
(``KERNEL_REPORTS``). Anything else fails the test.
"""

import importlib.metadata
import re

import pytest

from kmock.testing import fail_nth
from kmock_snp import scenarios as snp_scenarios

#: (point, problem pattern): the failed call keeps what it did before the failing step,
#: as the kernel does
KERNEL_KEEPS = (
    # kvm_gmem_populate allocated the folio (filemap_grab_folio) before
    # sev_gmem_post_populate's firmware call failed; it stays in the page cache, not
    # prepared (virt/kvm/guest_memfd.c kvm_gmem_populate); the same when the page's
    # rmp_make_private failed
    ("snp.fw.launch_update", r"changed the state \(guest_memfds\)$"),
    ("snp.rmpupdate", r"changed the state \(guest_memfds\)$"),
    # snp_launch_update measured the pages, then copy_to_user of the params (or
    # sev_mem_enc_ioctl's copy-back of kvm_sev_cmd) failed: -EFAULT, the pages stay
    # measured (arch/x86/kvm/svm/sev.c)
    ("copy_to_user", r"changed the state \((guest_memfds, arch|arch)\)$"),
    # snp_launch_finish made every VMSA private and measured it before the firmware's
    # SNP_LAUNCH_FINISH failed; guest_state_protected stays set
    ("snp.fw.launch_finish", r"changed the state \(arch\)$"),
)

#: violations the kernel's failure path itself stands for: sev_gmem_invalidate only WARNs
#: when RMPUPDATE refuses (the page is freed still assigned), sev_free_vcpu's
#: kvm_rmp_make_shared leaks the VMSA and KVM_BUG_ONs (arch/x86/kvm/svm/sev.c)
KERNEL_REPORTS = ("snp.rmpupdate", r"violations a clean run does not record: "
                                   r"\['(rmp_invalidate_failed|rmp_leak)'\]$")


def _unexpected(result):
    out = []
    for run in result.runs:
        for p in run.problems:
            allowed = [pat for point, pat in KERNEL_KEEPS + (KERNEL_REPORTS,)
                       if point == run.point]
            if not any(re.search(pat, p) for pat in allowed):
                out.append(f"fail-nth {run.n} ({run.point}, {run.call}): {p}")
    return out


@pytest.mark.parametrize("name", sorted(snp_scenarios.scenarios()))
def test_sweep_every_failure_point(name):
    scenario, make_kernel = snp_scenarios.scenarios()[name]
    result = fail_nth.sweep(scenario, make_kernel)
    assert _unexpected(result) == []
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


def test_allowlists_are_needed():
    """The allowances above are each used (a stale one would hide a regression)."""
    scenario, make_kernel = snp_scenarios.scenarios()["launch"]
    result = fail_nth.sweep(scenario, make_kernel)
    used = {run.point for run in result.runs if run.problems}
    assert used == {p for p, _ in KERNEL_KEEPS} | {KERNEL_REPORTS[0]}


def test_registered_through_register():
    for name, (fn, make) in snp_scenarios.scenarios().items():
        fail_nth.register("snp", name, fn, make)
    assert {"launch", "conversion", "dma"} <= set(fail_nth.scenarios("snp"))


@pytest.mark.skipif(not any(ep.name == "snp" for ep in
                            importlib.metadata.entry_points(group="kmock.fail_nth")),
                    reason="the kmock.fail_nth entry point is not installed yet")
def test_entry_point_offers_the_scenarios():
    assert {"launch", "conversion", "dma"} <= set(fail_nth.scenarios("snp"))
