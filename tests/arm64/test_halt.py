"""An arm64 vCPU halts inside KVM_RUN: arm64 has no KVM_EXIT_HLT. A WFI is trapped to
kvm_handle_wfx -> kvm_vcpu_wfi -> kvm_vcpu_halt (arch/arm64/kvm/handle_exit.c, arm.c),
which blocks until an interrupt wakes the vCPU or a signal for its thread makes
KVM_RUN fail with EINTR, exit_reason KVM_EXIT_INTR (kvm_handle_signal_exit). kmock: a
guest ``hlt()`` (WFI), or a script with nothing left, blocks until the test adds
actions (the wake-up), ``vcpu.kick()`` / ``run.immediate_exit`` from another thread or a
``stop()`` action (the signal), or the VM is killed (EIO)."""

import errno
import os

import pytest

import kmock
import kmock_arm64
from kmock.uapi import arm64 as A
from kmock.uapi import kvm as K

from ._util import Runner, run_exit

RAM = 0x40000000
P = 4096


@pytest.fixture
def vcpu():
    """(kernel, vCPU fd, kmock's Vcpu) of a normal arm64 VM with one RAM slot."""
    k = kmock.Kernel("linux-arm64", plugins=[kmock_arm64])
    kvm = k.open("/dev/kvm", os.O_RDWR)
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, 0)
    gm = k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(
        size=4 * P, flags=K.GUEST_MEMFD_FLAG_MMAP | K.GUEST_MEMFD_FLAG_INIT_SHARED))
    k.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
        slot=0, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=RAM, memory_size=4 * P,
        guest_memfd=gm))
    fd = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    init = A.kvm_vcpu_init(target=A.KVM_ARM_TARGET_GENERIC_V8)
    init.features[0] = 1 << A.KVM_ARM_VCPU_PSCI_0_2
    k.ioctl(fd, A.KVM_ARM_VCPU_INIT, init)
    yield k, fd, k.file(fd).vcpu
    k.close_all()


def test_wfi_blocks_in_kvm_run_until_kicked(vcpu):
    k, fd, v = vcpu
    g = v.guest
    w = g.write(RAM, b"before")
    h = g.hlt()
    t = Runner(k, fd)
    assert t.blocked() and w.done and h.done  # halted after the write, no exit
    v.kick()  # a signal for the vCPU's thread
    assert t.outcome() == K.KVM_EXIT_INTR and v.run.exit_reason == K.KVM_EXIT_INTR
    assert h.exits == []  # never KVM_EXIT_HLT


def test_nothing_to_run_blocks_until_the_guest_is_woken(vcpu):
    k, fd, v = vcpu
    t = Runner(k, fd)
    assert t.blocked()
    g = v.guest  # the wake-up: the guest has more to run, in the same KVM_RUN
    g.write(RAM + P, b"woken")
    r = g.read(RAM + P, 5)
    s = g.stop()
    assert t.outcome() == K.KVM_EXIT_INTR
    assert r.result == b"woken" and s.done and s.exits == [K.KVM_EXIT_INTR]


def test_immediate_exit_from_another_thread_ends_the_halt(vcpu):
    k, fd, v = vcpu
    v.guest.hlt()
    t = Runner(k, fd)
    assert t.blocked()
    v.run.immediate_exit = 1  # QEMU sets it in its SIG_IPI handler
    assert t.outcome() == K.KVM_EXIT_INTR
    v.run.immediate_exit = 0
    t = Runner(k, fd)  # halted again: still nothing to run
    assert t.blocked()
    v.kick()
    assert t.outcome() == K.KVM_EXIT_INTR


def test_stop_ends_kvm_run_and_the_guest_runs_on(vcpu):
    k, fd, v = vcpu
    g = v.guest
    w = g.write(RAM, b"one")
    g.stop()
    r = g.read(RAM, 3)
    g.stop()
    assert run_exit(k, fd) == K.KVM_EXIT_INTR and w.done and not r.done
    assert run_exit(k, fd) == K.KVM_EXIT_INTR and r.result == b"one"


def test_a_kick_before_kvm_run_is_taken_before_the_guest_runs(vcpu):
    k, fd, v = vcpu
    v.kick()
    w = v.guest.write(RAM, b"late")
    v.guest.stop()
    assert run_exit(k, fd) == K.KVM_EXIT_INTR and not w.done  # the pending signal
    assert run_exit(k, fd) == K.KVM_EXIT_INTR and w.done


def test_a_vm_killed_while_halted_gives_eio(vcpu):
    k, fd, v = vcpu
    t = Runner(k, fd)
    assert t.blocked()
    v.vm.kill("test: KVM_BUG_ON")
    e = t.outcome()
    assert isinstance(e, OSError) and e.errno == errno.EIO

