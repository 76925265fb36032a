"""The fail-nth sweep over every failure point of each VMM scenario (platform none)."""

import pytest

from kmock.testing import fail_nth

SCENARIOS = fail_nth.scenarios("none")


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_sweep_every_failure_point(name):
    scenario, make_kernel = SCENARIOS[name]
    result = fail_nth.sweep(scenario, make_kernel)
    assert result.points, "the scenario reaches no failure point"
    assert len(result.runs) == len(result.points)
    assert result.problems == []
    for run in result.runs:  # every failure surfaced through a syscall with its errno
        assert run.call is not None and run.errno and run.outcome in ("raised", "handled")


def test_scenarios_cover_launch_conversion_map_file_dma():
    assert set(SCENARIOS) == {"launch", "conversion", "map_file", "dma"}
    points = {p for name in SCENARIOS for p in fail_nth.sweep(*SCENARIOS[name]).points}
    assert {"gmem.create", "kvm.memslot.alloc", "kvm.vcpu.alloc", "iommufd.object.alloc",
            "gmem.refcount", "copy_to_user"} <= points


def test_a_vmm_without_an_error_path_still_sweeps_clean():
    import errno
    import os

    import kmock
    from kmock.uapi import kvm as K

    def leaky(k):
        kvm = k.open("/dev/kvm", os.O_RDWR)
        try:
            vm = k.ioctl(kvm, K.KVM_CREATE_VM, 0)
            k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
        finally:
            pass  # the VMM forgets to close on its error path

    result = fail_nth.sweep(leaky, kmock.Kernel)
    assert [r.point for r in result.runs] == ["kvm.vcpu.alloc"]
    assert result.runs[0].errno == errno.ENOMEM
    # the sweep closes each kernel: what is judged is the mock's state, not the VMM's
    assert result.problems == []


def _scenario(k):
    import os

    from kmock.uapi import kvm as K

    kvm = k.open("/dev/kvm", os.O_RDWR)
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, 0)
    try:
        k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    finally:
        k.close(vm)
        k.close(kvm)


def _make_bogus():
    """A platform-none kernel whose failing kvm.vcpu.alloc records a violation."""
    import kmock

    k = kmock.Kernel()
    real = k.faults.check

    def late_check(point, errno=12):
        try:
            return real(point, errno)
        except OSError:
            if point == "kvm.vcpu.alloc":
                k.violations.record("bogus", "recorded as it fails")  # a change
            raise

    k.faults.check = late_check
    return k


def test_a_failed_call_that_changed_something_is_reported():
    result = fail_nth.sweep(_scenario, _make_bogus)
    assert result.platform == "none"
    assert sorted(p.split(": ", 1)[1] for p in result.problems) == [
        "the failed ioctl KVM_CREATE_VCPU changed the state (violations)",
        "violations a clean run does not record: ['bogus']"]


@pytest.fixture
def declared(monkeypatch):
    """Declarations made in a test stay in it (the plugins' are loaded first)."""
    fail_nth.declarations("none")
    for platform in ("none", "tdx"):
        monkeypatch.setitem(fail_nth.EXPECTED, platform,
                            list(fail_nth.EXPECTED.get(platform, ())))


def test_a_declaration_does_not_excuse_another_platform(declared):
    fail_nth.keeps_progress("tdx", "kvm.vcpu.alloc", "a tdx-only reason")
    fail_nth.expects_violations("tdx", "kvm.vcpu.alloc", "bogus", "a tdx-only reason",
                                sections=None)
    result = fail_nth.sweep(_scenario, _make_bogus)
    assert len(result.problems) == 2 and result.used == set()
    # the same declaration for the kernel's own platform accounts for the run
    d = fail_nth.expects_violations("none", "kvm.vcpu.alloc", ["bogus"], "the reason",
                                    call="ioctl KVM_CREATE_VCPU", sections=["violations"])
    result = fail_nth.sweep(_scenario, _make_bogus)
    assert result.problems == [] and result.used == {d}
    assert result.runs[0].outcome == "expected: the reason (records bogus)"


def test_keeps_progress_excuses_only_the_change_it_names(declared):
    fail_nth.keeps_progress("none", "kvm.vcpu.alloc", "r", sections=["guest_memfds"])
    fail_nth.keeps_progress("none", "kvm.vcpu.alloc", "r", call="ioctl KVM_RUN")
    problems = fail_nth.sweep(_scenario, _make_bogus).problems
    # not the section, not the call
    assert any("changed the state (violations)" in p for p in problems)
    d = fail_nth.keeps_progress("none", "kvm.vcpu.alloc", "kept", "ioctl KVM_CREATE_VCPU")
    result = fail_nth.sweep(_scenario, _make_bogus)
    # the change is kept progress; the violation is still a problem: keeping progress
    # does not excuse a recorded violation
    assert result.used == {d} and result.runs[0].outcome == "partial: kept"
    assert result.problems == [
        "fail-nth 1 (kvm.vcpu.alloc): violations a clean run does not record: ['bogus']"]


def test_an_expected_violation_excuses_no_change_without_it(declared):
    """A change is excused by an expects_violations declaration only in a run that records
    one of its violations."""
    fail_nth.expects_violations("none", "kvm.vcpu.alloc", "other", "r", sections=None)
    problems = fail_nth.sweep(_scenario, _make_bogus).problems
    assert len(problems) == 2
    with pytest.raises(ValueError):
        fail_nth.expects_violations("none", "kvm.vcpu.alloc", (), "no kind")


def test_plugin_scenarios_come_through_their_entry_point(monkeypatch):
    import importlib.metadata as md

    import kmock

    def offered():
        def launch(k):
            k.close(k.open("/dev/kvm", 2))

        return {"launch": (launch, kmock.Kernel)}

    class EP:
        name, value = "zz-test", "tests.cli:offered"

        def load(self):
            return offered

    real = md.entry_points
    monkeypatch.setattr(md, "entry_points", lambda group=None, **kw: (
        [EP()] if group == fail_nth.SCENARIO_GROUP else real(group=group, **kw)))
    try:
        found = fail_nth.scenarios("zz-test")
        assert set(found) == {"launch"}
        assert fail_nth.sweep(*found["launch"]).runs == []  # no failure point reached
    finally:
        fail_nth.SCENARIOS.pop("zz-test", None)
