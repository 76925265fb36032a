"""Checks the kernel makes before it looks the fd up, and what a raw syscall on a kmock fd
answers (the fd's placeholder, kmock.fdtable).

The real kernel's answers (Linux 6.18.44 on the probe host) are compared on this machine
by the conformance scenario fd_checks_before_fdget; these tests need no /dev/kvm.
"""

import errno
import fcntl
import os

import pytest

import kmock
from kmock import _libc
from kmock.uapi import kvm as K

P = 4096
BAD_FD = 1 << 20
RW, SHARED, PRIVATE, ANON = 3, 0x01, 0x02, 0x20
O_LARGEFILE = 0o100000


@pytest.fixture
def k():
    k = kmock.Kernel("linux-6.18")
    yield k
    k.close_all()


def _fds(k, open_flags=os.O_RDWR | os.O_CLOEXEC):
    kvm = k.open("/dev/kvm", open_flags)
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, 0)
    vcpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    g = k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(
        size=4 * P, flags=K.GUEST_MEMFD_FLAG_MMAP | K.GUEST_MEMFD_FLAG_INIT_SHARED))
    return kvm, vm, vcpu, g


def _errno(fn, *args):
    with pytest.raises(OSError) as e:
        fn(*args)
    return e.value.errno


def test_ftruncate_negative_length_is_einval_before_the_fd(k):
    """fs/open.c do_sys_ftruncate: length < 0 is EINVAL before fdget."""
    assert _errno(k.ftruncate, BAD_FD, -1) == errno.EINVAL
    assert _errno(k.ftruncate, BAD_FD, 0) == errno.EBADF
    for fd in _fds(k):
        assert _errno(k.ftruncate, fd, -P) == errno.EINVAL


def test_mmap_unaligned_offset_is_einval_before_the_fd(k):
    """arch/x86/kernel/sys_x86_64.c sys_mmap: off & ~PAGE_MASK before ksys_mmap_pgoff."""
    assert _errno(k.mmap, BAD_FD, P, RW, SHARED, 1) == errno.EINVAL
    assert _errno(k.mmap, BAD_FD, P, RW, PRIVATE | ANON, P // 2) == errno.EINVAL
    assert _errno(k.mmap, BAD_FD, P, RW, SHARED, 0) == errno.EBADF
    for fd in _fds(k):
        assert _errno(k.mmap, fd, P, RW, SHARED, P + 8) == errno.EINVAL


def test_map_anonymous_never_looks_the_fd_up(k):
    """mm/mmap.c ksys_mmap_pgoff: fget only without MAP_ANONYMOUS. A bad fd and every kmock
    fd (the vCPU's kvm_run included) give anonymous memory, made by the real OS."""
    m = k.mmap(BAD_FD, P, RW, SHARED | ANON)
    m[0:2] = b"ok"
    assert m[0:2] == b"ok"
    kvm, vm, vcpu, g = _fds(k)
    run = k.mmap(vcpu, P, RW, SHARED)
    for fd in (kvm, vm, vcpu, g):
        a = k.mmap(fd, 64 * P, RW | 4, SHARED | ANON)  # PROT_EXEC: no noexec file behind
        assert a[63 * P] == 0  # past kvm_run's pages and the gmem's size: no SIGBUS
        a[0:8] = b"\xff" * 8
        a.close()
        k.mmap(fd, P, RW, PRIVATE | ANON, -P).close()  # no file: no file_mmap_ok limit
    assert run[0:8] == b"\0" * 8  # kvm_run untouched
    assert k.file(g).inode.allocated.count(0, 4) == 0  # the gmem's pages untouched
    assert _errno(k.mmap, BAD_FD, 0, RW, PRIVATE | ANON) == errno.EINVAL  # do_mmap: len 0
    with pytest.raises(TypeError):
        k.mmap(None, P, RW, PRIVATE | ANON)
    with pytest.raises(TypeError):
        k.mmap(-1, "4096", RW, PRIVATE | ANON)
    assert _errno(k.mmap, -1, 1 << 64, RW, PRIVATE | ANON) == errno.ENOMEM  # as a file's
    k.mmap(-1, P, RW, PRIVATE | ANON, 1 << 63).close()  # the kernel's unsigned long
    with pytest.raises(OverflowError):
        k.mmap(-1, P, 1 << 40, PRIVATE | ANON)


def test_f_getfl_is_the_kernels(k):
    """F_GETFL on the placeholder: /dev/kvm as opened (build_open_flags adds O_LARGEFILE on
    64-bit), VM and vCPU O_RDWR (anon_inode_getfd), guest_memfd O_RDWR|O_LARGEFILE
    (__kvm_gmem_create); values measured on 6.18.44."""
    kvm, vm, vcpu, g = _fds(k)
    got = [fcntl.fcntl(fd, fcntl.F_GETFL) for fd in (kvm, vm, vcpu, g)]
    assert got == [os.O_RDWR | O_LARGEFILE, os.O_RDWR, os.O_RDWR, os.O_RDWR | O_LARGEFILE]
    ro = k.open("/dev/kvm", os.O_RDONLY | os.O_NONBLOCK)
    assert fcntl.fcntl(ro, fcntl.F_GETFL) == os.O_RDONLY | os.O_NONBLOCK | O_LARGEFILE
    assert not fcntl.fcntl(ro, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    # get_unused_fd_flags(O_CLOEXEC) for VM and vCPU, (0) for a guest_memfd
    assert [fcntl.fcntl(fd, fcntl.F_GETFD) for fd in (kvm, vm, vcpu, g)] == [1, 1, 1, 0]


def test_f_setfl_is_per_open_file_and_shared_by_dup(k):
    """F_SETFL changes one open file description: its dups see it, another VM's fd not."""
    kvm, vm, vcpu, g = _fds(k)
    vm2 = k.ioctl(kvm, K.KVM_CREATE_VM, 0)
    d = k.dup(vm)
    fcntl.fcntl(vm, fcntl.F_SETFL, os.O_NONBLOCK)
    assert fcntl.fcntl(d, fcntl.F_GETFL) & os.O_NONBLOCK
    assert not fcntl.fcntl(vm2, fcntl.F_GETFL) & os.O_NONBLOCK
    assert not fcntl.fcntl(vcpu, fcntl.F_GETFL) & os.O_NONBLOCK
    assert _errno(fcntl.fcntl, vm, fcntl.F_SETFL, os.O_DIRECT) == errno.EINVAL  # setfl


def test_raw_syscalls_on_a_vm_fd_fail_harmlessly_as_the_kernel(k):
    """A raw call that bypasses kmock reaches the placeholder (an anon_inode epoll file for
    a VM or vCPU fd): the errno a real VM fd gives (no ->read/->write/->mmap/->fsync)."""
    kvm, vm, vcpu, g = _fds(k)
    for fd in (vm, vcpu):
        assert _errno(os.read, fd, 8) == errno.EINVAL
        assert _errno(os.write, fd, b"x" * 8) == errno.EINVAL
        assert _errno(os.pread, fd, 8, 0) == errno.ESPIPE
        assert _errno(os.ftruncate, fd, 0) == errno.EINVAL
        assert _errno(os.fsync, fd) == errno.EINVAL
        assert _errno(_libc.mmap, None, P, RW, SHARED, fd, 0) == errno.ENODEV
        assert os.readlink(f"/proc/self/fd/{fd}").startswith("anon_inode:")
    # a guest_memfd's placeholder is /dev/null: harmless, but not the kernel's errno
    assert os.read(g, 8) == b""
    assert _errno(_libc.mmap, None, P, RW, SHARED, g, 0) == errno.ENODEV
    assert k.file(g).inode.allocated.count(0, 4) == 0


def test_fds_close_and_leave_no_placeholder_behind(k):
    def placeholders():
        out = set()
        for name in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{name}")
            except OSError:
                continue
            if target in ("/dev/null", "anon_inode:[eventpoll]"):
                out.add(int(name))
        return out

    before = placeholders()
    fds = _fds(k)
    assert set(fds) <= placeholders()
    for fd in reversed(fds):
        k.close(fd)
    assert placeholders() == before
