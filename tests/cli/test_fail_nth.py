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


def test_a_failed_call_that_changed_something_is_reported():
    import os

    import kmock
    from kmock.uapi import kvm as K

    def scenario(k):
        kvm = k.open("/dev/kvm", os.O_RDWR)
        vm = k.ioctl(kvm, K.KVM_CREATE_VM, 0)
        try:
            k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
        finally:
            k.close(vm)
            k.close(kvm)

    def make():
        k = kmock.Kernel()
        real = k.faults.check

        def late_check(point, errno=12):
            if point == "kvm.vcpu.alloc":
                k.violations.record("bogus", "recorded before failing")  # a change
            return real(point, errno)

        k.faults.check = late_check
        return k

    result = fail_nth.sweep(scenario, make)
    assert result.problems and "changed the state" in result.problems[0]


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
