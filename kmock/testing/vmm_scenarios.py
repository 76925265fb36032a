"""VMM scenarios for the fail-nth sweep (kmock.testing.fail_nth), platform "none".

Each scenario is a small VMM run against a Kernel's syscall API that closes what it
opened even when a call fails (``try/finally``), as a VMM's error path should:

``launch``      VM, guest_memfd, memslot, vCPU and its kvm_run, a scripted guest that
                writes private memory (a memory-fault exit, the VMM converts) and halts
``conversion``  KVM_SET_MEMORY_ATTRIBUTES2 on the guest_memfd, to private and back,
                with a host mapping of the shared part
``map_file``    /dev/iommu, a VFIO device bound and attached, IOAS_ALLOC, MAP_FILE of
                the guest_memfd (policy rfc-2026-02), UNMAP
``dma``         map_file plus a device DMA read and write

Architecture plugins register their own (launch with their firmware calls) with
``kmock.testing.fail_nth.register("tdx", "launch", scenario, make_kernel)``.
"""

import ctypes
import errno
import os

from ..uapi import gmem as G
from ..uapi import iommufd as I
from ..uapi import kvm as K
from ..uapi import vfio as V
from .fail_nth import register

P = 4096
GPA = 1 << 32
SIZE = 64 * P
IOVA = 1 << 30


def make_kernel():
    import kmock

    return kmock.Kernel("gmem-attributes-v8", iommufd_gmem_policy="rfc-2026-02")


class _Vm:
    def __init__(self, k):
        self.k = k
        self.fds = []
        self.maps = []

    def fd(self, fd):
        self.fds.append(fd)
        return fd

    def boot(self):
        k = self.k
        self.kvm = self.fd(k.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC))
        self.vm = self.fd(k.ioctl(self.kvm, K.KVM_CREATE_VM, K.KVM_X86_SW_PROTECTED_VM))
        self.gmem = self.fd(k.ioctl(self.vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(
            size=SIZE, flags=K.GUEST_MEMFD_FLAG_MMAP | K.GUEST_MEMFD_FLAG_INIT_SHARED)))
        k.ioctl(self.vm, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
            slot=0, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=GPA, memory_size=SIZE,
            guest_memfd=self.gmem))

    def attrs(self, offset, size, private):
        a = G.kvm_memory_attributes2(offset=offset, size=size,
                                     attributes=K.KVM_MEMORY_ATTRIBUTE_PRIVATE if private else 0)
        self.k.ioctl(self.gmem, G.KVM_SET_MEMORY_ATTRIBUTES2, a)

    def close(self):
        for m in self.maps:
            m.close()
        for fd in reversed(self.fds):
            self.k.close(fd)


def launch(k):
    v = _Vm(k)
    try:
        v.boot()
        size = k.ioctl(v.kvm, K.KVM_GET_VCPU_MMAP_SIZE, 0)
        vcpu = v.fd(k.ioctl(v.vm, K.KVM_CREATE_VCPU, 0))
        v.maps.append(k.mmap(vcpu, size, 3, 1, 0))
        run = K.kvm_run.from_address(v.maps[-1].address)
        guest = k.vm(v.vm).vcpus[0].guest
        guest.write(GPA + 2 * P, b"private", private=True)
        guest.hlt()
        for _ in range(4):
            try:
                k.ioctl(vcpu, K.KVM_RUN, 0)
            except OSError as e:
                if e.errno == errno.EFAULT and run.exit_reason == K.KVM_EXIT_MEMORY_FAULT:
                    mf = run.memory_fault
                    v.attrs(mf.gpa - GPA, mf.size,
                            bool(mf.flags & K.KVM_MEMORY_EXIT_FLAG_PRIVATE))
                    continue
                raise
            if run.exit_reason == K.KVM_EXIT_HLT:
                break
    finally:
        v.close()


def conversion(k):
    v = _Vm(k)
    try:
        v.boot()
        v.maps.append(k.mmap(v.gmem, 4 * P, 3, 1, 0))
        v.maps[-1][0:5] = b"hello"
        k.fallocate(v.gmem, 1, 8 * P, 8 * P)  # FALLOC_FL_KEEP_SIZE
        v.attrs(8 * P, 8 * P, True)
        v.attrs(8 * P, 4 * P, False)
    finally:
        v.close()


def _device(k, v):
    ictx = v.fd(k.open("/dev/iommu", os.O_RDWR))
    dev = k.add_vfio_device()
    vfd = v.fd(k.open(dev.path, os.O_RDWR))
    k.ioctl(vfd, V.VFIO_DEVICE_BIND_IOMMUFD, V.vfio_device_bind_iommufd(argsz=24, iommufd=ictx))
    alloc = I.iommu_ioas_alloc(size=ctypes.sizeof(I.iommu_ioas_alloc))
    k.ioctl(ictx, I.IOMMU_IOAS_ALLOC, alloc)
    k.ioctl(vfd, V.VFIO_DEVICE_ATTACH_IOMMUFD_PT,
            V.vfio_device_attach_iommufd_pt(argsz=16, pt_id=alloc.out_ioas_id))
    k.ioctl(ictx, I.IOMMU_IOAS_MAP_FILE, I.iommu_ioas_map_file(
        size=ctypes.sizeof(I.iommu_ioas_map_file),
        flags=I.IOMMU_IOAS_MAP_FIXED_IOVA | I.IOMMU_IOAS_MAP_READABLE | I.IOMMU_IOAS_MAP_WRITEABLE,
        ioas_id=alloc.out_ioas_id, fd=v.gmem, start=0, length=16 * P, iova=IOVA))
    return ictx, dev, alloc.out_ioas_id


def map_file(k):
    v = _Vm(k)
    try:
        v.boot()
        ictx, _, ioas = _device(k, v)
        k.ioctl(ictx, I.IOMMU_IOAS_UNMAP, I.iommu_ioas_unmap(
            size=ctypes.sizeof(I.iommu_ioas_unmap), ioas_id=ioas, iova=IOVA, length=16 * P))
    finally:
        v.close()


def dma(k):
    v = _Vm(k)
    try:
        v.boot()
        _, dev, _ = _device(k, v)
        dev.dma_write(IOVA + P, b"from the device")
        assert dev.dma_read(IOVA + P, 15) == b"from the device"
    finally:
        v.close()


for _name, _fn in (("launch", launch), ("conversion", conversion), ("map_file", map_file),
                   ("dma", dma)):
    register("none", _name, _fn, make_kernel)
