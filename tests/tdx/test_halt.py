"""A TD's HLT halts its vCPU inside KVM_RUN: TDX needs the split irqchip, so the LAPIC is
in the kernel and __kvm_emulate_halt blocks in kvm_vcpu_block instead of exiting with
KVM_EXIT_HLT (arch/x86/kvm/x86.c; tdx_vcpu_create refuses a TD without the split
irqchip, arch/x86/kvm/vmx/tdx.c). KVM_RUN returns when the guest has more to run (an
interrupt's wake-up), fails with EINTR and KVM_EXIT_INTR for a signal to the vCPU's
thread (kvm_handle_signal_exit), or with EIO when the TD is killed meanwhile."""

import errno
import threading
import time

import pytest

from kmock.testing.errnos import err
from kmock.uapi import kvm as K
from kmock.uapi import tdx as T

from ._td import GPA, P, Td

WAIT = 10  # seconds a join may take before the test calls it a hang


@pytest.fixture
def td(tdx_kernel):
    return Td(tdx_kernel()).launch()


class RunThread:
    """KVM_RUN in its own thread (a VMM's vCPU thread); ``result`` = errno or 0."""

    def __init__(self, t):
        self.t = t
        self.result = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self.t.k.ioctl(self.t.vcpu, K.KVM_RUN, 0)
            self.result = 0
        except OSError as e:
            self.result = e.errno

    def halted(self, action):
        """Wait until ``action`` (the guest's HLT) is done and KVM_RUN is still inside."""
        deadline = time.monotonic() + WAIT
        while not action.done:
            assert time.monotonic() < deadline, "the guest never reached its HLT"
            time.sleep(0.005)
        time.sleep(0.05)
        return self.thread.is_alive()

    def join(self):
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "KVM_RUN still blocked"
        return self.result


def test_hlt_blocks_in_kvm_run_until_a_kick_from_another_thread(td):
    g = td.guest()
    w = g.write(GPA, b"before")
    h = g.hlt()
    r = RunThread(td)
    assert r.halted(h), "KVM_RUN returned at the TD's HLT"
    assert w.done and h.exits == []  # no KVM_EXIT_HLT
    td.vmobj.vcpus[0].kick()  # the VMM signals its vCPU thread (pthread_kill)
    assert r.join() == errno.EINTR
    assert td.run_struct().exit_reason == K.KVM_EXIT_INTR
    # the guest runs on from after its HLT at the next KVM_RUN
    rd = g.read(GPA, 6)
    td.run_to_stop()
    assert rd.result == b"before"


def test_a_halted_td_vcpu_runs_on_when_the_guest_has_more_to_run(td):
    g = td.guest()
    h = g.hlt()
    r = RunThread(td)
    assert r.halted(h)
    a = g.tdx.accept(GPA + 5 * P)  # the wake-up: the guest runs on inside the same KVM_RUN
    g.stop()
    assert r.join() == errno.EINTR and td.run_struct().exit_reason == K.KVM_EXIT_INTR
    assert a.result == T.TDX_SUCCESS and td.state(5) == "MAPPED"


def test_immediate_exit_set_by_another_thread_ends_the_halt(td):
    h = td.guest().hlt()
    r = RunThread(td)
    assert r.halted(h)
    run = td.run_struct()
    run.immediate_exit = 1  # what QEMU's SIG_IPI handler does
    assert r.join() == errno.EINTR and run.exit_reason == K.KVM_EXIT_INTR
    run.immediate_exit = 0


def test_a_script_with_nothing_left_halts_too(td):
    r = RunThread(td)
    time.sleep(0.05)
    assert r.thread.is_alive(), "KVM_RUN returned with nothing to run"
    td.vmobj.vcpus[0].kick()
    assert r.join() == errno.EINTR and td.run_struct().exit_reason == K.KVM_EXIT_INTR


def test_stop_is_eintr_with_kvm_exit_intr_and_the_guest_resumes_after_it(td):
    g = td.guest()
    w = g.write(GPA, b"one")
    s = g.stop()
    rd = g.read(GPA, 3)
    assert err(td.k.ioctl, td.vcpu, K.KVM_RUN, 0) == errno.EINTR
    assert td.run_struct().exit_reason == K.KVM_EXIT_INTR
    assert w.done and s.exits == [K.KVM_EXIT_INTR] and not rd.done
    td.run_to_stop()
    assert rd.result == b"one"


def test_a_kick_before_kvm_run_is_eintr_before_the_guest_runs(td):
    rd = td.guest().read(GPA, 4)
    td.vmobj.vcpus[0].kick()
    assert err(td.k.ioctl, td.vcpu, K.KVM_RUN, 0) == errno.EINTR
    assert td.run_struct().exit_reason == K.KVM_EXIT_INTR and not rd.done
    td.run_to_stop()
    assert rd.done


def test_a_td_killed_while_halted_fails_kvm_run_with_eio(tdx_kernel):
    """Deleting the memslot of a TD-DMA-pinned page is KVM_BUG_ON (the module refuses the
    zap): the halted vCPU's KVM_RUN fails with EIO (KVM_REQ_VM_DEAD)."""
    t = Td(tdx_kernel(tdx_connect=True)).launch()
    g = t.guest()
    g.tdx.accept(GPA + 4 * P)
    h = g.hlt()
    r = RunThread(t)
    assert r.halted(h)
    t.k.ioctl(t.vm, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
        slot=1, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=GPA, memory_size=0,
        guest_memfd=t.gmem))
    assert t.vmobj.dead and t.k.violations[-1].kind == "td_bugged"
    assert r.join() == errno.EIO
