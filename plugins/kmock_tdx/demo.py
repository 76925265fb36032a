"""``kmock demo --platform tdx``: a small VMM boots a TD that converts memory, shares a
buffer with a device, and has one thing go wrong the TDX way.

The VMM (kmock_tdx.scenarios.TdVmm, syscalls only) launches a TD as intel-tdx.rst orders
it: INIT_VM, INIT_VCPU, a guest_memfd memslot made private, the firmware ADDed with
INIT_MEM_REGION (TDH.MEM.PAGE.ADD + TDH.MR.EXTEND), FINALIZE_VM. A VFIO device is bound
to /dev/iommu and its IOAS maps the TD's shared memory (IOMMU_IOAS_MAP of the memslot's
userspace memory). The guest accepts a private page and keeps a secret there, asks with
MapGPA for two pages to become shared (the VMM converts with KVM_SET_MEMORY_ATTRIBUTES
and discards the private copy with fallocate(PUNCH_HOLE), as QEMU does) and writes a
message there that the device reads by DMA.

What goes wrong: the VMM then punches a hole in the guest_memfd over a page the TD had
accepted (a balloon driver bug): KVM zaps it (TDH.MEM.RANGE.BLOCK, TRACK, PAGE.REMOVE),
the TD's next access to its secret is a pending EPT violation on an unaccepted page, KVM
calls kvm_vm_dead() and KVM_RUN fails with EIO: the TD is killed, and kmock says which
host call removed the page.

``run(out, platform, trace) -> (kernel, story)`` as examples/vmm_demo.py's run; the
caller dumps the kernel (the S-EPT table is in the dump) and closes it.
"""

import ctypes
import errno
import os

from kmock.uapi import iommufd as I
from kmock.uapi import kvm as K
from kmock.uapi import vfio as V
from kmock.testing.demo_vmm import Story, run_until_halt

from .scenarios import GPA, NPAGES, P, TdVmm

IOVA = 1 << 30
SHARED_BIT = 1 << 47  # GPAW 48
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 0x01, 0x02


def _attach_device(k, v, hva):
    ictx = v.fd(k.open("/dev/iommu", os.O_RDWR))
    dev = k.add_vfio_device()  # a mock PCI device (kmock only)
    vfd = v.fd(k.open(dev.path, os.O_RDWR))
    k.ioctl(vfd, V.VFIO_DEVICE_BIND_IOMMUFD, V.vfio_device_bind_iommufd(argsz=24, iommufd=ictx))
    alloc = I.iommu_ioas_alloc(size=ctypes.sizeof(I.iommu_ioas_alloc))
    k.ioctl(ictx, I.IOMMU_IOAS_ALLOC, alloc)
    k.ioctl(vfd, V.VFIO_DEVICE_ATTACH_IOMMUFD_PT,
            V.vfio_device_attach_iommufd_pt(argsz=16, pt_id=alloc.out_ioas_id))
    k.ioctl(ictx, I.IOMMU_IOAS_MAP, I.iommu_ioas_map(
        size=ctypes.sizeof(I.iommu_ioas_map),
        flags=I.IOMMU_IOAS_MAP_FIXED_IOVA | I.IOMMU_IOAS_MAP_READABLE | I.IOMMU_IOAS_MAP_WRITEABLE,
        ioas_id=alloc.out_ioas_id, user_va=hva, length=NPAGES * P, iova=IOVA))
    return dev, alloc.out_ioas_id


def _convert(v, gpa, size, private):
    """kvm_convert_memory as QEMU does: the attributes, then discard the other copy."""
    v.attrs(gpa, size, private)
    if not private:
        v.k.fallocate(v.gmem, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, gpa - GPA, size)


def _run_until_halt(v, say):
    def convert(gpa, size, private):
        say(f"    KVM_SET_MEMORY_ATTRIBUTES, then {'madvise' if private else 'fallocate(PUNCH_HOLE)'}")
        _convert(v, gpa, size, private)

    run_until_halt(v.k, v.vcpu, v.run_struct, convert, say, hypercall="MapGPA")

def run(out=print, platform="tdx", trace=None):
    """Run the demo; returns (kernel, story lines). The caller closes the kernel."""
    import kmock
    import kmock_tdx

    say = Story(out)

    kernel = kmock.Kernel("linux-6.18-tdx", plugins=[kmock_tdx], trace=trace)
    k = kernel
    v = TdVmm(k)
    v.launch()
    say(f"VMM: TD launched (KVM_X86_TDX_VM): INIT_VM, INIT_VCPU, a {NPAGES * P >> 10} KiB "
        f"guest_memfd at gpa {GPA:#x} made private, 2 firmware pages ADDed and measured, "
        f"FINALIZE_VM")
    cap = K.kvm_enable_cap(cap=K.KVM_CAP_EXIT_HYPERCALL)
    cap.args[0] = 1 << K.KVM_HC_MAP_GPA_RANGE
    k.ioctl(v.vm, K.KVM_ENABLE_CAP, cap)
    size = k.ioctl(v.kvm, K.KVM_GET_VCPU_MMAP_SIZE, 0)
    m = k.mmap(v.vcpu, size, 3, 1, 0)
    v.maps = [m]
    v.run_struct = K.kvm_run.from_address(m.address)
    shared_mem = v.mem[0]
    dev, ioas = _attach_device(k, v, ctypes.addressof(ctypes.c_char.from_buffer(shared_mem)))
    say(f"VMM: VFIO device {dev.path} bound to /dev/iommu; IOAS {ioas} maps the TD's shared "
        f"memory at iova {IOVA:#x} (IOMMU_IOAS_MAP)")

    g = v.guest
    secret = GPA + 6 * P
    g.tdx.accept(secret)
    g.write(secret, b"td secret", private=True)
    g.tdx.map_gpa((GPA + 8 * P) | SHARED_BIT, 2 * P)
    g.write((GPA + 8 * P) | SHARED_BIT, b"hello device")
    g.hlt()  # a TD halts inside KVM_RUN (no KVM_EXIT_HLT) ...
    g.stop()  # ... until the VMM signals its vCPU thread: EINTR, KVM_EXIT_INTR
    say("guest: accepts page 6 and keeps a secret there, MapGPA pages 8-9 to shared, writes "
        "a message for the device, halts (inside KVM_RUN, until the VMM's signal)")
    _run_until_halt(v, say)
    data = dev.dma_read(IOVA + 8 * P, 12)
    say(f"device: DMA read at iova {IOVA + 8 * P:#x}: {data!r}")

    say("VMM: a balloon bug: fallocate(PUNCH_HOLE) on the guest_memfd over page 6, which "
        "the TD accepted (KVM: TDH.MEM.RANGE.BLOCK, TDH.MEM.TRACK, TDH.MEM.PAGE.REMOVE)")
    k.fallocate(v.gmem, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, 6 * P, P)
    g.read(secret, 9)
    g.hlt()
    g.stop()
    say("guest: reads its secret")
    try:
        _run_until_halt(v, say)
        say("  the guest read it (unexpected)")
    except OSError as e:
        if e.errno != errno.EIO:
            raise
        say("  KVM_RUN: EIO, the TD is dead (every later VM/vCPU ioctl fails with EIO)")
    say.violations(kernel)
    v.maps = []
    return kernel, say.lines
