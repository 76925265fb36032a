"""The vGIC device attributes, its first-run mapping, the legacy GICv2 ioctls and
KVM_IRQ_LINE (vgic-kvm-device.c kvm_vgic_addr, vgic_check_iorange,
vgic_set/get_common_attr, vgic_v2/v3_has_attr; vgic-mmio-v3.c
vgic_v3_alloc_redist_region; vgic-init.c kvm_vgic_map_resources, vgic_lazy_init;
vgic-v3.c vgic_v3_map_resources; arm.c kvm_vm_ioctl_irq_line, kvm_arch_vm_ioctl)."""

import ctypes
import errno
import os

import pytest

import kmock
import kmock_arm64
from kmock.testing.errnos import err
from kmock.uapi import arm64 as A
from kmock.uapi import kvm as K

from ._util import psci_vcpu, run_exit

G_ADDR, G_NR, G_CTRL = (A.KVM_DEV_ARM_VGIC_GRP_ADDR, A.KVM_DEV_ARM_VGIC_GRP_NR_IRQS,
                        A.KVM_DEV_ARM_VGIC_GRP_CTRL)
INIT = A.KVM_DEV_ARM_VGIC_CTRL_INIT
DIST, REDIST, REGION = (A.KVM_VGIC_V3_ADDR_TYPE_DIST, A.KVM_VGIC_V3_ADDR_TYPE_REDIST,
                        A.KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION)


class Vm:
    def __init__(self, ipa=0):
        self.k = kmock.Kernel("linux-arm64", plugins=[kmock_arm64])
        kvm = self.k.open("/dev/kvm", os.O_RDWR)
        self.fd = self.k.ioctl(kvm, K.KVM_CREATE_VM, ipa)
        self.dev = None

    def gic(self, model=A.KVM_DEV_TYPE_ARM_VGIC_V3):
        cd = A.kvm_create_device(type=model)
        self.k.ioctl(self.fd, A.KVM_CREATE_DEVICE, cd)
        self.dev = cd.fd
        return self

    def attr(self, group, a, value=0, op=A.KVM_SET_DEVICE_ATTR):
        buf = ctypes.c_uint64(value)
        self.k.ioctl(self.dev, op, A.kvm_device_attr(group=group, attr=a,
                                                     addr=ctypes.addressof(buf)))
        return buf.value

    def get(self, group, a, value=0):
        return self.attr(group, a, value, A.KVM_GET_DEVICE_ATTR)

    def has(self, group, a):
        return self.attr(group, a, 0, A.KVM_HAS_DEVICE_ATTR)

    def vcpu(self, i=0):
        return psci_vcpu(self.k, self.fd, i)

    def run(self, fd, i=0):
        self.k.vm(self.fd).vcpus[i].guest.stop()
        return run_exit(self.k, fd)

    def irq(self, irq, level=1, status=False):
        ev = K.kvm_irq_level(irq=irq, level=level)
        self.k.ioctl(self.fd, K.KVM_IRQ_LINE_STATUS if status else K.KVM_IRQ_LINE, ev)
        return ev

    @property
    def vgic(self):
        return self.k.vm(self.fd).arch.vgic


@pytest.fixture
def vm():
    v = Vm()
    yield v
    v.k.close_all()


def test_address_checks_in_kernel_order(vm):
    """vgic_check_iorange: EEXIST before alignment, then EINVAL, then E2BIG (IPA)."""
    vm.gic()
    assert err(vm.attr, G_ADDR, A.KVM_VGIC_V2_ADDR_TYPE_CPU, 0x8000000) == errno.ENXIO  # v2 type
    assert err(vm.attr, G_ADDR, 17, 0) == errno.ENXIO
    assert err(vm.attr, G_ADDR, DIST, 1 << 40) == errno.E2BIG  # 40-bit IPA space
    vm.attr(G_ADDR, DIST, (1 << 40) - 0x10000)
    assert vm.get(G_ADDR, DIST) == (1 << 40) - 0x10000
    assert err(vm.attr, G_ADDR, DIST, 0x8001000) == errno.EEXIST  # set already: EEXIST first
    assert vm.get(G_ADDR, REDIST) == (1 << 64) - 1  # VGIC_ADDR_UNDEF


def test_redistributor_regions(vm):
    vm.gic()
    region = (lambda index, base, count, flags=0: index | base | flags << 12 | count << 52)
    assert err(vm.attr, G_ADDR, REGION, region(0, 0x80A0000, 0)) == errno.EINVAL  # count 0
    assert err(vm.attr, G_ADDR, REGION, region(0, 0x80A0000, 2, 1)) == errno.EINVAL  # flags
    assert err(vm.attr, G_ADDR, REGION, region(1, 0x80A0000, 2)) == errno.EINVAL  # index 0 first
    vm.attr(G_ADDR, REGION, region(0, 0x80A0000, 1))
    assert err(vm.attr, G_ADDR, REGION, region(2, 0x90A0000, 1)) == errno.EINVAL  # not next
    assert err(vm.attr, G_ADDR, REGION, region(1, 0x80A0000, 1)) == errno.EINVAL  # overlap
    assert err(vm.attr, G_ADDR, REDIST, 0x90A0000) == errno.EINVAL  # no legacy after discrete
    assert vm.get(G_ADDR, REGION, 0) == region(0, 0x80A0000, 1)
    assert err(vm.get, G_ADDR, REGION, 1) == errno.ENOENT
    # one redistributor for two vCPUs: the first run says ENXIO
    vm.attr(G_ADDR, DIST, 0x8000000)
    fd = vm.vcpu(0)
    vm.vcpu(1)
    vm.attr(G_CTRL, INIT)
    assert err(vm.k.ioctl, fd, K.KVM_RUN, 0) == errno.ENXIO


def test_legacy_redistributor_twice_is_eexist(vm):
    vm.gic()
    vm.attr(G_ADDR, REDIST, 0x80A0000)
    assert err(vm.attr, G_ADDR, REDIST, 0x90A0000) == errno.EEXIST


def test_nr_irqs(vm):
    vm.gic()
    assert vm.get(G_NR, 0) == 32  # nr_spis + 32, nothing set yet
    for bad in (32, 1024, 100):  # under 64, above VGIC_MAX_RESERVED (1023), not 32-aligned
        assert err(vm.attr, G_NR, 0, bad) == errno.EINVAL
    vm.attr(G_NR, 0, 992)
    assert err(vm.attr, G_NR, 0, 128) == errno.EBUSY
    assert vm.get(G_NR, 0) == 992


def test_init_defaults_to_256_irqs_and_has_attr(vm):
    vm.gic()
    vm.attr(G_CTRL, INIT)
    assert vm.get(G_NR, 0) == 256  # vgic_init: VGIC_NR_IRQS_LEGACY
    assert err(vm.attr, G_NR, 0, 128) == errno.EBUSY
    for group, a in ((G_ADDR, DIST), (G_ADDR, REGION), (G_NR, 0), (G_CTRL, INIT),
                     (G_CTRL, A.KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES),
                     (A.KVM_DEV_ARM_VGIC_GRP_MAINT_IRQ, 0)):
        assert vm.has(group, a) == 0
    assert err(vm.has, G_ADDR, A.KVM_VGIC_V2_ADDR_TYPE_CPU) == errno.ENXIO
    assert err(vm.attr, G_CTRL, 7) == errno.ENXIO


def test_failed_first_run_drops_the_vgic_configuration(vm):
    """kvm_vgic_map_resources: on error kvm_vgic_destroy resets the addresses."""
    vm.gic()
    vm.attr(G_ADDR, DIST, 0x8000000)
    vm.attr(G_ADDR, REDIST, 0x80A0000)
    fd = vm.vcpu()
    assert err(vm.k.ioctl, fd, K.KVM_RUN, 0) == errno.EBUSY  # GICv3 not initialised
    assert vm.get(G_ADDR, DIST) == (1 << 64) - 1
    vm.attr(G_CTRL, INIT)
    assert err(vm.k.ioctl, fd, K.KVM_RUN, 0) == errno.ENXIO  # addresses gone
    vm.attr(G_ADDR, DIST, 0x8000000)
    vm.attr(G_ADDR, REDIST, 0x80A0000)
    vm.attr(G_CTRL, INIT)
    assert vm.run(fd) == K.KVM_EXIT_INTR


def test_overlapping_frames_fail_the_first_run(vm):
    vm.gic()
    vm.attr(G_ADDR, REDIST, 0x8000000)
    vm.attr(G_ADDR, DIST, 0x8000000)  # legacy region sized by the vCPUs: 0 when set
    fd = vm.vcpu()
    vm.attr(G_CTRL, INIT)
    assert err(vm.k.ioctl, fd, K.KVM_RUN, 0) == errno.EINVAL  # vgic_v3_check_base


def test_gicv2_by_create_irqchip_and_set_device_addr(vm):
    """KVM_CREATE_IRQCHIP is kvm_vgic_create(V2); KVM_ARM_SET_DEVICE_ADDR sets its
    frames (4K aligned); the first run initialises it (no CTRL_INIT needed)."""
    k = vm.k
    assert err(k.ioctl, vm.fd, A.KVM_ARM_SET_DEVICE_ADDR, A.kvm_arm_device_addr(
        id=A.KVM_VGIC_V2_ADDR_TYPE_DIST, addr=0x8000000)) == errno.ENODEV  # no vGIC yet
    k.ioctl(vm.fd, K.KVM_CREATE_IRQCHIP, 0)
    assert err(k.ioctl, vm.fd, K.KVM_CREATE_IRQCHIP, 0) == errno.EEXIST

    def dev_addr(addr_type, addr, dev=A.KVM_ARM_DEVICE_VGIC_V2):
        return k.ioctl(vm.fd, A.KVM_ARM_SET_DEVICE_ADDR, A.kvm_arm_device_addr(
            id=dev << A.KVM_ARM_DEVICE_ID_SHIFT | addr_type, addr=addr))

    assert err(dev_addr, A.KVM_VGIC_V2_ADDR_TYPE_DIST, 0x8000000, dev=1) == errno.ENODEV
    assert err(dev_addr, 7, 0x8000000) == errno.ENODEV
    assert err(dev_addr, A.KVM_VGIC_V2_ADDR_TYPE_DIST, 0x8000800) == errno.EINVAL
    dev_addr(A.KVM_VGIC_V2_ADDR_TYPE_DIST, 0x8000000)
    assert err(dev_addr, A.KVM_VGIC_V2_ADDR_TYPE_DIST, 0x9000000) == errno.EEXIST
    dev_addr(A.KVM_VGIC_V2_ADDR_TYPE_CPU, 0x8010000)
    fd = vm.vcpu()
    assert not vm.vgic.initialized
    assert vm.run(fd) == K.KVM_EXIT_INTR and vm.vgic.initialized


def test_irq_line_without_a_vgic(vm):
    """Type CPU drives a vCPU's IRQ/FIQ input; PPI / SPI need a vGIC (ENXIO)."""
    vm.vcpu(0)
    vm.vcpu(300)  # index 300: bits 31:28 carry 300 >> 8 (KVM_CAP_ARM_IRQ_LINE_LAYOUT_2)
    vm.irq(A.KVM_ARM_IRQ(A.KVM_ARM_IRQ_TYPE_CPU, 300, A.KVM_ARM_IRQ_CPU_FIQ))
    assert vm.k.vm(vm.fd).vcpus[300].arch.irq_lines == {A.KVM_ARM_IRQ_CPU_FIQ: True}
    ev = vm.irq(A.KVM_ARM_IRQ(A.KVM_ARM_IRQ_TYPE_CPU, 0, 0), 1, status=True)
    assert ev.irq == A.KVM_ARM_IRQ(A.KVM_ARM_IRQ_TYPE_CPU, 0, 0)  # written back unchanged
    assert err(vm.irq, A.KVM_ARM_IRQ(A.KVM_ARM_IRQ_TYPE_CPU, 5, 0)) == errno.EINVAL  # no vCPU
    assert err(vm.irq, A.KVM_ARM_IRQ(A.KVM_ARM_IRQ_TYPE_CPU, 0, 2)) == errno.EINVAL
    assert err(vm.irq, A.KVM_ARM_IRQ(A.KVM_ARM_IRQ_TYPE_SPI, 0, 40)) == errno.ENXIO
    assert err(vm.irq, A.KVM_ARM_IRQ(A.KVM_ARM_IRQ_TYPE_PPI, 0, 27)) == errno.ENXIO
    assert err(vm.irq, A.KVM_ARM_IRQ(3, 0, 40)) == errno.EINVAL


def test_irq_line_with_a_gicv3(vm):
    vm.gic()
    vm.vcpu(0)
    spi = A.KVM_ARM_IRQ(A.KVM_ARM_IRQ_TYPE_SPI, 0, 40)
    assert err(vm.irq, spi) == errno.EBUSY  # vgic_lazy_init: a GICv3 needs CTRL_INIT
    vm.attr(G_NR, 0, 64)
    vm.attr(G_CTRL, INIT)
    assert err(vm.irq, A.KVM_ARM_IRQ(A.KVM_ARM_IRQ_TYPE_CPU, 0, 0)) == errno.ENXIO
    assert err(vm.irq, A.KVM_ARM_IRQ(A.KVM_ARM_IRQ_TYPE_SPI, 0, 20)) == errno.EINVAL  # < 32
    assert err(vm.irq, A.KVM_ARM_IRQ(A.KVM_ARM_IRQ_TYPE_SPI, 0, 64)) == errno.EINVAL  # 32 SPIs
    assert err(vm.irq, A.KVM_ARM_IRQ(A.KVM_ARM_IRQ_TYPE_PPI, 0, 15)) == errno.EINVAL  # an SGI
    assert err(vm.irq, A.KVM_ARM_IRQ(A.KVM_ARM_IRQ_TYPE_PPI, 1, 27)) == errno.EINVAL  # no vCPU
    vm.irq(spi)
    vm.irq(A.KVM_ARM_IRQ(A.KVM_ARM_IRQ_TYPE_PPI, 0, 27), 1)
    vm.irq(spi, 0)
    assert vm.vgic.lines == {(None, 40): False, (0, 27): True}


def test_gicv2_irq_line_initialises_lazily(vm):
    vm.gic(A.KVM_DEV_TYPE_ARM_VGIC_V2)
    vm.vcpu(0)
    vm.irq(A.KVM_ARM_IRQ(A.KVM_ARM_IRQ_TYPE_SPI, 0, 100))
    assert vm.vgic.initialized and vm.get(G_NR, 0) == 256


def test_capabilities_of_the_interrupt_surface(vm):
    k = vm.k
    kvm = k.open("/dev/kvm", os.O_RDWR)
    for cap in (A.KVM_CAP_ARM_IRQ_LINE_LAYOUT_2, A.KVM_CAP_ARM_USER_IRQ, A.KVM_CAP_VCPU_EVENTS):
        assert k.ioctl(kvm, K.KVM_CHECK_EXTENSION, cap) == 1


def test_vm_device_attributes_are_enxio(vm):
    """kvm_vm_has_attr / kvm_vm_set_attr: groups other than SMCCC_CTRL -> ENXIO (SMCCC_CTRL
    is not modelled: ENXIO too); GET is not an arm64 VM ioctl (EINVAL)."""
    a = A.kvm_device_attr(group=5, attr=0)
    assert err(vm.k.ioctl, vm.fd, A.KVM_HAS_DEVICE_ATTR, a) == errno.ENXIO
    assert err(vm.k.ioctl, vm.fd, A.KVM_SET_DEVICE_ATTR, a) == errno.ENXIO
    assert err(vm.k.ioctl, vm.fd, A.KVM_GET_DEVICE_ATTR, a) == errno.EINVAL


def test_signal_msi_without_an_its(vm):
    """kvm_send_userspace_msi: no vGIC -> EINVAL; arm64 kvm_set_msi without an ITS ->
    ENODEV."""
    msi = K.kvm_msi(address_lo=0x8080040, data=1)
    assert err(vm.k.ioctl, vm.fd, K.KVM_SIGNAL_MSI, msi) == errno.EINVAL
    vm.gic()
    msi.flags = 2
    assert err(vm.k.ioctl, vm.fd, K.KVM_SIGNAL_MSI, msi) == errno.EINVAL
    msi.flags = K.KVM_MSI_VALID_DEVID
    assert err(vm.k.ioctl, vm.fd, K.KVM_SIGNAL_MSI, msi) == errno.ENODEV
    t = A.kvm_create_device(type=A.KVM_DEV_TYPE_ARM_VGIC_ITS, flags=A.KVM_CREATE_DEVICE_TEST)
    assert err(vm.k.ioctl, vm.fd, A.KVM_CREATE_DEVICE, t) == errno.ENODEV
