"""A realm's vCPU waits inside KVM_RUN: arm64 has no KVM_EXIT_HLT. The CCA series leaves
the REC's WFI untrapped (rme-exit.c has no WFx handler; RMI_EXIT_IRQ re-enters the REC),
and an arm64 WFI that does trap ends in kvm_vcpu_wfi: either way KVM_RUN returns only
for a signal to the vCPU's thread (EINTR, KVM_EXIT_INTR) or an exit the realm makes
(PSCI SYSTEM_OFF: KVM_EXIT_SYSTEM_EVENT, kmock_arm64.psci)."""

import threading

from kmock.uapi import kvm as K
from kmock_cca import vmm as plugin_vmm
from kmock_cca.rtt import RealmState

from arm64._util import run_exit
from .realm_vmm import RAM, P, RealmVmm

SETTLE = 0.05  # long enough to see a KVM_RUN blocked (kmock polls every 5 ms)


def _in_thread(fn):
    out = {}

    def body():
        try:
            out["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out["error"] = e

    t = threading.Thread(target=body, daemon=True)
    t.start()
    return t, out


def test_an_idle_realm_blocks_in_kvm_run_until_its_thread_is_signalled(k):
    vmm = RealmVmm(k).boot()
    fd = vmm.vcpus[0]
    t, out = _in_thread(lambda: run_exit(k, fd))  # activation, then nothing to run
    t.join(SETTLE)
    assert t.is_alive()
    assert vmm.vm_obj.arch.state == RealmState.ACTIVE  # activated before the WFI
    k.file(fd).vcpu.kick()
    t.join(5)
    assert not t.is_alive() and out == {"result": K.KVM_EXIT_INTR}
    assert vmm.kvm_run().exit_reason == K.KVM_EXIT_INTR
    # the realm runs on at the next KVM_RUN: the signal did not hurt it
    w = vmm.guest().write(RAM + 2 * P, b"after")
    assert vmm.run_to_stop() == K.KVM_EXIT_INTR and w.done and not w.aborted
    assert vmm.vm_obj.arch.state == RealmState.ACTIVE


def test_a_halted_realm_is_woken_by_more_guest_code(k):
    vmm = RealmVmm(k).boot()
    g = vmm.guest()
    h = g.hlt()
    t, out = _in_thread(lambda: run_exit(k, vmm.vcpus[0]))
    t.join(SETTLE)
    assert t.is_alive() and h.done and h.exits == []
    r = g.read(RAM, 11)  # the interrupt's wake-up: the realm runs on in the same KVM_RUN
    g.stop()
    t.join(5)
    assert out == {"result": K.KVM_EXIT_INTR} and r.result == b"realm image"


def test_the_plugin_vmm_loop_ends_when_its_vcpu_thread_is_signalled():
    """kmock_cca.vmm.RealmVmm.run: the VMM's vCPU thread loops on KVM_RUN; another thread
    signals it (vcpu.kick(), QEMU's SIG_IPI) and the loop ends on EINTR / KVM_EXIT_INTR."""
    from .conftest import cca_kernel

    k = cca_kernel()
    v = plugin_vmm.RealmVmm(k).create(16 * P)
    try:
        v.populate(plugin_vmm.RAM, b"image".ljust(P, b"\0"))
        g = v.guest
        g.cca.ipa_state_set(plugin_vmm.RAM + 8 * P, plugin_vmm.RAM + 10 * P, 0)
        w = g.write(plugin_vmm.RAM + 8 * P, b"shared", private=False)
        g.hlt()
        t, out = _in_thread(v.run)
        t.join(SETTLE)
        assert t.is_alive() and w.done  # converted on the memory-fault exit, then idle
        k.vm(v.vm).vcpus[0].kick()
        t.join(5)
        assert out == {"result": [K.KVM_EXIT_MEMORY_FAULT, K.KVM_EXIT_INTR]}
    finally:
        v.close()
        k.close_all()


def test_a_realm_ends_with_psci_system_off(k):
    """The realm's SYSTEM_OFF (a PSCI REC exit, handled by kvm_psci_call): KVM_RUN returns
    KVM_EXIT_SYSTEM_EVENT SHUTDOWN, the REC is stopped, the realm stays ACTIVE until the
    VMM destroys it."""
    vmm = RealmVmm(k).boot()
    fd = vmm.vcpus[0]
    off = vmm.guest().psci.system_off()
    assert run_exit(k, fd) == K.KVM_EXIT_SYSTEM_EVENT and off.done
    run = vmm.kvm_run()
    assert (run.system_event.type, run.system_event.ndata) == (K.KVM_SYSTEM_EVENT_SHUTDOWN, 1)
    assert k.file(fd).vcpu.stopped
    assert vmm.vm_obj.arch.state == RealmState.ACTIVE
