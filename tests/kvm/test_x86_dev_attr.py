"""KVM_GET/HAS_DEVICE_ATTR on /dev/kvm (kmock.kvm.device; x86.c kvm_x86_dev_get_attr /
kvm_x86_dev_has_attr; conformance x86_dev_attr)."""

import ctypes
import dataclasses
import errno
from types import MappingProxyType

import pytest

import kmock
from kmock.kvm.x86_state import DEFAULTS_618, supported_xcr0
from kmock.profiles import LINUX_6_18
from kmock.uapi import kvm as K
from kmock.uapi import x86 as X

from .test_x86_vcpu_state import err


@pytest.fixture
def dev(k):
    return k.open("/dev/kvm", 2)


def attr(group=0, a=0, flags=0, addr=0):
    return X.kvm_device_attr(flags=flags, group=group, attr=a, addr=addr)


@pytest.mark.parametrize("flags", [0, 1, 0xFFFFFFFF])
def test_xcomp_guest_supp(k, dev, flags):
    v = ctypes.c_uint64(0x5555)
    assert k.ioctl(dev, X.KVM_GET_DEVICE_ATTR, attr(flags=flags, addr=ctypes.addressof(v))) == 0
    assert v.value == supported_xcr0(k.profile.cpuid)  # no probe: the CPUID's XCR0 bits
    assert k.ioctl(dev, X.KVM_HAS_DEVICE_ATTR, attr(flags=flags, addr=8)) == 0
    assert k.ioctl(dev, K.KVM_CHECK_EXTENSION, X.KVM_CAP_SYS_ATTRIBUTES) == 1


def test_probed_value():
    prof = dataclasses.replace(LINUX_6_18, name="probed-like", x86_vcpu=MappingProxyType(
        {**DEFAULTS_618, "xcomp_guest_supp": 0x2E7}))
    with kmock.Kernel(prof) as k:
        v = ctypes.c_uint64()
        k.ioctl(k.open("/dev/kvm", 2), X.KVM_GET_DEVICE_ATTR, attr(addr=ctypes.addressof(v)))
        assert v.value == 0x2E7


@pytest.mark.parametrize("group,a", [(0, 1), (0, 1 << 63), (1, 0), (2, 0), (0xFFFFFFFF, 0)])
def test_unknown_attributes_enxio_and_nothing_written(k, dev, group, a):
    v = ctypes.c_uint64(0x5555)
    assert err(k.ioctl, dev, X.KVM_GET_DEVICE_ATTR,
               attr(group, a, addr=ctypes.addressof(v))) == errno.ENXIO
    assert v.value == 0x5555
    assert err(k.ioctl, dev, X.KVM_HAS_DEVICE_ATTR, attr(group, a)) == errno.ENXIO
    # ENXIO comes before the write to addr
    assert err(k.ioctl, dev, X.KVM_GET_DEVICE_ATTR, attr(group, a, addr=8)) == errno.ENXIO


def test_efault(k, dev):
    assert err(k.ioctl, dev, X.KVM_GET_DEVICE_ATTR, attr(addr=8)) == errno.EFAULT
    assert err(k.ioctl, dev, X.KVM_GET_DEVICE_ATTR, 8) == errno.EFAULT
    assert err(k.ioctl, dev, X.KVM_HAS_DEVICE_ATTR, 8) == errno.EFAULT


def test_not_on_a_vm(k, dev):
    vm = k.ioctl(dev, K.KVM_CREATE_VM, 0)
    assert err(k.ioctl, vm, X.KVM_GET_DEVICE_ATTR, attr()) == errno.ENOTTY
    assert err(k.ioctl, vm, X.KVM_HAS_DEVICE_ATTR, attr()) == errno.ENOTTY
