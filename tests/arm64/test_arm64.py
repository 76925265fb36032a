"""The arm64 KVM surface (kmock_arm64): KVM_CREATE_VM's IPA size, /dev/kvm and VM
capabilities, KVM_ARM_PREFERRED_TARGET, KVM_ARM_VCPU_INIT, the vGIC, first KVM_RUN,
memslots. Sources: arch/arm64/kvm/arm.c, mmu.c, vgic/vgic-init.c (plugin docstrings)."""

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

P = 4096


@pytest.fixture
def k():
    kernel = kmock.Kernel("linux-arm64", plugins=[kmock_arm64])
    yield kernel
    kernel.close_all()


@pytest.fixture
def kvm(k):
    return k.open("/dev/kvm", os.O_RDWR)


def test_profile_and_dev_kvm(k, kvm):
    assert k.profile.arch == "arm64" and k.profile.platform == "none"
    assert k.ioctl(kvm, K.KVM_CHECK_EXTENSION, A.KVM_CAP_ARM_VM_IPA_SIZE) == 48
    assert k.ioctl(kvm, K.KVM_CHECK_EXTENSION, A.KVM_CAP_ARM_PSCI_0_2) == 1
    assert k.ioctl(kvm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_GUEST_MEMFD) == 1
    assert k.ioctl(kvm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_MEMORY_ATTRIBUTES) == 0
    assert k.ioctl(kvm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_VM_TYPES) == 0
    assert k.ioctl(kvm, K.KVM_CHECK_EXTENSION, A.KVM_CAP_ARM_EL1_32BIT) == 0
    # kvm_arch_dev_ioctl on arm64: every arch request is EINVAL (no KVM_GET_SUPPORTED_CPUID)
    buf = bytearray(8 + 40 * 8)
    assert err(k.ioctl, kvm, K.KVM_GET_SUPPORTED_CPUID, buf) == errno.EINVAL


@pytest.mark.parametrize("arg,bits", [(0, 40), (32, 32), (44, 44), (48, 48)])
def test_ipa_size(k, kvm, arg, bits):
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, arg)
    assert k.vm(vm).arch.ipa_bits == bits


@pytest.mark.parametrize("arg", [31, 49, 0xFF, 1 << 8, 1 << 30, A.KVM_VM_TYPE_ARM_PROTECTED])
def test_ipa_size_refused(k, kvm, arg):
    assert err(k.ioctl, kvm, K.KVM_CREATE_VM, arg) == errno.EINVAL


def test_default_ipa_refused_below_40():
    import dataclasses
    from types import MappingProxyType

    caps = dict(kmock_arm64.LINUX_ARM64.caps)
    caps[A.KVM_CAP_ARM_VM_IPA_SIZE] = 36
    prof = dataclasses.replace(kmock_arm64.LINUX_ARM64, caps=MappingProxyType(caps))
    k = kmock.Kernel(prof, plugins=[kmock_arm64])
    kvm = k.open("/dev/kvm", os.O_RDWR)
    assert err(k.ioctl, kvm, K.KVM_CREATE_VM, 0) == errno.EINVAL
    assert k.ioctl(kvm, K.KVM_CREATE_VM, 36) >= 0
    k.close_all()


def test_vm_ioctls(k, kvm):
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, 0)
    init = A.kvm_vcpu_init(target=99)
    init.features[0] = 0xFF
    k.ioctl(vm, A.KVM_ARM_PREFERRED_TARGET, init)
    assert init.target == A.KVM_ARM_TARGET_GENERIC_V8 and list(init.features) == [0] * 7
    assert err(k.ioctl, vm, 0xAEFF, 0) == errno.EINVAL  # arm64 kvm_arch_vm_ioctl default
    assert err(k.ioctl, vm, K.KVM_SET_MEMORY_ATTRIBUTES,
               K.kvm_memory_attributes(size=P)) == errno.EINVAL  # no generic attributes
    assert err(k.ioctl, vm, K.KVM_ENABLE_CAP, K.kvm_enable_cap(cap=A.KVM_CAP_ARM_PSCI)) == errno.EINVAL
    assert k.ioctl(vm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_MAX_VCPUS) == 512


def vcpu_init(k, fd, features=1 << A.KVM_ARM_VCPU_PSCI_0_2, target=A.KVM_ARM_TARGET_GENERIC_V8,
              more=()):
    init = A.kvm_vcpu_init(target=target)
    init.features[0] = features
    for i, v in more:
        init.features[i] = v
    return k.ioctl(fd, A.KVM_ARM_VCPU_INIT, init)


def test_vcpu_init_checks(k, kvm):
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, 0)
    fd = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    assert err(vcpu_init, k, fd, target=A.KVM_ARM_TARGET_CORTEX_A57) == errno.EINVAL
    assert err(vcpu_init, k, fd, features=1 << 9) == errno.ENOENT
    assert err(vcpu_init, k, fd, more=((1, 1),)) == errno.ENOENT
    assert err(vcpu_init, k, fd, features=1 << A.KVM_ARM_VCPU_EL1_32BIT) == errno.EINVAL
    assert err(vcpu_init, k, fd, features=1 << A.KVM_ARM_VCPU_HAS_EL2) == errno.EINVAL
    assert err(vcpu_init, k, fd, features=1 << A.KVM_ARM_VCPU_PTRAUTH_ADDRESS) == errno.EINVAL
    assert err(k.ioctl, fd, K.KVM_RUN, 0) == errno.ENOEXEC  # not initialised yet
    vcpu_init(k, fd, features=1 << A.KVM_ARM_VCPU_PSCI_0_2 | 1 << A.KVM_ARM_VCPU_POWER_OFF)
    vcpu_init(k, fd)  # again, same features (POWER_OFF is ephemeral)
    assert err(vcpu_init, k, fd, features=0) == errno.EINVAL  # features changed
    fd1 = k.ioctl(vm, K.KVM_CREATE_VCPU, 1)
    assert err(vcpu_init, k, fd1, features=1 << A.KVM_ARM_VCPU_PMU_V3) == errno.EINVAL  # VM-wide
    vcpu_init(k, fd1)
    k.vm(vm).vcpus[0].guest.stop()
    assert run_exit(k, fd) == K.KVM_EXIT_INTR  # no vGIC: a userspace irqchip, runs


def test_vgic(k, kvm):
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, 0)
    assert err(k.ioctl, vm, A.KVM_CREATE_DEVICE, A.kvm_create_device(type=A.KVM_DEV_TYPE_VFIO)) \
        == errno.ENODEV
    t = A.kvm_create_device(type=A.KVM_DEV_TYPE_ARM_VGIC_V3, flags=A.KVM_CREATE_DEVICE_TEST)
    assert k.ioctl(vm, A.KVM_CREATE_DEVICE, t) == 0 and k.vm(vm).arch.vgic is None
    cd = A.kvm_create_device(type=A.KVM_DEV_TYPE_ARM_VGIC_V3)
    k.ioctl(vm, A.KVM_CREATE_DEVICE, cd)
    assert err(k.ioctl, vm, A.KVM_CREATE_DEVICE, A.kvm_create_device(
        type=A.KVM_DEV_TYPE_ARM_VGIC_V3)) == errno.EEXIST
    fd = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    vcpu_init(k, fd)
    assert err(k.ioctl, fd, K.KVM_RUN, 0) == errno.ENXIO  # no distributor address yet

    def attr(group, a, value, op=A.KVM_SET_DEVICE_ATTR):
        buf = ctypes.c_uint64(value)
        r = k.ioctl(cd.fd, op, A.kvm_device_attr(group=group, attr=a, addr=ctypes.addressof(buf)))
        return r, buf.value

    G = A.KVM_DEV_ARM_VGIC_GRP_ADDR
    assert err(attr, G, A.KVM_VGIC_V3_ADDR_TYPE_DIST, 0x8001000) == errno.EINVAL  # 64K aligned
    attr(G, A.KVM_VGIC_V3_ADDR_TYPE_DIST, 0x8000000)
    assert err(attr, G, A.KVM_VGIC_V3_ADDR_TYPE_DIST, 0x9000000) == errno.EEXIST
    assert attr(G, A.KVM_VGIC_V3_ADDR_TYPE_DIST, 0, A.KVM_GET_DEVICE_ATTR)[1] == 0x8000000
    attr(G, A.KVM_VGIC_V3_ADDR_TYPE_REDIST, 0x80A0000)
    assert err(attr, 99, 0, 0) == errno.ENXIO
    assert err(attr, A.KVM_DEV_ARM_VGIC_GRP_NR_IRQS, 0, 40) == errno.EINVAL
    attr(A.KVM_DEV_ARM_VGIC_GRP_CTRL, A.KVM_DEV_ARM_VGIC_CTRL_INIT, 0)
    assert err(k.ioctl, vm, K.KVM_CREATE_VCPU, 1) == errno.EBUSY  # vGIC initialised
    k.vm(vm).vcpus[0].guest.stop()
    assert run_exit(k, fd) == K.KVM_EXIT_INTR
    assert err(k.ioctl, cd.fd, K.KVM_RUN, 0) == errno.ENOTTY  # a device fd


def test_memslots_with_guest_memfd(k, kvm):
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, 36)
    gm = k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(size=4 * P))

    def slot(n, gpa, gmem, flags=K.KVM_MEM_GUEST_MEMFD):
        return k.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
            slot=n, flags=flags, guest_phys_addr=gpa, memory_size=4 * P, guest_memfd=gmem))

    assert err(slot, 0, 0x40000000, gm) == errno.EINVAL  # not gmem-only (no MMAP flag)
    gm2 = k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(
        size=4 * P, flags=K.GUEST_MEMFD_FLAG_MMAP | K.GUEST_MEMFD_FLAG_INIT_SHARED))
    assert err(slot, 1, (1 << 36) - 2 * P, gm2) == errno.EFAULT  # past the IPA space
    slot(1, 0x40000000, gm2)
    fd = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    vcpu_init(k, fd)
    g = k.vm(vm).vcpus[0].guest
    g.write(0x40000000, b"arm64")
    r = g.read(0x40000000, 5)
    g.stop()
    assert run_exit(k, fd) == K.KVM_EXIT_INTR and r.result == b"arm64"
