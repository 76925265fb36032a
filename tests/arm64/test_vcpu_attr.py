"""vCPU device attributes (PMU, timers, steal time) and the first-run checks on them
(guest.c kvm_arm_vcpu_arch_*_attr; pmu-emul.c kvm_arm_pmu_v3_set/get/has_attr,
kvm_arm_pmu_v3_init, kvm_arm_pmu_v3_enable; arch_timer.c kvm_arm_timer_set/get/has_attr,
kvm_timer_enable; pvtime.c kvm_arm_pvtime_set/get/has_attr; arm.c
kvm_arch_vcpu_run_pid_change)."""

import ctypes
import errno
import os

import pytest

import kmock
import kmock_arm64
from kmock.testing.errnos import err
from kmock.uapi import arm64 as A
from kmock.uapi import kvm as K

from ._util import run_exit

PSCI = 1 << A.KVM_ARM_VCPU_PSCI_0_2
PMU = 1 << A.KVM_ARM_VCPU_PMU_V3
PMU_G, TIMER_G, PV_G = (A.KVM_ARM_VCPU_PMU_V3_CTRL, A.KVM_ARM_VCPU_TIMER_CTRL,
                        A.KVM_ARM_VCPU_PVTIME_CTRL)
RAM = 0x40000000


class Vm:
    def __init__(self, vgic=True, features=PSCI | PMU, slot=True):
        self.k = k = kmock.Kernel("linux-arm64", plugins=[kmock_arm64])
        kvm = k.open("/dev/kvm", os.O_RDWR)
        self.fd = k.ioctl(kvm, K.KVM_CREATE_VM, 0)
        self.dev = None
        if vgic:
            cd = A.kvm_create_device(type=A.KVM_DEV_TYPE_ARM_VGIC_V3)
            k.ioctl(self.fd, A.KVM_CREATE_DEVICE, cd)
            self.dev = cd.fd
            self.gic(A.KVM_DEV_ARM_VGIC_GRP_ADDR, A.KVM_VGIC_V3_ADDR_TYPE_DIST, 0x8000000)
            self.gic(A.KVM_DEV_ARM_VGIC_GRP_ADDR, A.KVM_VGIC_V3_ADDR_TYPE_REDIST, 0x80A0000)
        if slot:
            gm = k.ioctl(self.fd, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(
                size=0x10000, flags=K.GUEST_MEMFD_FLAG_MMAP | K.GUEST_MEMFD_FLAG_INIT_SHARED))
            k.ioctl(self.fd, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
                slot=0, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=RAM, memory_size=0x10000,
                guest_memfd=gm))
        self.vcpu = k.ioctl(self.fd, K.KVM_CREATE_VCPU, 0)
        init = A.kvm_vcpu_init(target=A.KVM_ARM_TARGET_GENERIC_V8)
        init.features[0] = features
        k.ioctl(self.vcpu, A.KVM_ARM_VCPU_INIT, init)

    def gic(self, group, attr, value=0):
        buf = ctypes.c_uint64(value)
        self.k.ioctl(self.dev, A.KVM_SET_DEVICE_ATTR, A.kvm_device_attr(
            group=group, attr=attr, addr=ctypes.addressof(buf)))

    def gic_init(self):
        self.gic(A.KVM_DEV_ARM_VGIC_GRP_CTRL, A.KVM_DEV_ARM_VGIC_CTRL_INIT)

    def attr(self, group, a, value=0, op=A.KVM_SET_DEVICE_ATTR, ctype=ctypes.c_int):
        buf = ctype(value)
        self.k.ioctl(self.vcpu, op, A.kvm_device_attr(group=group, attr=a,
                                                      addr=ctypes.addressof(buf)))
        return buf.value

    def run(self):
        self.k.vm(self.fd).vcpus[0].guest.stop()
        return run_exit(self.k, self.vcpu)


@pytest.fixture
def kernels():
    made = []
    yield lambda **kw: made.append(Vm(**kw)) or made[-1]
    for v in made:
        v.k.close_all()


def test_has_attr(kernels):
    v = kernels()
    has = (lambda g, a: v.attr(g, a, op=A.KVM_HAS_DEVICE_ATTR))
    for g, a in ((PMU_G, A.KVM_ARM_VCPU_PMU_V3_IRQ), (PMU_G, A.KVM_ARM_VCPU_PMU_V3_INIT),
                 (PMU_G, A.KVM_ARM_VCPU_PMU_V3_FILTER), (PMU_G, A.KVM_ARM_VCPU_PMU_V3_SET_PMU),
                 (TIMER_G, A.KVM_ARM_VCPU_TIMER_IRQ_HPTIMER), (PV_G, A.KVM_ARM_VCPU_PVTIME_IPA)):
        assert has(g, a) == 0
    assert err(has, 9, 0) == errno.ENXIO
    assert err(has, TIMER_G, 4) == errno.ENXIO
    w = kernels(features=PSCI)
    assert err(lambda: w.attr(PMU_G, A.KVM_ARM_VCPU_PMU_V3_IRQ, op=A.KVM_HAS_DEVICE_ATTR)) \
        == errno.ENXIO  # no PMU feature


def test_pmu_vcpu_needs_pmu_init_before_running(kernels):
    """kvm_arm_pmu_v3_enable: a vCPU with the PMU feature that skipped INIT -> EINVAL."""
    v = kernels()
    v.gic_init()
    assert err(v.k.ioctl, v.vcpu, K.KVM_RUN, 0) == errno.EINVAL
    init = (lambda: v.attr(PMU_G, A.KVM_ARM_VCPU_PMU_V3_INIT))
    assert err(v.attr, PMU_G, A.KVM_ARM_VCPU_PMU_V3_IRQ, op=A.KVM_GET_DEVICE_ATTR) == errno.ENXIO
    assert err(init) == errno.ENXIO  # no IRQ yet
    assert err(v.attr, PMU_G, A.KVM_ARM_VCPU_PMU_V3_IRQ, 15) == errno.EINVAL  # an SGI
    v.attr(PMU_G, A.KVM_ARM_VCPU_PMU_V3_IRQ, 23)
    assert err(v.attr, PMU_G, A.KVM_ARM_VCPU_PMU_V3_IRQ, 23) == errno.EBUSY
    assert v.attr(PMU_G, A.KVM_ARM_VCPU_PMU_V3_IRQ, op=A.KVM_GET_DEVICE_ATTR) == 23
    assert err(v.attr, PMU_G, A.KVM_ARM_VCPU_PMU_V3_SET_PMU, 99) == errno.ENXIO
    v.attr(PMU_G, A.KVM_ARM_VCPU_PMU_V3_SET_PMU, 8)
    f = A.kvm_pmu_event_filter(base_event=0xFFF0, nevents=0x20, action=A.KVM_PMU_EVENT_ALLOW)
    attr = A.kvm_device_attr(group=PMU_G, attr=A.KVM_ARM_VCPU_PMU_V3_FILTER,
                             addr=ctypes.addressof(f))
    assert err(v.k.ioctl, v.vcpu, A.KVM_SET_DEVICE_ATTR, attr) == errno.EINVAL  # past 0xFFFF
    f.base_event, f.action = 0x11, 2
    assert err(v.k.ioctl, v.vcpu, A.KVM_SET_DEVICE_ATTR, attr) == errno.EINVAL  # action
    f.action = A.KVM_PMU_EVENT_DENY
    v.k.ioctl(v.vcpu, A.KVM_SET_DEVICE_ATTR, attr)
    init()
    assert err(init) == errno.EBUSY  # created
    assert v.run() == K.KVM_EXIT_INTR


def test_pmu_init_needs_an_initialised_vgic(kernels):
    v = kernels()
    v.attr(PMU_G, A.KVM_ARM_VCPU_PMU_V3_IRQ, 23)
    assert err(v.attr, PMU_G, A.KVM_ARM_VCPU_PMU_V3_INIT) == errno.ENODEV


def test_pmu_without_a_vgic(kernels):
    v = kernels(vgic=False)
    assert err(v.attr, PMU_G, A.KVM_ARM_VCPU_PMU_V3_IRQ, 23) == errno.EINVAL
    assert err(v.attr, PMU_G, A.KVM_ARM_VCPU_PMU_V3_IRQ, 0,
               op=A.KVM_GET_DEVICE_ATTR) == errno.EINVAL
    assert err(v.k.ioctl, v.vcpu, K.KVM_RUN, 0) == errno.EINVAL
    v.attr(PMU_G, A.KVM_ARM_VCPU_PMU_V3_INIT)
    assert v.run() == K.KVM_EXIT_INTR
    w = kernels(vgic=False, features=PSCI)
    assert err(w.attr, PMU_G, A.KVM_ARM_VCPU_PMU_V3_INIT) == errno.ENODEV  # no PMU feature


def test_timer_ppis(kernels):
    v = kernels(features=PSCI)
    get = (lambda a: v.attr(TIMER_G, a, op=A.KVM_GET_DEVICE_ATTR))
    assert [get(a) for a in range(4)] == [27, 30, 28, 26]  # default_ppi
    assert err(v.attr, TIMER_G, A.KVM_ARM_VCPU_TIMER_IRQ_VTIMER, 40) == errno.EINVAL  # an SPI
    assert err(v.attr, TIMER_G, 7, 20) == errno.ENXIO
    v.attr(TIMER_G, A.KVM_ARM_VCPU_TIMER_IRQ_VTIMER, 30)  # same PPI as the ptimer
    v.gic_init()
    assert err(v.k.ioctl, v.vcpu, K.KVM_RUN, 0) == errno.EINVAL  # checked at the first run
    v.attr(TIMER_G, A.KVM_ARM_VCPU_TIMER_IRQ_VTIMER, 20)
    assert v.run() == K.KVM_EXIT_INTR
    assert err(v.attr, TIMER_G, A.KVM_ARM_VCPU_TIMER_IRQ_VTIMER, 21) == errno.EBUSY
    w = kernels(vgic=False, features=PSCI)
    assert err(w.attr, TIMER_G, A.KVM_ARM_VCPU_TIMER_IRQ_VTIMER, 20) == errno.EINVAL


def test_steal_time_ipa(kernels):
    v = kernels(features=PSCI)
    pv = (lambda ipa: v.attr(PV_G, A.KVM_ARM_VCPU_PVTIME_IPA, ipa, ctype=ctypes.c_uint64))
    assert v.attr(PV_G, A.KVM_ARM_VCPU_PVTIME_IPA, op=A.KVM_GET_DEVICE_ATTR,
                  ctype=ctypes.c_uint64) == (1 << 64) - 1  # INVALID_GPA
    assert err(pv, RAM + 8) == errno.EINVAL  # 64-byte alignment
    assert err(pv, 0x1000) == errno.EINVAL  # no memslot
    pv(RAM + 0x40)
    assert err(pv, RAM + 0x80) == errno.EEXIST
    assert err(v.attr, PV_G, 1, ctype=ctypes.c_uint64) == errno.ENXIO


def test_capabilities(kernels):
    v = kernels(features=PSCI)
    kvm = v.k.open("/dev/kvm", os.O_RDWR)
    for cap in (A.KVM_CAP_STEAL_TIME, A.KVM_CAP_ARM_INJECT_EXT_DABT,
                A.KVM_CAP_ARM_INJECT_SERROR_ESR, 16, 21, 30, 40, 98, 105, 215):
        assert v.k.ioctl(kvm, K.KVM_CHECK_EXTENSION, cap) == 1, cap
    # arm.c kvm_vm_ioctl_check_extension: IOEVENTFD, IRQFD_RESAMPLE; generic: IRQFD
    # (tests/arm64/test_eventfds.py has the rest)
    for cap in (32, 36, 82):
        assert v.k.ioctl(kvm, K.KVM_CHECK_EXTENSION, cap) == 1, cap
    # kvm_dev_ioctl: kvm_run + the coalesced-MMIO page, no PIO page outside x86
    assert v.k.ioctl(kvm, K.KVM_GET_VCPU_MMAP_SIZE, 0) == 2 * 4096
