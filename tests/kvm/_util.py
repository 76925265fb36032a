"""Helpers for the tests of profile linux-6.18 through the syscall API only."""

import ctypes
import errno
import os

import pytest

from kmock.testing.errnos import err, errno_or_0  # noqa: F401 (re-exported)
from kmock import _libc
from kmock.uapi import kvm as K
from kmock.uapi import x86 as X

P = 4096
M2 = 2 << 20
RW = _libc.PROT_READ | _libc.PROT_WRITE
SHARED = _libc.MAP_SHARED
MMAP = K.GUEST_MEMFD_FLAG_MMAP
INIT_SHARED = K.GUEST_MEMFD_FLAG_INIT_SHARED
GMEM = K.KVM_MEM_GUEST_MEMFD
PRIVATE = K.KVM_MEMORY_ATTRIBUTE_PRIVATE
DEFAULT_VM = K.KVM_X86_DEFAULT_VM
SW_PROTECTED_VM = K.KVM_X86_SW_PROTECTED_VM


def kvm_ok():
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC))
        return True
    except OSError:
        return False


needs_host_kvm = pytest.mark.skipif(
    not kvm_ok(), reason="profile 'host' probes the real /dev/kvm, which this machine lacks")


def create_vm(k, vm_type=DEFAULT_VM):
    kvm = k.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    return kvm, k.ioctl(kvm, K.KVM_CREATE_VM, vm_type)


def create_gmem(k, vm, size=4 * P, flags=0):
    return k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(size=size, flags=flags))


def region2(slot, gpa, size, flags=0, gmem=0, offset=0, uaddr=0, as_id=0):
    return K.kvm_userspace_memory_region2(
        slot=(as_id << 16) | slot, flags=flags, guest_phys_addr=gpa, memory_size=size,
        userspace_addr=uaddr, guest_memfd_offset=offset, guest_memfd=gmem)


def set_region(k, vm, *args, **kw):
    return k.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION2, region2(*args, **kw))


def mem_attrs(address, size, attributes=0, flags=0):
    return K.kvm_memory_attributes(address=address, size=size, attributes=attributes, flags=flags)


@pytest.fixture
def anon():
    """anon(size) -> the address of fresh anonymous memory (a plain memslot's backing, as the
    selftest library's vm_userspace_mem_region_add provides); unmapped after the test."""
    maps = []

    def make(size):
        a = _libc.mmap(None, size, RW, _libc.MAP_PRIVATE | _libc.MAP_ANONYMOUS, -1, 0)
        maps.append((a, size))
        return a

    yield make
    for a, size in maps:
        _libc.munmap(a, size)


def is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError as e:
        assert e.errno == errno.EBADF
        return False


def addr(obj):
    return ctypes.addressof(obj)


__all__ = [n for n in dir() if not n.startswith("_")]


def read_msrs(k, vcpu, *indices):
    """KVM_GET_MSRS of ``indices`` (each entry preset to 0x55): (count read, their values)."""
    from kmock.testing.conformance_vcpu import msrs_buf, msrs_values

    buf = msrs_buf([(i, 0x55) for i in indices])
    n = k.ioctl(vcpu, X.KVM_GET_MSRS, buf)
    return n, msrs_values(buf, n)


def write_msrs(k, vcpu, *entries):
    """KVM_SET_MSRS of (index, value) entries: the count written."""
    from kmock.testing.conformance_vcpu import msrs_buf

    return k.ioctl(vcpu, X.KVM_SET_MSRS, msrs_buf(list(entries)))
