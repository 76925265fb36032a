"""Helpers of the TDX tests: build a TD through ioctls only, as intel-tdx.rst orders it."""

import ctypes
import errno
import mmap
import os

from kmock.uapi import kvm as K
from kmock.uapi import tdx as T

P = 4096
PRIVATE = K.KVM_MEMORY_ATTRIBUTE_PRIVATE
GPA = 1 << 32  # memslot base
NPAGES = 64
SHARED = 1 << 47  # GPAW 48


def cmd(id, data=0, flags=0, hw_error=0):
    return T.kvm_tdx_cmd(id=id, flags=flags, data=data, hw_error=hw_error)


def cpuid_entry(function, index=0, flags=0, eax=0, ebx=0, ecx=0, edx=0):
    return K.kvm_cpuid_entry2(function=function, index=index, flags=flags, eax=eax, ebx=ebx,
                              ecx=ecx, edx=edx)


def init_vm_arg(gpaw=48, attributes=T.TDX_TD_ATTR_SEPT_VE_DISABLE, xfam=0x3, entries=None):
    if entries is None:
        entries = [cpuid_entry(0x80000008, eax=(gpaw << 16) | 0x30)]
    buf = T.with_cpuid_entries(T.kvm_tdx_init_vm, len(entries))()
    buf.hdr.attributes = attributes
    buf.hdr.xfam = xfam
    buf.hdr.cpuid.nent = len(entries)
    for i, e in enumerate(entries):
        buf.entries[i] = e
    return buf


class Td:
    """A TD built step by step through Kernel syscalls; attributes hold the fds."""

    def __init__(self, k, npages=NPAGES, gpaw=48, gmem_flags=0, nvcpus=1):
        self.k = k
        self.npages = npages
        self.shared = 1 << (gpaw - 1)
        self.kvm = k.open("/dev/kvm", os.O_RDWR)
        self.vm = k.ioctl(self.kvm, K.KVM_CREATE_VM, K.KVM_X86_TDX_VM)
        self.gpaw = gpaw
        self.gmem_flags = gmem_flags
        self.nvcpus = nvcpus
        self.vcpus = []

    # each launch step, in intel-tdx.rst's order
    def capabilities(self, nent=16):
        caps = T.with_cpuid_entries(T.kvm_tdx_capabilities, nent)()
        caps.hdr.cpuid.nent = nent
        c = cmd(T.KVM_TDX_CAPABILITIES, ctypes.addressof(caps))
        self.k.ioctl(self.vm, K.KVM_MEMORY_ENCRYPT_OP, c)
        return caps

    def split_irqchip(self):
        cap = K.kvm_enable_cap(cap=T.KVM_CAP_SPLIT_IRQCHIP)
        cap.args[0] = 24
        self.k.ioctl(self.vm, K.KVM_ENABLE_CAP, cap)

    def enable_map_gpa_exit(self):
        cap = K.kvm_enable_cap(cap=K.KVM_CAP_EXIT_HYPERCALL)
        cap.args[0] = 1 << K.KVM_HC_MAP_GPA_RANGE
        self.k.ioctl(self.vm, K.KVM_ENABLE_CAP, cap)

    def init_vm(self, **kw):
        self.init_arg = init_vm_arg(self.gpaw, **kw)
        c = cmd(T.KVM_TDX_INIT_VM, ctypes.addressof(self.init_arg))
        self.k.ioctl(self.vm, K.KVM_MEMORY_ENCRYPT_OP, c)
        return c

    def create_vcpus(self):
        for i in range(self.nvcpus):
            fd = self.k.ioctl(self.vm, K.KVM_CREATE_VCPU, i)
            # QEMU's order: the CPUID (with x2APIC, which KVM_TDX_INIT_VCPU's
            # kvm_apic_set_base needs) before KVM_TDX_INIT_VCPU
            self.set_cpuid(fd)
            self.k.ioctl(fd, K.KVM_MEMORY_ENCRYPT_OP, cmd(T.KVM_TDX_INIT_VCPU, 0x1000))
            self.vcpus.append(fd)
        self.vcpu = self.vcpus[0]

    def get_cpuid(self, fd, nent=8):
        cp = T.with_cpuid_entries(K.kvm_cpuid2, nent)()
        cp.hdr.nent = nent
        self.k.ioctl(fd, K.KVM_MEMORY_ENCRYPT_OP, cmd(T.KVM_TDX_GET_CPUID, ctypes.addressof(cp)))
        return cp

    def set_cpuid(self, fd, x2apic=True):
        """KVM_SET_CPUID2 with KVM_TDX_GET_CPUID's table (``x2apic`` False: CPUID.1:ECX[21]
        cleared)."""
        cp = self.get_cpuid(fd)
        for i in range(cp.hdr.nent):
            e = cp.entries[i]
            if (e.function, e.index) == (1, 0) and not x2apic:
                e.ecx &= ~(1 << 21)
        self.k.ioctl(fd, T.KVM_SET_CPUID2, bytes(cp)[:8 + cp.hdr.nent * 40])

    def memslot(self):
        k = self.k
        self.gmem = k.ioctl(self.vm, K.KVM_CREATE_GUEST_MEMFD,
                            K.kvm_create_guest_memfd(size=self.npages * P, flags=self.gmem_flags))
        self.shared_mem = mmap.mmap(-1, self.npages * P)
        self.hva = ctypes.addressof(ctypes.c_char.from_buffer(self.shared_mem))
        k.ioctl(self.vm, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
            slot=1, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=GPA,
            memory_size=self.npages * P, userspace_addr=self.hva, guest_memfd=self.gmem))

    def set_private(self, gpa=GPA, size=None, private=True):
        size = self.npages * P if size is None else size
        self.k.ioctl(self.vm, K.KVM_SET_MEMORY_ATTRIBUTES, K.kvm_memory_attributes(
            address=gpa, size=size, attributes=PRIVATE if private else 0))

    def init_mem_region(self, gpa, source, nr_pages, flags=T.KVM_TDX_MEASURE_MEMORY_REGION,
                        vcpu=None):
        r = T.kvm_tdx_init_mem_region(source_addr=source, gpa=gpa, nr_pages=nr_pages)
        c = cmd(T.KVM_TDX_INIT_MEM_REGION, ctypes.addressof(r), flags)
        try:
            self.k.ioctl(self.vcpu if vcpu is None else vcpu, K.KVM_MEMORY_ENCRYPT_OP, c)
        finally:
            self.region = r
        return r

    def finalize(self):
        c = cmd(T.KVM_TDX_FINALIZE_VM)
        self.k.ioctl(self.vm, K.KVM_MEMORY_ENCRYPT_OP, c)
        return c

    def launch(self, image_pages=2, **init_vm):
        """The whole launch; pages [0, image_pages) of the slot hold the image; ``init_vm``:
        KVM_TDX_INIT_VM's arguments (init_vm_arg)."""
        self.capabilities()
        self.split_irqchip()
        self.enable_map_gpa_exit()
        self.init_vm(**init_vm)
        self.create_vcpus()
        self.memslot()
        self.set_private()
        self.src = mmap.mmap(-1, max(image_pages, 1) * P)
        self.src[:] = bytes(range(256)) * (len(self.src) // 256)
        src = ctypes.addressof(ctypes.c_char.from_buffer(self.src))
        if image_pages:
            self.init_mem_region(GPA, src, image_pages)
        self.finalize()
        return self

    @property
    def vmobj(self):
        return self.k.vm(self.vm)

    @property
    def td(self):
        return self.vmobj.arch

    def guest(self, i=0):
        return self.vmobj.vcpus[i].guest

    def run(self, i=0):
        """KVM_RUN; returns run.exit_reason. A TD's vCPU halts inside KVM_RUN (the split
        irqchip's in-kernel LAPIC: __kvm_emulate_halt, kvm_vcpu_block), so a guest ends
        its run with ``stop()`` (a signal: -EINTR, KVM_EXIT_INTR), returned here as
        KVM_EXIT_INTR. Any other failure is raised."""
        try:
            self.k.ioctl(self.vcpus[i], K.KVM_RUN, 0)
        except OSError as e:
            if e.errno != errno.EINTR or self.run_struct(i).exit_reason != K.KVM_EXIT_INTR:
                raise
        return self.run_struct(i).exit_reason

    def run_to_stop(self, i=0):
        """End the guest's script with ``stop()`` and KVM_RUN: the guest runs what is
        pending and KVM_RUN fails with EINTR; asserts it ended there (KVM_EXIT_INTR)."""
        self.guest(i).stop()
        r = self.run(i)
        assert r == K.KVM_EXIT_INTR, r
        return r

    def run_struct(self, i=0):
        return self.vmobj.vcpus[i].run

    def state(self, page):
        """S-EPT state name of slot page ``page``."""
        return self.td.sept.lookup((GPA >> 12) + page)[0].name


def err(fn, *a):
    """The errno ``fn(*a)`` fails with, or 0 when it succeeds."""
    try:
        fn(*a)
    except OSError as e:
        return e.errno
    return 0
