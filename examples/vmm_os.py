"""A VMM written only against os, fcntl, mmap and ctypes libc: no kmock in sight.

This is how a Python VMM talks to the real kernel. Under the ``kmock`` pytest fixture
(or ``with kmock.patched(k):``) the same code runs, unchanged, on the mock: see
tests/testing/test_example_vmm_os.py. kvm_run is read and written through the mmap
object's slicing (``from_buffer_copy``), which works on a real ``mmap.mmap`` and on the
mock's mapping alike.

The run loop converts memory on KVM_EXIT_MEMORY_FAULT and on the MAP_GPA_RANGE
hypercall (VM-level KVM_SET_MEMORY_ATTRIBUTES, then PUNCH_HOLE of the guest_memfd
when a range becomes shared, through libc ``fallocate`` as QEMU does), collects port
I/O, and stops at HLT.
"""

import ctypes
import errno
import fcntl
import mmap
import os

from kmock.uapi import kvm as K  # the UAPI mirror only: structs and ioctl numbers

PAGE = 4096
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]

RUN_SIZE = ctypes.sizeof(K.kvm_run)
OFF_HC_RET = K.kvm_run.hypercall.offset + K.kvm_run_hypercall.ret.offset


class Vmm:
    def __init__(self, vm_type=K.KVM_X86_SW_PROTECTED_VM, ram_gpa=1 << 32, ram_size=2 << 20):
        self.kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
        if fcntl.ioctl(self.kvm, K.KVM_GET_API_VERSION, 0) != 12:
            raise RuntimeError("KVM API version is not 12")
        self.vm = fcntl.ioctl(self.kvm, K.KVM_CREATE_VM, vm_type)
        self.ram_gpa, self.ram_size = ram_gpa, ram_size
        self.shared = mmap.mmap(-1, ram_size)  # the VMM's own (shared) copy of guest RAM
        hva = ctypes.addressof(ctypes.c_char.from_buffer(self.shared))
        self.gmem = fcntl.ioctl(self.vm, K.KVM_CREATE_GUEST_MEMFD,
                                K.kvm_create_guest_memfd(size=ram_size, flags=0))
        region = K.kvm_userspace_memory_region2(
            slot=0, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=ram_gpa,
            memory_size=ram_size, userspace_addr=hva, guest_memfd=self.gmem)
        fcntl.ioctl(self.vm, K.KVM_SET_USER_MEMORY_REGION2, region)
        mask = fcntl.ioctl(self.vm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_EXIT_HYPERCALL)
        if mask & (1 << K.KVM_HC_MAP_GPA_RANGE):
            cap = K.kvm_enable_cap(cap=K.KVM_CAP_EXIT_HYPERCALL)
            cap.args[0] = 1 << K.KVM_HC_MAP_GPA_RANGE
            fcntl.ioctl(self.vm, K.KVM_ENABLE_CAP, cap)
        self.vcpu = fcntl.ioctl(self.vm, K.KVM_CREATE_VCPU, 0)
        size = fcntl.ioctl(self.kvm, K.KVM_GET_VCPU_MMAP_SIZE, 0)
        self.run_map = mmap.mmap(self.vcpu, size)
        self.console = bytearray()
        self.conversions = []

    def convert(self, gpa, size, private):
        attrs = K.kvm_memory_attributes(
            address=gpa, size=size, attributes=K.KVM_MEMORY_ATTRIBUTE_PRIVATE if private else 0)
        fcntl.ioctl(self.vm, K.KVM_SET_MEMORY_ATTRIBUTES, attrs)
        if not private:  # discard the private copy
            if libc.fallocate(self.gmem, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE,
                              gpa - self.ram_gpa, size) != 0:
                e = ctypes.get_errno()
                raise OSError(e, os.strerror(e))
        self.conversions.append((gpa, size, private))

    def run(self, max_exits=1000):
        for _ in range(max_exits):
            try:
                fcntl.ioctl(self.vcpu, K.KVM_RUN, 0)
            except OSError as e:
                run = K.kvm_run.from_buffer_copy(self.run_map[:RUN_SIZE])
                if e.errno == errno.EFAULT and run.exit_reason == K.KVM_EXIT_MEMORY_FAULT:
                    mf = run.memory_fault
                    self.convert(mf.gpa, mf.size,
                                 bool(mf.flags & K.KVM_MEMORY_EXIT_FLAG_PRIVATE))
                    continue
                raise
            run = K.kvm_run.from_buffer_copy(self.run_map[:RUN_SIZE])
            if run.exit_reason == K.KVM_EXIT_HLT:
                return
            if run.exit_reason == K.KVM_EXIT_HYPERCALL:
                gpa, npages, attrs = run.hypercall.args[0], run.hypercall.args[1], \
                    run.hypercall.args[2]
                self.convert(gpa, npages * PAGE, bool(attrs & K.KVM_MAP_GPA_RANGE_ENCRYPTED))
                self.run_map[OFF_HC_RET:OFF_HC_RET + 8] = bytes(8)
            elif run.exit_reason == K.KVM_EXIT_IO:
                io = run.io
                n = io.size * io.count
                self.console += self.run_map[io.data_offset:io.data_offset + n]
            else:
                raise RuntimeError(f"unhandled exit {run.exit_reason}")
        raise RuntimeError("the guest did not halt")

    def close(self):
        self.run_map.close()
        for fd in (self.vcpu, self.gmem, self.vm, self.kvm):
            os.close(fd)
        self.shared.close()
