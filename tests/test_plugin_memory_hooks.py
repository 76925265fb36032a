"""The plugin contract's memory hooks: invalidation, conversion veto, make_shared,
lazy make_private, and snapshot contributions, seen by an architecture plugin."""

import errno
import os

import kmock
from kmock.hookspecs import hookimpl
from kmock.uapi import gmem as G
from kmock.uapi import kvm as K

P = 4096
GPA = 1 << 32


class Recorder:
    """An architecture plugin that records what guest_memfd tells it."""

    def __init__(self, veto=None):
        self.calls = []
        self.veto = veto

    @hookimpl
    def kmock_gmem_invalidate(self, kernel, gmem, start, end, reason):
        self.calls.append(("invalidate", start, end, reason))

    @hookimpl
    def kmock_gmem_convert_veto(self, kernel, gmem, start, end, to_private):
        self.calls.append(("veto?", start, end, to_private))
        return self.veto

    @hookimpl
    def kmock_gmem_make_shared(self, kernel, gmem, start, end):
        self.calls.append(("make_shared", start, end))

    @hookimpl
    def kmock_gmem_make_private(self, kernel, gmem, start, end):
        self.calls.append(("make_private", start, end))

    @hookimpl
    def kmock_snapshot(self, kernel, snapshot):
        snapshot["recorder"] = len(self.calls)


def setup(rec):
    import kmock_sw_protected

    k = kmock.Kernel("gmem-attributes-v8", plugins=[kmock_sw_protected, rec])
    kvm = k.open("/dev/kvm", os.O_RDWR)
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, K.KVM_X86_SW_PROTECTED_VM)
    gm = k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(
        size=4 * P, flags=K.GUEST_MEMFD_FLAG_MMAP))  # all private
    k.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
        slot=1, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=GPA, memory_size=4 * P,
        guest_memfd=gm))
    vcpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    return k, vm, gm, vcpu


def guest_read(k, vm, vcpu, gpa, n):
    a = k.vm(vm).vcpus[0].guest.read(gpa, n)
    k.ioctl(vcpu, K.KVM_RUN, 0)
    assert a.done
    return a.result


def attrs2(k, gm, offset, size, private):
    a = G.kvm_memory_attributes2(offset=offset, size=size, attributes=8 if private else 0)
    return k.ioctl(gm, G.KVM_SET_MEMORY_ATTRIBUTES2, a)


def test_make_private_runs_once_on_first_private_use():
    rec = Recorder()
    k, vm, gm, vcpu = setup(rec)
    with k:
        guest_read(k, vm, vcpu, GPA, 2 * P)
        assert ("make_private", 0, 2) in rec.calls
        rec.calls.clear()
        guest_read(k, vm, vcpu, GPA, 2 * P)
        assert not [c for c in rec.calls if c[0] == "make_private"]
        # after PUNCH_HOLE the pages are new: make_private again on next use
        k.fallocate(gm, 0x03, 0, P)
        assert ("invalidate", 0, 1, "punch_hole") in rec.calls
        guest_read(k, vm, vcpu, GPA, P)
        assert ("make_private", 0, 1) in rec.calls


def test_to_shared_calls_make_shared_for_allocated_pages_only():
    rec = Recorder()
    k, vm, gm, vcpu = setup(rec)
    with k:
        guest_read(k, vm, vcpu, GPA + P, P)  # allocates page 1 only
        rec.calls.clear()
        assert attrs2(k, gm, 0, 4 * P, False) == 0
        assert ("veto?", 0, 4, False) in rec.calls
        assert ("invalidate", 0, 4, "convert_shared") in rec.calls
        assert [c for c in rec.calls if c[0] == "make_shared"] == [("make_shared", 1, 2)]
        assert k.snapshot()["recorder"] == len(rec.calls)


def test_veto_refuses_the_conversion_and_nothing_changes():
    rec = Recorder(veto=errno.EBUSY)
    k, vm, gm, vcpu = setup(rec)
    with k:
        before = k.snapshot()["guest_memfds"]
        try:
            attrs2(k, gm, 0, 4 * P, False)
        except OSError as e:
            assert e.errno == errno.EBUSY
        else:
            raise AssertionError("the veto did not refuse the conversion")
        assert k.snapshot()["guest_memfds"] == before
        assert not [c for c in rec.calls if c[0] in ("invalidate", "make_shared")]
