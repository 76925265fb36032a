"""A small VMM for the tests: a protected VM, one guest_memfd memslot, one vCPU, all
through the ioctls a pKVM VMM issues (kvmtool's order)."""

import ctypes
import errno
import os

from kmock.uapi import gmem as G
from kmock.uapi import kvm as K

from kmock_pkvm import uapi as A

P = 4096
GPA = 0x8000_0000
PRIVATE = K.KVM_MEMORY_ATTRIBUTE_PRIVATE


class Pvm:
    def __init__(self, k, npages=8, ipa_bits=40):
        self.k = k
        self.kvm = k.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
        self.vm = k.ioctl(self.kvm, K.KVM_CREATE_VM, A.KVM_VM_TYPE_ARM_PROTECTED | ipa_bits)
        self.size = npages * P
        self.gmem = k.ioctl(self.vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(
            size=self.size, flags=K.GUEST_MEMFD_FLAG_MMAP))  # every page starts private
        k.ioctl(self.vm, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
            slot=0, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=GPA, memory_size=self.size,
            guest_memfd=self.gmem))
        self.vcpu = k.ioctl(self.vm, K.KVM_CREATE_VCPU, 0)
        init = A.kvm_vcpu_init()
        k.ioctl(self.vm, A.KVM_ARM_PREFERRED_TARGET, init)
        k.ioctl(self.vcpu, A.KVM_ARM_VCPU_INIT, init)
        self.m = k.mmap(self.gmem, self.size, 3, 1)  # PROT_READ|WRITE, MAP_SHARED
        self.guest = k.vm(self.vm).vcpus[0].guest
        self.run = k.vm(self.vm).vcpus[0].run

    def get_reg(self, n):
        v = ctypes.c_uint64()
        self.k.ioctl(self.vcpu, A.KVM_GET_ONE_REG,
                     A.kvm_one_reg(id=A.core_reg(n), addr=ctypes.addressof(v)))
        return v.value

    def set_reg(self, n, value):
        v = ctypes.c_uint64(value)
        self.k.ioctl(self.vcpu, A.KVM_SET_ONE_REG,
                     A.kvm_one_reg(id=A.core_reg(n), addr=ctypes.addressof(v)))

    def convert(self, page, private):
        self.k.ioctl(self.gmem, G.KVM_SET_MEMORY_ATTRIBUTES2, G.kvm_memory_attributes2(
            offset=page * P, size=P, attributes=PRIVATE if private else 0))

    def kvm_run(self):
        return self.k.ioctl(self.vcpu, K.KVM_RUN, 0)

    def run_exit(self):
        """KVM_RUN, then the exit reason. EINTR is no error here: a signal for the vCPU's
        thread ended KVM_RUN (exit_reason KVM_EXIT_INTR; kmock: the guest's ``stop()``).
        arm64 has no KVM_EXIT_HLT: a guest's WFI waits inside KVM_RUN (kvm_vcpu_wfi)."""
        try:
            self.kvm_run()
        except OSError as e:
            if e.errno != errno.EINTR:
                raise
        return self.run.exit_reason

    # [guide:vmm-loop]
    def serve(self):
        """Run the vCPU until it stops (a signal: KVM_EXIT_INTR; PSCI SYSTEM_OFF:
        KVM_EXIT_SYSTEM_EVENT), handling MEM_SHARE / MEM_UNSHARE as a VMM does."""
        while True:
            reason = self.run_exit()
            if reason != K.KVM_EXIT_HYPERCALL:
                return reason
            nr = self.run.hypercall.nr
            ipa = self.get_reg(1)  # the granule the guest names, from X1
            to_private = nr == A.ARM_SMCCC_VENDOR_HYP_KVM_MEM_UNSHARE_FUNC_ID
            self.convert((ipa - GPA) // P, to_private)
    # [/guide:vmm-loop]

    def close(self):
        self.k.close_all()
