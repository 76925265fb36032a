"""A Kernel the test drops releases its descriptors (its fd-table placeholder, its SIGBUS
memfd, its backing memfds) once it is garbage, also when a plugin keeps per-kernel state
(the SNP plugin keeps kernel.faults in a WeakKeyDictionary value): a long test session
must not run out of file descriptors."""

import gc
import os

import kmock
from kmock.uapi import kvm as K


def open_fds():
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


def test_dropped_kernels_release_their_descriptors():
    before = open_fds()
    for _ in range(20):
        k = kmock.Kernel("linux-6.18-snp")
        kvm = k.open("/dev/kvm", os.O_RDWR)
        vm = k.ioctl(kvm, K.KVM_CREATE_VM, K.KVM_X86_SNP_VM)
        k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(size=1 << 20))
        k.snapshot()  # the SNP plugin's machine is made for this kernel
        del k, kvm, vm
    assert open_fds() <= before + 3
