"""A guest HLT where the kernel halts the vCPU itself (kmock.kvm.guest: halts_in_kernel).

On the 6.18.44 host (conformance scenario x86_halt_in_kernel): without an in-kernel
LAPIC a HLT exits with KVM_EXIT_HLT; with one (split or full irqchip) KVM_RUN blocks until
the thread is signalled, then fails with EINTR, exit_reason KVM_EXIT_INTR, and
KVM_GET_MP_STATE says HALTED. These tests pin the wake-ups kmock models.
"""

import errno
import threading
import time

import pytest

from kmock.uapi import kvm as K
from kmock.uapi import x86 as X86

from ._util import create_vm, err

SPLIT_IRQCHIP = 121


def vm_with_vcpu(k, irqchip):
    _, vm = create_vm(k)
    if irqchip == "split":
        cap = K.kvm_enable_cap(cap=SPLIT_IRQCHIP)
        cap.args[0] = 24
        k.ioctl(vm, K.KVM_ENABLE_CAP, cap)
    elif irqchip == "full":
        k.ioctl(vm, K.KVM_CREATE_IRQCHIP, 0)
    cpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    return vm, cpu, k.file(cpu).vcpu


def mp_state(k, cpu):
    mp = X86.kvm_mp_state()
    k.ioctl(cpu, X86.KVM_GET_MP_STATE, mp)
    return mp.mp_state


def later(fn, delay=0.05):
    t = threading.Timer(delay, fn)
    t.start()
    return t


def test_without_an_in_kernel_lapic_hlt_exits(k):
    _, cpu, vcpu = vm_with_vcpu(k, None)
    vcpu.guest.hlt()
    assert k.ioctl(cpu, K.KVM_RUN, 0) == 0
    assert vcpu.run.exit_reason == K.KVM_EXIT_HLT
    assert mp_state(k, cpu) == X86.KVM_MP_STATE_RUNNABLE


@pytest.mark.parametrize("irqchip", ["split", "full"])
def test_hlt_then_stop_is_eintr_with_the_vcpu_halted(k, irqchip):
    _, cpu, vcpu = vm_with_vcpu(k, irqchip)
    h = vcpu.guest.hlt()
    vcpu.guest.stop()  # (added before KVM_RUN: the halt is woken by it at once)
    assert err(k.ioctl, cpu, K.KVM_RUN, 0) == errno.EINTR
    assert h.done and vcpu.run.exit_reason == K.KVM_EXIT_INTR


def test_nothing_to_run_blocks_until_kicked(k):
    _, cpu, vcpu = vm_with_vcpu(k, "split")
    t0 = time.monotonic()
    t = later(vcpu.kick, 0.1)
    assert err(k.ioctl, cpu, K.KVM_RUN, 0) == errno.EINTR
    t.join()
    assert time.monotonic() - t0 >= 0.1
    assert vcpu.run.exit_reason == K.KVM_EXIT_INTR
    assert mp_state(k, cpu) == X86.KVM_MP_STATE_HALTED


def test_immediate_exit_set_meanwhile_stands_for_the_signal(k):
    _, cpu, vcpu = vm_with_vcpu(k, "full")
    run = vcpu.run
    t = later(lambda: setattr(run, "immediate_exit", 1))
    assert err(k.ioctl, cpu, K.KVM_RUN, 0) == errno.EINTR
    t.join()
    assert run.exit_reason == K.KVM_EXIT_INTR


def test_more_guest_code_wakes_the_halt_and_runs(k):
    _, cpu, vcpu = vm_with_vcpu(k, "split")
    vcpu.guest.hlt()
    t = later(lambda: vcpu.guest.outb(0xE9, 7))  # an interrupt's handler, as it were
    assert k.ioctl(cpu, K.KVM_RUN, 0) == 0
    t.join()
    assert vcpu.run.exit_reason == K.KVM_EXIT_IO and vcpu.run.io.port == 0xE9
    assert mp_state(k, cpu) == X86.KVM_MP_STATE_RUNNABLE


def test_a_pending_kick_is_taken_before_the_guest_runs(k):
    _, cpu, vcpu = vm_with_vcpu(k, None)
    o = vcpu.guest.outb(0xE9, 1)
    vcpu.kick()
    assert err(k.ioctl, cpu, K.KVM_RUN, 0) == errno.EINTR
    assert not o.done and vcpu.run.exit_reason == K.KVM_EXIT_INTR
    assert k.ioctl(cpu, K.KVM_RUN, 0) == 0 and vcpu.run.exit_reason == K.KVM_EXIT_IO


def test_stop_is_a_signal_on_any_vm(k):
    _, cpu, vcpu = vm_with_vcpu(k, None)
    vcpu.guest.stop()
    o = vcpu.guest.outb(0xE9, 1)
    assert err(k.ioctl, cpu, K.KVM_RUN, 0) == errno.EINTR
    assert not o.done
    assert k.ioctl(cpu, K.KVM_RUN, 0) == 0 and o.done is False  # the outb exits now
    assert vcpu.run.exit_reason == K.KVM_EXIT_IO


def test_a_vm_killed_meanwhile_is_eio(k):
    vm, cpu, vcpu = vm_with_vcpu(k, "split")
    t = later(lambda: vcpu.vm.kill("test"))
    assert err(k.ioctl, cpu, K.KVM_RUN, 0) == errno.EIO
    t.join()


def test_closing_the_vcpu_fd_ends_a_halted_run(k):
    """kmock's calls hold no file reference: the close kicks the halted KVM_RUN out
    (EINTR) instead of waiting for it forever."""
    _, cpu, vcpu = vm_with_vcpu(k, "split")
    out = []

    def runner():
        try:
            k.ioctl(cpu, K.KVM_RUN, 0)
            out.append(0)
        except OSError as e:
            out.append(e.errno)

    t = threading.Thread(target=runner)
    t.start()
    time.sleep(0.05)
    k.close(cpu)
    t.join(5)
    assert not t.is_alive() and out == [errno.EINTR]
