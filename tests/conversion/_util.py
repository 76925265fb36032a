"""Helpers for the in-place conversion tests: one VM, one guest_memfd, one memslot, one vCPU.

Everything goes through the syscall API (Kernel.open/ioctl/mmap/fallocate/close),
``Kernel.gup_pin`` as gup_test's PIN_LONGTERM, ``Kernel.memory_failure`` and
``Kernel.snapshot()``. The guest side runs through the vCPU's guest script
(``kernel.vm(vm_fd).vcpus[0].guest`` + KVM_RUN), as the selftests' guest code does.
"""

import errno
import os

import kmock
from kmock.testing.errnos import err, errno_or_0  # noqa: F401 (re-exported)
from kmock import _libc
from kmock.uapi import gmem as G
from kmock.uapi import kvm as K

P = 4096
M2 = 2 << 20
G1 = 1 << 30
RW = _libc.PROT_READ | _libc.PROT_WRITE
MAP_SHARED = _libc.MAP_SHARED
KEEP_SIZE = _libc.FALLOC_FL_KEEP_SIZE
PUNCH = _libc.FALLOC_FL_PUNCH_HOLE | _libc.FALLOC_FL_KEEP_SIZE
PRIVATE = K.KVM_MEMORY_ATTRIBUTE_PRIVATE
DEFAULT_VM = K.KVM_X86_DEFAULT_VM
SW_PROTECTED_VM = K.KVM_X86_SW_PROTECTED_VM
MMAP = K.GUEST_MEMFD_FLAG_MMAP
INIT_SHARED = K.GUEST_MEMFD_FLAG_INIT_SHARED
SUPPORT_SHARED = G.GUEST_MEMFD_FLAG_SUPPORT_SHARED
INIT_PRIVATE = G.GUEST_MEMFD_FLAG_INIT_PRIVATE
HUGETLB = G.GUEST_MEMFD_FLAG_HUGETLB
U64 = (1 << 64) - 1
#: the selftests' gmem GPA (v8: SZ_4G, memslot 1)
GPA = 1 << 32
SLOT = 1


def sigbus_at(m, start, stop=None):
    """The SigBus offset a host read of m[start:stop] raises, or None if it reads."""
    try:
        m[start] if stop is None else m[start:stop]
    except kmock.SigBus as e:
        return e.offset
    return None


def native_readable(m, off, n=1):
    """Does native code reading ``n`` bytes at ``m.address + off`` get them all?"""
    return _libc.read_user(m.address + off, n)[1] == n


def native_faults(m, off):
    """Does a native 1-byte read at ``m.address + off`` fault (a short copy)?"""
    data, n = _libc.read_user(m.address + off, 1)
    return n == 0


class Env:
    """A VM of ``vm_type`` with one guest_memfd bound at GPA (memslot 1) and one vCPU."""

    def __init__(self, k, size=4 * P, flags=MMAP, vm_type=SW_PROTECTED_VM, bind=True):
        self.k = k
        self.size = size
        self.kvm = k.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
        self.vm = k.ioctl(self.kvm, K.KVM_CREATE_VM, vm_type)
        self.gmem = k.ioctl(self.vm, K.KVM_CREATE_GUEST_MEMFD,
                            K.kvm_create_guest_memfd(size=size, flags=flags))
        self.vcpu = None
        if bind:
            k.ioctl(self.vm, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
                slot=SLOT, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=GPA,
                memory_size=size, guest_memfd=self.gmem))
            self.vcpu = k.ioctl(self.vm, K.KVM_CREATE_VCPU, 0)

    # --- host side ---------------------------------------------------------------------

    def mmap(self, length=None, offset=0):
        return self.k.mmap(self.gmem, self.size if length is None else length, RW, MAP_SHARED,
                           offset)

    def punch(self, offset, length):
        return self.k.fallocate(self.gmem, PUNCH, offset, length)

    def allocate(self, offset, length):
        return self.k.fallocate(self.gmem, KEEP_SIZE, offset, length)

    def gmem_snapshot(self):
        snaps = self.k.snapshot()["guest_memfds"]
        assert len(snaps) == 1
        return snaps[0]

    # --- the guest side (guest script + KVM_RUN) ----------------------------------------

    def _run(self, action):
        script = self.k.vm(self.vm).vcpus[0].guest
        script.hlt()
        self.k.ioctl(self.vcpu, K.KVM_RUN, 0)
        assert action.done, action
        return action.result

    def guest_write(self, offset, data):
        """The guest writes ``data`` at gmem ``offset`` (its kind follows the attribute)."""
        return self._run(self.k.vm(self.vm).vcpus[0].guest.write(GPA + offset, data))

    def guest_read(self, offset, n):
        return self._run(self.k.vm(self.vm).vcpus[0].guest.read(GPA + offset, n))


class V8(Env):
    """KVM_SET_MEMORY_ATTRIBUTES2 on the guest_memfd fd (profile gmem-attributes-v8)."""

    def set_attrs(self, offset, size, attributes, flags=0, error_offset=0, reserved=None):
        """The ioctl; returns (result or errno, the struct after the call)."""
        a = G.kvm_memory_attributes2(offset=offset, size=size, attributes=attributes,
                                     flags=flags, error_offset=error_offset)
        for i, v in (reserved or {}).items():
            a.reserved[i] = v
        return errno_or_0(self.k.ioctl, self.gmem, G.KVM_SET_MEMORY_ATTRIBUTES2, a), a

    def to_private(self, offset, size):
        r, a = self.set_attrs(offset, size, PRIVATE)
        assert r == 0, (r, a.error_offset)

    def to_shared(self, offset, size):
        r, a = self.set_attrs(offset, size, 0)
        assert r == 0, (r, a.error_offset)


class RfcV2(Env):
    """KVM_GMEM_CONVERT_SHARED/PRIVATE on the guest_memfd fd (profile gmem-convert-rfc-v2)."""

    def __init__(self, k, size=4 * P, flags=SUPPORT_SHARED, **kw):
        super().__init__(k, size=size, flags=flags, **kw)

    def convert(self, to_private, offset, size, error_offset=0, reserved=None):
        c = G.kvm_gmem_convert(offset=offset, size=size, error_offset=error_offset)
        for i, v in (reserved or {}).items():
            c.reserved[i] = v
        req = G.KVM_GMEM_CONVERT_PRIVATE if to_private else G.KVM_GMEM_CONVERT_SHARED
        return errno_or_0(self.k.ioctl, self.gmem, req, c), c

    def to_private(self, offset, size):
        r, c = self.convert(True, offset, size)
        assert r == 0, (r, c.error_offset)

    def to_shared(self, offset, size):
        r, c = self.convert(False, offset, size)
        assert r == 0, (r, c.error_offset)


__all__ = [n for n in dir() if not n.startswith("_")]
__all__ += ["errno"]
