"""Bounded memory in long runs (issue 14 part 4): guest-script history and the logs."""

import os

import pytest

import kmock
from kmock import _libc
from kmock.consequences import BoundedLog
from kmock.errors import KmockUsageError
from kmock.kvm.guest import GuestScript, Hlt
from kmock.uapi import kvm as K


def _vcpu(k):
    kvm = k.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, 0)
    vcpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    return vcpu, k.vm(vm).vcpus[0].guest


@pytest.mark.parametrize("history", [0, 1, 10, 300])
def test_guest_script_keeps_pending_plus_bounded_history(history):
    k = kmock.Kernel(guest_history=history)
    try:
        vcpu, g = _vcpu(k)
        assert g.history == history
        acts = []
        for i in range(5000):
            acts.append(g.outb(0x80, i & 0xFF))
            k.ioctl(vcpu, K.KVM_RUN, 0)
            # the outb exited; it completes on the next KVM_RUN
            assert g.current is acts[-1] and not acts[-1].done
        k.ioctl(vcpu, K.KVM_RUN, 0)
        assert all(a.done for a in acts)
        # bounded: the history plus at most one batch (max(64, history // 4)) more
        assert len(g.actions) <= history + max(64, history // 4) + 1
        if history:  # the newest completed actions are the ones kept
            n = min(history, 5)
            assert g.completed[-n:] == acts[-n:]
        assert len(g) == 5000 and g.retired + len(g.actions) == 5000
        assert g.pending == []
        # what is pending is never dropped
        later = [g.outb(0x81, 1) for _ in range(3)]
        assert g.pending == later
    finally:
        k.close_all()


def test_script_order_survives_trimming():
    """Trimming happens in add(); the pc still names the next action to run."""
    g = GuestScript(history=0)
    done = []
    for i in range(1000):
        a = g.add(Hlt())
        assert g.current is a
        a.finish()
        g.pc += 1
        done.append(a)
    assert len(g.actions) <= 65 and g.retired >= 1000 - 65
    assert repr(g) == "<GuestScript 1000/1000 done>"


def test_guest_history_setting_is_checked():
    with pytest.raises(KmockUsageError, match="guest_history"):
        kmock.Kernel(guest_history=-5)
    with pytest.raises(KmockUsageError, match="history"):
        GuestScript(history="x")


def test_bounded_log_keeps_the_newest():
    log = BoundedLog(3)
    for i in range(10):
        log.append(i)
    assert log == [7, 8, 9] and log.dropped == 7
    log.limit = None
    log.append(10)
    assert log == [7, 8, 9, 10]
    assert BoundedLog() == [] and BoundedLog(0).limit == 0
    z = BoundedLog(0)
    z.append(1)
    assert z == [] and z.dropped == 1
    with pytest.raises(KmockUsageError, match="log_limit"):
        BoundedLog(-1)


def test_kernel_logs_follow_log_limit():
    k = kmock.Kernel(log_limit=5)
    try:
        assert k.sigbus_log.limit == k.violations.limit == k.dma_faults.limit == 5
        kvm = k.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
        vm = k.ioctl(kvm, K.KVM_CREATE_VM, K.KVM_X86_SW_PROTECTED_VM)
        gmem = k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(
            size=1 << 16, flags=K.GUEST_MEMFD_FLAG_MMAP))
        m = k.mmap(gmem, 1 << 16, _libc.PROT_READ, _libc.MAP_SHARED, 0)
        for _ in range(12):
            with pytest.raises(kmock.SigBus):
                m[0]
        assert len(k.sigbus_log) == 5 and k.sigbus_log.dropped == 7
        for i in range(8):
            k.violations.record("test", f"v{i}")
        assert [v.explanation for v in k.violations] == [f"v{i}" for i in range(3, 8)]
        dev = k.add_vfio_device()
        for _ in range(9):
            with pytest.raises(kmock.DmaFault):
                dev.dma_read(0, 8)
        assert len(k.dma_faults) == 5 and k.dma_faults.dropped == 4
    finally:
        k.close_all()


def test_default_limits_and_unbounded():
    k = kmock.Kernel()
    assert k.profile.log_limit == 10000 and k.profile.guest_history == 1000
    k2 = kmock.Kernel(log_limit=None)
    assert k2.sigbus_log.limit is None


def test_longrun_bench_quick():
    from kmock.benchmarks import longrun

    lines = []
    rows = longrun.run(quick=True, out=lines.append)
    assert len(rows) == 2 and "guest exits" in lines[1] and "SIGBUS" in lines[2]
    exits, sigbus = rows
    assert exits["kept"] <= 1000 + 250 + 1
    assert sigbus["kept"] <= 10000  # the default log_limit
    for r in rows:
        assert r["best_us"] > 0 and r["median_us"] >= r["best_us"]
        assert r["rss_after"] > 0


def test_close_all_closes_every_fd_when_a_release_raises():
    """A release that raises (a plugin's bug) does not leave the other fds open."""
    from kmock.kvm.vmtype import DefaultVm

    class Broken(DefaultVm):
        type = 7
        name = "BROKEN_TEST_VM"

        def gmem_invalidate(self, vm, event):
            if event.reason == "release":
                raise RuntimeError("plugin bug")

    class Plugin:
        @kmock.hookspecs.hookimpl
        def kmock_vm_types(self, kernel):
            return [Broken()]

    k = kmock.Kernel(only_plugins=[Plugin()])
    kvm = k.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, 7)
    g = k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(size=1 << 16))
    fds = [kvm, vm, g]
    with pytest.raises(RuntimeError, match="plugin bug"):
        k.close_all()
    assert len(k.fdtable) == 0
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)
