"""A minimal realm VMM for the tests, through ioctls only, in the v12+ order:
create the realm VM, the vGIC, guest_memfd memslots with PRIVATE attributes, vCPUs with
KVM_ARM_VCPU_INIT(PSCI 0.2), the POPULATE loop, then KVM_RUN (which activates)."""

import ctypes
import errno
import mmap
import os

from kmock.uapi import arm64 as A
from kmock.uapi import cca as C
from kmock.uapi import kvm as K

P = 4096
RAM = 0x40000000
IPA_BITS = 40
UNPROTECTED = 1 << (IPA_BITS - 1)
PRIVATE = K.KVM_MEMORY_ATTRIBUTE_PRIVATE


def addr_of(buf):
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


class RealmVmm:
    def __init__(self, k, ipa_bits=IPA_BITS, realm_type=None):
        self.k = k
        self.kvm = k.open("/dev/kvm", os.O_RDWR)
        t = C.KVM_VM_TYPE_ARM_REALM if realm_type is None else realm_type
        self.vm = k.ioctl(self.kvm, K.KVM_CREATE_VM, t | ipa_bits)
        self.vcpus = []
        self.gmem = None
        self.shared = None
        self.vgic = None
        self._keep = []

    # --- steps ---------------------------------------------------------------------------
    def create_vgic(self, init=True):
        cd = A.kvm_create_device(type=A.KVM_DEV_TYPE_ARM_VGIC_V3)
        self.k.ioctl(self.vm, A.KVM_CREATE_DEVICE, cd)
        self.vgic = cd.fd
        self.set_attr(A.KVM_DEV_ARM_VGIC_GRP_ADDR, A.KVM_VGIC_V3_ADDR_TYPE_DIST, 0x08000000)
        self.set_attr(A.KVM_DEV_ARM_VGIC_GRP_ADDR, A.KVM_VGIC_V3_ADDR_TYPE_REDIST, 0x080A0000)
        self.vgic_init = init
        return cd.fd

    def set_attr(self, group, attr, value=0):
        buf = ctypes.c_uint64(value)
        self._keep.append(buf)
        self.k.ioctl(self.vgic, A.KVM_SET_DEVICE_ATTR,
                     A.kvm_device_attr(group=group, attr=attr, addr=ctypes.addressof(buf)))

    def add_ram(self, size, gpa=RAM, private=True, slot=0):
        self.size = size
        self.gpa = gpa
        self.gmem = self.k.ioctl(self.vm, K.KVM_CREATE_GUEST_MEMFD,
                                 K.kvm_create_guest_memfd(size=size))
        self.shared = mmap.mmap(-1, size)
        self.k.ioctl(self.vm, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
            slot=slot, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=gpa, memory_size=size,
            userspace_addr=addr_of(self.shared), guest_memfd=self.gmem))
        if private:
            self.set_attributes(gpa, size, PRIVATE)

    def set_attributes(self, gpa, size, attrs):
        self.k.ioctl(self.vm, K.KVM_SET_MEMORY_ATTRIBUTES,
                     K.kvm_memory_attributes(address=gpa, size=size, attributes=attrs))

    def create_vcpu(self, i=0, psci=True):
        fd = self.k.ioctl(self.vm, K.KVM_CREATE_VCPU, i)
        init = A.kvm_vcpu_init()
        self.k.ioctl(self.vm, A.KVM_ARM_PREFERRED_TARGET, init)
        if psci:
            init.features[0] |= 1 << A.KVM_ARM_VCPU_PSCI_0_2
        self.k.ioctl(fd, A.KVM_ARM_VCPU_INIT, init)
        self.vcpus.append(fd)
        return fd

    def finish_vgic(self):
        if self.vgic is not None and self.vgic_init:
            self.set_attr(A.KVM_DEV_ARM_VGIC_GRP_CTRL, A.KVM_DEV_ARM_VGIC_CTRL_INIT)

    def populate(self, gpa, data, measure=True):
        """The POPULATE loop until size == 0; returns the number of calls."""
        src = mmap.mmap(-1, max(len(data), P))
        src[:len(data)] = data
        self._keep.append(src)
        args = C.kvm_arm_rmi_populate(base=gpa, size=len(data), source_uaddr=addr_of(src),
                                      flags=C.KVM_ARM_RMI_POPULATE_FLAGS_MEASURE if measure else 0)
        calls = 0
        while args.size:
            self.k.ioctl(self.vm, C.KVM_ARM_RMI_POPULATE, args)
            calls += 1
        return calls

    def run(self, i=0):
        """KVM_RUN: 0, or the errno."""
        try:
            return self.k.ioctl(self.vcpus[i], K.KVM_RUN, 0)
        except OSError as e:
            return -e.errno

    def run_to_stop(self, i=0):
        """KVM_RUN through the guest's script to its end, where a signal for the vCPU's
        thread (``stop()``, added unless one is pending last) ends KVM_RUN: an arm64 vCPU
        with nothing to run waits inside KVM_RUN (WFI), never exits with KVM_EXIT_HLT.

        Returns KVM_EXIT_INTR when KVM_RUN failed with EINTR at that stop (kvm_run says
        KVM_EXIT_INTR too); otherwise run()'s result (an EINTR of another cause, such as
        a RIPAS DESTROYED access, stays -EINTR; the stop stays pending)."""
        g = self.guest(i)
        last = g.pending[-1:]
        stop = last[0] if last and last[0].kind == "stop" else g.stop()
        r = self.run(i)
        if r == EINTR and stop.done:
            assert self.kvm_run(i).exit_reason == K.KVM_EXIT_INTR
            return K.KVM_EXIT_INTR
        return r

    # --- shortcuts ---------------------------------------------------------------------------
    @property
    def vm_obj(self):
        return self.k.vm(self.vm)

    @property
    def realm(self):
        return self.vm_obj.arch.realm

    def guest(self, i=0):
        return self.vm_obj.vcpus[i].guest

    def kvm_run(self, i=0):
        return self.vm_obj.vcpus[i].run

    def boot(self, size=16 * P, image=b"realm image", vcpus=1):
        self.create_vgic()
        self.add_ram(size)
        for i in range(vcpus):
            self.create_vcpu(i)
        self.finish_vgic()
        if image:
            self.populate(self.gpa, image.ljust(P, b"\0"))
        return self

    def convert(self, gpa, size, private):
        """What a VMM does on KVM_EXIT_MEMORY_FAULT: set the attributes, discard the other
        copy (QEMU: PUNCH_HOLE of the guest_memfd when going shared)."""
        self.set_attributes(gpa, size, PRIVATE if private else 0)
        if not private:
            off = gpa - self.gpa
            self.k.fallocate(self.gmem, 3, off, size)


EFAULT, EINTR = -errno.EFAULT, -errno.EINTR
