"""Helpers of the SNP tests: a kernel on the snp platform, an SNP VM launched through ioctls."""

import ctypes
import mmap
import os

import kmock
import kmock_snp
from kmock.uapi import kvm as K
from kmock.uapi import sev as S

P = 4096
GPA = 1 << 32
GFN = GPA >> 12
PRIVATE = K.KVM_MEMORY_ATTRIBUTE_PRIVATE
POLICY = S.SNP_POLICY_MASK_RSVD_MBO | S.SNP_POLICY_MASK_SMT


def kernel(profile="linux-6.18-snp", **settings):
    return kmock.Kernel(profile, plugins=[kmock_snp], **settings)


def enc_op(k, vm, cid, data=None, sev_fd=0, error=0):
    """KVM_MEMORY_ENCRYPT_OP with kvm_sev_cmd(id, &data); returns (cmd, errno or 0)."""
    cmd = S.kvm_sev_cmd(id=cid, data=0 if data is None else ctypes.addressof(data),
                        sev_fd=sev_fd, error=error)
    try:
        k.ioctl(vm, K.KVM_MEMORY_ENCRYPT_OP, cmd)
        return cmd, 0
    except OSError as e:
        return cmd, e.errno


class Snp:
    """An SNP VM with one guest_memfd-backed memslot of ``npages`` at GPA, and a vCPU."""

    def __init__(self, k=None, npages=16, vcpus=1, gmem_flags=0, **settings):
        self.k = k = k or kernel(**settings)
        self.kvm = k.open("/dev/kvm", os.O_RDWR)
        self.sev = k.open("/dev/sev", os.O_RDWR)
        self.vm = k.ioctl(self.kvm, K.KVM_CREATE_VM, K.KVM_X86_SNP_VM)
        self.npages = npages
        self.gmem = k.ioctl(self.vm, K.KVM_CREATE_GUEST_MEMFD,
                            K.kvm_create_guest_memfd(size=npages * P, flags=gmem_flags))
        self.src = mmap.mmap(-1, npages * P)  # ordinary user memory (the launch source)
        self.src_addr = ctypes.addressof(ctypes.c_char.from_buffer(self.src))
        k.ioctl(self.vm, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
            slot=0, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=GPA, memory_size=npages * P,
            userspace_addr=self.src_addr, guest_memfd=self.gmem))
        self.nvcpus = vcpus
        self.vcpu_fds = []

    @property
    def kvm_vm(self):
        return self.k.vm(self.vm)

    @property
    def inode(self):
        return self.k.file(self.gmem).inode

    @property
    def rmp(self):
        return kmock_snp.machine(self.k).rmp

    def vcpu(self, i=0):
        return self.kvm_vm.vcpus[i]

    def op(self, cid, data=None, sev_fd=None, error=0):
        return enc_op(self.k, self.vm, cid, data, self.sev if sev_fd is None else sev_fd, error)

    def init2(self, **kw):
        return self.op(S.KVM_SEV_INIT2, S.kvm_sev_init(**kw))

    def create_vcpus(self):
        for i in range(self.nvcpus):
            self.vcpu_fds.append(self.k.ioctl(self.vm, K.KVM_CREATE_VCPU, i))

    def start(self, policy=POLICY):
        return self.op(S.KVM_SEV_SNP_LAUNCH_START, S.kvm_sev_snp_launch_start(policy=policy))

    def set_private(self, first, n, private=True):
        self.k.ioctl(self.vm, K.KVM_SET_MEMORY_ATTRIBUTES, K.kvm_memory_attributes(
            address=GPA + first * P, size=n * P, attributes=PRIVATE if private else 0))

    def update(self, first, n, type=S.KVM_SEV_SNP_PAGE_TYPE_NORMAL, uaddr=None, error=0):
        u = S.kvm_sev_snp_launch_update(
            gfn_start=GFN + first, len=n * P, type=type,
            uaddr=self.src_addr + first * P if uaddr is None else uaddr)
        cmd, e = self.op(S.KVM_SEV_SNP_LAUNCH_UPDATE, u, error=error)
        return u, cmd, e

    def finish(self, error=0, **kw):
        return self.op(S.KVM_SEV_SNP_LAUNCH_FINISH, S.kvm_sev_snp_launch_finish(**kw),
                       error=error)

    def launch(self, private=8, measured=4):
        """The launch order of amd-memory-encryption.rst, asserting each step succeeds."""
        assert self.init2()[1] == 0
        self.create_vcpus()
        assert self.start()[1] == 0
        if private:
            self.set_private(0, private)
        if measured:
            u, cmd, e = self.update(0, measured)
            assert e == 0 and u.len == 0, (e, cmd.error)
        assert self.finish()[1] == 0
        self.k.ioctl(self.vm, K.KVM_ENABLE_CAP, K.kvm_enable_cap(
            cap=K.KVM_CAP_EXIT_HYPERCALL, args=(1 << K.KVM_HC_MAP_GPA_RANGE,)))
        return self

    def run(self, i=0):
        """KVM_RUN; returns (errno or 0, kvm_run)."""
        fd = self.vcpu_fds[i]
        try:
            self.k.ioctl(fd, K.KVM_RUN, 0)
            return 0, self.vcpu(i).run
        except OSError as e:
            return e.errno, self.vcpu(i).run
