"""kvmclock ioctls on profile linux-6.18: KVM_GET_CLOCK / KVM_SET_CLOCK (kmock.kvm.x86_vm)
and KVM_KVMCLOCK_CTRL (kmock.kvm.x86_vcpu). Errnos and flags were confirmed on a 6.18.44
host (conformance scenario x86_vm_clock); values are compared as "within a second"."""

import ctypes
import errno
import time

import pytest

from kmock.kvm import x86_vm
from kmock.testing.conformance_vcpu import msrs_buf, msrs_values
from kmock.uapi import kvm as K
from kmock.uapi import x86 as X

from ._util import create_vm

S = 10**9
U64 = (1 << 64) - 1


def err(fn, *args):
    with pytest.raises(OSError) as e:
        fn(*args)
    return e.value.errno


def get(k, vm):
    d = K.kvm_clock_data()
    assert k.ioctl(vm, K.KVM_GET_CLOCK, d) == 0
    return d


def set_(k, vm, clock, flags=0, realtime=0):
    return k.ioctl(vm, K.KVM_SET_CLOCK, K.kvm_clock_data(clock=clock, flags=flags, realtime=realtime))


def test_layout_and_numbers():
    assert ctypes.sizeof(K.kvm_clock_data) == 48
    assert (K.KVM_SET_CLOCK, K.KVM_GET_CLOCK, K.KVM_KVMCLOCK_CTRL) == (0x4030AE7B, 0x8030AE7C, 0xAEAD)


def test_caps(k):
    kvm, vm = create_vm(k)
    assert k.ioctl(kvm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_ADJUST_CLOCK) == K.KVM_CLOCK_VALID_FLAGS
    assert k.ioctl(vm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_KVMCLOCK_CTRL) == 1


def test_clock_counts_from_vm_creation(k):
    _, vm = create_vm(k)
    a = get(k, vm)
    assert 0 <= a.clock < S and a.flags == 0 and a.realtime == 0 and a.host_tsc == 0
    time.sleep(0.05)
    assert get(k, vm).clock - a.clock >= 40_000_000


def test_the_clock_starts_at_kvm_create_vm_not_at_the_first_clock_ioctl(k):
    _, vm = create_vm(k)
    time.sleep(0.1)
    assert get(k, vm).clock >= 90_000_000  # kvm_arch_init_vm set the offset


def test_set_then_get(k):
    _, vm = create_vm(k)
    assert set_(k, vm, 1000 * S) == 0
    assert 1000 * S <= get(k, vm).clock < 1001 * S
    assert set_(k, vm, 5) == 0  # backwards is allowed
    assert get(k, vm).clock < S


@pytest.mark.parametrize("flags", [1, 0x10, 0x80000000, 0xF])
def test_set_flags_outside_valid_are_einval(k, flags):
    _, vm = create_vm(k)
    set_(k, vm, 1000 * S)
    assert err(set_, k, vm, 5, flags) == errno.EINVAL
    assert get(k, vm).clock >= 1000 * S  # nothing changed


def test_set_accepts_what_get_returned(k):
    kvm, vm = create_vm(k)
    k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    set_(k, vm, 0)
    d = get(k, vm)
    assert d.flags == K.KVM_CLOCK_VALID_FLAGS  # the master clock, TSC clocksource
    assert abs(d.realtime - time.time_ns()) < S and d.host_tsc > 0
    assert k.ioctl(vm, K.KVM_SET_CLOCK, d) == 0


def test_realtime_adds_the_time_since(k):
    _, vm = create_vm(k)
    set_(k, vm, S, K.KVM_CLOCK_REALTIME, time.time_ns() - 10 * S)
    assert 11 * S <= get(k, vm).clock < 12 * S
    set_(k, vm, S, K.KVM_CLOCK_REALTIME, time.time_ns() + 10 * S)  # future: not subtracted
    assert S <= get(k, vm).clock < 2 * S


def test_master_clock_needs_a_vcpu_and_a_set(k):
    _, vm = create_vm(k)
    set_(k, vm, 0)
    assert get(k, vm).flags == 0  # no vCPU
    k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    assert get(k, vm).flags == 0  # not recomputed yet
    set_(k, vm, 0)
    assert get(k, vm).flags == K.KVM_CLOCK_VALID_FLAGS


def test_bad_pointers_and_wrong_fds(k):
    kvm, vm = create_vm(k)
    v = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    assert err(k.ioctl, vm, K.KVM_GET_CLOCK, 8) == errno.EFAULT
    assert err(k.ioctl, vm, K.KVM_SET_CLOCK, 8) == errno.EFAULT
    assert err(k.ioctl, kvm, K.KVM_GET_CLOCK, K.kvm_clock_data()) == errno.EINVAL
    assert err(k.ioctl, v, K.KVM_GET_CLOCK, K.kvm_clock_data()) == errno.EINVAL
    assert err(k.ioctl, vm, K.KVM_KVMCLOCK_CTRL, 0) == errno.ENOTTY


def test_state_is_per_vm(k):
    _, vm = create_vm(k)
    _, vm2 = create_vm(k)
    set_(k, vm, 100 * S)
    assert get(k, vm2).clock < S
    assert x86_vm.state(k.file(vm).vm).kvmclock_offset != x86_vm.state(k.file(vm2).vm).kvmclock_offset


@pytest.mark.parametrize("msr", [0x12, 0x4B564D01])
def test_kvmclock_ctrl_needs_an_active_pvclock(k, msr):
    _, vm = create_vm(k)
    v = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    assert err(k.ioctl, v, K.KVM_KVMCLOCK_CTRL, 0) == errno.EINVAL
    assert k.ioctl(v, X.KVM_SET_MSRS, msrs_buf([(msr, 0x1000)])) == 1  # bit 0 clear
    assert err(k.ioctl, v, K.KVM_KVMCLOCK_CTRL, 0) == errno.EINVAL
    assert k.ioctl(v, X.KVM_SET_MSRS, msrs_buf([(msr, 0x1001)])) == 1
    assert k.ioctl(v, K.KVM_KVMCLOCK_CTRL, 0) == 0
    assert k.ioctl(v, K.KVM_KVMCLOCK_CTRL, 0) == 0
    k.ioctl(v, X.KVM_SET_MSRS, msrs_buf([(0x12 + 0x4B564D01 - msr, 0)]))  # the other MSR
    assert err(k.ioctl, v, K.KVM_KVMCLOCK_CTRL, 0) == errno.EINVAL


def test_system_time_msrs_share_one_value(k):
    _, vm = create_vm(k)
    v = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    k.ioctl(v, X.KVM_SET_MSRS, msrs_buf([(0x4B564D01, 0x2001)]))
    buf = msrs_buf([(0x12, 0), (0x4B564D01, 0)])
    assert k.ioctl(v, X.KVM_GET_MSRS, buf) == 2
    assert msrs_values(buf, 2) == [0x2001, 0x2001]
