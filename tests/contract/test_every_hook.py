"""The contract end to end: a test-only plugin implements every hook and every VmType
callback (tests/contract/recording_plugin.py); each test asserts when each one runs."""

import errno
import os

import pytest

import kmock
from kmock.testing.errnos import err
from kmock.uapi import gmem as G
from kmock.uapi import kvm as K

from .recording_plugin import (GPA_ALIAS_BIT, PRIVATE_IOCTL, REC_CAP, REC_TYPE, VCPU_IOCTL,
                               RecCmd, RecordingPlugin)

P = 4096
GPA = 1 << 32
PRIVATE = K.KVM_MEMORY_ATTRIBUTE_PRIVATE


@pytest.fixture
def rec():
    plugin = RecordingPlugin()
    k = kmock.Kernel("linux-rec", plugins=[plugin])
    yield k, plugin
    k.close_all()


def names(log):
    return [e[0] for e in log]


def setup_vm(k, plugin):
    kvm = k.open("/dev/kvm", os.O_RDWR)
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, REC_TYPE)
    gm = k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(size=8 * P))
    k.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
        slot=1, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=GPA, memory_size=8 * P,
        guest_memfd=gm))
    vcpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    return kvm, vm, gm, vcpu


def test_declarations_run_once_at_kernel_creation(rec):
    k, plugin = rec
    log = names(plugin.log)
    assert log.count("kmock_vm_types") == 1 and log.count("kmock_devices") == 1
    assert {e[1] for e in plugin.log if e[0] == "kmock_ioctls"} == set(k.FILE_TYPES)
    assert k.profile.platform == "rec" and k.setting("rec_setting") == 3
    assert kmock.Kernel("linux-rec", plugins=[RecordingPlugin()], rec_setting=5).setting(
        "rec_setting") == 5


def test_lifecycle_and_dispatch_only_for_the_types_vms(rec):
    k, plugin = rec
    kvm, vm, gm, vcpu = setup_vm(k, plugin)
    lifecycle = [e for e in plugin.log if e[0] in (
        "vm_init", "gmem_create", "memslot_prepare", "memslot_commit", "vcpu_create")]
    assert lifecycle == [("vm_init",), ("gmem_create", 8 * P, 0), ("memslot_prepare", "create"),
                         ("memslot_commit", "create"), ("vcpu_create", 0)]
    assert k.vm(vm).arch == {"rec": True}
    assert k.ioctl(vm, K.KVM_CHECK_EXTENSION, REC_CAP) == 7
    assert k.ioctl(vm, PRIVATE_IOCTL, 0) == 0x5EC
    assert k.ioctl(vcpu, VCPU_IOCTL, 0) == 100
    cmd = RecCmd(id=1)
    assert k.ioctl(vm, K.KVM_MEMORY_ENCRYPT_OP, cmd) == 0 and cmd.data == 0xABC
    assert plugin.log[-2:] == [("mem_enc_check", 1), ("mem_enc", "vm", 1)]
    assert err(k.ioctl, vm, K.KVM_MEMORY_ENCRYPT_OP, RecCmd(id=1, flags=1)) == errno.EINVAL
    assert err(k.ioctl, vm, K.KVM_MEMORY_ENCRYPT_OP, RecCmd(id=2)) == errno.EINVAL  # unknown id
    # a DEFAULT VM of the same kernel has none of it
    plugin.log.clear()
    vm0 = k.ioctl(kvm, K.KVM_CREATE_VM, 0)
    assert err(k.ioctl, vm0, PRIVATE_IOCTL, 0) == errno.ENOTTY
    assert err(k.ioctl, vm0, K.KVM_MEMORY_ENCRYPT_OP, RecCmd(id=1)) == errno.ENOTTY
    assert k.ioctl(vm0, K.KVM_CHECK_EXTENSION, REC_CAP) == 0
    k.ioctl(vm0, K.KVM_CREATE_VCPU, 0)
    assert not [e for e in plugin.log if e[0] in ("vm_init", "vcpu_create")]
    # memslot prepare may refuse; nothing is bound then
    plugin.vmtype.refuse_slot = errno.ENOSPC
    region = K.kvm_userspace_memory_region2(slot=2, flags=K.KVM_MEM_GUEST_MEMFD,
                                            guest_phys_addr=GPA * 2, memory_size=P,
                                            guest_memfd=gm, guest_memfd_offset=0)
    assert err(k.ioctl, vm, K.KVM_SET_USER_MEMORY_REGION2, region) == errno.EINVAL  # bound
    region.guest_memfd_offset = 0
    gm2 = k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(size=P))
    region.guest_memfd = gm2
    assert err(k.ioctl, vm, K.KVM_SET_USER_MEMORY_REGION2, region) == errno.ENOSPC
    assert not k.file(gm2).inode.range_bound(0, 1)
    plugin.vmtype.refuse_slot = None
    assert k.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION2, region) == 0


def test_run_and_memory_callbacks_in_order(rec):
    k, plugin = rec
    kvm, vm, gm, vcpu = setup_vm(k, plugin)
    v = k.vm(vm)
    v.mem_attrs.set(GPA >> 12, (GPA >> 12) + 8, PRIVATE)  # (set through the ioctl below too)
    k.ioctl(vm, K.KVM_SET_MEMORY_ATTRIBUTES,
            K.kvm_memory_attributes(address=GPA, size=8 * P, attributes=PRIVATE))
    plugin.log.clear()
    g = v.vcpus[0].guest
    r = g.read(GPA, 2 * P)
    ping = g.rec.ping()
    assert k.ioctl(vcpu, K.KVM_RUN, 0) == 0
    assert r.result == bytes(2 * P) and ping.result == ("pong", 0)
    assert plugin.log == [("run_enter", 0), ("make_private", 0, 2, 0),
                          ("stage2_map", GPA >> 12, 2, True), ("run_exit", 0, 0)]
    # the alias bit makes a shared access: a memory fault exit (the page is private)
    plugin.log.clear()
    g.read(GPA | GPA_ALIAS_BIT, 8)
    assert err(k.ioctl, vcpu, K.KVM_RUN, 0) == errno.EFAULT
    run = v.vcpus[0].run
    assert run.exit_reason == K.KVM_EXIT_MEMORY_FAULT and run.memory_fault.gpa == GPA
    assert run.memory_fault.flags == 0
    assert plugin.log == [("run_enter", 0), ("run_exit", 0, errno.EFAULT)]
    g.clear()
    # the VM-level attribute change to shared: veto, zap of the private run, arch step
    plugin.log.clear()
    k.ioctl(vm, K.KVM_SET_MEMORY_ATTRIBUTES, K.kvm_memory_attributes(address=GPA, size=P))
    assert plugin.log == [("veto", "vm_attributes", 0, 1),
                          ("stage2_zap", ((GPA >> 12, 1, True),)),
                          ("gmem_invalidate", "vm_attributes", 0, 1)]
    # PUNCH_HOLE: veto, zap, arch step
    plugin.log.clear()
    k.fallocate(gm, 3, P, P)
    assert plugin.log == [("veto", "punch_hole", 1, 2), ("stage2_zap", (((GPA >> 12) + 1, 1, True),)),
                          ("gmem_invalidate", "punch_hole", 1, 2)]
    # a veto refuses the VM-level change and nothing changes
    plugin.vmtype.veto_errno = errno.EBUSY
    before = v.mem_attrs.get((GPA >> 12) + 2)
    assert err(k.ioctl, vm, K.KVM_SET_MEMORY_ATTRIBUTES,
               K.kvm_memory_attributes(address=GPA, size=4 * P)) == errno.EBUSY
    assert v.mem_attrs.get((GPA >> 12) + 2) == before == PRIVATE
    plugin.vmtype.veto_errno = None
    # memslot delete: prepare, the zap, commit; close_all destroys the VM
    g.read(GPA + 2 * P, 8)
    k.ioctl(vcpu, K.KVM_RUN, 0)
    plugin.log.clear()
    k.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(slot=1))
    assert plugin.log == [("memslot_prepare", "delete"), ("stage2_zap", (((GPA >> 12) + 2, 1, True),)),
                          ("memslot_commit", "delete")]
    plugin.log.clear()
    k.close_all()
    assert ("vm_destroy",) in plugin.log


def test_in_place_conversion_calls_make_shared_for_allocated_pages():
    """Any kernel generation combines with the platform: v8 + the recording platform."""
    plugin = RecordingPlugin()
    k = kmock.Kernel("gmem-attributes-v8", platform="rec", plugins=[plugin])
    rec = (k, plugin)
    kvm, vm, gm, vcpu = setup_vm(k, plugin)
    g = k.vm(vm).vcpus[0].guest
    g.read(GPA + P, P, private=True)  # allocates page 1 only
    k.ioctl(vcpu, K.KVM_RUN, 0)
    plugin.log.clear()
    k.ioctl(gm, G.KVM_SET_MEMORY_ATTRIBUTES2, G.kvm_memory_attributes2(offset=0, size=4 * P))
    assert plugin.log == [("veto", "convert_shared", 0, 4),
                          ("stage2_zap", (((GPA >> 12) + 1, 1, True),)),
                          ("gmem_invalidate", "convert_shared", 0, 4),
                          ("make_shared", 1, 2, 1)]
    assert k.snapshot()["rec"] == len(plugin.log)
    assert plugin.syscalls[-2:] == ["ioctl", "ioctl"]  # the kmock_syscall wrapper saw them
    k.close_all()


def test_host_fault_explained_and_recorded(rec):
    k, plugin = rec
    kvm = k.open("/dev/kvm", os.O_RDWR)
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, REC_TYPE)
    gm = k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(
        size=2 * P, flags=K.GUEST_MEMFD_FLAG_MMAP))
    m = k.mmap(gm, 2 * P, 3, 1)
    with pytest.raises(kmock.SigBus, match="page 0 is the guest's"):
        m[0]
    assert k.violations[-1].kind == "host_access_fault"


def test_run_exit_is_asked_only_of_types_that_implement_it():
    """A VM type with run_enter only (TDX, CCA) is not called after the run; the VM it
    killed during the run still makes KVM_RUN fail with EIO."""
    from kmock.kvm.vmtype import VmType

    class EnterOnly(VmType):
        type = 13
        name = "enter only (test)"
        platforms = ("enter-only",)
        has_private_mem = True
        entered = 0

        def run_enter(self, vcpu):
            EnterOnly.entered += 1

    assert EnterOnly.has_run_hooks and not EnterOnly.has_run_exit
    assert not VmType.has_run_exit
    from ._one_vm import GPA as G, one_vm

    k, vm, vcpu, _ = one_vm(EnterOnly(), "enter-only")
    try:
        g = k.vm(vm).vcpus[0].guest
        g.hlt()
        assert k.ioctl(vcpu, K.KVM_RUN, 0) == 0 and EnterOnly.entered == 1
        w = g.write(G, b"x", private=True)
        k.vm(vm).kill("killed by the test")
        with pytest.raises(OSError) as e:
            k.ioctl(vcpu, K.KVM_RUN, 0)
        assert e.value.errno == errno.EIO and not w.done
    finally:
        k.close_all()
