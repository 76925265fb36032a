"""VmType.guest_access (contract addition for SNP's RMP and TDX's PENDING pages): called
once per guest access, after KVM resolved it and before any byte is copied; EXIT refuses
the access (the action does not retire), MemoryFault ends KVM_RUN with a memory-fault exit;
a VM type that does not override it is never asked."""

import errno
import os

import pytest

import kmock
from kmock.hookspecs import hookimpl
from kmock.kvm.guest import EXIT
from kmock.kvm.stage2 import MemoryFault
from kmock.kvm.vmtype import VmType
from kmock.platforms import Platform
from kmock.uapi import kvm as K

P = 4096
GPA = 1 << 32
TYPE = 11


class CheckedVm(VmType):
    type = TYPE
    name = "KVM_X86_CHECKED_VM (test)"
    platforms = ("checked",)
    has_private_mem = True

    def __init__(self):
        self.calls = []
        self.answer = None

    def guest_access(self, vcpu, action, segments):
        self.calls.append((action.kind, [(s.kind, s.gfn, s.npages) for s in segments]))
        if self.answer == "exit":
            vcpu.run.exit_reason = K.KVM_EXIT_SYSTEM_EVENT
            return EXIT
        if self.answer == "fault":
            raise MemoryFault(errno.EFAULT, segments[0].gfn, True)
        return None


class Plugin:
    def __init__(self):
        self.vmtype = CheckedVm()

    @hookimpl
    def kmock_vm_types(self, kernel):
        return [self.vmtype]

    @hookimpl
    def kmock_platforms(self, kernel):
        return [Platform("checked", "x86", "guest_access test platform")]


@pytest.fixture
def env():
    plugin = Plugin()
    k = kmock.Kernel("linux-6.18", plugins=[plugin], platform="checked")
    kvm = k.open("/dev/kvm", os.O_RDWR)
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, TYPE)
    gm = k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(size=4 * P))
    k.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
        slot=0, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=GPA, memory_size=4 * P,
        guest_memfd=gm))
    k.ioctl(vm, K.KVM_SET_MEMORY_ATTRIBUTES, K.kvm_memory_attributes(
        address=GPA, size=4 * P, attributes=K.KVM_MEMORY_ATTRIBUTE_PRIVATE))
    vcpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    yield k, plugin.vmtype, k.vm(vm).vcpus[0], vcpu, k.file(gm).inode
    k.close_all()


def run(k, fd):
    try:
        k.ioctl(fd, K.KVM_RUN, 0)
        return 0
    except OSError as e:
        return e.errno


def test_called_once_per_access_with_the_resolved_runs(env):
    k, vt, vcpu, fd, inode = env
    w = vcpu.guest.write(GPA + P - 2, b"abcd", private=True)  # spans two pages: one run
    assert run(k, fd) == 0 and w.done
    assert vt.calls == [("write", [("gmem", (GPA >> 12), 2)])]
    assert inode.read(P - 2, 4) == b"abcd"


def test_exit_refuses_before_anything_is_copied(env):
    k, vt, vcpu, fd, inode = env
    vt.answer = "exit"
    w = vcpu.guest.write(GPA, b"xy", private=True)
    assert run(k, fd) == 0 and vcpu.run.exit_reason == K.KVM_EXIT_SYSTEM_EVENT
    assert not w.done and inode.read(0, 2) == b"\0\0"
    vt.answer = None
    assert run(k, fd) == 0 and w.done  # the access is retried whole


def test_memory_fault_ends_kvm_run(env):
    k, vt, vcpu, fd, inode = env
    vt.answer = "fault"
    r = vcpu.guest.read(GPA + P, 4, private=True)
    assert run(k, fd) == errno.EFAULT and vcpu.run.exit_reason == K.KVM_EXIT_MEMORY_FAULT
    assert vcpu.run.memory_fault.gpa == GPA + P and not r.done


def test_not_called_for_types_that_do_not_override_it():
    assert not VmType.has_guest_access and CheckedVm.has_guest_access
    k = kmock.Kernel("linux-6.18")
    assert not any(t.has_guest_access for t in k.vm_types.values())
