"""A realm VMM over the CCA KVM series' UAPI (v14 order): how a VMM boots an Arm CCA
realm on kmock, through ioctls only.

1. KVM_CHECK_EXTENSION(KVM_CAP_ARM_RMI) (the number comes from
   /sys/module/kvm/parameters/kvm_cap_arm_rmi on a real kernel; kmock.uapi.cca has the
   revision's constant), KVM_CREATE_VM(KVM_VM_TYPE_ARM_REALM | IPA bits);
2. the in-kernel vGICv3 (KVM_CREATE_DEVICE, distributor and redistributor addresses);
3. RAM: a guest_memfd memslot with a shared userspace mapping, made PRIVATE with
   KVM_SET_MEMORY_ATTRIBUTES;
4. vCPUs: KVM_CREATE_VCPU, KVM_ARM_PREFERRED_TARGET, KVM_ARM_VCPU_INIT with PSCI 0.2; the
   vGIC's CTRL_INIT;
5. the image with KVM_ARM_RMI_POPULATE (MEASURE), repeated until size == 0;
6. KVM_RUN, which activates the realm; the loop answers:
   * KVM_EXIT_MEMORY_FAULT (EFAULT): the realm's RSI_IPA_STATE_SET or an access of the
     other kind: set the attributes (PRIVATE iff the exit's flag says so) and, going
     shared, discard the guest_memfd copy (PUNCH_HOLE, as QEMU), then re-run;
   * KVM_EXIT_MMIO: the caller's ``on_mmio``;
   * the loop ends on KVM_EXIT_SYSTEM_EVENT (the realm's PSCI SYSTEM_OFF) or when KVM_RUN
     fails with EINTR, exit_reason KVM_EXIT_INTR: a signal for the vCPU's thread (QEMU
     kicks its vCPU threads so). arm64 has no KVM_EXIT_HLT: a realm's WFI waits inside
     KVM_RUN (the REC runs it, or KVM's kvm_vcpu_wfi blocks), so a VMM thread that wants
     its KVM_RUN back signals it. A realm whose access KVM cannot resolve (RIPAS
     DESTROYED) also spins inside KVM_RUN until that signal (kmock returns EINTR at once
     and records a violation).

Run it: ``python3 examples/vmm_loop_cca.py`` (needs the kmock_arm64 and kmock_cca plugins).
"""

import ctypes
import errno
import mmap
import os

from kmock.uapi import arm64 as A
from kmock.uapi import cca as C
from kmock.uapi import kvm as K

PAGE_SIZE = 4096
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
GICD, GICR = 0x08000000, 0x080A0000


def _addr(buf):
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


def rmi_cap():
    """KVM_CAP_ARM_RMI's number: the module parameter if there is one, else the constant."""
    try:
        with open(C.KVM_CAP_ARM_RMI_SYSFS) as f:
            return int(f.read())
    except (OSError, ValueError):
        return C.KVM_CAP_ARM_RMI


class RealmVmm:
    def __init__(self, kernel, ipa_bits=40):
        self.k = kernel
        self.kvm = kernel.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
        if not kernel.ioctl(self.kvm, K.KVM_CHECK_EXTENSION, rmi_cap()):
            raise RuntimeError("this kernel cannot run realms (no KVM_CAP_ARM_RMI)")
        self.ipa_bits = ipa_bits
        self.vm = kernel.ioctl(self.kvm, K.KVM_CREATE_VM, C.KVM_VM_TYPE_ARM_REALM | ipa_bits)
        self.mmap_size = kernel.ioctl(self.kvm, K.KVM_GET_VCPU_MMAP_SIZE, 0)
        self.unprotected = 1 << (ipa_bits - 1)
        self.vcpus = []
        self._bufs = []
        cd = A.kvm_create_device(type=A.KVM_DEV_TYPE_ARM_VGIC_V3)
        kernel.ioctl(self.vm, A.KVM_CREATE_DEVICE, cd)
        self.vgic = cd.fd
        self._vgic_attr(A.KVM_DEV_ARM_VGIC_GRP_ADDR, A.KVM_VGIC_V3_ADDR_TYPE_DIST, GICD)
        self._vgic_attr(A.KVM_DEV_ARM_VGIC_GRP_ADDR, A.KVM_VGIC_V3_ADDR_TYPE_REDIST, GICR)

    def _vgic_attr(self, group, attr, value=0):
        v = ctypes.c_uint64(value)
        self.k.ioctl(self.vgic, A.KVM_SET_DEVICE_ATTR,
                     A.kvm_device_attr(group=group, attr=attr, addr=ctypes.addressof(v)))

    def add_ram(self, gpa, size):
        self.ram_gpa, self.ram_size = gpa, size
        self.gmem = self.k.ioctl(self.vm, K.KVM_CREATE_GUEST_MEMFD,
                                 K.kvm_create_guest_memfd(size=size))
        self.shared = mmap.mmap(-1, size)
        self.k.ioctl(self.vm, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
            slot=0, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=gpa, memory_size=size,
            userspace_addr=_addr(self.shared), guest_memfd=self.gmem))
        self.set_private(gpa, size, True)

    def set_private(self, gpa, size, private):
        self.k.ioctl(self.vm, K.KVM_SET_MEMORY_ATTRIBUTES, K.kvm_memory_attributes(
            address=gpa, size=size, attributes=K.KVM_MEMORY_ATTRIBUTE_PRIVATE if private else 0))
        if not private:
            self.k.fallocate(self.gmem, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE,
                             gpa - self.ram_gpa, size)

    def create_vcpu(self, i):
        fd = self.k.ioctl(self.vm, K.KVM_CREATE_VCPU, i)
        init = A.kvm_vcpu_init()
        self.k.ioctl(self.vm, A.KVM_ARM_PREFERRED_TARGET, init)
        init.features[0] |= 1 << A.KVM_ARM_VCPU_PSCI_0_2  # a REC needs PSCI 0.2
        self.k.ioctl(fd, A.KVM_ARM_VCPU_INIT, init)
        m = self.k.mmap(fd, self.mmap_size, 3, 1, 0)
        self.vcpus.append((fd, m, K.kvm_run.from_address(m.address)))
        return fd

    def finish_irqchip(self):
        self._vgic_attr(A.KVM_DEV_ARM_VGIC_GRP_CTRL, A.KVM_DEV_ARM_VGIC_CTRL_INIT)

    def load_image(self, gpa, image):
        """KVM_ARM_RMI_POPULATE (measured) until size == 0; returns the calls made."""
        n = -(-len(image) // PAGE_SIZE) * PAGE_SIZE
        src = mmap.mmap(-1, n)
        src[:len(image)] = image
        self._bufs.append(src)
        args = C.kvm_arm_rmi_populate(base=gpa, size=n, source_uaddr=_addr(src),
                                      flags=C.KVM_ARM_RMI_POPULATE_FLAGS_MEASURE)
        calls = 0
        while args.size:
            self.k.ioctl(self.vm, C.KVM_ARM_RMI_POPULATE, args)
            calls += 1
        return calls

    def run(self, i=0, on_mmio=None, max_exits=100_000):
        """KVM_RUN vCPU ``i`` until the realm powers off (KVM_EXIT_SYSTEM_EVENT) or a signal
        ends KVM_RUN (EINTR, KVM_EXIT_INTR); returns the exit reasons seen, the last one
        the end."""
        fd, _m, run = self.vcpus[i]
        exits = []
        for _ in range(max_exits):
            try:
                self.k.ioctl(fd, K.KVM_RUN, 0)
            except OSError as e:
                if e.errno == errno.EFAULT and run.exit_reason == K.KVM_EXIT_MEMORY_FAULT:
                    mf = run.memory_fault
                    exits.append(K.KVM_EXIT_MEMORY_FAULT)
                    self.set_private(mf.gpa, mf.size, bool(mf.flags & K.KVM_MEMORY_EXIT_FLAG_PRIVATE))
                    continue
                if e.errno == errno.EINTR:  # (QEMU's kvm_cpu_exec looks at the errno only)
                    exits.append(K.KVM_EXIT_INTR)
                    return exits
                raise
            reason = run.exit_reason
            exits.append(reason)
            if reason == K.KVM_EXIT_SYSTEM_EVENT:
                return exits
            if reason == K.KVM_EXIT_MMIO:
                m = run.mmio
                answer = on_mmio(m.phys_addr, bool(m.is_write), bytes(m.data[:m.len])) if on_mmio else None
                if not m.is_write:
                    data = bytes(answer) if answer is not None else b"\xff" * m.len
                    ctypes.memmove(ctypes.addressof(m.data), data, m.len)
                continue
            raise RuntimeError(f"unhandled exit reason {reason}")
        raise RuntimeError("the realm's vCPU did not end")


def demo():
    import kmock
    import kmock_arm64
    import kmock_cca
    from kmock_cca.rtt import RSI_CHANGE_DESTROYED, Ripas

    with kmock.Kernel("linux-arm64-cca", plugins=[kmock_arm64, kmock_cca]) as kernel:
        ram = 0x40000000
        vmm = RealmVmm(kernel)
        vmm.add_ram(ram, 2 << 20)
        vmm.create_vcpu(0)
        vmm.finish_irqchip()
        vmm.load_image(ram, b"realm kernel")
        guest = kernel.vm(vmm.vm).vcpus[0].guest  # what the realm runs (kmock only)
        boot = guest.read(ram, 12)
        share = ram + (1 << 20)
        s = guest.cca.ipa_state_set(share, share + PAGE_SIZE, Ripas.EMPTY, RSI_CHANGE_DESTROYED)
        guest.write(share | vmm.unprotected, b"hello host")
        guest.write(0x09000000 | vmm.unprotected, b"!")  # an MMIO device
        guest.hlt()  # WFI: the vCPU waits inside KVM_RUN...
        guest.stop()  # ...until a signal for the VMM's thread (kmock: no PSCI SYSTEM_OFF action)
        out = []
        exits = vmm.run(on_mmio=lambda gpa, w, data: out.append((gpa, data)))
        print("exits:", exits)
        print("realm read its image:", boot.result, "RSI result:", s.result)
        print("host sees the shared page:", bytes(vmm.shared[1 << 20:(1 << 20) + 10]))
        print("mmio:", out)


if __name__ == "__main__":
    demo()
