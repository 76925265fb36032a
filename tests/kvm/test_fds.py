"""The fds kmock hands out are real, unique descriptors (DESIGN.md "The flow of one call";
reference §4.1 rule 5-6 for the flags and fstat of each file)."""

import errno
import fcntl
import gc
import os
import stat

import pytest

import kmock
from kmock.uapi import kvm as K

from ._util import (GMEM, INIT_SHARED, MMAP, P, RW, SHARED, create_gmem, create_vm, err,
                    is_open, set_region)


def own_fds():
    gc.collect()  # unreferenced kernels of earlier tests close their fds when collected
    return set(int(n) for n in os.listdir("/proc/self/fd"))


def make_all(k):
    kvm, vm = create_vm(k)
    vcpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    gmem = create_gmem(k, vm, 4 * P, MMAP | INIT_SHARED)
    return kvm, vm, vcpu, gmem


def test_fds_are_real_and_unique(k):
    r, w = os.pipe()
    try:
        fds = make_all(k)
        assert len(set(fds)) == 4 and not {r, w} & set(fds)
        for fd in fds:
            os.fstat(fd)  # a real open descriptor of this process
        kvm, vm, vcpu, gmem = fds
        st = k.fstat(gmem)
        assert stat.S_ISREG(st.st_mode) and st.st_size == 4 * P and st.st_blksize == 4096
        # the VMM's fd is a placeholder, never the hidden backing memfd: an OS call that
        # does not go through kmock fails instead of touching guest memory
        assert os.fstat(gmem).st_size == 0
        assert err(os.posix_fallocate, gmem, 0, P) != 0
        assert stat.S_ISCHR(k.fstat(kvm).st_mode)
        # the process's own fds are untouched by kmock's calls
        os.write(w, b"x")
        assert os.read(r, 1) == b"x"
        assert err(k.ioctl, r, K.KVM_CHECK_EXTENSION, 0) == errno.EBADF
    finally:
        os.close(r)
        os.close(w)


def test_cloexec_flags(k):
    """§4.1 rule 5: gmem fds have no FD_CLOEXEC; VM and vCPU fds do."""
    kvm, vm, vcpu, gmem = make_all(k)
    assert fcntl.fcntl(gmem, fcntl.F_GETFD) == 0
    assert fcntl.fcntl(vm, fcntl.F_GETFD) == fcntl.FD_CLOEXEC
    assert fcntl.fcntl(vcpu, fcntl.F_GETFD) == fcntl.FD_CLOEXEC
    assert fcntl.fcntl(k.dup(vm), fcntl.F_GETFD) == 0  # dup(2) clears it


def test_gmem_inodes_distinct(k):
    """ST-GMEM-618 test_create_guest_memfd_multiple: distinct st_ino, correct sizes."""
    _, vm = create_vm(k)
    a, b = create_gmem(k, vm, P), create_gmem(k, vm, 2 * P)
    sa, sb = k.fstat(a), k.fstat(b)
    assert (sa.st_size, sb.st_size) == (P, 2 * P) and sa.st_ino != sb.st_ino
    assert k.fstat(a).st_size == P


def test_close_then_ebadf_and_fd_really_closed(k):
    kvm, vm, vcpu, gmem = make_all(k)
    for fd in (gmem, vcpu, vm, kvm):
        k.close(fd)
        assert not is_open(fd)
        assert err(k.close, fd) == errno.EBADF
        assert err(k.ioctl, fd, K.KVM_CHECK_EXTENSION, 0) == errno.EBADF


def test_close_all_leaves_no_fds():
    before = own_fds()
    k = kmock.Kernel()
    fds = make_all(k)
    m = k.mmap(fds[3], 4 * P, RW, SHARED)
    k.close_all()
    assert m.closed
    for fd in fds:
        assert not is_open(fd) or fd in before
    del k, m
    gc.collect()
    assert own_fds() <= before


def test_context_manager():
    before = own_fds()
    with kmock.Kernel() as k:
        fds = make_all(k)
        dup = k.dup(fds[3])
        _, vm2 = create_vm(k)
    for fd in (*fds, dup, vm2):
        assert not is_open(fd) or fd in before
    del k
    gc.collect()
    assert own_fds() <= before


def test_dup_gmem_binds(k):
    """§4.2: binding via a dup'ed fd works."""
    _, vm = create_vm(k)
    gmem = create_gmem(k, vm, 4 * P)
    d = k.dup(gmem)
    assert d != gmem and is_open(d)
    assert set_region(k, vm, 1, 1 << 32, 4 * P, GMEM, d) == 0
    assert k.fstat(d).st_ino == k.fstat(gmem).st_ino


def test_mapping_keeps_file_alive(k):
    """A mapping holds a reference to its file: after close(fd) it still reads and writes."""
    _, vm = create_vm(k)
    gmem = create_gmem(k, vm, 4 * P, MMAP | INIT_SHARED)
    m = k.mmap(gmem, 4 * P, RW, SHARED)
    k.close(gmem)
    assert not is_open(gmem)
    m[0:3] = b"abc"
    assert m[0:3] == b"abc"
    m.close()
    with pytest.raises(ValueError):
        m[0]


def test_vcpu_mapping_keeps_file_alive(k):
    _, vm = create_vm(k)
    vcpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    assert k.ioctl(vcpu, K.KVM_RUN, 0) == 0
    m = k.mmap(vcpu, 3 * P, RW, SHARED)
    k.close(vcpu)
    k.close(vm)
    assert K.kvm_run.from_address(m.address).exit_reason == K.KVM_EXIT_HLT
    m.close()
