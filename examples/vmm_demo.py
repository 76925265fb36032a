"""The VMM of ``kmock demo``: a guest that converts memory, a device that DMAs, one mistake.

A small VMM written against the syscall API (``kernel.open/ioctl/mmap``) with the real
ioctl numbers and structs of ``kmock.uapi``; it needs no /dev/kvm. It:

1. creates a confidential-capable VM (KVM_X86_SW_PROTECTED_VM on platform "none") with a
   64 MiB guest_memfd (MMAP | INIT_SHARED) bound to a memslot at 4 GiB, and maps the
   guest_memfd into the VMM (in-place conversion: profile gmem-attributes-v8);
2. opens /dev/iommu, binds a VFIO device, and maps the first 16 MiB of the guest_memfd
   into the device's IOAS with IOMMU_IOAS_MAP_FILE (accepted by the RFC of 2026-02,
   which takes no pin and registers no notifier: profile setting
   ``iommufd_gmem_policy="rfc-2026-02"``);
3. boots a scripted guest: it writes a message into shared memory, asks for 8 MiB at
   2 MiB to become private (KVM_HC_MAP_GPA_RANGE; the VMM converts with
   KVM_SET_MEMORY_ATTRIBUTES2 on the guest_memfd), touches a private page, halts;
4. lets the device DMA: the message (fine), then a page the guest made private. That
   is the thing that goes wrong: the VMM never removed the IOMMU mapping of memory the
   guest converted, so the device reaches private memory. kmock records the stale
   IOMMU entries at the conversion and the DMA itself as violations.

``run(out=print)`` returns ``(kernel, story)``; the caller dumps the kernel
(kmock.snapshot) and closes it. ``python3 examples/vmm_demo.py`` prints the story.
"""

import ctypes
import os

import kmock
from kmock.uapi import gmem as G
from kmock.uapi import iommufd as I
from kmock.uapi import kvm as K
from kmock.uapi import vfio as V
from kmock.testing.demo_vmm import Story, run_until_halt

PAGE = 4096
MiB = 1 << 20
GPA = 1 << 32
RAM = 64 * MiB
IOVA = 1 << 30
DMA_WINDOW = 16 * MiB
PROT_RW, MAP_SHARED = 3, 1


class DemoVmm:
    def __init__(self, kernel, vm_type=K.KVM_X86_SW_PROTECTED_VM):
        k = self.k = kernel
        self.kvm = k.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
        self.vm = k.ioctl(self.kvm, K.KVM_CREATE_VM, vm_type)
        mask = k.ioctl(self.vm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_EXIT_HYPERCALL)
        if mask & (1 << K.KVM_HC_MAP_GPA_RANGE):
            cap = K.kvm_enable_cap(cap=K.KVM_CAP_EXIT_HYPERCALL)
            cap.args[0] = 1 << K.KVM_HC_MAP_GPA_RANGE
            k.ioctl(self.vm, K.KVM_ENABLE_CAP, cap)
        self.gmem = k.ioctl(self.vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(
            size=RAM, flags=K.GUEST_MEMFD_FLAG_MMAP | K.GUEST_MEMFD_FLAG_INIT_SHARED))
        k.ioctl(self.vm, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
            slot=0, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=GPA, memory_size=RAM,
            guest_memfd=self.gmem, guest_memfd_offset=0))
        self.shared = k.mmap(self.gmem, DMA_WINDOW, PROT_RW, MAP_SHARED, 0)
        size = k.ioctl(self.kvm, K.KVM_GET_VCPU_MMAP_SIZE, 0)
        self.vcpu = k.ioctl(self.vm, K.KVM_CREATE_VCPU, 0)
        self.run_map = k.mmap(self.vcpu, size, PROT_RW, MAP_SHARED, 0)
        self.run = K.kvm_run.from_address(self.run_map.address)

    # --- the device ----------------------------------------------------------------------

    def attach_device(self):
        k = self.k
        self.iommufd = k.open("/dev/iommu", os.O_RDWR)
        self.device = k.add_vfio_device()  # a mock PCI device (kmock only)
        self.vfio = k.open(self.device.path, os.O_RDWR)
        k.ioctl(self.vfio, V.VFIO_DEVICE_BIND_IOMMUFD,
                V.vfio_device_bind_iommufd(argsz=24, iommufd=self.iommufd))
        alloc = I.iommu_ioas_alloc(size=ctypes.sizeof(I.iommu_ioas_alloc))
        k.ioctl(self.iommufd, I.IOMMU_IOAS_ALLOC, alloc)
        self.ioas = alloc.out_ioas_id
        k.ioctl(self.vfio, V.VFIO_DEVICE_ATTACH_IOMMUFD_PT,
                V.vfio_device_attach_iommufd_pt(argsz=16, pt_id=self.ioas))
        m = I.iommu_ioas_map_file(
            size=ctypes.sizeof(I.iommu_ioas_map_file),
            flags=I.IOMMU_IOAS_MAP_FIXED_IOVA | I.IOMMU_IOAS_MAP_READABLE
            | I.IOMMU_IOAS_MAP_WRITEABLE,
            ioas_id=self.ioas, fd=self.gmem, start=0, length=DMA_WINDOW, iova=IOVA)
        k.ioctl(self.iommufd, I.IOMMU_IOAS_MAP_FILE, m)

    # --- conversions and the run loop ------------------------------------------------------

    def convert(self, gpa, size, private):
        a = G.kvm_memory_attributes2(offset=gpa - GPA, size=size,
                                     attributes=K.KVM_MEMORY_ATTRIBUTE_PRIVATE if private
                                     else 0)
        self.k.ioctl(self.gmem, G.KVM_SET_MEMORY_ATTRIBUTES2, a)

    def run_until_halt(self, say):
        run_until_halt(self.k, self.vcpu, self.run, self.convert, say)

def run(out=print, platform="none", trace=None):
    """Run the demo; returns (kernel, story lines). The caller closes the kernel."""
    say = Story(out)
    settings = {"iommufd_gmem_policy": "rfc-2026-02"}
    if platform != "none":
        settings["platform"] = platform
    kernel = kmock.Kernel("gmem-attributes-v8", trace=trace, **settings)
    vmm = DemoVmm(kernel)
    say(f"VMM: VM of type KVM_X86_SW_PROTECTED_VM, {RAM >> 20} MiB guest_memfd at gpa "
        f"{GPA:#x}, vCPU 0")
    vmm.attach_device()
    say(f"VMM: VFIO device {vmm.device.path} bound to /dev/iommu; IOAS {vmm.ioas} maps the "
        f"first {DMA_WINDOW >> 20} MiB of guest memory at iova {IOVA:#x} (MAP_FILE)")
    guest = kernel.vm(vmm.vm).vcpus[0].guest  # the scripted guest (kmock only)
    guest.write(GPA + 0x1000, b"hello device", private=False)
    guest.map_gpa_range(GPA + 2 * MiB, (8 * MiB) // PAGE, private=True)
    guest.write(GPA + 3 * MiB, b"secret", private=True)
    guest.hlt()
    say("guest: writes a message in shared memory, converts 8 MiB at +2 MiB to private, "
        "writes a secret there, halts")
    vmm.run_until_halt(say)
    data = vmm.device.dma_read(IOVA + 0x1000, 12)
    say(f"device: DMA read at iova {IOVA + 0x1000:#x}: {data!r}")
    say(f"device: DMA read at iova {IOVA + 3 * MiB:#x} (a page the guest made private)")
    try:
        data = vmm.device.dma_read(IOVA + 3 * MiB, 6)
        say(f"  the device read {data!r}: the IOMMU still maps private memory")
    except kmock.DmaFault as e:
        say(f"  DMA fault: {e}")
    say.violations(kernel)
    return kernel, say.lines


if __name__ == "__main__":
    k, _ = run()
    k.close_all()
