"""A QEMU-like arm64 VMM bring-up through ioctls only, in the order QEMU's
target/arm/kvm.c and hw/intc/arm_gicv3_kvm.c use (the checks each step meets are cited in
the plugin's modules): IPA size, vGIC v3 with a redistributor region, vCPUs with PSCI 0.2
and the PMU, KVM_GET_REG_LIST and a read of every listed register, PC / x0 / PSTATE set,
timer PPIs and the PMU IRQ, vGIC CTRL_INIT, PMU INIT, then KVM_RUN on each vCPU."""

import ctypes
import os

import kmock
import kmock_arm64
from kmock.uapi import arm64 as A
from kmock.uapi import kvm as K

from ._util import run_exit


def test_qemu_like_bring_up():
    k = kmock.Kernel("linux-arm64", plugins=[kmock_arm64])
    keep = []

    def buf(ctype, value=0):
        b = ctype(value)
        keep.append(b)
        return ctypes.addressof(b)

    def dev_attr(fd, group, attr, value, ctype=ctypes.c_uint64):
        k.ioctl(fd, A.KVM_SET_DEVICE_ATTR, A.kvm_device_attr(group=group, attr=attr,
                                                             addr=buf(ctype, value)))

    try:
        kvm = k.open("/dev/kvm", os.O_RDWR)
        ipa = k.ioctl(kvm, K.KVM_CHECK_EXTENSION, A.KVM_CAP_ARM_VM_IPA_SIZE)
        vm = k.ioctl(kvm, K.KVM_CREATE_VM, min(ipa, 44))
        pref = A.kvm_vcpu_init()
        k.ioctl(vm, A.KVM_ARM_PREFERRED_TARGET, pref)
        cd = A.kvm_create_device(type=A.KVM_DEV_TYPE_ARM_VGIC_V3)
        k.ioctl(vm, A.KVM_CREATE_DEVICE, cd)
        features = 1 << A.KVM_ARM_VCPU_PSCI_0_2 | 1 << A.KVM_ARM_VCPU_PMU_V3
        vcpus = []
        for i in range(2):
            fd = k.ioctl(vm, K.KVM_CREATE_VCPU, i)
            init = A.kvm_vcpu_init(target=pref.target)
            init.features[0] = features | (1 << A.KVM_ARM_VCPU_POWER_OFF if i else 0)
            k.ioctl(fd, A.KVM_ARM_VCPU_INIT, init)
            lst = (ctypes.c_uint64 * 512)(511)
            k.ioctl(fd, A.KVM_GET_REG_LIST, lst)
            for reg_id in lst[1:1 + lst[0]]:
                size = 1 << ((reg_id & A.KVM_REG_SIZE_MASK) >> A.KVM_REG_SIZE_SHIFT)
                k.ioctl(fd, A.KVM_GET_ONE_REG, A.kvm_one_reg(
                    id=reg_id, addr=buf(ctypes.c_char * size)))
            vcpus.append(fd)
        k.ioctl(vcpus[0], A.KVM_SET_ONE_REG, A.kvm_one_reg(
            id=A.KVM_REG_ARM64_PC, addr=buf(ctypes.c_uint64, 0x40080000)))
        k.ioctl(vcpus[0], A.KVM_SET_ONE_REG, A.kvm_one_reg(
            id=A.KVM_REG_ARM64_X(0), addr=buf(ctypes.c_uint64, 0x44000000)))
        region = 0 | 0x080A0000 | 2 << A.KVM_VGIC_V3_RDIST_COUNT_SHIFT
        dev_attr(cd.fd, A.KVM_DEV_ARM_VGIC_GRP_ADDR, A.KVM_VGIC_V3_ADDR_TYPE_DIST, 0x08000000)
        dev_attr(cd.fd, A.KVM_DEV_ARM_VGIC_GRP_ADDR, A.KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION,
                 region)
        dev_attr(cd.fd, A.KVM_DEV_ARM_VGIC_GRP_NR_IRQS, 0, 288, ctypes.c_uint32)
        for fd in vcpus:
            dev_attr(fd, A.KVM_ARM_VCPU_TIMER_CTRL, A.KVM_ARM_VCPU_TIMER_IRQ_VTIMER, 27,
                     ctypes.c_int)
            dev_attr(fd, A.KVM_ARM_VCPU_PMU_V3_CTRL, A.KVM_ARM_VCPU_PMU_V3_IRQ, 23,
                     ctypes.c_int)
        dev_attr(cd.fd, A.KVM_DEV_ARM_VGIC_GRP_CTRL, A.KVM_DEV_ARM_VGIC_CTRL_INIT, 0)
        for fd in vcpus:
            k.ioctl(fd, A.KVM_SET_DEVICE_ATTR, A.kvm_device_attr(
                group=A.KVM_ARM_VCPU_PMU_V3_CTRL, attr=A.KVM_ARM_VCPU_PMU_V3_INIT))
        v0, v1 = (k.file(fd).vcpu for fd in vcpus)
        on = v0.guest.psci.cpu_on(0x1, entry=0x40100000, context_id=5)
        v0.guest.stop()
        assert run_exit(k, vcpus[0]) == K.KVM_EXIT_INTR and on.result == 0
        assert (v0.arch.regs.pc, v0.arch.regs.x(0)) == (0x40080000, 0x44000000)
        v1.guest.stop()
        assert run_exit(k, vcpus[1]) == K.KVM_EXIT_INTR
        assert (v1.arch.regs.pc, v1.arch.regs.x(0)) == (0x40100000, 5)
        k.ioctl(vm, K.KVM_IRQ_LINE, K.kvm_irq_level(
            irq=A.KVM_ARM_IRQ(A.KVM_ARM_IRQ_TYPE_SPI, 0, 32 + 255), level=1))
        assert k.vm(vm).arch.vgic.lines == {(None, 287): True}
    finally:
        k.close_all()
