"""A small realm VMM through the CCA series' UAPI (v14 order), for the fail-nth
scenarios (``scenarios``) and the demo (``demo``): every fd and mapping it opens is
closed by ``close()`` even when a call failed, as a VMM's error path should.

Order (examples/vmm_loop_cca.py has the commented version): KVM_CREATE_VM(realm |
IPA bits), the vGICv3, a guest_memfd memslot with a shared mapping made PRIVATE, a vCPU
with PSCI 0.2, CTRL_INIT, KVM_ARM_RMI_POPULATE of the image, KVM_RUN (activation) until
the vCPU ends (``run``)."""

import ctypes
import errno
import mmap
import os

from kmock.uapi import arm64 as A
from kmock.uapi import cca as C
from kmock.uapi import iommufd as I
from kmock.uapi import kvm as K
from kmock.uapi import vfio as V

P = 4096
RAM = 0x40000000
IPA_BITS = 40
GICD, GICR = 0x08000000, 0x080A0000
IOVA = 1 << 30
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 0x01, 0x02


def _addr(buf):
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


class RealmVmm:
    def __init__(self, kernel):
        self.k = kernel
        self.fds, self.maps, self.bufs = [], [], []
        self.vcpus = []
        self.gmem = None

    def fd(self, fd):
        self.fds.append(fd)
        return fd

    def _attr(self, group, attr, value=0):
        v = ctypes.c_uint64(value)
        self.k.ioctl(self.vgic, A.KVM_SET_DEVICE_ATTR,
                     A.kvm_device_attr(group=group, attr=attr, addr=ctypes.addressof(v)))

    def create(self, size):
        """VM, vGIC, RAM (guest_memfd + shared mapping, PRIVATE), vCPU 0, CTRL_INIT."""
        k = self.k
        self.kvm = self.fd(k.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC))
        self.vm = self.fd(k.ioctl(self.kvm, K.KVM_CREATE_VM,
                                  C.KVM_VM_TYPE_ARM_REALM | IPA_BITS))
        cd = A.kvm_create_device(type=A.KVM_DEV_TYPE_ARM_VGIC_V3)
        k.ioctl(self.vm, A.KVM_CREATE_DEVICE, cd)
        self.vgic = self.fd(cd.fd)
        self._attr(A.KVM_DEV_ARM_VGIC_GRP_ADDR, A.KVM_VGIC_V3_ADDR_TYPE_DIST, GICD)
        self._attr(A.KVM_DEV_ARM_VGIC_GRP_ADDR, A.KVM_VGIC_V3_ADDR_TYPE_REDIST, GICR)
        self.size = size
        self.gmem = self.fd(k.ioctl(self.vm, K.KVM_CREATE_GUEST_MEMFD,
                                    K.kvm_create_guest_memfd(size=size)))
        self.shared = mmap.mmap(-1, size)
        self.bufs.append(self.shared)
        k.ioctl(self.vm, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
            slot=0, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=RAM, memory_size=size,
            userspace_addr=_addr(self.shared), guest_memfd=self.gmem))
        self.set_private(RAM, size, True)
        vcpu = self.fd(k.ioctl(self.vm, K.KVM_CREATE_VCPU, 0))
        init = A.kvm_vcpu_init()
        k.ioctl(self.vm, A.KVM_ARM_PREFERRED_TARGET, init)
        init.features[0] |= 1 << A.KVM_ARM_VCPU_PSCI_0_2
        k.ioctl(vcpu, A.KVM_ARM_VCPU_INIT, init)
        m = k.mmap(vcpu, k.ioctl(self.kvm, K.KVM_GET_VCPU_MMAP_SIZE, 0), 3, 1, 0)
        self.maps.append(m)
        self.vcpus.append((vcpu, K.kvm_run.from_address(m.address)))
        self._attr(A.KVM_DEV_ARM_VGIC_GRP_CTRL, A.KVM_DEV_ARM_VGIC_CTRL_INIT)
        return self

    def set_private(self, gpa, size, private):
        """KVM_SET_MEMORY_ATTRIBUTES; going shared, discard the private copy (QEMU)."""
        self.k.ioctl(self.vm, K.KVM_SET_MEMORY_ATTRIBUTES, K.kvm_memory_attributes(
            address=gpa, size=size, attributes=K.KVM_MEMORY_ATTRIBUTE_PRIVATE if private else 0))
        if not private:
            self.k.fallocate(self.gmem, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE,
                             gpa - RAM, size)

    def populate(self, gpa, image):
        """KVM_ARM_RMI_POPULATE (MEASURE) until size == 0."""
        n = -(-len(image) // P) * P
        src = mmap.mmap(-1, n)
        src[:len(image)] = image
        self.bufs.append(src)
        args = C.kvm_arm_rmi_populate(base=gpa, size=n, source_uaddr=_addr(src),
                                      flags=C.KVM_ARM_RMI_POPULATE_FLAGS_MEASURE)
        while args.size:
            self.k.ioctl(self.vm, C.KVM_ARM_RMI_POPULATE, args)

    @property
    def guest(self):
        """The scripted guest of vCPU 0 (kmock only)."""
        return self.k.vm(self.vm).vcpus[0].guest

    def run(self, on_exit=None, max_exits=64):
        """KVM_RUN until the realm's vCPU is done, answering memory-fault exits by
        converting; returns the exit reasons, the last one the end.

        The end is KVM_EXIT_SYSTEM_EVENT (the realm's PSCI SYSTEM_OFF) or EINTR with
        KVM_EXIT_INTR (a signal for the VMM's vCPU thread: kmock's ``guest.stop()``).
        Never KVM_EXIT_HLT: arm64 has none; a realm's WFI traps to KVM (a REC exit),
        whose kvm_vcpu_wfi blocks inside KVM_RUN (arch/arm64/kvm/handle_exit.c
        kvm_handle_wfx)."""
        fd, run = self.vcpus[0]
        exits = []
        for _ in range(max_exits):
            try:
                self.k.ioctl(fd, K.KVM_RUN, 0)
            except OSError as e:
                if e.errno == errno.EFAULT and run.exit_reason == K.KVM_EXIT_MEMORY_FAULT:
                    mf = run.memory_fault
                    private = bool(mf.flags & K.KVM_MEMORY_EXIT_FLAG_PRIVATE)
                    exits.append(K.KVM_EXIT_MEMORY_FAULT)
                    if on_exit:
                        on_exit(f"exit KVM_EXIT_MEMORY_FAULT: gpa {mf.gpa:#x} size {mf.size:#x} "
                                f"-> {'private' if private else 'shared'}; the VMM converts")
                    self.set_private(mf.gpa, mf.size, private)
                    continue
                if e.errno == errno.EINTR:  # (QEMU's kvm_cpu_exec looks at the errno only)
                    exits.append(K.KVM_EXIT_INTR)  # kvm_handle_signal_exit
                    return exits
                raise
            exits.append(run.exit_reason)
            if run.exit_reason == K.KVM_EXIT_SYSTEM_EVENT:
                return exits
        raise RuntimeError(f"the realm's vCPU did not end after {max_exits} exits")

    def attach_device(self, start, length):
        """/dev/iommu, a VFIO device bound and attached, IOAS_ALLOC, MAP_FILE of
        guest_memfd [start, start + length) at IOVA. Returns the device."""
        k = self.k
        self.ictx = self.fd(k.open("/dev/iommu", os.O_RDWR))
        self.device = k.add_vfio_device()
        vfd = self.fd(k.open(self.device.path, os.O_RDWR))
        k.ioctl(vfd, V.VFIO_DEVICE_BIND_IOMMUFD,
                V.vfio_device_bind_iommufd(argsz=24, iommufd=self.ictx))
        alloc = I.iommu_ioas_alloc(size=ctypes.sizeof(I.iommu_ioas_alloc))
        k.ioctl(self.ictx, I.IOMMU_IOAS_ALLOC, alloc)
        self.ioas = alloc.out_ioas_id
        k.ioctl(vfd, V.VFIO_DEVICE_ATTACH_IOMMUFD_PT,
                V.vfio_device_attach_iommufd_pt(argsz=16, pt_id=self.ioas))
        k.ioctl(self.ictx, I.IOMMU_IOAS_MAP_FILE, I.iommu_ioas_map_file(
            size=ctypes.sizeof(I.iommu_ioas_map_file),
            flags=I.IOMMU_IOAS_MAP_FIXED_IOVA | I.IOMMU_IOAS_MAP_READABLE
            | I.IOMMU_IOAS_MAP_WRITEABLE,
            ioas_id=self.ioas, fd=self.gmem, start=start, length=length, iova=IOVA))
        return self.device

    def unmap(self, length):
        self.k.ioctl(self.ictx, I.IOMMU_IOAS_UNMAP, I.iommu_ioas_unmap(
            size=ctypes.sizeof(I.iommu_ioas_unmap), ioas_id=self.ioas, iova=IOVA, length=length))

    def close(self):
        for m in self.maps:
            m.close()
        for fd in reversed(self.fds):
            self.k.close(fd)
        for b in self.bufs:
            b.close()
