"""A small VMM run loop over the KVM UAPI: how a VMM is meant to use kmock.

Everything goes through the syscall API (``kernel.open/ioctl/mmap/fallocate``), with
the real ioctl numbers and ctypes structs of ``kmock.uapi.kvm``; exits are read only
through the vCPU's kvm_run mapped with ``kernel.mmap(vcpu_fd, ...)``, as a C VMM
reads ``struct kvm_run``. ``kernel`` may be a ``kmock.Kernel`` or anything with the
same syscall API (``kmock.HostKernel`` for the real /dev/kvm).

The loop handles, as QEMU does:

* ``KVM_EXIT_MEMORY_FAULT`` (KVM_RUN fails with EFAULT): convert the page to the kind
  the guest accessed it as (``kvm_convert_memory``);
* ``KVM_EXIT_HYPERCALL`` with ``KVM_HC_MAP_GPA_RANGE``: convert the range to private if
  ``KVM_MAP_GPA_RANGE_ENCRYPTED`` is set, else to shared, then ``hypercall.ret = 0``
  (QEMU stops the vCPU when a conversion fails; here the guest gets ``-KVM_EINVAL``);
* ``KVM_EXIT_IO`` / ``KVM_EXIT_MMIO``: handed to the caller's ``on_io`` / ``on_mmio``;
* ``KVM_EXIT_HLT``: the loop ends.

A conversion sets the VM's memory attributes, then discards the copy of the other
kind, as QEMU's ``ram_block_discard_range`` / ``ram_block_discard_guest_memfd_range``:
to private, ``madvise(MADV_DONTNEED)`` on the (private anonymous) shared memory; to
shared, ``fallocate(PUNCH_HOLE)`` on the guest_memfd. So data does not survive a
conversion in either direction.

Run it: ``python3 examples/vmm_loop.py`` boots a tiny scripted guest on a mock kernel.
"""

import ctypes
import errno
import os

from kmock.uapi import kvm as K

PAGE_SIZE = 4096
PROT_READ, PROT_WRITE = 1, 2
MAP_SHARED, MAP_PRIVATE, MAP_ANONYMOUS = 0x01, 0x02, 0x20
MADV_DONTNEED = 4
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
U64 = (1 << 64) - 1

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def _check(r):
    if r == -1 or r is None or r == ctypes.c_void_p(-1).value:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


class RamRegion:
    """Guest RAM: one memslot, private anonymous memory, optionally a guest_memfd."""

    def __init__(self, slot, gpa, size, hva, gmem_fd=None, gmem_offset=0):
        self.slot, self.gpa, self.size, self.hva = slot, gpa, size, hva
        self.gmem_fd, self.gmem_offset = gmem_fd, gmem_offset

    def contains(self, gpa):
        return self.gpa <= gpa < self.gpa + self.size

    def host_view(self, gpa, n):
        """The bytes the VMM sees at ``gpa`` (its shared memory)."""
        return ctypes.string_at(self.hva + gpa - self.gpa, n)


class VcpuHandle:
    def __init__(self, kernel, fd, mmap_size):
        self.fd = fd
        self.mapping = kernel.mmap(fd, mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, 0)
        #: struct kvm_run, over the VMM's own mapping of the vCPU fd
        self.run = K.kvm_run.from_address(self.mapping.address)
        self.base = self.mapping.address


class Vmm:
    def __init__(self, kernel, vm_type=K.KVM_X86_SW_PROTECTED_VM):
        self.k = kernel
        self.kvm = kernel.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
        self.vm_fd = kernel.ioctl(self.kvm, K.KVM_CREATE_VM, vm_type)
        self.mmap_size = kernel.ioctl(self.kvm, K.KVM_GET_VCPU_MMAP_SIZE, 0)
        self.regions = []
        self.vcpus = []
        self.conversions = []  # (gpa, size, to_private), for the curious

    # --- set-up ------------------------------------------------------------------------------

    def has_private_memory(self):
        return bool(self.k.ioctl(self.vm_fd, K.KVM_CHECK_EXTENSION, K.KVM_CAP_MEMORY_ATTRIBUTES)
                    & K.KVM_MEMORY_ATTRIBUTE_PRIVATE)

    def enable_map_gpa_range_exit(self):
        """KVM_ENABLE_CAP(KVM_CAP_EXIT_HYPERCALL) if the kernel offers MAP_GPA_RANGE exits."""
        mask = self.k.ioctl(self.vm_fd, K.KVM_CHECK_EXTENSION, K.KVM_CAP_EXIT_HYPERCALL)
        if not mask & (1 << K.KVM_HC_MAP_GPA_RANGE):
            return False
        cap = K.kvm_enable_cap(cap=K.KVM_CAP_EXIT_HYPERCALL)
        cap.args[0] = 1 << K.KVM_HC_MAP_GPA_RANGE
        self.k.ioctl(self.vm_fd, K.KVM_ENABLE_CAP, cap)
        return True

    def add_ram(self, slot, gpa, size, private=True):
        """A memslot of fresh RAM at ``gpa``; with ``private``, backed by a guest_memfd too."""
        hva = _check(_libc.mmap(None, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                                -1, 0))
        region = K.kvm_userspace_memory_region2(slot=slot, guest_phys_addr=gpa,
                                                memory_size=size, userspace_addr=hva)
        gmem = None
        if private:
            gmem = self.k.ioctl(self.vm_fd, K.KVM_CREATE_GUEST_MEMFD,
                                K.kvm_create_guest_memfd(size=size, flags=0))
            region.flags = K.KVM_MEM_GUEST_MEMFD
            region.guest_memfd = gmem
        self.k.ioctl(self.vm_fd, K.KVM_SET_USER_MEMORY_REGION2, region)
        r = RamRegion(slot, gpa, size, hva, gmem)
        self.regions.append(r)
        return r

    def create_vcpu(self, vcpu_id=0):
        fd = self.k.ioctl(self.vm_fd, K.KVM_CREATE_VCPU, vcpu_id)
        v = VcpuHandle(self.k, fd, self.mmap_size)
        self.vcpus.append(v)
        return v

    def region_of(self, gpa):
        for r in self.regions:
            if r.contains(gpa):
                return r
        return None

    # --- conversions (QEMU kvm_convert_memory) -------------------------------------------------

    def convert(self, gpa, size, to_private):
        """Make [gpa, gpa + size) private or shared; returns 0 or a negative errno."""
        end = gpa + size
        if gpa % PAGE_SIZE or size % PAGE_SIZE or size == 0:
            return -errno.EINVAL
        pos = gpa
        while pos < end:  # every byte must be guest_memfd-backed RAM
            r = self.region_of(pos)
            if r is None or r.gmem_fd is None:
                return -errno.EINVAL
            pos = r.gpa + r.size
        attrs = K.kvm_memory_attributes(address=gpa, size=size,
                                        attributes=K.KVM_MEMORY_ATTRIBUTE_PRIVATE if to_private
                                        else 0)
        try:
            self.k.ioctl(self.vm_fd, K.KVM_SET_MEMORY_ATTRIBUTES, attrs)
        except OSError as e:
            return -e.errno
        pos = gpa
        while pos < end:  # discard the other kind's copy, region by region
            r = self.region_of(pos)
            n = min(end, r.gpa + r.size) - pos
            off = pos - r.gpa
            if to_private:
                _check(_libc.madvise(r.hva + off, n, MADV_DONTNEED))
            else:
                self.k.fallocate(r.gmem_fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE,
                                 r.gmem_offset + off, n)
            pos += n
        self.conversions.append((gpa, size, to_private))
        return 0


def run_until_halt(vmm, vcpu, on_io=None, on_mmio=None, max_exits=1_000_000):
    """KVM_RUN ``vcpu`` until KVM_EXIT_HLT; returns the exit reasons seen, in order.

    ``on_io(port, is_out, data: bytes) -> bytes | None`` answers KVM_EXIT_IO (the bytes
    for an IN); ``on_mmio(gpa, is_write, data: bytes) -> bytes | None`` answers MMIO reads.
    Without a handler, OUTs and MMIO writes are dropped and INs and MMIO reads get 0xff.
    """
    k = vmm.k
    run = vcpu.run
    exits = []
    for _ in range(max_exits):
        try:
            k.ioctl(vcpu.fd, K.KVM_RUN, 0)
        except OSError as e:
            if e.errno == errno.EINTR:
                continue
            if e.errno == errno.EFAULT and run.exit_reason == K.KVM_EXIT_MEMORY_FAULT:
                mf = run.memory_fault
                exits.append(K.KVM_EXIT_MEMORY_FAULT)
                to_private = bool(mf.flags & K.KVM_MEMORY_EXIT_FLAG_PRIVATE)
                if vmm.convert(mf.gpa, mf.size, to_private) != 0:
                    raise RuntimeError(f"cannot convert gpa {mf.gpa:#x} for the guest") from e
                continue
            raise
        reason = run.exit_reason
        exits.append(reason)
        if reason == K.KVM_EXIT_HLT:
            return exits
        if reason == K.KVM_EXIT_HYPERCALL:
            hc = run.hypercall
            if hc.nr != K.KVM_HC_MAP_GPA_RANGE:
                raise RuntimeError(f"unexpected hypercall {hc.nr}")
            gpa, npages, attrs = hc.args[0], hc.args[1], hc.args[2]
            r = vmm.convert(gpa, npages * PAGE_SIZE, bool(attrs & K.KVM_MAP_GPA_RANGE_ENCRYPTED))
            hc.ret = 0 if r == 0 else -K.KVM_EINVAL & U64
        elif reason == K.KVM_EXIT_IO:
            io = run.io
            n = io.size * io.count
            addr = vcpu.base + io.data_offset
            is_out = io.direction == K.KVM_EXIT_IO_OUT
            answer = on_io(io.port, is_out, ctypes.string_at(addr, n)) if on_io else None
            if not is_out:
                data = bytes(answer) if answer is not None else b"\xff" * n
                ctypes.memmove(addr, data, n)
        elif reason == K.KVM_EXIT_MMIO:
            m = run.mmio
            data = bytes(m.data[:m.len])
            answer = on_mmio(m.phys_addr, bool(m.is_write), data) if on_mmio else None
            if not m.is_write:
                data = bytes(answer) if answer is not None else b"\xff" * m.len
                ctypes.memmove(ctypes.addressof(m.data), data, m.len)
        else:
            raise RuntimeError(f"unhandled exit reason {reason}")
    raise RuntimeError("the guest did not halt")


def demo():
    """Boot a scripted guest on a mock kernel: it converts memory and reports over port 0xE9."""
    import kmock

    with kmock.Kernel(profile="linux-6.18") as kernel:
        vmm = Vmm(kernel)
        vmm.enable_map_gpa_range_exit()
        ram = vmm.add_ram(0, 1 << 32, 2 << 20)
        vcpu = vmm.create_vcpu(0)
        guest = kernel.vm(vmm.vm_fd).vcpus[0].guest  # what the "guest" runs (kmock only)
        guest.write(1 << 32, b"secret", private=True)  # implicit conversion via memory fault
        guest.map_gpa_range((1 << 32) + PAGE_SIZE, 511, private=True)
        r = guest.read(1 << 32, 6)
        guest.outb(0xE9, ord("!"))
        guest.hlt()
        out = []
        exits = run_until_halt(vmm, vcpu, on_io=lambda port, is_out, data: out.append(data))
        print("exits:", exits)
        print("guest read back:", r.result, "host sees:", ram.host_view(1 << 32, 6))
        print("console:", b"".join(out))


if __name__ == "__main__":
    demo()
