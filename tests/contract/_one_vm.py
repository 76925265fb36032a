"""A kernel with one test VM type on its own platform, and a VM of it with 4 private
guest_memfd pages at GPA bound to memslot 0 and vCPU 0: the set-up of the contract tests
that exercise one VmType callback."""

import os

import kmock
from kmock.hookspecs import hookimpl
from kmock.platforms import Platform
from kmock.uapi import kvm as K

P = 4096
GPA = 1 << 32


class OneTypePlugin:
    """Offers ``vmtype`` on platform ``platform``."""

    def __init__(self, vmtype, platform):
        self.vmtype = vmtype
        self.platform = platform

    @hookimpl
    def kmock_vm_types(self, kernel):
        return [self.vmtype]

    @hookimpl
    def kmock_platforms(self, kernel):
        return [Platform(self.platform, "x86", f"{self.platform} test platform")]


def one_vm(vmtype, platform):
    """(kernel, vm fd, vcpu fd, guest_memfd fd); the caller closes the kernel."""
    k = kmock.Kernel("linux-6.18", plugins=[OneTypePlugin(vmtype, platform)],
                     platform=platform)
    kvm = k.open("/dev/kvm", os.O_RDWR)
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, vmtype.type)
    gm = k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(size=4 * P))
    k.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
        slot=0, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=GPA, memory_size=4 * P,
        guest_memfd=gm))
    k.ioctl(vm, K.KVM_SET_MEMORY_ATTRIBUTES, K.kvm_memory_attributes(
        address=GPA, size=4 * P, attributes=K.KVM_MEMORY_ATTRIBUTE_PRIVATE))
    vcpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    return k, vm, vcpu, gm
