"""os and fcntl functions while kmock patches: kmock fds go to the Kernel, others to the OS.

``make_fakes(patcher)`` returns {(module name, attribute): replacement}. Each
replacement tests ``fd in fds`` (a set the patcher keeps of the kmock fds) and calls
either the Kernel method of the same name or the real function, so a call on a
non-kmock fd costs one set lookup and one Python call more than the real one
(measured by ``kmock.benchmarks.patching``).

Fd identity: the set changes with every open/dup/close/ioctl routed to the Kernel.
A real open/dup/memfd_create that returns a number the set still holds means that a
kmock fd was closed behind the patcher's back (C code, ``io.open(fd).close()``) and
the number reused: the fd is dropped from the set, so the new file reaches the real
OS, and recorded in ``patcher.stale_fds`` (the pytest fixture fails the test).

The hot calls (read, write, pread, pwrite, lseek, fstat, fcntl.ioctl) have a compiled
twin, kmock.testing._patch (csrc_cython/_patch.pyx), used when it is built and
``KMOCK_PURE_PYTHON`` is not set: the Python wrapper's own call overhead is more than
the cost target allows.

``os.posix_fallocate`` on a kmock fd follows glibc: fallocate(fd, 0, ...), and on
EOPNOTSUPP glibc's emulation (sysdeps/posix/posix_fallocate.c: fstat, ENODEV unless
a regular file, then writes to each block), whose first access fails on every file
kmock emulates (a guest_memfd has no read/write: ESPIPE, File.pread).
"""

import errno
import fcntl
import os
import stat

from ..compiled import pure_requested
from ..errors import oserror

#: the paths whose open goes to the Kernel (anything else is opened by the real OS)
KMOCK_PATHS = frozenset({"/dev/kvm", "/dev/iommu"})
KMOCK_PREFIXES = ("/dev/vfio/",)

REAL = {
    ("os", "open"): os.open, ("os", "close"): os.close, ("os", "closerange"): os.closerange,
    ("os", "read"): os.read, ("os", "write"): os.write, ("os", "pread"): os.pread,
    ("os", "pwrite"): os.pwrite, ("os", "lseek"): os.lseek, ("os", "fstat"): os.fstat,
    ("os", "ftruncate"): os.ftruncate, ("os", "dup"): os.dup, ("os", "dup2"): os.dup2,
    ("os", "posix_fallocate"): os.posix_fallocate, ("os", "memfd_create"): os.memfd_create,
    ("fcntl", "ioctl"): fcntl.ioctl,
}


def is_kmock_path(path):
    if type(path) is not str:
        path = os.fsdecode(os.fspath(path))
    return path in KMOCK_PATHS or path.startswith(KMOCK_PREFIXES)


def _ignore(call):
    pass


def compiled():
    """The compiled twin of the hot fakes, or None (not built, or KMOCK_PURE_PYTHON=1)."""
    if pure_requested():
        return None
    try:
        from . import _patch
    except ImportError:
        return None
    return _patch


HOT = ("read", "write", "pread", "pwrite", "lseek", "fstat")


def make_fakes(patcher, compiled=None):
    """The replacements for ``patcher``; with ``compiled`` (the _patch module), the hot
    ones are its functions (which route through whichever patcher it activated)."""
    k = patcher.kernel
    fds = patcher.fds  # kmock fds
    memfds = patcher.memfds  # memfds made through the Kernel (it sees their truncation)
    note = patcher.note or _ignore
    stale = patcher.stale
    owns = k.owns_fd
    real_open, real_close, real_closerange = os.open, os.close, os.closerange
    real_read, real_write, real_pread, real_pwrite = os.read, os.write, os.pread, os.pwrite
    real_lseek, real_fstat, real_ftruncate = os.lseek, os.fstat, os.ftruncate
    real_dup, real_dup2, real_fallocate = os.dup, os.dup2, os.posix_fallocate
    real_ioctl = fcntl.ioctl
    k_open, k_close, k_read, k_write = k.open, k.close, k.read, k.write
    k_pread, k_pwrite, k_lseek, k_fstat = k.pread, k.pwrite, k.lseek, k.fstat
    k_ftruncate, k_dup, k_ioctl, k_fallocate = k.ftruncate, k.dup, k.ioctl, k.fallocate

    def open(path, flags, mode=0o777, *, dir_fd=None):  # noqa: A001
        if dir_fd is None and is_kmock_path(path):
            note(("open", path, flags))
            fd = k_open(path, flags, mode)
            if owns(fd):
                fds.add(fd)
            return fd
        fd = real_open(path, flags, mode, dir_fd=dir_fd)
        if fd in fds:
            stale(fd)
        return fd

    def close(fd):
        if fd in fds:
            fds.discard(fd)
            note(("close", fd))
            return k_close(fd)
        if fd in memfds:
            memfds.discard(fd)
            return k_close(fd)
        return real_close(fd)

    def closerange(fd_low, fd_high):
        for fd in sorted(fds | memfds):
            if fd_low <= fd < fd_high:
                close(fd)
        return real_closerange(fd_low, fd_high)

    def read(fd, n):
        if fd in fds:
            note(("read", fd, n))
            return k_read(fd, n)
        return real_read(fd, n)

    def write(fd, data):
        if fd in fds:
            note(("write", fd, len(data)))
            return k_write(fd, data)
        return real_write(fd, data)

    def pread(fd, n, offset):
        if fd in fds:
            note(("pread", fd, n, offset))
            return k_pread(fd, n, offset)
        return real_pread(fd, n, offset)

    def pwrite(fd, data, offset):
        if fd in fds:
            note(("pwrite", fd, len(data), offset))
            return k_pwrite(fd, data, offset)
        return real_pwrite(fd, data, offset)

    def lseek(fd, pos, how):
        if fd in fds:
            note(("lseek", fd, pos, how))
            return k_lseek(fd, pos, how)
        return real_lseek(fd, pos, how)

    def fstat(fd):
        if fd in fds:
            return k_fstat(fd)
        return real_fstat(fd)

    def ftruncate(fd, length):
        if fd in fds or fd in memfds:
            note(("ftruncate", fd, length))
            return k_ftruncate(fd, length)
        return real_ftruncate(fd, length)

    def dup(fd):
        if fd in fds:
            note(("dup", fd))
            new = k_dup(fd)
            fds.add(new)
            return new
        new = real_dup(fd)
        if new in fds:
            stale(new)
        return new

    def dup2(fd, fd2, inheritable=True):
        if fd in fds:
            # the Kernel hands out the lowest free number, as dup(2); dup2 onto a chosen
            # number is not emulated (documented limit)
            raise oserror(errno.EINVAL)
        if fd2 in fds:
            close(fd2)  # dup2 closes the old file at fd2 first
        return real_dup2(fd, fd2, inheritable)

    def posix_fallocate(fd, offset, length):
        if fd in fds:
            note(("posix_fallocate", fd, offset, length))
            try:
                return k_fallocate(fd, 0, offset, length)
            except OSError as e:
                if e.errno != errno.EOPNOTSUPP:
                    raise
            st = k_fstat(fd)  # glibc's emulation
            if stat.S_ISFIFO(st.st_mode):
                raise oserror(errno.ESPIPE) from None
            if not stat.S_ISREG(st.st_mode):
                raise oserror(errno.ENODEV) from None
            k_pread(fd, 1, offset)
            k_pwrite(fd, b"\0", offset)
            return None
        if fd in memfds:
            return k_fallocate(fd, 0, offset, length)
        return real_fallocate(fd, offset, length)

    def memfd_create(name, flags=os.MFD_CLOEXEC):
        fd = k.memfd_create(name, flags)
        if fd in fds:
            stale(fd)
        memfds.add(fd)
        return fd

    def ioctl(fd, request, arg=0, mutate_flag=True):
        if fd in fds:
            note(("ioctl", fd, request))
            r = k_ioctl(fd, request, arg, mutate_flag)
            if r.__class__ is int and r > 2 and r not in fds and owns(r):
                fds.add(r)  # KVM_CREATE_VM, _VCPU, _GUEST_MEMFD, ...
            return r
        try:
            return real_ioctl(fd, request, arg, mutate_flag)
        except OSError as e:
            # a kmock fd made by a direct Kernel call while patched: adopt it
            if e.errno == errno.ENOTTY and patcher.adopt(fd):
                return ioctl(fd, request, arg, mutate_flag)
            raise

    fakes = {
        ("os", "open"): open, ("os", "close"): close, ("os", "closerange"): closerange,
        ("os", "read"): read, ("os", "write"): write, ("os", "pread"): pread,
        ("os", "pwrite"): pwrite, ("os", "lseek"): lseek, ("os", "fstat"): fstat,
        ("os", "ftruncate"): ftruncate, ("os", "dup"): dup, ("os", "dup2"): dup2,
        ("os", "posix_fallocate"): posix_fallocate, ("os", "memfd_create"): memfd_create,
        ("fcntl", "ioctl"): ioctl,
    }
    if compiled is not None:
        for name in HOT:
            fakes[("os", name)] = getattr(compiled, name)
        fakes[("fcntl", "ioctl")] = compiled.ioctl
    return fakes
