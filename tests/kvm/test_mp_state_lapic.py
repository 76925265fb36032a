"""KVM_SET_MP_STATE on x86 (x86.c kvm_arch_vcpu_ioctl_set_mpstate), on the mock alone (the
conformance scenario x86_mp_state_lapic compares it with the real kernel where there is
one): the LAPIC-only states, and KVM_RUN of a vCPU waiting for INIT/SIPI."""

import errno
import os
import threading

import pytest

import kmock
from kmock.uapi import kvm as K
from kmock.uapi import x86 as X


def _vcpu(irqchip):
    k = kmock.Kernel("linux-6.18")
    kvm = k.open("/dev/kvm", os.O_RDWR)
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, 0)
    if irqchip:
        k.ioctl(vm, K.KVM_CREATE_IRQCHIP, 0)
    return k, k.ioctl(vm, K.KVM_CREATE_VCPU, 0)


def _get(k, fd):
    m = X.kvm_mp_state()
    k.ioctl(fd, X.KVM_GET_MP_STATE, m)
    return m.mp_state


@pytest.mark.parametrize("irqchip", [False, True])
def test_which_states_set_takes(irqchip):
    k, fd = _vcpu(irqchip)
    try:
        took = {}
        for value in range(12):
            try:
                k.ioctl(fd, X.KVM_SET_MP_STATE, X.kvm_mp_state(value))
                took[value] = _get(k, fd)
            except OSError as e:
                assert e.errno == errno.EINVAL
            k.ioctl(fd, X.KVM_SET_MP_STATE, X.kvm_mp_state(X.KVM_MP_STATE_RUNNABLE))
        if irqchip:  # SIPI_RECEIVED (4) is accepted at once: RUNNABLE
            assert took == {0: 0, 1: 1, 2: 2, 3: 3, 4: 0, 9: 9}
        else:
            assert took == {0: 0}
    finally:
        k.close_all()


def test_an_ap_waiting_for_sipi_blocks_in_kvm_run_until_signalled():
    k, fd = _vcpu(True)
    try:
        vcpu = k.file(fd).vcpu
        k.ioctl(fd, X.KVM_SET_MP_STATE, X.kvm_mp_state(X.KVM_MP_STATE_UNINITIALIZED))
        vcpu.guest.outb(0x80, 1)  # guest code that must not run while it waits
        out = {}

        def run():
            try:
                k.ioctl(fd, K.KVM_RUN, 0)
                out["r"] = "returned"
            except OSError as e:
                out["r"] = e.errno

        t = threading.Thread(target=run, daemon=True)
        t.start()
        t.join(0.05)
        assert t.is_alive()
        vcpu.kick()
        t.join(5)
        assert out == {"r": errno.EINTR} and vcpu.run.exit_reason == K.KVM_EXIT_INTR
        assert _get(k, fd) == X.KVM_MP_STATE_UNINITIALIZED
        vcpu.run.immediate_exit = 1  # immediate_exit: EINTR at once, exit_reason untouched
        vcpu.run.exit_reason = 0
        with pytest.raises(OSError) as e:
            k.ioctl(fd, K.KVM_RUN, 0)
        assert e.value.errno == errno.EINTR and vcpu.run.exit_reason == 0
        vcpu.run.immediate_exit = 0
        k.ioctl(fd, X.KVM_SET_MP_STATE, X.kvm_mp_state(X.KVM_MP_STATE_RUNNABLE))
        k.ioctl(fd, K.KVM_RUN, 0)  # runnable again: the guest's outb exits
        assert vcpu.run.exit_reason == K.KVM_EXIT_IO and vcpu.run.io.port == 0x80
    finally:
        k.close_all()
