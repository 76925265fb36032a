"""KVM_ENABLE_CAP on a VM (reference §4.9, §5.1 row 42)."""

import errno

import pytest

from kmock.uapi import kvm as K

from ._util import DEFAULT_VM, SW_PROTECTED_VM, create_vm, err


def enable(k, fd, cap, arg0=0, flags=0):
    c = K.kvm_enable_cap(cap=cap, flags=flags)
    c.args[0] = arg0
    return k.ioctl(fd, K.KVM_ENABLE_CAP, c)


@pytest.mark.parametrize("vm_type", [DEFAULT_VM, SW_PROTECTED_VM])
def test_exit_hypercall(k, vm_type):
    """args[0] must be a subset of KVM_EXIT_HYPERCALL_VALID_MASK (1 << KVM_HC_MAP_GPA_RANGE)."""
    _, vm = create_vm(k, vm_type)
    assert enable(k, vm, K.KVM_CAP_EXIT_HYPERCALL, 1 << 12) == 0
    assert enable(k, vm, K.KVM_CAP_EXIT_HYPERCALL, 0) == 0
    assert err(enable, k, vm, K.KVM_CAP_EXIT_HYPERCALL, 1 << 11) == errno.EINVAL
    assert err(enable, k, vm, K.KVM_CAP_EXIT_HYPERCALL, (1 << 12) | 1) == errno.EINVAL
    assert err(enable, k, vm, K.KVM_CAP_EXIT_HYPERCALL, 1 << 63) == errno.EINVAL


@pytest.mark.parametrize("cap", [K.KVM_CAP_GUEST_MEMFD_FLAGS, K.KVM_CAP_GUEST_MEMFD,
                                 K.KVM_CAP_MEMORY_ATTRIBUTES, K.KVM_CAP_USER_MEMORY2, 0, 4095])
def test_other_caps_einval(k, cap):
    """§4.9: caps that are not enable-able -> EINVAL (GUEST_MEMFD_FLAGS is the probed one)."""
    _, vm = create_vm(k)
    assert err(enable, k, vm, cap, 1) == errno.EINVAL


def test_null_argument_efault(k):
    _, vm = create_vm(k)
    assert err(k.ioctl, vm, K.KVM_ENABLE_CAP, 0) == errno.EFAULT
