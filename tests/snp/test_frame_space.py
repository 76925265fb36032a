"""The RMP covers every frame kmock.physmem hands out: a guest_memfd large enough to get
frames from the high range (past 2**45) is created, used and released without error
(found by the long fuzz run: close_all stopped at the RMP's edge and leaked fds)."""

import os

import kmock
import kmock_snp
from kmock.physmem import HIGH_PFN_BASE
from kmock.uapi import kvm as K


def test_frames_past_2_45_are_covered():
    k = kmock.Kernel("linux-6.18-snp", plugins=[kmock_snp])
    vm = k.ioctl(k.open("/dev/kvm", os.O_RDWR), K.KVM_CREATE_VM, K.KVM_X86_SNP_VM)
    big = k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(size=1 << 62))
    small = k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(size=1 << 20))
    assert k.file(small).inode.pfn_base >= HIGH_PFN_BASE
    k.fallocate(small, 3, 0, 1 << 20)
    k.close_all()
    assert not k.fdtable
