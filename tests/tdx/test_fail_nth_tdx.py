"""The fail-nth sweep over the TDX scenarios (kmock_tdx.scenarios): every failure point of
each scenario, the SEAMCALLs included, fails as tdx.c fails and leaves no problem."""

import importlib.metadata

import pytest
from kmock_tdx import scenarios as S
from kmock_tdx.td import FAILURE_POINTS

from kmock.testing import fail_nth


@pytest.mark.parametrize("name", ["launch", "conversion"])
def test_sweep_has_no_problem(name):
    fn, make = S.scenarios()[name]
    result = fail_nth.sweep(fn, make)
    assert result.problems == []
    assert len(result.runs) == len(result.points)
    tdx_points = {p for p in result.points if p.startswith("tdx.")}
    want = {"tdx.seamcall.mng_create", "tdx.seamcall.mng_init", "tdx.seamcall.mem_page_add",
            "tdx.seamcall.mr_finalize", "tdx.seamcall.mem_range_block",
            "tdx.seamcall.mem_track", "tdx.seamcall.mem_page_remove"}
    if name == "conversion":
        want.add("tdx.seamcall.mem_page_aug")
    assert tdx_points == want
    by_point = {r.point: r for r in result.runs}
    assert by_point["tdx.seamcall.mr_finalize"].errno == 16  # EBUSY, the module was busy
    if name == "conversion":
        aug = by_point["tdx.seamcall.mem_page_aug"]
        assert (aug.call, aug.errno, aug.outcome) == ("ioctl KVM_RUN", 5, "raised")


def test_the_kernel_keeps_declarations_are_what_lets_the_bugged_vm_pass(monkeypatch):
    """Without the declarations the sweep reports the VM bugged by a failed AUG: the check
    is not vacuous."""
    monkeypatch.setitem(fail_nth.KERNEL_KEEPS, "tdx", [])
    fn, make = S.scenarios()["conversion"]
    problems = fail_nth.sweep(fn, make).problems
    assert any("mem_page_aug" in p and "td_bugged" in p for p in problems)
    assert any("copy_to_user" in p and "changed the state" in p for p in problems)


def test_every_declared_point_is_a_seamcall_point():
    declared = {r[0] for r in fail_nth.KERNEL_KEEPS["tdx"]}
    assert declared - {"copy_to_user"} <= {p for p, _ in FAILURE_POINTS.values()}


def test_registered_as_the_tdx_platform():
    for name, (fn, make) in S.scenarios().items():
        fail_nth.register("tdx", name, fn, make)
    assert {"launch", "conversion"} <= set(fail_nth.scenarios("tdx"))


def _installed(group):
    return any(ep.name == "tdx" for ep in importlib.metadata.entry_points(group=group))


@pytest.mark.skipif(not _installed("kmock.fail_nth"),
                    reason="the kmock.fail_nth entry point is not installed yet")
def test_kmock_sweep_platform_tdx_cli():
    from typer.testing import CliRunner

    from kmock.cli import app

    r = CliRunner().invoke(app, ["sweep", "--platform", "tdx", "launch"])
    assert r.exit_code == 0, r.output
