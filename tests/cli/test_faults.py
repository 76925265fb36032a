"""kmock.faults: fail a named point, the Nth hit, or the Nth call of an ioctl."""

import errno
import os

import pytest

import kmock
from kmock.faults import CORE_POINTS
from kmock.uapi import kvm as K

P = 4096


def _vm(k):
    kvm = k.open("/dev/kvm", os.O_RDWR)
    return kvm, k.ioctl(kvm, K.KVM_CREATE_VM, K.KVM_X86_SW_PROTECTED_VM)


def test_named_point_fails_once_with_its_errno_and_changes_nothing():
    with kmock.Kernel() as k:
        _, vm = _vm(k)
        k.faults.fail("gmem.create")
        fds = sorted(k.fdtable.fds())
        with pytest.raises(OSError) as e:
            k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(size=P))
        assert e.value.errno == errno.ENOMEM and "gmem.create" in str(e.value)
        assert sorted(k.fdtable.fds()) == fds  # no fd installed
        k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(size=P))  # once only
        assert k.faults.injected == [("gmem.create", errno.ENOMEM)]


def test_nth_hit_and_custom_errno():
    with kmock.Kernel() as k:
        _, vm = _vm(k)
        k.faults.fail("kvm.vcpu.alloc", nth=2, errno=errno.EMFILE)
        k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
        with pytest.raises(OSError) as e:
            k.ioctl(vm, K.KVM_CREATE_VCPU, 1)
        assert e.value.errno == errno.EMFILE
        assert sorted(k.vm(vm).vcpus) == [0]


def test_ioctl_rule_takes_the_syscall_path_only_while_armed():
    with kmock.Kernel() as k:
        kvm, _ = _vm(k)
        assert not k._traced  # nothing wraps syscalls: the fast path
        k.faults.fail("ioctl.KVM_CHECK_EXTENSION", nth=2, errno=errno.EINTR)
        assert k._traced
        k.ioctl(kvm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_USER_MEMORY)
        with pytest.raises(OSError) as e:
            k.ioctl(kvm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_USER_MEMORY)
        assert e.value.errno == errno.EINTR
        k.faults.clear()
        assert not k._traced


def test_fail_nth_counts_every_internal_point():
    with kmock.Kernel() as k:
        _, vm = _vm(k)
        k.faults.fail_nth(2)
        k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(size=P))  # hit 1
        with pytest.raises(OSError) as e:
            k.ioctl(vm, K.KVM_CREATE_VCPU, 0)  # hit 2
        assert e.value.errno == errno.ENOMEM
        assert k.faults.injected == [("kvm.vcpu.alloc", errno.ENOMEM)]


def test_refcount_point_is_eagain_at_the_range_start():
    from kmock.uapi import gmem as G

    with kmock.Kernel("gmem-attributes-v8") as k:
        _, vm = _vm(k)
        g = k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(
            size=16 * P, flags=K.GUEST_MEMFD_FLAG_MMAP | K.GUEST_MEMFD_FLAG_INIT_SHARED))
        k.faults.fail("gmem.refcount")
        a = G.kvm_memory_attributes2(offset=4 * P, size=4 * P,
                                     attributes=K.KVM_MEMORY_ATTRIBUTE_PRIVATE)
        with pytest.raises(OSError) as e:
            k.ioctl(g, G.KVM_SET_MEMORY_ATTRIBUTES2, a)
        assert e.value.errno == errno.EAGAIN and a.error_offset == 4 * P
        assert not k.file(g).inode.is_private(4)


def test_copy_to_user_point_is_efault():
    import ctypes

    from kmock.uapi import iommufd as I

    with kmock.Kernel() as k:
        ictx = k.open("/dev/iommu", os.O_RDWR)
        k.faults.fail("copy_to_user")
        c = I.iommu_ioas_alloc(size=ctypes.sizeof(I.iommu_ioas_alloc))
        with pytest.raises(OSError) as e:
            k.ioctl(ictx, I.IOMMU_IOAS_ALLOC, c)
        assert e.value.errno == errno.EFAULT
        assert k.file(ictx).objects == {}  # iommufd_object_abort_and_destroy


def test_plugins_use_the_same_api():
    with kmock.Kernel() as k:
        assert k.faults.should_fail("tdx.seamcall.mem_page_aug", errno.EIO) == 0
        k.faults.fail("tdx.seamcall.mem_page_aug")
        assert k.faults.should_fail("tdx.seamcall.mem_page_aug", errno.EIO) == errno.EIO
        assert k.faults.should_fail("tdx.seamcall.mem_page_aug", errno.EIO) == 0


def test_bad_rules_are_refused():
    with kmock.Kernel() as k:
        for bad in (lambda: k.faults.fail(""), lambda: k.faults.fail("x", nth=0),
                    lambda: k.faults.fail_nth(0)):
            with pytest.raises(ValueError):
                bad()


def test_core_points_are_documented():
    assert set(CORE_POINTS) >= {"gmem.create", "kvm.memslot.alloc", "iommufd.object.alloc",
                                "gmem.refcount", "copy_to_user"}
    assert all(isinstance(e, int) and doc for e, doc in CORE_POINTS.values())
