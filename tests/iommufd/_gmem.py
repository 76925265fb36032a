"""A SW_PROTECTED VM with a guest_memfd (MMAP | INIT_SHARED) for the iommufd <-> guest_memfd
tests, on profile gmem-attributes-v8 (KVM_SET_MEMORY_ATTRIBUTES2 on the guest_memfd fd)."""

import errno
import os

from kmock import _libc
from kmock.uapi import gmem as G
from kmock.uapi import kvm as K

P = 4096
RW = _libc.PROT_READ | _libc.PROT_WRITE
PUNCH = _libc.FALLOC_FL_PUNCH_HOLE | _libc.FALLOC_FL_KEEP_SIZE
PRIVATE = K.KVM_MEMORY_ATTRIBUTE_PRIVATE
GPA = 1 << 32


class GuestMem:
    def __init__(self, k, size=8 * P, vm_type=K.KVM_X86_SW_PROTECTED_VM):
        self.k = k
        self.size = size
        self.kvm = k.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
        self.vm = k.ioctl(self.kvm, K.KVM_CREATE_VM, vm_type)
        self.gmem = k.ioctl(self.vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(
            size=size, flags=K.GUEST_MEMFD_FLAG_MMAP | K.GUEST_MEMFD_FLAG_INIT_SHARED))
        k.ioctl(self.vm, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
            slot=1, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=GPA, memory_size=size,
            guest_memfd=self.gmem))

    def mmap(self):
        return self.k.mmap(self.gmem, self.size, RW, _libc.MAP_SHARED, 0)

    def set_attrs(self, offset, size, attributes):
        """(0 or errno, error_offset) of KVM_SET_MEMORY_ATTRIBUTES2."""
        a = G.kvm_memory_attributes2(offset=offset, size=size, attributes=attributes)
        try:
            self.k.ioctl(self.gmem, G.KVM_SET_MEMORY_ATTRIBUTES2, a)
        except OSError as e:
            return e.errno, a.error_offset
        return 0, a.error_offset

    def to_private(self, offset, size=P):
        return self.set_attrs(offset, size, PRIVATE)

    def to_shared(self, offset, size=P):
        return self.set_attrs(offset, size, 0)

    def punch(self, offset, size=P):
        self.k.fallocate(self.gmem, PUNCH, offset, size)

    def is_private(self, offset):
        return bool(self.k.file(self.gmem).inode.attrs.get(offset // P) & PRIVATE)


__all__ = ["GuestMem", "P", "PRIVATE", "errno"]
