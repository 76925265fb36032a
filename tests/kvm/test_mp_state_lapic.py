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
        if irqchip:  # SIPI_RECEIVED (4): the GET accepts the pending SIPI: RUNNABLE
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


def _cs_rip(k, fd):
    sregs, regs = X.kvm_sregs(), X.kvm_regs()
    k.ioctl(fd, X.KVM_GET_SREGS, sregs)
    k.ioctl(fd, X.KVM_GET_REGS, regs)
    return sregs.cs.selector, sregs.cs.base, regs.rip


def _set_sipi_vector(k, fd, vector):
    ev = X.kvm_vcpu_events()
    k.ioctl(fd, X.KVM_GET_VCPU_EVENTS, ev)
    ev.sipi_vector, ev.flags = vector, X.KVM_VCPUEVENT_VALID_SIPI_VECTOR
    k.ioctl(fd, X.KVM_SET_VCPU_EVENTS, ev)


def test_a_pending_sipi_starts_the_vcpu_at_its_vector_in_kvm_run():
    """KVM_SET_MP_STATE(SIPI_RECEIVED) leaves the SIPI pending (INIT_RECEIVED); the KVM_RUN
    that enters the vCPU accepts it (kvm_vcpu_block -> kvm_apic_accept_events): CS =
    vector << 8, base vector << 12, RIP 0, and the guest runs. immediate_exit is refused
    before (EINTR, nothing accepted). The conformance scenario x86_sipi_vector compares the
    GET_MP_STATE path with the real kernel."""
    k, fd = _vcpu(True)
    try:
        vcpu = k.file(fd).vcpu
        _set_sipi_vector(k, fd, 0x9A)
        k.ioctl(fd, X.KVM_SET_MP_STATE, X.kvm_mp_state(X.KVM_MP_STATE_SIPI_RECEIVED))
        vcpu.guest.outb(0x80, 1)
        vcpu.run.immediate_exit = 1
        with pytest.raises(OSError) as e:
            k.ioctl(fd, K.KVM_RUN, 0)
        assert e.value.errno == errno.EINTR
        assert _cs_rip(k, fd) == (0xF000, 0xFFFF0000, 0xFFF0)  # not accepted
        vcpu.run.immediate_exit = 0
        k.ioctl(fd, K.KVM_RUN, 0)
        assert vcpu.run.exit_reason == K.KVM_EXIT_IO and vcpu.run.io.port == 0x80
        assert _cs_rip(k, fd)[:2] == (0x9A00, 0x9A000)
        assert _get(k, fd) == X.KVM_MP_STATE_RUNNABLE
    finally:
        k.close_all()


def test_a_sipi_vector_needs_its_flag_and_a_sipi_an_init_received_vcpu():
    """The vector needs VALID_SIPI_VECTOR; a SIPI whose vCPU left INIT_RECEIVED before the
    accept is dropped (CS and RIP stay)."""
    k, fd = _vcpu(True)
    try:
        ev = X.kvm_vcpu_events()
        k.ioctl(fd, X.KVM_GET_VCPU_EVENTS, ev)
        ev.sipi_vector, ev.flags = 0x44, 0  # no VALID_SIPI_VECTOR: ignored
        k.ioctl(fd, X.KVM_SET_VCPU_EVENTS, ev)
        k.ioctl(fd, X.KVM_SET_MP_STATE, X.kvm_mp_state(X.KVM_MP_STATE_SIPI_RECEIVED))
        assert _get(k, fd) == X.KVM_MP_STATE_RUNNABLE
        assert _cs_rip(k, fd) == (0, 0, 0)  # vector 0
        _set_sipi_vector(k, fd, 0x55)
        k.ioctl(fd, X.KVM_SET_MP_STATE, X.kvm_mp_state(X.KVM_MP_STATE_SIPI_RECEIVED))
        k.ioctl(fd, X.KVM_SET_MP_STATE, X.kvm_mp_state(X.KVM_MP_STATE_RUNNABLE))
        assert _get(k, fd) == X.KVM_MP_STATE_RUNNABLE
        assert _cs_rip(k, fd) == (0, 0, 0)  # the SIPI was dropped
    finally:
        k.close_all()


def test_a_latched_init_resets_the_vcpu_at_kvm_run():
    """KVM_SET_VCPU_EVENTS(VALID_SMM, smi.latched_init) latches an INIT; the next KVM_RUN
    accepts it (vcpu_enter_guest's KVM_REQ_EVENT -> kvm_apic_accept_events): the BSP is
    reset and runs from 0xf000:0xfff0; an AP is reset and waits for SIPI (KVM_RUN blocks
    until signalled). The conformance scenario x86_init_event compares the
    KVM_GET_MP_STATE path with the real kernel."""
    for vid in (0, 1):
        k = kmock.Kernel("linux-6.18")
        try:
            kvm = k.open("/dev/kvm", os.O_RDWR)
            vm = k.ioctl(kvm, K.KVM_CREATE_VM, 0)
            k.ioctl(vm, K.KVM_CREATE_IRQCHIP, 0)
            fd = k.ioctl(vm, K.KVM_CREATE_VCPU, vid)
            vcpu = k.file(fd).vcpu
            k.ioctl(fd, X.KVM_SET_MP_STATE, X.kvm_mp_state(X.KVM_MP_STATE_RUNNABLE))
            regs = X.kvm_regs()
            k.ioctl(fd, X.KVM_GET_REGS, regs)
            regs.rip, regs.rax = 0x1000, 5
            k.ioctl(fd, X.KVM_SET_REGS, regs)
            ev = X.kvm_vcpu_events()
            k.ioctl(fd, X.KVM_GET_VCPU_EVENTS, ev)
            ev.flags, ev.smi.latched_init = X.KVM_VCPUEVENT_VALID_SMM, 1
            k.ioctl(fd, X.KVM_SET_VCPU_EVENTS, ev)
            vcpu.guest.outb(0x80, 1)
            if vid == 0:
                k.ioctl(fd, K.KVM_RUN, 0)
                assert vcpu.run.exit_reason == K.KVM_EXIT_IO
                assert _get(k, fd) == X.KVM_MP_STATE_RUNNABLE
            else:  # the AP waits for SIPI: immediate_exit gets EINTR, then a GET accepts
                vcpu.run.immediate_exit = 1
                with pytest.raises(OSError) as e:
                    k.ioctl(fd, K.KVM_RUN, 0)
                assert e.value.errno == errno.EINTR
                assert _get(k, fd) == X.KVM_MP_STATE_INIT_RECEIVED
            k.ioctl(fd, X.KVM_GET_REGS, regs)
            assert (regs.rip, regs.rax) == (0xFFF0, 0)
            k.ioctl(fd, X.KVM_GET_VCPU_EVENTS, ev)
            assert ev.smi.latched_init == 0
        finally:
            k.close_all()
