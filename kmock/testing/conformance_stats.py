"""Conformance scenarios of the binary stats fds (KVM_GET_STATS_FD on the VM and vCPU).

Registered into kmock.testing.conformance.SCENARIOS when that module is imported. They
compare the header, the descriptors in order (name, flags, exponent, size, offset,
bucket_size), the id string's format, the file's size and fresh values, the position
rules of read/lseek, and the errno of every other call, between the real kernel and
the mock (profile ``host``, whose descriptor tables are probed from the real kernel).
Sources: virt/kvm/binary_stats.c kvm_stats_read, virt/kvm/kvm_main.c
kvm_vm_ioctl_get_stats_fd / kvm_vcpu_ioctl_get_stats_fd (kmock.kvm.stats).
"""

import os
import threading

from ..kvm.stats import parse
from ..uapi import kvm as K
from .conformance import MAP_SHARED, PROT_READ, open_kvm, scenario

P = 4096
STATS = K.KVM_GET_STATS_FD


def _whole(sys, fd):
    data = b""
    while chunk := sys.pread(fd, 1 << 16, len(data)):
        data += chunk
    return data


def _record_file(sys, rec, fd, what, ident_format):
    """The header, the id string as a format, the descriptors and the fresh values."""
    data = rec.call(f"{what}: pread header (24 bytes at 0)", sys.pread, fd, 24, 0)
    whole = _whole(sys, fd)
    head, ident, descs = parse(whole)
    rec.record(f"{what}: header (flags, name_size, num_desc, id/desc/data offsets)", head)
    rec.record(f"{what}: the header read alone is the file's first 24 bytes",
               data == whole[:24])
    # task_pid_nr(current) of the creating task: this thread (the main one here)
    expect = ident_format.format(pid=threading.get_native_id())
    rec.record(f"{what}: id string is {ident_format!r}", ident == expect)
    rec.record(f"{what}: descriptors in order", tuple(tuple(d) for d in descs))
    rec.record(f"{what}: file size", len(whole))
    rec.record(f"{what}: a fresh {what}'s values are all 0", set(whole[head[5]:]) <= {0})


@scenario("fact_stats_vm_fd", "KVM_GET_STATS_FD on a VM: a new fd whatever the argument; header, "
                              "id 'kvm-<pid>', descriptors, size, zero values")
def fact_stats_vm_fd(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = rec.call("KVM_CREATE_VM", sys.ioctl, kvm, K.KVM_CREATE_VM, 0)
    fd = rec.call("KVM_GET_STATS_FD on the VM", sys.ioctl, vm, STATS, 0)
    if fd is None:
        return
    _record_file(sys, rec, fd, "VM", "kvm-{pid}")
    rec.call("KVM_GET_STATS_FD with argument 5", sys.ioctl, vm, STATS, 5)
    rec.call("_IOR-encoded KVM_GET_STATS_FD on the VM", sys.ioctl, vm, STATS | (2 << 30) | (8 << 16), 0)
    rec.call("KVM_GET_STATS_FD on /dev/kvm", sys.ioctl, kvm, STATS, 0)
    rec.child("KVM_GET_STATS_FD from a forked child", lambda s: s.ioctl(vm, STATS, 0))
    rec.child("pread of the stats fd from a forked child", lambda s: len(s.pread(fd, 24, 0)))
    rec.close("close the VM fd", vm)
    rec.record("the stats fd reads after the VM fd is closed", parse(_whole(sys, fd))[0])


@scenario("fact_stats_vcpu_fd", "KVM_GET_STATS_FD on a vCPU: header, id 'kvm-<pid>/vcpu-<id>', "
                                "descriptors, size, zero values")
def fact_stats_vcpu_fd(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = rec.call("KVM_CREATE_VM", sys.ioctl, kvm, K.KVM_CREATE_VM, 0)
    vcpu = rec.call("KVM_CREATE_VCPU 3", sys.ioctl, vm, K.KVM_CREATE_VCPU, 3)
    fd = rec.call("KVM_GET_STATS_FD on the vCPU", sys.ioctl, vcpu, STATS, 0)
    if fd is None:
        return
    _record_file(sys, rec, fd, "vCPU", "kvm-{pid}/vcpu-3")
    rec.child("KVM_GET_STATS_FD on the vCPU from a forked child", lambda s: s.ioctl(vcpu, STATS, 0))
    rec.close("close the vCPU fd", vcpu)
    rec.close("close the VM fd", vm)
    rec.record("the vCPU stats fd reads after both are closed", parse(_whole(sys, fd))[1] != "")


@scenario("fact_stats_fd_calls", "a stats fd: read moves f_pos, lseek is noop_llseek (answers f_pos), "
                                 "pread anywhere; write EBADF, pwrite ESPIPE, ioctl ENOTTY, mmap ENODEV, "
                                 "fallocate EBADF, ftruncate/fsync EINVAL")
def fact_stats_fd_calls(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = rec.call("KVM_CREATE_VM", sys.ioctl, kvm, K.KVM_CREATE_VM, 0)
    fd = rec.call("KVM_GET_STATS_FD", sys.ioctl, vm, STATS, 0)
    if fd is None:
        return
    size = len(_whole(sys, fd))
    rec.call("read 24", sys.read, fd, 24)
    rec.call("lseek 0 SEEK_SET", sys.lseek, fd, 0, os.SEEK_SET)
    rec.call("lseek 100 SEEK_CUR", sys.lseek, fd, 100, os.SEEK_CUR)
    rec.call("lseek -5 SEEK_END", sys.lseek, fd, -5, os.SEEK_END)
    rec.call("lseek -100 SEEK_SET", sys.lseek, fd, -100, os.SEEK_SET)
    rec.call("lseek 0 SEEK_HOLE", sys.lseek, fd, 0, 4)
    rec.call("lseek 0 whence 5", sys.lseek, fd, 0, 5)
    rec.call("read 8 (the id string's start)", lambda f, n: sys.read(f, n)[:3], fd, 8)
    rec.call("read 0", sys.read, fd, 0)
    rec.call("lseek 0 SEEK_CUR after the reads", sys.lseek, fd, 0, os.SEEK_CUR)
    d = rec.call("dup", sys.dup, fd)
    if d is not None:
        rec.call("read 4 through the dup", sys.read, d, 4)
        rec.call("lseek 0 SEEK_CUR of the original", sys.lseek, fd, 0, os.SEEK_CUR)
    rec.call("pread 100 at size - 4", sys.pread, fd, 100, size - 4)
    rec.call("pread 100 at size", sys.pread, fd, 100, size)
    rec.call("pread 10 at 2^40", sys.pread, fd, 10, 1 << 40)
    rec.call("pread 10 at -1", sys.pread, fd, 10, -1)
    rec.call("write 1", sys.write, fd, b"x")
    rec.call("pwrite 1 at 0", sys.pwrite, fd, b"x", 0)
    rec.call("pwrite 1 at -1", sys.pwrite, fd, b"x", -1)
    rec.call("ioctl KVM_GET_STATS_FD on the stats fd", sys.ioctl, fd, STATS, 0)
    rec.call("ioctl KVM_GET_API_VERSION on the stats fd", sys.ioctl, fd, K.KVM_GET_API_VERSION, 0)
    rec.call("mmap 1 page", sys.mmap, fd, P, PROT_READ, MAP_SHARED)
    rec.call("fallocate 0..P", sys.fallocate, fd, 0, 0, P)
    rec.call("fallocate length 0", sys.fallocate, fd, 0, 0, 0)
    rec.call("fallocate mode 0x1000", sys.fallocate, fd, 0x1000, 0, P)
    rec.call("ftruncate 0", sys.ftruncate, fd, 0)
    rec.call("fsync", sys.fsync, fd)
    rec.call("fstat", sys.fstat, fd)
