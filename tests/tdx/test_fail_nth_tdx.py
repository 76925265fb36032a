"""The fail-nth sweep over the TDX scenarios (kmock_tdx.scenarios): every failure point of
each scenario, the SEAMCALLs included, is failed in turn. The only problems the sweep may
report are tdx.c's own (arch/x86/kvm/vmx/tdx.c, 6.16-6.18; docs/arch/tdx.md):

* ``KERNEL_KEEPS``: a call whose work the kernel does not undo when a later step fails;
* ``KERNEL_REPORTS``: a SEAMCALL whose failure is KVM_BUG_ON: the VM is bugged
  (violation ``td_bugged``).

Anything else fails the test.
"""

import importlib.metadata
import re

import pytest
from kmock_tdx import scenarios as S
from kmock_tdx.td import FAILURE_POINTS

from kmock.testing import fail_nth

#: (point, problem pattern): the failed call keeps what it did before the failing step
KERNEL_KEEPS = (
    # tdx_vm_ioctl copies the kvm_tdx_cmd back after tdx_td_init / tdx_td_finalize did
    # their work; tdx_vcpu_init_mem_region copies the region back after the pages were
    # added: -EFAULT, nothing undone
    ("copy_to_user", r"failed ioctl KVM_MEMORY_ENCRYPT_OP changed the state"),
    # kvm_gmem_populate allocated the folio before tdx_gmem_post_populate's
    # TDH.MEM.PAGE.ADD failed; it stays in the page cache (virt/kvm/guest_memfd.c)
    ("tdx.seamcall.mem_page_add", r"changed the state \(guest_memfds\)$"),
)

#: a SEAMCALL failing with a status that is not busy is KVM_BUG_ON (tdx_mem_page_aug,
#: tdx_sept_link_private_spt, tdx_sept_zap_private_spte, tdx_track,
#: tdx_sept_drop_private_spte): the VM is bugged, the faulting KVM_RUN fails with EIO
BUG_ON_POINTS = tuple(FAILURE_POINTS[leaf][0] for leaf in (
    "TDH.MEM.PAGE.AUG", "TDH.MEM.SEPT.ADD", "TDH.MEM.RANGE.BLOCK", "TDH.MEM.TRACK",
    "TDH.MEM.PAGE.REMOVE", "TDH.MEM.PAGE.DEMOTE"))
KERNEL_REPORTS = tuple(
    (p, r"violations a clean run does not record: \['td_bugged'\]$|"
        r"the failed ioctl KVM_RUN changed the state") for p in BUG_ON_POINTS)


def _unexpected(result):
    out = []
    for run in result.runs:
        for p in run.problems:
            allowed = [pat for point, pat in KERNEL_KEEPS + KERNEL_REPORTS if point == run.point]
            if not any(re.search(pat, p) for pat in allowed):
                out.append(f"fail-nth {run.n} ({run.point}, {run.call}): {p}")
    return out


@pytest.mark.parametrize("name", ["launch", "conversion"])
def test_sweep_every_failure_point(name):
    fn, make = S.scenarios()[name]
    result = fail_nth.sweep(fn, make)
    assert _unexpected(result) == []
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
    assert by_point["tdx.seamcall.mr_finalize"].problems == []  # nothing changed
    if name == "conversion":
        aug = by_point["tdx.seamcall.mem_page_aug"]
        assert (aug.call, aug.errno, aug.outcome) == ("ioctl KVM_RUN", 5, "raised")
        assert any("td_bugged" in p for p in aug.problems)


def test_allowlists_are_needed():
    """Each allowance is used (a stale one would hide a regression)."""
    fn, make = S.scenarios()["conversion"]
    result = fail_nth.sweep(fn, make)
    used = {run.point for run in result.runs if run.problems}
    assert used == {"copy_to_user", "tdx.seamcall.mem_page_add", "tdx.seamcall.mem_page_aug",
                    "tdx.seamcall.mem_range_block", "tdx.seamcall.mem_track",
                    "tdx.seamcall.mem_page_remove"}


def test_registered_through_register():
    for name, (fn, make) in S.scenarios().items():
        fail_nth.register("tdx", name, fn, make)
    assert {"launch", "conversion"} <= set(fail_nth.SCENARIOS["tdx"])


@pytest.mark.skipif(not any(ep.name == "tdx" for ep in
                            importlib.metadata.entry_points(group="kmock.fail_nth")),
                    reason="the kmock.fail_nth entry point is not installed yet")
def test_kmock_sweep_platform_tdx_cli():
    from typer.testing import CliRunner

    from kmock.cli import app

    r = CliRunner().invoke(app, ["sweep", "--platform", "tdx", "launch"])
    assert "no fail-nth scenarios" not in r.output
    assert set(fail_nth.scenarios("tdx")) >= {"launch", "conversion"}
