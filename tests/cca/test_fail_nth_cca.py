"""Issue 13 for CCA: the RMI failure points (cca.rmi.<command>) and the fail-nth sweep
over the cca scenarios (kmock_cca.scenarios)."""

import errno

import pytest

import kmock_cca
from kmock.testing import fail_nth
from kmock.uapi import kvm as K
from kmock_cca import kvm_rmi, scenarios
from kmock_cca.rtt import RealmState

from .conftest import cca_kernel
from .realm_vmm import RAM, P, RealmVmm

SCENARIOS = scenarios.scenarios()


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_sweep(name):
    fn, make = SCENARIOS[name]
    result = fail_nth.sweep(fn, make)
    assert result.problems == []
    assert len(result.runs) == len(result.points) > 5
    points = set(result.points)
    assert {"cca.rmi.granule_delegate", "cca.rmi.realm_create", "cca.rmi.rtt_create",
            "cca.rmi.data_create"} <= points
    if name == "launch":
        assert {f"cca.rmi.{p}" for p in kvm_rmi.POINTS} <= points
    for run in result.runs:
        if run.point.startswith("cca.rmi."):
            assert run.errno == errno.ENXIO and run.call is not None


def test_sweep_reports_kept_progress_only_where_declared(monkeypatch):
    """Without the declarations the sweep sees POPULATE and activation change the state."""
    fn, make = SCENARIOS["launch"]
    monkeypatch.setitem(fail_nth.EXPECTED, "cca", [])
    problems = fail_nth.sweep(fn, make).problems
    assert any("cca.rmi.data_create" in p and "changed the state" in p for p in problems)
    assert any("cca.rmi.realm_activate" in p and "KVM_RUN changed" in p for p in problems)


def test_every_declaration_is_used():
    """A declaration no run needs would hide a regression."""
    results = [fail_nth.sweep(fn, make) for fn, make in SCENARIOS.values()]
    assert {r.platform for r in results} == {"cca"}
    assert fail_nth.unused_declarations("cca", results) == []


def _booted(k, image=True):
    vmm = RealmVmm(k)
    vmm.create_vgic()
    vmm.add_ram(16 * P)
    vmm.create_vcpu(0)
    vmm.finish_vgic()
    if image:
        vmm.populate(RAM, b"image".ljust(P, b"\0"))
    return vmm


@pytest.mark.parametrize("point", ["realm_create", "rtt_create", "data_create",
                                   "granule_delegate"])
def test_populate_failure_points(point):
    """An RMI failure during KVM_ARM_RMI_POPULATE -> ENXIO (v14 26/44, 28/44); nothing
    of the page is left delegated or mapped, and a retry succeeds."""
    k = cca_kernel()
    vmm = _booted(k, image=False)
    rtt = vmm.vm_obj.vmtype
    k.faults.fail("cca.rmi." + point)
    with pytest.raises(OSError) as ei:
        vmm.populate(RAM, b"image".ljust(P, b"\0"))
    assert ei.value.errno == errno.ENXIO
    k.faults.clear()
    if vmm.realm is not None:
        assert vmm.realm.assigned_pages() == 0
    vmm.populate(RAM, b"image".ljust(P, b"\0"))
    assert vmm.realm.assigned_pages() == 1
    assert rtt.granules.count(kmock_cca.rtt.GranuleState.DATA) == 1
    k.close_all()


@pytest.mark.parametrize("point", ["rec_create", "rtt_init_ripas", "realm_activate"])
def test_activation_failure_points_kill_the_realm(point):
    """An RMI failure at activation: the first KVM_RUN gets ENXIO and the realm is DEAD
    (kvm_activate_realm, v14 18/44); the next KVM_RUN gets EINVAL (kvm_rec_pre_enter)."""
    k = cca_kernel()
    vmm = _booted(k)
    k.faults.fail("cca.rmi." + point)
    assert vmm.run() == -errno.ENXIO
    assert vmm.vm_obj.arch.state == RealmState.DEAD
    assert vmm.run() == -errno.EINVAL
    assert k.faults.injected == [("cca.rmi." + point, errno.ENXIO)]
    k.close_all()


def _shared_fault_vmm(k):
    vmm = _booted(k)
    vmm.convert(RAM + 9 * P, P, private=False)
    vmm.guest().write(RAM + 9 * P, b"x", private=False)  # mapped at the unprotected alias
    vmm.guest().hlt()
    vmm.guest().stop()  # the VMM's thread is signalled out of the halt
    return vmm


def test_fault_mapping_failure_leaves_no_stage2_mapping():
    """RTT_CREATE failing while KVM maps a realm fault (after activation): KVM_RUN fails
    with ENXIO and KVM's stage-2 keeps nothing of the fault (found by the sweep)."""
    k = cca_kernel()
    vmm = _shared_fault_vmm(k)
    k.faults.start_recording()
    assert vmm.run_to_stop() == K.KVM_EXIT_INTR
    hits = list(k.faults.hits)
    k.close_all()
    after = hits[hits.index("cca.rmi.realm_activate"):]
    nth = hits.count("cca.rmi.rtt_create") - after.count("cca.rmi.rtt_create") + 1
    assert after.count("cca.rmi.rtt_create") >= 1

    k = cca_kernel()
    vmm = _shared_fault_vmm(k)
    k.faults.fail("cca.rmi.rtt_create", nth=nth)
    r = vmm.run()
    k.faults.clear()
    assert r == -errno.ENXIO
    assert k.faults.injected == [("cca.rmi.rtt_create", errno.ENXIO)]
    assert vmm.vm_obj.arch.state == RealmState.ACTIVE
    assert vmm.vm_obj.stage2_lookup((RAM >> 12) + 9) is None
    assert vmm.run_to_stop() == K.KVM_EXIT_INTR  # the retry maps it and the guest halts
    assert vmm.vm_obj.stage2_lookup((RAM >> 12) + 9) is not None
    k.close_all()


def test_snapshot_tables_granules_and_rtt():
    """kmock_snapshot adds the granule table (host frames) and the realm's RTT (IPA)."""
    from kmock import snapshot as snapmod

    k = cca_kernel()
    vmm = _booted(k)
    snap = snapmod.capture(k)
    tables = {t["name"]: t for t in snap["arch"]["cca"]["tables"]}
    g, r = tables["granules (Realm PAS)"], tables["RTT"]
    assert g["space"] == "pfn" and r["space"] == "gpa" and r["vm"] is not None
    data_pfn = k.file(vmm.gmem).inode.pfn(0)
    assert [data_pfn, data_pfn + 1, "DATA"] in g["runs"]
    assert {st for _s, _e, st in g["runs"]} == {"DATA", "RD", "RTT"}
    assert r["runs"] == [[RAM, RAM + P, "ASSIGNED/RAM"]]  # before activation's INIT_RIPAS
    vmm.guest().hlt()
    assert vmm.run_to_stop() == K.KVM_EXIT_INTR
    tables = {t["name"]: t for t in snapmod.capture(k)["arch"]["cca"]["tables"]}
    assert "REC" in {st for _s, _e, st in tables["granules (Realm PAS)"]["runs"]}
    assert tables["RTT"]["runs"][1] == [RAM + P, RAM + 16 * P, "UNASSIGNED/RAM"]
    k.close_all()
