"""VmType.stage2_map may refuse a mapping (a failed S-EPT AUG, an RTT map that fails): the
fault fails with the errno and stage-2 keeps nothing of it, as KVM installs no SPTE when
the architecture's set_private_spte fails. Nothing is half-changed."""

import errno
import os

import pytest

import kmock
from kmock.hookspecs import hookimpl
from kmock.kvm.vmtype import VmType
from kmock.platforms import Platform
from kmock.uapi import kvm as K

P = 4096
GPA = 1 << 32
TYPE = 12


class RefusingVm(VmType):
    type = TYPE
    name = "KVM_X86_REFUSING_VM (test)"
    platforms = ("refusing",)
    has_private_mem = True

    def __init__(self):
        self.refuse = False
        self.maps, self.zaps = [], []

    def stage2_map(self, vm, gfn, pfn, npages, private):
        if self.refuse:
            raise OSError(errno.EIO, "the architecture refused the mapping")
        self.maps.append((gfn, npages, private))

    def stage2_zap(self, vm, runs):
        self.zaps.append(runs)


class Plugin:
    def __init__(self):
        self.vmtype = RefusingVm()

    @hookimpl
    def kmock_vm_types(self, kernel):
        return [self.vmtype]

    @hookimpl
    def kmock_platforms(self, kernel):
        return [Platform("refusing", "x86", "stage2_map test platform")]


@pytest.fixture
def env():
    plugin = Plugin()
    k = kmock.Kernel("linux-6.18", plugins=[plugin], platform="refusing")
    kvm = k.open("/dev/kvm", os.O_RDWR)
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, TYPE)
    gm = k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(size=4 * P))
    k.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
        slot=0, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=GPA, memory_size=4 * P,
        guest_memfd=gm))
    k.ioctl(vm, K.KVM_SET_MEMORY_ATTRIBUTES, K.kvm_memory_attributes(
        address=GPA, size=4 * P, attributes=K.KVM_MEMORY_ATTRIBUTE_PRIVATE))
    vcpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    yield k, plugin.vmtype, k.vm(vm), vcpu
    k.close_all()


def test_a_refused_mapping_fails_the_fault_and_leaves_no_entry(env):
    k, vt, vm, fd = env
    g = vm.vcpus[0].guest
    g.write(GPA + P, b"x", private=True)
    vt.refuse = True
    with pytest.raises(OSError) as e:
        k.ioctl(fd, K.KVM_RUN, 0)
    assert e.value.errno == errno.EIO
    assert vm.stage2.mapped_pages() == 0
    assert vt.zaps == []  # the VM type is not told of a mapping it refused
    assert vm.stage2.audit(vm) == []
    vt.refuse = False
    assert k.ioctl(fd, K.KVM_RUN, 0) == 0  # the access is retried and maps
    assert vt.maps == [((GPA >> 12) + 1, 1, True)] and vm.stage2.mapped_pages() == 1
