"""The in-kernel PIT (kmock.kvm.x86_pit) on profile linux-6.18: KVM_CREATE_PIT(2),
KVM_GET/SET_PIT(2), KVM_REINJECT_CONTROL.

The rules were read in Linux 6.18 (x86.c kvm_arch_vm_ioctl, i8254.c) and checked on a
6.18.44 host by the conformance scenario x86_pit.
"""

import errno
import threading
import time

from kmock.kvm import x86_pit
from kmock.uapi import kvm as K
from kmock.uapi import x86 as X86

from ._util import create_vm, err, errno_or_0

SPLIT_IRQCHIP = 121


def kernel_vm(k):
    _, vm = create_vm(k)
    k.ioctl(vm, K.KVM_CREATE_IRQCHIP, 0)
    return vm


def get2(k, vm):
    st = X86.kvm_pit_state2()
    st.reserved[4] = 9
    assert k.ioctl(vm, X86.KVM_GET_PIT2, st) == 0
    return st


def test_create_needs_the_full_irqchip(k):
    _, vm = create_vm(k)
    assert err(k.ioctl, vm, X86.KVM_CREATE_PIT2, X86.kvm_pit_config()) == errno.ENOENT
    assert err(k.ioctl, vm, X86.KVM_CREATE_PIT2, 8) == errno.EFAULT  # the copy first
    assert err(k.ioctl, vm, X86.KVM_CREATE_PIT, 0) == errno.ENOENT
    cap = K.kvm_enable_cap(cap=SPLIT_IRQCHIP)
    cap.args[0] = 24
    k.ioctl(vm, K.KVM_ENABLE_CAP, cap)
    assert err(k.ioctl, vm, X86.KVM_CREATE_PIT2, X86.kvm_pit_config()) == errno.ENOENT
    assert x86_pit.pit(k.file(vm).vm) is None


def test_create_once_any_flags(k):
    vm = kernel_vm(k)
    cfg = X86.kvm_pit_config(flags=0xFFFFFFFF)
    cfg.pad[0] = 1
    assert k.ioctl(vm, X86.KVM_CREATE_PIT2, cfg) == 0
    p = x86_pit.pit(k.file(vm).vm)
    assert p.speaker and p.reinject
    assert err(k.ioctl, vm, X86.KVM_CREATE_PIT2, X86.kvm_pit_config()) == errno.EEXIST
    assert err(k.ioctl, vm, X86.KVM_CREATE_PIT, 0) == errno.EEXIST
    assert x86_pit.pit(k.file(vm).vm) is p  # the failed calls changed nothing


def test_without_a_pit_each_ioctl_checks_in_its_order(k):
    vm = kernel_vm(k)
    assert err(k.ioctl, vm, X86.KVM_GET_PIT2, 8) == errno.ENXIO  # nothing read
    assert err(k.ioctl, vm, X86.KVM_SET_PIT2, 8) == errno.EFAULT
    assert err(k.ioctl, vm, X86.KVM_GET_PIT, 8) == errno.EFAULT
    assert err(k.ioctl, vm, X86.KVM_SET_PIT, 8) == errno.EFAULT
    assert err(k.ioctl, vm, X86.KVM_REINJECT_CONTROL, 8) == errno.EFAULT
    for req, arg in ((X86.KVM_SET_PIT2, X86.kvm_pit_state2()), (X86.KVM_GET_PIT, X86.kvm_pit_state()),
                     (X86.KVM_SET_PIT, X86.kvm_pit_state()),
                     (X86.KVM_REINJECT_CONTROL, X86.kvm_reinject_control())):
        assert err(k.ioctl, vm, req, arg) == errno.ENXIO


def test_reset_state(k):
    vm = kernel_vm(k)
    t0 = time.monotonic_ns()
    k.ioctl(vm, X86.KVM_CREATE_PIT, 0)  # the old ioctl: speaker port too
    t1 = time.monotonic_ns()
    st = get2(k, vm)
    assert [(c.count, c.mode, c.gate) for c in st.channels] == [(0x10000, 0xFF, 1), (0x10000, 0xFF, 1),
                                                                (0x10000, 0xFF, 0)]
    assert st.channels[0].count_load_time == 0
    assert all(t0 <= c.count_load_time <= t1 for c in st.channels[1:])
    assert st.flags == 0 and list(st.reserved) == [0] * 9
    assert x86_pit.pit(k.file(vm).vm).speaker


def test_set_stores_every_field_and_recomputes_counts_and_times(k):
    vm = kernel_vm(k)
    k.ioctl(vm, X86.KVM_CREATE_PIT2, X86.kvm_pit_config())
    st = X86.kvm_pit_state2(flags=0xFFFFFFF0)
    st.reserved[1] = 3
    for i, c in enumerate(st.channels):
        c.latched_count, c.count_latched, c.status, c.rw_mode, c.mode, c.gate = 0xABCD, 2, 0x35, 3, 7, 9
        c.count_load_time = 1000 + i
    st.channels[0].count, st.channels[1].count, st.channels[2].count = 0, 0x12345678, 5
    t0 = time.monotonic_ns()
    assert k.ioctl(vm, X86.KVM_SET_PIT2, st) == 0
    t1 = time.monotonic_ns()
    got = get2(k, vm)
    assert [c.count for c in got.channels] == [0x10000, 0x12345678, 5]
    assert got.channels[0].count_load_time == 1000
    assert all(t0 <= c.count_load_time <= t1 for c in got.channels[1:])
    for c in got.channels:
        assert (c.latched_count, c.count_latched, c.status, c.rw_mode, c.mode, c.gate) == \
            (0xABCD, 2, 0x35, 3, 7, 9)
    assert got.flags == 0xFFFFFFF0 and list(got.reserved) == [0] * 9
    # the old SET_PIT keeps the flags
    ps = X86.kvm_pit_state()
    ps.channels[2].count = 0
    k.ioctl(vm, X86.KVM_SET_PIT, ps)
    out = X86.kvm_pit_state()
    k.ioctl(vm, X86.KVM_GET_PIT, out)
    assert out.channels[2].count == 0x10000 and out.channels[1].gate == 0
    assert get2(k, vm).flags == 0xFFFFFFF0


def test_failed_set_changes_nothing(k):
    vm = kernel_vm(k)
    k.ioctl(vm, X86.KVM_CREATE_PIT2, X86.kvm_pit_config())
    before = bytes(get2(k, vm))
    assert err(k.ioctl, vm, X86.KVM_SET_PIT2, 8) == errno.EFAULT
    assert err(k.ioctl, vm, X86.KVM_SET_PIT, 8) == errno.EFAULT
    assert bytes(get2(k, vm)) == before


def test_reinject_control_is_a_bool(k):
    vm = kernel_vm(k)
    k.ioctl(vm, X86.KVM_CREATE_PIT2, X86.kvm_pit_config())
    p = x86_pit.pit(k.file(vm).vm)
    ctl = X86.kvm_reinject_control(pit_reinject=0)
    ctl.reserved[5] = 1  # not checked
    assert k.ioctl(vm, X86.KVM_REINJECT_CONTROL, ctl) == 0
    assert p.reinject is False
    assert k.ioctl(vm, X86.KVM_REINJECT_CONTROL, X86.kvm_reinject_control(pit_reinject=0x80)) == 0
    assert p.reinject is True


def test_concurrent_create_makes_one_pit(k):
    vm = kernel_vm(k)
    results = []

    def create():
        results.append(errno_or_0(k.ioctl, vm, X86.KVM_CREATE_PIT2, X86.kvm_pit_config()))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0] + [errno.EEXIST] * 7


def test_concurrent_set_and_get_see_whole_states(k):
    vm = kernel_vm(k)
    k.ioctl(vm, X86.KVM_CREATE_PIT2, X86.kvm_pit_config())
    errors = []
    stop = threading.Event()

    def writer(v):
        st = X86.kvm_pit_state2(flags=v)
        for c in st.channels:
            c.count, c.mode, c.gate, c.status = v, v & 0xFF, v & 0xFF, v & 0xFF
        while not stop.is_set():
            k.ioctl(vm, X86.KVM_SET_PIT2, st)

    def reader():
        for _ in range(500):
            st = get2(k, vm)
            vals = {st.flags} | {c.count for c in st.channels} | {c.mode for c in st.channels}
            if len(vals) != 1:
                errors.append(vals)

    k.ioctl(vm, X86.KVM_SET_PIT2, X86.kvm_pit_state2(flags=1, channels=tuple(
        X86.kvm_pit_channel_state(count=1, mode=1) for _ in range(3))))
    ws = [threading.Thread(target=writer, args=(v,)) for v in (0x11, 0x22)]
    rs = [threading.Thread(target=reader) for _ in range(2)]
    for t in ws + rs:
        t.start()
    for t in rs:
        t.join()
    stop.set()
    for t in ws:
        t.join()
    assert errors == []


def _pit_timers():
    return [t for t in threading.enumerate() if isinstance(t, threading.Timer)
            and getattr(t.function, "__func__", None) is x86_pit.Pit._tick]


def test_channel_0_timer_stops_with_its_vm(k):
    """A periodic tick of a destroyed VM arms nothing more (its timer thread ends)."""
    _, vm = create_vm(k)
    k.ioctl(vm, K.KVM_CREATE_IRQCHIP, 0)
    k.ioctl(vm, X86.KVM_CREATE_PIT2, X86.kvm_pit_config())
    k.ioctl(vm, X86.KVM_REINJECT_CONTROL, X86.kvm_reinject_control(pit_reinject=0))
    ps = X86.kvm_pit_state2()
    k.ioctl(vm, X86.KVM_GET_PIT2, ps)
    ps.channels[0].mode, ps.channels[0].count = 2, 1193
    k.ioctl(vm, X86.KVM_SET_PIT2, ps)
    time.sleep(0.02)
    assert _pit_timers()  # ticking every millisecond, reinject off
    k.close(vm)
    time.sleep(0.05)
    assert not _pit_timers()
