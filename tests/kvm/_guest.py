"""Helpers for the scripted-guest tests (tests/kvm/test_guest_*.py).

A VM built through the syscall API only, with real anonymous memory behind its
shared memslots (as the selftests' vm_userspace_mem_region_add), and a VMM-side view
of kvm_run through the mmapped vCPU fd read with ctypes at the reference offsets.
"""

import ctypes
import os

from kmock import _libc
from kmock.uapi import kvm as K

P = 4096
M2 = 2 << 20
PRIVATE = K.KVM_MEMORY_ATTRIBUTE_PRIVATE
RW = _libc.PROT_READ | _libc.PROT_WRITE


class UserMem:
    """Anonymous shared memory of the VMM process (a memslot's userspace_addr)."""

    def __init__(self, size):
        self.size = size
        self.addr = _libc.mmap(None, size, RW, _libc.MAP_SHARED | _libc.MAP_ANONYMOUS, -1, 0)

    def read(self, off, n):
        return ctypes.string_at(self.addr + off, n)

    def write(self, off, data):
        ctypes.memmove(self.addr + off, bytes(data), len(data))

    def fill(self, off, n, byte):
        ctypes.memset(self.addr + off, byte, n)

    def close(self):
        if self.addr:
            _libc.munmap(self.addr, self.size)
            self.addr = 0


class RunView:
    """The VMM's view of kvm_run: the vCPU fd mmapped, fields read at reference offsets."""

    def __init__(self, k, vcpu_fd):
        size = k.ioctl(k.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC), K.KVM_GET_VCPU_MMAP_SIZE, 0)
        self.map = k.mmap(vcpu_fd, size, RW, _libc.MAP_SHARED, 0)
        self.base = self.map.address

    def u8(self, off):
        return ctypes.c_uint8.from_address(self.base + off).value

    def u16(self, off):
        return ctypes.c_uint16.from_address(self.base + off).value

    def u32(self, off):
        return ctypes.c_uint32.from_address(self.base + off).value

    def u64(self, off):
        return ctypes.c_uint64.from_address(self.base + off).value

    def set_u8(self, off, v):
        ctypes.c_uint8.from_address(self.base + off).value = v

    def set_u64(self, off, v):
        ctypes.c_uint64.from_address(self.base + off).value = v

    @property
    def exit_reason(self):
        return self.u32(8)

    def memory_fault(self):
        return {"flags": self.u64(32), "gpa": self.u64(40), "size": self.u64(48)}

    def hypercall(self):
        return {"nr": self.u64(32), "args": [self.u64(40 + 8 * i) for i in range(6)],
                "ret": self.u64(88), "flags": self.u64(96)}

    def io(self):
        return {"direction": self.u8(32), "size": self.u8(33), "port": self.u16(34),
                "count": self.u32(36), "data_offset": self.u64(40)}

    def mmio(self):
        return {"phys_addr": self.u64(32), "data": ctypes.string_at(self.base + 40, 8),
                "len": self.u32(48), "is_write": self.u8(52)}


class GuestVM:
    """One VM (``vm_type``) with vCPUs, memslots and the handles tests need."""

    def __init__(self, k, vm_type=K.KVM_X86_SW_PROTECTED_VM, nr_vcpus=1):
        self.k = k
        self.kvm = k.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
        self.fd = k.ioctl(self.kvm, K.KVM_CREATE_VM, vm_type)
        self.vm = k.vm(self.fd)
        self.vcpu_fds = [k.ioctl(self.fd, K.KVM_CREATE_VCPU, i) for i in range(nr_vcpus)]
        self.views = [RunView(k, fd) for fd in self.vcpu_fds]
        self.mems = []
        self.slots = {}  # id -> dict(gpa, size, mem, hva, gmem, offset, flags)

    def guest(self, i=0):
        return self.vm.vcpus[i].guest

    def gmem(self, size, flags=0):
        return self.k.ioctl(self.fd, K.KVM_CREATE_GUEST_MEMFD,
                            K.kvm_create_guest_memfd(size=size, flags=flags))

    def add_slot(self, slot, gpa, size, gmem=None, offset=0, mem=True, flags=0, hva=None):
        """KVM_SET_USER_MEMORY_REGION2; ``mem``: back it with fresh anonymous memory."""
        um = None
        if hva is None:
            if mem:
                um = UserMem(size)
                self.mems.append(um)
                hva = um.addr
            else:
                hva = 0
        if gmem is not None:
            flags |= K.KVM_MEM_GUEST_MEMFD
        r = K.kvm_userspace_memory_region2(
            slot=slot, flags=flags, guest_phys_addr=gpa, memory_size=size, userspace_addr=hva,
            guest_memfd_offset=offset, guest_memfd=gmem if gmem is not None else 0)
        self.k.ioctl(self.fd, K.KVM_SET_USER_MEMORY_REGION2, r)
        self.slots[slot] = dict(gpa=gpa, size=size, mem=um, hva=hva, gmem=gmem, offset=offset,
                                flags=flags)
        return um

    def delete_slot(self, slot):
        s = self.slots.pop(slot)
        r = K.kvm_userspace_memory_region2(slot=slot, flags=s["flags"],
                                           guest_phys_addr=s["gpa"], memory_size=0)
        self.k.ioctl(self.fd, K.KVM_SET_USER_MEMORY_REGION2, r)
        return s

    def set_attrs(self, gpa, size, attrs):
        self.k.ioctl(self.fd, K.KVM_SET_MEMORY_ATTRIBUTES,
                     K.kvm_memory_attributes(address=gpa, size=size, attributes=attrs))

    def enable_map_gpa_range_exit(self):
        cap = K.kvm_enable_cap(cap=K.KVM_CAP_EXIT_HYPERCALL)
        cap.args[0] = 1 << K.KVM_HC_MAP_GPA_RANGE
        self.k.ioctl(self.fd, K.KVM_ENABLE_CAP, cap)

    def slot_of(self, gpa):
        for s in self.slots.values():
            if s["gpa"] <= gpa < s["gpa"] + s["size"]:
                return s
        return None

    def host_read(self, gpa, n):
        """What the VMM sees at ``gpa`` through the slot's userspace memory."""
        s = self.slot_of(gpa)
        return ctypes.string_at(s["hva"] + gpa - s["gpa"], n)

    def gmem_fallocate(self, gpa, size, punch):
        """vm_guest_mem_fallocate: fallocate on each slot's guest_memfd over [gpa, gpa+size)."""
        mode = _libc.FALLOC_FL_KEEP_SIZE | (_libc.FALLOC_FL_PUNCH_HOLE if punch else 0)
        end = gpa + size
        while gpa < end:
            s = self.slot_of(gpa)
            n = min(end, s["gpa"] + s["size"]) - gpa
            self.k.fallocate(s["gmem"], mode, s["offset"] + gpa - s["gpa"], n)
            gpa += n

    def run(self, i=0):
        """KVM_RUN on vCPU ``i``: (0 or errno, exit_reason read through the mapping)."""
        try:
            r = self.k.ioctl(self.vcpu_fds[i], K.KVM_RUN, 0)
        except OSError as e:
            r = e.errno
        return r, self.views[i].exit_reason

    def audit(self):
        return self.vm.stage2.audit(self.vm)

    def close(self):
        for v in self.views:
            v.map.close()
        for fd in self.vcpu_fds:
            self.k.close(fd)
        self.k.close(self.fd)
        self.k.close(self.kvm)
        for m in self.mems:
            m.close()
