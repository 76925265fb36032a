"""The guest's PSCI calls (kmock_arm64.psci) as arch/arm64/kvm/psci.c answers them, and
the vCPU power state they drive (KVM_GET/SET_MP_STATE, the POWER_OFF feature, KVM_RUN
sleeping while STOPPED; arch/arm64/kvm/arm.c)."""

import errno
import os

import pytest

import kmock
import kmock_arm64
from kmock.errors import KmockUsageError
from kmock.uapi import arm64 as A
from kmock.uapi import kvm as K
from kmock.uapi import psci as P

from ._util import Runner, run_exit


def _vm(nvcpus=2, features=1 << A.KVM_ARM_VCPU_PSCI_0_2, power_off=()):
    """(kernel, [vCPU fds], [Vcpu]) of a normal arm64 VM; vCPUs in ``power_off`` are
    initialised with KVM_ARM_VCPU_POWER_OFF."""
    k = kmock.Kernel("linux-arm64", plugins=[kmock_arm64])
    kvm = k.open("/dev/kvm", os.O_RDWR)
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, 0)
    fds = []
    for i in range(nvcpus):
        fd = k.ioctl(vm, K.KVM_CREATE_VCPU, i)
        init = A.kvm_vcpu_init(target=A.KVM_ARM_TARGET_GENERIC_V8)
        init.features[0] = features | (1 << A.KVM_ARM_VCPU_POWER_OFF if i in power_off else 0)
        k.ioctl(fd, A.KVM_ARM_VCPU_INIT, init)
        fds.append(fd)
    return k, fds, [k.file(fd).vcpu for fd in fds]


@pytest.fixture
def smp():
    k, fds, vcpus = _vm(power_off=(1,))
    yield k, fds, vcpus
    k.close_all()


def _mp_state(k, fd):
    m = K.kvm_mp_state()
    k.ioctl(fd, K.KVM_GET_MP_STATE, m)
    return m.mp_state


def _finish(k, fd, v):
    """End a run that should be idle: a signal, EINTR (KVM_EXIT_INTR)."""
    v.guest.stop()
    assert run_exit(k, fd) == K.KVM_EXIT_INTR


def test_version_features_and_migrate_info(smp):
    k, fds, (v0, _) = smp
    g = v0.guest.psci
    ver = g.version()
    feats = {fn: g.features(fn) for fn in (
        P.PSCI_0_2_FN64_CPU_ON, P.PSCI_0_2_FN_SYSTEM_OFF, P.ARM_SMCCC_VERSION_FUNC_ID,
        P.PSCI_1_1_FN64_SYSTEM_RESET2, P.PSCI_1_3_FN64_SYSTEM_OFF2,
        P.PSCI_1_0_FN64_SYSTEM_SUSPEND, P.PSCI_0_2_FN_MIGRATE)}
    mig = g.migrate_info_type()
    unknown = g.call(P.PSCI_0_2_FN(30))
    _finish(k, fds[0], v0)
    assert ver.result == P.PSCI_VERSION(1, 3)  # KVM_ARM_PSCI_LATEST
    assert {fn: a.result for fn, a in feats.items()} == {
        P.PSCI_0_2_FN64_CPU_ON: 0, P.PSCI_0_2_FN_SYSTEM_OFF: 0, P.ARM_SMCCC_VERSION_FUNC_ID: 0,
        P.PSCI_1_1_FN64_SYSTEM_RESET2: 0,
        P.PSCI_1_3_FN64_SYSTEM_OFF2: P.PSCI_1_3_OFF_TYPE_HIBERNATE_OFF,
        # without KVM_CAP_ARM_SYSTEM_SUSPEND enabled, and MIGRATE is not implemented
        P.PSCI_1_0_FN64_SYSTEM_SUSPEND: P.PSCI_RET_NOT_SUPPORTED,
        P.PSCI_0_2_FN_MIGRATE: P.PSCI_RET_NOT_SUPPORTED}
    assert mig.result == P.PSCI_0_2_TOS_MP
    assert unknown.result == P.PSCI_RET_NOT_SUPPORTED


def test_without_the_psci_0_2_feature_every_0_2_call_is_not_supported():
    k, fds, (v,) = _vm(nvcpus=1, features=0)
    try:
        ver = v.guest.psci.version()
        off = v.guest.psci.system_off()
        _finish(k, fds[0], v)
        assert ver.result == off.result == P.PSCI_RET_NOT_SUPPORTED  # kvm_psci_0_1_call
        assert not v.stopped
    finally:
        k.close_all()


def test_power_off_feature_starts_stopped_and_kvm_run_sleeps_until_cpu_on(smp):
    k, fds, (v0, v1) = smp
    assert _mp_state(k, fds[1]) == K.KVM_MP_STATE_STOPPED
    assert _mp_state(k, fds[0]) == K.KVM_MP_STATE_RUNNABLE
    w = v1.guest.write(0x1000, b"")  # v1's first instruction, once it runs (no memory read)
    t = Runner(k, fds[1])
    assert t.blocked() and not w.done  # STOPPED: kvm_vcpu_sleep, nothing ran
    on = v0.guest.psci.cpu_on(0x1, entry=0x80000, context_id=0x1234)  # MPIDR Aff0 = 1
    v0.guest.psci.affinity_info(0x1)
    _finish(k, fds[0], v0)
    assert on.result == P.PSCI_RET_SUCCESS
    assert v1.arch.reset_state == {"pc": 0x80000, "r0": 0x1234}
    assert _mp_state(k, fds[1]) == K.KVM_MP_STATE_RUNNABLE
    v1.guest.stop()
    assert t.outcome() == K.KVM_EXIT_INTR and w.done


def test_cpu_on_errors(smp):
    k, fds, (v0, v1) = smp
    g = v0.guest.psci
    on_self = g.cpu_on(0x0, 0)  # vCPU 0 runs
    no_cpu = g.cpu_on(0x7, 0)  # no vCPU has Aff0 7
    bad_aff = g.cpu_on(1 << 24, 0)  # bits 31:24 are outside MPIDR_HWID_BITMASK
    first = g.cpu_on(0x1, 0)
    again = g.cpu_on(0x1, 0)
    _finish(k, fds[0], v0)
    assert on_self.result == P.PSCI_RET_ALREADY_ON
    assert no_cpu.result == bad_aff.result == P.PSCI_RET_INVALID_PARAMS
    assert (first.result, again.result) == (P.PSCI_RET_SUCCESS, P.PSCI_RET_ALREADY_ON)


def test_affinity_info(smp):
    k, fds, (v0, v1) = smp
    g = v0.guest.psci
    off = g.affinity_info(0x1)
    on = g.affinity_info(0x0)
    cluster = g.affinity_info(0x0, lowest_level=1)  # Aff1 = 0: both vCPUs, one is on
    none = g.affinity_info(0x5)
    bad_level = g.affinity_info(0x0, lowest_level=4)
    _finish(k, fds[0], v0)
    assert (off.result, on.result, cluster.result) == (
        P.PSCI_0_2_AFFINITY_LEVEL_OFF, P.PSCI_0_2_AFFINITY_LEVEL_ON, P.PSCI_0_2_AFFINITY_LEVEL_ON)
    assert none.result == bad_level.result == P.PSCI_RET_INVALID_PARAMS


def test_cpu_off_sleeps_in_kvm_run_until_another_vcpu_turns_it_on():
    k, fds, (v0, v1) = _vm()
    try:
        v1.guest.psci.cpu_off()
        after = v1.guest.write(0x1000, b"")
        t = Runner(k, fds[1])
        assert t.blocked() and not after.done and v1.stopped
        assert _mp_state(k, fds[1]) == K.KVM_MP_STATE_STOPPED
        on = v0.guest.psci.cpu_on(0x1, entry=0x40000000)
        _finish(k, fds[0], v0)
        assert on.result == P.PSCI_RET_SUCCESS
        v1.guest.stop()
        assert t.outcome() == K.KVM_EXIT_INTR and after.done
    finally:
        k.close_all()


def test_a_stopped_vcpu_is_woken_by_a_signal_and_stays_stopped(smp):
    k, fds, (v0, v1) = smp
    t = Runner(k, fds[1])
    assert t.blocked()
    v1.kick()
    assert t.outcome() == K.KVM_EXIT_INTR
    assert _mp_state(k, fds[1]) == K.KVM_MP_STATE_STOPPED


@pytest.mark.parametrize("call, event, flags", [
    ("system_off", K.KVM_SYSTEM_EVENT_SHUTDOWN, 0),
    ("system_reset", K.KVM_SYSTEM_EVENT_RESET, 0),
    ("system_reset2", K.KVM_SYSTEM_EVENT_RESET, K.KVM_SYSTEM_EVENT_RESET_FLAG_PSCI_RESET2),
    ("system_off2", K.KVM_SYSTEM_EVENT_SHUTDOWN, K.KVM_SYSTEM_EVENT_SHUTDOWN_FLAG_PSCI_OFF2),
])
def test_system_events_exit_and_stop_every_vcpu(call, event, flags):
    k, fds, (v0, v1) = _vm()
    try:
        v1.guest.hlt()
        t1 = Runner(k, fds[1])  # vCPU 1 idles in WFI
        assert t1.blocked()
        a = getattr(v0.guest.psci, call)()
        later = v0.guest.write(0x1000, b"")
        assert run_exit(k, fds[0]) == K.KVM_EXIT_SYSTEM_EVENT
        se = v0.run.system_event
        assert (se.type, se.ndata, se.data[0]) == (event, 1, flags)
        assert a.result == P.PSCI_RET_INTERNAL_FAILURE  # x0 preloaded
        assert [_mp_state(k, fd) for fd in fds] == [K.KVM_MP_STATE_STOPPED] * 2
        # a VMM that runs the vCPU again: it sleeps (KVM_REQ_SLEEP) until a signal
        t0 = Runner(k, fds[0])
        assert t0.blocked() and not later.done
        v0.kick()
        assert t0.outcome() == K.KVM_EXIT_INTR
        v1.guest.write(0x1000, b"")  # more guest code does not wake a stopped vCPU
        assert t1.blocked()
        v1.kick()
        assert t1.outcome() == K.KVM_EXIT_INTR
        # the reboot: KVM_ARM_VCPU_INIT makes the vCPU runnable again
        init = A.kvm_vcpu_init(target=A.KVM_ARM_TARGET_GENERIC_V8)
        init.features[0] = 1 << A.KVM_ARM_VCPU_PSCI_0_2
        k.ioctl(fds[0], A.KVM_ARM_VCPU_INIT, init)
        assert _mp_state(k, fds[0]) == K.KVM_MP_STATE_RUNNABLE
        _finish(k, fds[0], v0)
        assert later.done
    finally:
        k.close_all()


def test_system_reset2_and_off2_argument_checks(smp):
    k, fds, (v0, _) = smp
    g = v0.guest.psci
    bad_reset = g.system_reset2(reset_type=1)  # neither warm reset (0) nor vendor (bit 31)
    bad_off_type = g.system_off2(off_type=2)
    bad_cookie = g.system_off2(off_type=0, cookie=1)
    _finish(k, fds[0], v0)
    assert bad_reset.result == bad_off_type.result == bad_cookie.result == \
        P.PSCI_RET_INVALID_PARAMS
    assert not v0.stopped
    vendor = g.system_reset2(reset_type=P.PSCI_1_1_RESET_TYPE_VENDOR_START)
    assert run_exit(k, fds[0]) == K.KVM_EXIT_SYSTEM_EVENT and vendor.done
    assert v0.run.system_event.type == K.KVM_SYSTEM_EVENT_RESET


def test_cpu_suspend_is_a_wfi(smp):
    k, fds, (v0, _) = smp
    s = v0.guest.psci.cpu_suspend()
    t = Runner(k, fds[0])
    assert t.blocked() and s.result == P.PSCI_RET_SUCCESS
    assert _mp_state(k, fds[0]) == K.KVM_MP_STATE_RUNNABLE  # a WFI, not a power state
    v0.kick()
    assert t.outcome() == K.KVM_EXIT_INTR


def test_set_mp_state(smp):
    k, fds, (v0, v1) = smp
    for state in (K.KVM_MP_STATE_STOPPED, K.KVM_MP_STATE_SUSPENDED, K.KVM_MP_STATE_RUNNABLE):
        k.ioctl(fds[0], K.KVM_SET_MP_STATE, K.kvm_mp_state(state))
        assert _mp_state(k, fds[0]) == state
    for state in (K.KVM_MP_STATE_HALTED, K.KVM_MP_STATE_INIT_RECEIVED, 99):
        with pytest.raises(OSError) as e:
            k.ioctl(fds[0], K.KVM_SET_MP_STATE, K.kvm_mp_state(state))
        assert e.value.errno == errno.EINVAL
    assert _mp_state(k, fds[0]) == K.KVM_MP_STATE_RUNNABLE  # nothing changed
    # a SUSPENDED vCPU is not off: CPU_ON says ALREADY_ON; KVM_RUN waits (its WFI)
    k.ioctl(fds[1], K.KVM_SET_MP_STATE, K.kvm_mp_state(K.KVM_MP_STATE_SUSPENDED))
    on = v0.guest.psci.cpu_on(0x1, 0)
    _finish(k, fds[0], v0)
    assert on.result == P.PSCI_RET_ALREADY_ON
    t = Runner(k, fds[1])
    assert t.blocked()
    k.ioctl(fds[1], K.KVM_SET_MP_STATE, K.kvm_mp_state(K.KVM_MP_STATE_RUNNABLE))
    v1.guest.stop()
    assert t.outcome() == K.KVM_EXIT_INTR


def test_psci_arguments_are_checked(smp):
    k, _, (v0, _) = smp
    with pytest.raises(KmockUsageError, match="fn must be"):
        v0.guest.psci.call("SYSTEM_OFF")
    with pytest.raises(KmockUsageError, match="arg1 must be"):
        v0.guest.psci.cpu_on(-1, 0)
    with pytest.raises(KmockUsageError, match="arg2 must be"):
        v0.guest.psci.cpu_on(1, 1 << 64)


def _set_reg(k, fd, reg_id, value):
    import ctypes
    buf = ctypes.c_uint64(value)
    k.ioctl(fd, A.KVM_SET_ONE_REG, A.kvm_one_reg(id=reg_id, addr=ctypes.addressof(buf)))


@pytest.mark.parametrize("version, features, reset2, off2", [
    (A.KVM_ARM_PSCI_0_2, P.PSCI_RET_NOT_SUPPORTED, P.PSCI_RET_NOT_SUPPORTED,
     P.PSCI_RET_NOT_SUPPORTED),
    (A.KVM_ARM_PSCI_1_0, 0, P.PSCI_RET_NOT_SUPPORTED, P.PSCI_RET_NOT_SUPPORTED),
    (A.KVM_ARM_PSCI_1_1, 0, 0, P.PSCI_RET_NOT_SUPPORTED),
    (A.KVM_ARM_PSCI_1_3, 0, 0, P.PSCI_1_3_OFF_TYPE_HIBERNATE_OFF),
])
def test_the_vmm_chosen_psci_version_gates_the_calls(version, features, reset2, off2):
    """kvm_psci_call dispatches on kvm_psci_version: 0.2 has no PSCI_FEATURES, RESET2
    needs 1.1, SYSTEM_OFF2 needs 1.3 (kvm_psci_1_x_call's minor)."""
    k, fds, (v0, _) = _vm()
    try:
        _set_reg(k, fds[0], A.KVM_REG_ARM_PSCI_VERSION, version)
        g = v0.guest.psci
        ver = g.version()
        feat = g.features(P.PSCI_0_2_FN64_CPU_ON)
        f_reset2 = g.features(P.PSCI_1_1_FN64_SYSTEM_RESET2)
        f_off2 = g.features(P.PSCI_1_3_FN64_SYSTEM_OFF2)
        bad_reset2 = g.system_reset2(reset_type=1)  # INVALID_PARAMS when offered
        _finish(k, fds[0], v0)
        assert ver.result == version and feat.result == features
        if features == 0:
            assert (f_reset2.result, f_off2.result) == (reset2, off2)
        assert bad_reset2.result == (P.PSCI_RET_NOT_SUPPORTED if reset2 else
                                     P.PSCI_RET_INVALID_PARAMS)
    finally:
        k.close_all()


def test_cpu_on_targets_the_mpidr_the_vmm_wrote(smp):
    """kvm_mpidr_to_vcpu compares kvm_vcpu_get_mpidr_aff, i.e. MPIDR_EL1 as set."""
    k, fds, (v0, v1) = smp
    _set_reg(k, fds[1], A.ARM64_SYS_REG(3, 0, 0, 0, 5), 1 << 31 | 0x0100)  # Aff1 = 1
    g = v0.guest.psci
    old = g.cpu_on(0x1, 0)
    new = g.cpu_on(0x100, 0x1000)
    _finish(k, fds[0], v0)
    assert (old.result, new.result) == (P.PSCI_RET_INVALID_PARAMS, P.PSCI_RET_SUCCESS)


def test_system_suspend_needs_the_capability():
    """kvm_psci_1_x_call: SYSTEM_SUSPEND is NOT_SUPPORTED until the VMM enables
    KVM_CAP_ARM_SYSTEM_SUSPEND (kvm_vm_ioctl_enable_cap: flags -> EINVAL); then KVM_RUN
    exits SYSTEM_EVENT / SUSPEND and leaves the guest's registers for the VMM to read."""
    import ctypes
    k = kmock.Kernel("linux-arm64", plugins=[kmock_arm64])
    try:
        kvm = k.open("/dev/kvm", os.O_RDWR)
        vm = k.ioctl(kvm, K.KVM_CREATE_VM, 0)
        assert k.ioctl(vm, K.KVM_CHECK_EXTENSION, A.KVM_CAP_ARM_SYSTEM_SUSPEND) == 1
        fd = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
        init = A.kvm_vcpu_init(target=A.KVM_ARM_TARGET_GENERIC_V8)
        init.features[0] = 1 << A.KVM_ARM_VCPU_PSCI_0_2
        k.ioctl(fd, A.KVM_ARM_VCPU_INIT, init)
        v = k.file(fd).vcpu
        g = v.guest.psci
        feat = g.features(P.PSCI_1_0_FN64_SYSTEM_SUSPEND)
        off = g.system_suspend(0x40001000, 0x77)
        _finish(k, fd, v)
        assert feat.result == off.result == P.PSCI_RET_NOT_SUPPORTED
        cap = K.kvm_enable_cap(cap=A.KVM_CAP_ARM_SYSTEM_SUSPEND, flags=1)
        with pytest.raises(OSError) as e:
            k.ioctl(vm, K.KVM_ENABLE_CAP, cap)
        assert e.value.errno == errno.EINVAL
        cap.flags = 0
        k.ioctl(vm, K.KVM_ENABLE_CAP, cap)
        feat = g.features(P.PSCI_1_0_FN64_SYSTEM_SUSPEND)
        sus = g.system_suspend(0x40001000, 0x77)
        assert run_exit(k, fd) == K.KVM_EXIT_SYSTEM_EVENT
        se = v.run.system_event
        assert (se.type, se.ndata) == (K.KVM_SYSTEM_EVENT_SUSPEND, 0)
        assert feat.result == 0 and sus.result == P.PSCI_1_0_FN64_SYSTEM_SUSPEND
        buf = ctypes.c_uint64()
        k.ioctl(fd, A.KVM_GET_ONE_REG, A.kvm_one_reg(id=A.KVM_REG_ARM64_X(1),
                                                     addr=ctypes.addressof(buf)))
        assert buf.value == 0x40001000
    finally:
        k.close_all()
