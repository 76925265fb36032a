"""A small TDX VMM over the KVM UAPI: the launch of intel-tdx.rst, then a run loop.

Everything goes through the syscall API (``kernel.open/ioctl/mmap/fallocate``) with the
real ioctl numbers and structs of ``kmock.uapi.kvm`` / ``kmock.uapi.tdx``; exits are read
from the vCPU's kvm_run mapped with ``kernel.mmap(vcpu_fd, ...)``.

Launch (Documentation/virt/kvm/x86/intel-tdx.rst): KVM_CREATE_VM(KVM_X86_TDX_VM),
KVM_TDX_CAPABILITIES, KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP) and the MapGPA exit,
KVM_TDX_INIT_VM (GPAW 48 in CPUID 0x80000008), per vCPU KVM_CREATE_VCPU, KVM_TDX_INIT_VCPU,
KVM_TDX_GET_CPUID + KVM_SET_CPUID2, a memslot with a guest_memfd made PRIVATE,
KVM_TDX_INIT_MEM_REGION of the firmware image (measured), KVM_TDX_FINALIZE_VM.

The loop handles, as QEMU does (target/i386/kvm/kvm.c, target/i386/kvm/tdx.c):

* ``KVM_EXIT_HYPERCALL`` (KVM_HC_MAP_GPA_RANGE, one exit per 2 MB chunk of the guest's
  MapGPA): ``kvm_convert_memory`` of [args[0], args[0] + args[1] * 4K) to private if
  ``KVM_MAP_GPA_RANGE_ENCRYPTED`` else shared; ``hypercall.ret`` = 0, or the error (the
  guest then gets TDVMCALL_STATUS_INVALID_OPERAND with R11 = that chunk);
* ``KVM_EXIT_MEMORY_FAULT`` (KVM_RUN fails with EFAULT): an implicit conversion;
* ``KVM_EXIT_TDX`` GetQuote: the quote is written into the shared buffer and
  ``get_quote.ret`` = SUCCESS (QEMU hands the request to the quote generation service);
* ``KVM_EXIT_SYSTEM_EVENT`` of type TDX_FATAL: the TD reported a fatal error; the loop
  stops (QEMU pauses the VM);
* ``KVM_EXIT_IO``: handed to ``on_io``;
* KVM_RUN failing with EINTR (KVM_EXIT_INTR): a signal for the vCPU's thread ends the
  loop, as in QEMU's kvm_cpu_exec (a TD's HLT halts inside KVM_RUN: no KVM_EXIT_HLT);
* KVM_RUN failing with EIO: the TD is dead (kmock says why in ``kernel.violations``).

A conversion sets the memory attributes, then discards the other kind's copy as QEMU's
``ram_block_discard_range`` / ``ram_block_discard_guest_memfd_range`` do: to private,
``madvise(MADV_DONTNEED)`` on the shared memory; to shared, ``fallocate(PUNCH_HOLE)`` on
the guest_memfd.

Run it: ``python3 examples/vmm_loop_tdx.py`` launches a scripted TD on a mock kernel.
"""

import ctypes
import errno
import os

from kmock.uapi import kvm as K
from kmock.uapi import tdx as T

PAGE_SIZE = 4096
PROT_READ, PROT_WRITE = 1, 2
MAP_SHARED, MAP_PRIVATE, MAP_ANONYMOUS = 0x01, 0x02, 0x20
MADV_DONTNEED = 4
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
GPAW = 48
SHARED_BIT = 1 << (GPAW - 1)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def _anon(size):
    r = _libc.mmap(None, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    if r is None or r == ctypes.c_void_p(-1).value:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


class TdDied(RuntimeError):
    """KVM_RUN returned EIO: the TD is dead (kvm_vm_dead)."""


class TdFatal(RuntimeError):
    """The TD reported a fatal error (TDG.VP.VMCALL<ReportFatalError>)."""

    def __init__(self, data):
        super().__init__(f"TD fatal error, R12 = {data[12]:#x}")
        self.data = data


class TdxVmm:
    def __init__(self, kernel, ram_gpa, ram_size, vcpus=1):
        k = self.k = kernel
        self.ram_gpa, self.ram_size = ram_gpa, ram_size
        self.kvm = k.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
        types = k.ioctl(self.kvm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_VM_TYPES)
        if not types & (1 << K.KVM_X86_TDX_VM):
            raise RuntimeError("this kernel offers no TDX VM type")
        self.vm = k.ioctl(self.kvm, K.KVM_CREATE_VM, K.KVM_X86_TDX_VM)
        self.mmap_size = k.ioctl(self.kvm, K.KVM_GET_VCPU_MMAP_SIZE, 0)
        self.conversions = []
        self.quotes = []
        self._launch(vcpus)

    def _tdx(self, fd, cmd_id, data=0, flags=0):
        cmd = T.kvm_tdx_cmd(id=cmd_id, flags=flags, data=data)
        self.k.ioctl(fd, K.KVM_MEMORY_ENCRYPT_OP, cmd)
        return cmd

    def _launch(self, nvcpus):
        k = self.k
        caps = T.with_cpuid_entries(T.kvm_tdx_capabilities, 64)()
        caps.hdr.cpuid.nent = 64
        self._tdx(self.vm, T.KVM_TDX_CAPABILITIES, ctypes.addressof(caps))
        self.caps = caps
        cap = K.kvm_enable_cap(cap=T.KVM_CAP_SPLIT_IRQCHIP)
        cap.args[0] = 24
        k.ioctl(self.vm, K.KVM_ENABLE_CAP, cap)
        cap = K.kvm_enable_cap(cap=K.KVM_CAP_EXIT_HYPERCALL)
        cap.args[0] = 1 << K.KVM_HC_MAP_GPA_RANGE
        k.ioctl(self.vm, K.KVM_ENABLE_CAP, cap)
        init = T.with_cpuid_entries(T.kvm_tdx_init_vm, 1)()
        init.hdr.attributes = T.TDX_TD_ATTR_SEPT_VE_DISABLE & caps.hdr.supported_attrs
        init.hdr.xfam = 0x3 & caps.hdr.supported_xfam
        init.hdr.cpuid.nent = 1
        init.entries[0] = K.kvm_cpuid_entry2(function=0x80000008, eax=GPAW << 16 | 0x30)
        self._tdx(self.vm, T.KVM_TDX_INIT_VM, ctypes.addressof(init))
        self.vcpus = []
        for i in range(nvcpus):
            fd = k.ioctl(self.vm, K.KVM_CREATE_VCPU, i)
            cpuid = T.with_cpuid_entries(K.kvm_cpuid2, 64)()
            cpuid.hdr.nent = 64
            self._tdx(fd, T.KVM_TDX_GET_CPUID, ctypes.addressof(cpuid))
            k.ioctl(fd, T.KVM_SET_CPUID2, bytes(cpuid)[:8 + cpuid.hdr.nent * 40])
            self._tdx(fd, T.KVM_TDX_INIT_VCPU, 0)  # initial RCX: the TD HOB's gpa
            m = k.mmap(fd, self.mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, 0)
            self.vcpus.append((fd, m, K.kvm_run.from_address(m.address)))
        self.hva = _anon(self.ram_size)
        self.gmem = k.ioctl(self.vm, K.KVM_CREATE_GUEST_MEMFD,
                            K.kvm_create_guest_memfd(size=self.ram_size))
        k.ioctl(self.vm, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
            slot=0, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=self.ram_gpa,
            memory_size=self.ram_size, userspace_addr=self.hva, guest_memfd=self.gmem))
        k.ioctl(self.vm, K.KVM_SET_MEMORY_ATTRIBUTES, K.kvm_memory_attributes(
            address=self.ram_gpa, size=self.ram_size, attributes=K.KVM_MEMORY_ATTRIBUTE_PRIVATE))

    def load_firmware(self, image, gpa):
        """KVM_TDX_INIT_MEM_REGION (measured) of ``image`` at ``gpa``, restarted on EINTR."""
        n = -(-len(image) // PAGE_SIZE)
        buf = ctypes.create_string_buffer(bytes(image).ljust(n * PAGE_SIZE + PAGE_SIZE, b"\0"))
        src = (ctypes.addressof(buf) + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
        ctypes.memmove(src, bytes(image), len(image))
        region = T.kvm_tdx_init_mem_region(source_addr=src, gpa=gpa, nr_pages=n)
        while region.nr_pages:
            try:
                self._tdx(self.vcpus[0][0], T.KVM_TDX_INIT_MEM_REGION, ctypes.addressof(region),
                          T.KVM_TDX_MEASURE_MEMORY_REGION)
            except OSError as e:
                if e.errno != errno.EINTR:
                    raise
        del buf

    def finalize(self):
        self._tdx(self.vm, T.KVM_TDX_FINALIZE_VM)

    def host_view(self, gpa, n):
        return ctypes.string_at(self.hva + gpa - self.ram_gpa, n)

    # --- kvm_convert_memory ----------------------------------------------------------------

    def convert(self, gpa, size, to_private):
        """0 or a negative errno."""
        if gpa < self.ram_gpa or gpa + size > self.ram_gpa + self.ram_size:
            return -errno.EINVAL
        attrs = K.kvm_memory_attributes(address=gpa, size=size,
                                        attributes=K.KVM_MEMORY_ATTRIBUTE_PRIVATE if to_private
                                        else 0)
        try:
            self.k.ioctl(self.vm, K.KVM_SET_MEMORY_ATTRIBUTES, attrs)
        except OSError as e:
            return -e.errno
        off = gpa - self.ram_gpa
        if to_private:
            _libc.madvise(self.hva + off, size, MADV_DONTNEED)
        else:
            self.k.fallocate(self.gmem, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, off, size)
        self.conversions.append((gpa, size, to_private))
        return 0

    # --- the run loop ------------------------------------------------------------------------

    def run(self, index=0, on_io=None, max_exits=100_000):
        """KVM_RUN vCPU ``index`` until a signal for this thread makes it fail with EINTR
        (the last exit reason seen is then KVM_EXIT_INTR); returns the exit reasons seen.
        A TD never exits with KVM_EXIT_HLT: its vCPU halts inside KVM_RUN (TDX needs the
        split irqchip, an in-kernel LAPIC), so a VMM ends its run loop as QEMU's
        kvm_cpu_exec does, on -EINTR. Raises TdDied (KVM_RUN EIO) or TdFatal (the TD's
        ReportFatalError)."""
        fd, m, run = self.vcpus[index]
        k = self.k
        exits = []
        for _ in range(max_exits):
            try:
                k.ioctl(fd, K.KVM_RUN, 0)
            except OSError as e:
                if e.errno == errno.EINTR:
                    exits.append(K.KVM_EXIT_INTR)
                    return exits
                if e.errno == errno.EIO:
                    raise TdDied("KVM_RUN: EIO, the TD is dead") from e
                if e.errno == errno.EFAULT and run.exit_reason == K.KVM_EXIT_MEMORY_FAULT:
                    mf = run.memory_fault
                    exits.append(K.KVM_EXIT_MEMORY_FAULT)
                    if self.convert(mf.gpa, mf.size,
                                    bool(mf.flags & K.KVM_MEMORY_EXIT_FLAG_PRIVATE)):
                        raise RuntimeError(f"cannot convert gpa {mf.gpa:#x}") from e
                    continue
                raise
            reason = run.exit_reason
            exits.append(reason)
            if reason == K.KVM_EXIT_HYPERCALL and run.hypercall.nr == K.KVM_HC_MAP_GPA_RANGE:
                hc = run.hypercall
                hc.ret = self.convert(hc.args[0], hc.args[1] * PAGE_SIZE,
                                      bool(hc.args[2] & K.KVM_MAP_GPA_RANGE_ENCRYPTED)) & ((1 << 64) - 1)
            elif reason == K.KVM_EXIT_TDX:
                x = T.kvm_run_tdx.from_address(m.address + K.kvm_run.exit.offset)
                if x.nr == T.TDVMCALL_GET_QUOTE:
                    gpa, size = x.get_quote.gpa, x.get_quote.size
                    quote = b"QUOTE:" + bytes(8)
                    self.quotes.append((gpa, size))
                    if gpa >= self.ram_gpa and gpa + len(quote) <= self.ram_gpa + self.ram_size:
                        ctypes.memmove(self.hva + gpa - self.ram_gpa, quote, len(quote))
                    x.get_quote.ret = T.TDVMCALL_STATUS_SUCCESS
                else:
                    x.unknown.ret = T.TDVMCALL_STATUS_SUBFUNC_UNSUPPORTED
            elif reason == K.KVM_EXIT_SYSTEM_EVENT:
                se = run.system_event
                if se.type == T.KVM_SYSTEM_EVENT_TDX_FATAL:
                    raise TdFatal([se.data[i] for i in range(se.ndata)])
                raise RuntimeError(f"system event {se.type}")
            elif reason == K.KVM_EXIT_IO:
                io = run.io
                addr = m.address + io.data_offset
                data = ctypes.string_at(addr, io.size * io.count)
                answer = on_io(io.port, io.direction == K.KVM_EXIT_IO_OUT, data) if on_io else None
                if io.direction == K.KVM_EXIT_IO_IN:
                    ctypes.memmove(addr, bytes(answer or b"\xff" * len(data)), len(data))
            else:
                raise RuntimeError(f"unhandled exit reason {reason}")
        raise RuntimeError(f"the TD's vCPU ran {max_exits} exits without being stopped")


def demo():
    """Launch a scripted TD: it accepts memory, shares a buffer, asks for a quote."""
    import kmock
    import kmock_tdx

    ram = 1 << 32
    with kmock.Kernel("linux-6.18-tdx", plugins=[kmock_tdx]) as kernel:
        vmm = TdxVmm(kernel, ram, 4 << 20)
        vmm.load_firmware(b"TDVF" * 1024, ram)
        vmm.finalize()
        g = kernel.vm(vmm.vm).vcpus[0].guest  # what the "TD" runs (kmock only)
        fw = g.read(ram, 4)
        g.tdx.accept(ram + 0x10000)
        g.write(ram + 0x10000, b"td secret")
        g.tdx.map_gpa((ram + (2 << 20)) | SHARED_BIT, 2 << 20)
        g.write((ram + (2 << 20)) | SHARED_BIT, b"hello host")
        q = g.tdx.get_quote((ram + (2 << 20) + 0x1000) | SHARED_BIT, 0x1000)
        g.outb(0xE9, ord("!"))
        g.hlt()  # halts inside KVM_RUN (no KVM_EXIT_HLT for a TD) ...
        g.stop()  # ... until a signal for the VMM's vCPU thread (EINTR, KVM_EXIT_INTR)
        out = []
        exits = vmm.run(on_io=lambda port, is_out, data: out.append(data))
        print("exits:", exits)
        print("firmware:", fw.result, "quote status:", q.result)
        print("host sees:", vmm.host_view(ram + (2 << 20), 10), "console:", b"".join(out))


if __name__ == "__main__":
    demo()
