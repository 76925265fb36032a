"""guest_memfd owns its users: one invalidation sequence for every reason, seen by a
notifier registered through the public call (inode.register_notifier), and a failed
call that changes nothing (kmock/notifier.py)."""

import errno
import os

import pytest

import kmock
from kmock.notifier import GmemNotifier
from kmock.testing.errnos import err
from kmock.uapi import gmem as G
from kmock.uapi import kvm as K

P = 4096
GPA = 1 << 32


class Recording(GmemNotifier):
    def __init__(self, inode, log, veto=None):
        self.inode = inode
        self.log = log
        self.veto_errno = veto

    def veto(self, ev):
        self.log.append(("veto", ev.reason, ev.start, ev.end))
        return self.veto_errno

    def invalidate_begin(self, ev):
        # the state is still the old one when users zap
        self.log.append(("begin", ev.reason, self.inode.is_private(ev.start)))

    def invalidate_commit(self, ev):
        self.log.append(("commit", ev.reason, self.inode.is_private(ev.start)))

    def invalidate_end(self, ev):
        self.log.append(("end", ev.reason, self.inode.is_private(ev.start), ev.failed))


@pytest.fixture
def env():
    k = kmock.Kernel("gmem-attributes-v8")
    kvm = k.open("/dev/kvm", os.O_RDWR)
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, K.KVM_X86_SW_PROTECTED_VM)
    gm = k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(
        size=4 * P, flags=K.GUEST_MEMFD_FLAG_MMAP | K.GUEST_MEMFD_FLAG_INIT_SHARED))
    k.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
        slot=1, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=GPA, memory_size=4 * P,
        guest_memfd=gm))
    inode = k.file(gm).inode
    log = []
    n = Recording(inode, log)
    inode.register_notifier(n)
    yield k, vm, gm, inode, n, log
    k.close_all()


def attrs2(k, gm, off, size, private):
    return k.ioctl(gm, G.KVM_SET_MEMORY_ATTRIBUTES2, G.kvm_memory_attributes2(
        offset=off, size=size, attributes=K.KVM_MEMORY_ATTRIBUTE_PRIVATE if private else 0))


def test_convert_private_order(env):
    k, vm, gm, inode, n, log = env
    attrs2(k, gm, 0, P, True)
    assert log == [("veto", "convert_private", 0, 1), ("begin", "convert_private", False),
                   ("commit", "convert_private", False), ("end", "convert_private", True, 0)]


def test_convert_shared_order(env):
    k, vm, gm, inode, n, log = env
    attrs2(k, gm, 0, P, True)
    log.clear()
    attrs2(k, gm, 0, P, False)
    assert [e[:2] for e in log] == [("veto", "convert_shared"), ("begin", "convert_shared"),
                                    ("commit", "convert_shared"), ("end", "convert_shared")]
    assert log[-1] == ("end", "convert_shared", False, 0)


def test_refused_conversion_changes_nothing(env):
    """A pinned page: EAGAIN after the users zapped; end sees failed=EAGAIN and the old
    state; attributes, pins and host mappings are as before."""
    k, vm, gm, inode, n, log = env
    m = k.mmap(gm, 4 * P, 3, 1)
    m[2 * P] = 7
    pin = k.gup_pin(m, 2 * P, P)
    a = G.kvm_memory_attributes2(offset=0, size=4 * P, attributes=K.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    assert err(k.ioctl, gm, G.KVM_SET_MEMORY_ATTRIBUTES2, a) == errno.EAGAIN
    assert a.error_offset == 2 * P
    assert log == [("veto", "convert_private", 0, 4), ("begin", "convert_private", False),
                   ("end", "convert_private", False, errno.EAGAIN)]
    assert inode.attrs.count(0) == 4 and m[2 * P] == 7  # still shared, mapping restored
    pin.unpin()
    m.close()


def test_veto_refuses_before_anything(env):
    k, vm, gm, inode, n, log = env
    n.veto_errno = errno.EBUSY
    a = G.kvm_memory_attributes2(offset=P, size=P, attributes=K.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    assert err(k.ioctl, gm, G.KVM_SET_MEMORY_ATTRIBUTES2, a) == errno.EBUSY
    assert log == [("veto", "convert_private", 1, 2)] and a.error_offset == P
    n.veto_errno = (errno.EAGAIN, 1)  # a veto may name the page
    log.clear()
    a = G.kvm_memory_attributes2(offset=0, size=2 * P, attributes=K.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    assert err(k.ioctl, gm, G.KVM_SET_MEMORY_ATTRIBUTES2, a) == errno.EAGAIN
    assert a.error_offset == P and inode.attrs.count(0) == 4


def test_a_veto_that_is_not_an_errno_names_the_notifier(env):
    k, vm, gm, inode, n, log = env
    n.veto_errno = True
    with pytest.raises(kmock.errors.PluginError, match="Recording"):
        attrs2(k, gm, 0, P, True)
    assert inode.attrs.count(0) == 4
    n.veto_errno = None


@pytest.mark.parametrize("reason", ["punch_hole", "memory_failure", "release"])
def test_pages_going_away(env, reason):
    k, vm, gm, inode, n, log = env
    if reason == "punch_hole":
        k.fallocate(gm, 3, P, P)
    elif reason == "memory_failure":
        k.memory_failure(gm, P)
    else:
        k.close(gm)
    got = [e[:2] for e in log]
    assert got == [("veto", reason), ("begin", reason), ("commit", reason), ("end", reason)]


def test_vm_level_attribute_change_goes_through_guest_memfd():
    k = kmock.Kernel("linux-6.18")
    kvm = k.open("/dev/kvm", os.O_RDWR)
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, K.KVM_X86_SW_PROTECTED_VM)
    gm = k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(size=4 * P))
    k.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
        slot=1, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=GPA, memory_size=4 * P,
        guest_memfd=gm))
    inode = k.file(gm).inode
    log = []
    inode.register_notifier(Recording(inode, log))
    k.ioctl(vm, K.KVM_SET_MEMORY_ATTRIBUTES, K.kvm_memory_attributes(
        address=GPA + P, size=2 * P, attributes=K.KVM_MEMORY_ATTRIBUTE_PRIVATE))
    assert [e[:2] for e in log] == [("veto", "vm_attributes"), ("begin", "vm_attributes"),
                                    ("commit", "vm_attributes"), ("end", "vm_attributes")]
    assert log[0][2:] == (1, 3)  # guest_memfd page indexes of the gfns
    k.close_all()
