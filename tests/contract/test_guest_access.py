"""VmType.guest_access (contract addition for SNP's RMP and TDX's PENDING pages): called
once per guest access, after KVM resolved it and before any byte is copied; EXIT refuses
the access (the action does not retire), MemoryFault ends KVM_RUN with a memory-fault exit;
a VM type that does not override it is never asked."""

import errno

import pytest

import kmock
from kmock.kvm.guest import EXIT
from kmock.kvm.stage2 import MemoryFault
from kmock.kvm.vmtype import VmType
from kmock.uapi import kvm as K

from ._one_vm import GPA, P, one_vm

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


@pytest.fixture
def env():
    vt = CheckedVm()
    k, vm, vcpu, gm = one_vm(vt, "checked")
    yield k, vt, k.vm(vm).vcpus[0], vcpu, k.file(gm).inode
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
