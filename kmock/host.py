"""HostKernel: the kmock syscall API over the real operating system.

Every call goes straight to the real kernel (``os``, ``fcntl.ioctl``, libc
``mmap``/``fallocate``), so a scenario written against :class:`kmock.syscall_api.SyscallAPI`
can be run here and on the mock and the outcomes compared (``kmock conform``).

Mapping accesses go through ``process_vm_readv``/``process_vm_writev`` on our own pid,
so a page whose fault handler would raise SIGBUS (guest_memfd private memory, a page
beyond EOF of a shmem file) shows up as a short copy, which is reported as
``kmock.SigBus(offset)`` instead of a signal that would kill the interpreter.

Kept deliberately thin: it is the baseline of ``kmock bench``.
"""

import errno
import operator

from . import _libc
from ._real import fcntl, os  # (not sys.modules': a patcher may be active at this import)
from .errors import SigBus
from .syscall_api import Mapping, SyscallAPI
from .uapi import kvm as _kvm

# The real functions (kmock._real: the modules as they were when kmock was imported, even
# when this module is first imported while a patcher is active): HostKernel is the real
# kernel, and a test that patches os/fcntl to reach a mock (kmock.testing, the pytest plugin)
# must not turn HostKernel's calls into calls on that mock (an fd number the mock once owned
# may be the real kernel's now).
_open, _close, _dup = os.open, os.close, os.dup
_read, _write, _pread, _pwrite = os.read, os.write, os.pread, os.pwrite
_lseek, _fstat, _ftruncate = os.lseek, os.fstat, os.ftruncate
_ioctl = fcntl.ioctl

#: MAP_FIXED | MAP_FIXED_NOREPLACE (include/uapi/asm-generic/mman-common.h)
_FIXED = _libc.MAP_FIXED | 0x100000

_read_user = _libc.read_user
_write_user = _libc.write_user


def _index(index, message):
    """``index`` as an int, or TypeError as mmap.mmap raises for any other key."""
    try:
        return operator.index(index)
    except TypeError:
        raise TypeError(message) from None


def _closed():
    return ValueError("mmap closed or invalid")


class HostMapping(Mapping):
    """A real mapping made by libc mmap; indexing like ``mmap.mmap``.

    Bytes are copied with process_vm_readv/writev, so a would-be SIGBUS raises
    ``kmock.SigBus(offset)`` (offset within the mapping of the first byte not copied)
    and is appended to the owning kernel's ``sigbus_log``.
    """

    __slots__ = ("address", "_len", "_kernel", "prot", "flags", "fd", "offset", "closed")

    def __init__(self, kernel, address, length, prot, flags, fd, offset):
        self.address = address
        self._len = length
        self._kernel = kernel
        self.prot = prot
        self.flags = flags
        self.fd = fd
        self.offset = offset
        self.closed = False

    def __repr__(self):
        state = "closed" if self.closed else f"address={self.address:#x}"
        return f"<HostMapping {state} len={self._len:#x} prot={self.prot} flags={self.flags:#x}>"

    def __len__(self):
        if self.closed:
            raise _closed()
        return self._len

    def _sigbus(self, offset, what):
        e = SigBus(offset, what)
        self._kernel.sigbus_log.append(e)
        return e

    def _read(self, start, n):
        data, copied = _read_user(self.address + start, n)
        if copied != n:
            raise self._sigbus(start + copied, "read")
        return data

    def __getitem__(self, index):
        if self.closed:
            raise _closed()
        if isinstance(index, slice):
            start, stop, step = index.indices(self._len)
            if step == 1:
                if stop <= start:
                    return b""
                return self._read(start, stop - start)
            idx = range(start, stop, step)
            if not idx:
                return b""
            lo, hi = min(idx[0], idx[-1]), max(idx[0], idx[-1])
            chunk = self._read(lo, hi - lo + 1)
            return bytes(chunk[i - lo] for i in idx)
        i = _index(index, "mmap indices must be integers")
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError("mmap index out of range")
        return self._read(i, 1)[0]

    def __setitem__(self, index, value):
        if self.closed:
            raise _closed()
        if not self.prot & _libc.PROT_WRITE:
            raise TypeError("mmap can't modify a readonly memory map.")
        if isinstance(index, slice):
            start, stop, step = index.indices(self._len)
            data = memoryview(value).cast("B") if not isinstance(value, (bytes, bytearray)) else value
            if step == 1:
                n = max(stop - start, 0)
                if len(data) != n:
                    raise IndexError("mmap slice assignment is wrong size")
                if n == 0:
                    return
                copied = _write_user(self.address + start, data)
                if copied != n:
                    raise self._sigbus(start + copied, "write")
                return
            idx = range(start, stop, step)
            if len(data) != len(idx):
                raise IndexError("mmap slice assignment is wrong size")
            for i, b in zip(idx, bytes(data)):
                if _write_user(self.address + i, bytes((b,))) != 1:
                    raise self._sigbus(i, "write")
            return
        i = _index(index, "mmap indices must be integer")  # (CPython's two messages)
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError("mmap index out of range")
        if not isinstance(value, int):
            raise TypeError("mmap item value must be an int")
        if not 0 <= value <= 255:
            raise ValueError("mmap item value must be in range(0, 256)")
        if _write_user(self.address + i, bytes((value,))) != 1:
            raise self._sigbus(i, "write")

    def close(self):
        """munmap; closing twice is a no-op, as for mmap.mmap."""
        if self.closed:
            return
        _libc.munmap(self.address, self._len)
        self.closed = True
        self._kernel._maps.discard(self)


class HostKernel(SyscallAPI):
    """The syscall API over the real OS (the baseline for conformance and bench)."""

    #: ioctls whose non-negative return value is a new file descriptor
    FD_IOCTLS = frozenset(
        {_kvm.KVM_CREATE_VM, _kvm.KVM_CREATE_VCPU, _kvm.KVM_CREATE_GUEST_MEMFD}
    )

    name = "host"

    def __init__(self, trace=None):
        self._fds = set()
        self._maps = set()
        self.sigbus_log = []
        #: the syscall trace (kmock.trace) when ``trace`` names a path or a file
        self.trace = None
        if trace is not None:
            from .trace import instrument

            self.trace = instrument(self, trace)

    def __repr__(self):
        return f"<HostKernel fds={len(self._fds)} maps={len(self._maps)}>"

    # --- file descriptors ------------------------------------------------------------

    def open(self, path, flags, mode=0o777):
        fd = _open(path, flags, mode)
        self._fds.add(fd)
        return fd

    def close(self, fd):
        _close(fd)
        self._fds.discard(fd)

    def dup(self, fd):
        new = _dup(fd)
        self._fds.add(new)
        return new

    def ioctl(self, fd, request, arg=0, mutate_flag=True):
        if type(arg) is int and not -(1 << 31) <= arg < 1 << 31:
            r = _libc.ioctl_value(fd, request, arg)  # (beyond fcntl.ioctl's C int)
        else:
            r = _ioctl(fd, request, arg, mutate_flag)
        if request in self.FD_IOCTLS and type(r) is int and r >= 0:
            self._fds.add(r)
        return r

    # --- memory ----------------------------------------------------------------------

    def mmap(self, fd, length, prot, flags, offset=0):
        if type(flags) is int and flags & _FIXED:
            # The syscall API has no address: MAP_FIXED(_NOREPLACE) would map at NULL, which
            # only CAP_SYS_RAWIO may do (mmap_min_addr). EPERM, as for an unprivileged VMM,
            # instead of making page 0 (and so every NULL pointer) valid in this process.
            raise OSError(errno.EPERM, os.strerror(errno.EPERM))
        addr = _libc.mmap(None, length, prot, flags, fd, offset)
        m = HostMapping(self, addr, length, prot, flags, fd, offset)
        self._maps.add(m)
        return m

    def fallocate(self, fd, mode, offset, length):
        _libc.fallocate(fd, mode, offset, length)

    # --- plain file operations -------------------------------------------------------

    def read(self, fd, n):
        return _read(fd, n)

    def write(self, fd, data):
        return _write(fd, data)

    def pread(self, fd, n, offset):
        return _pread(fd, n, offset)

    def pwrite(self, fd, data, offset):
        return _pwrite(fd, data, offset)

    def lseek(self, fd, pos, how):
        return _lseek(fd, pos, how)

    def fstat(self, fd):
        return _fstat(fd)

    def ftruncate(self, fd, length):
        _ftruncate(fd, length)

    def fchmod(self, fd, mode):
        os.fchmod(fd, mode)

    def fsync(self, fd):
        os.fsync(fd)

    # --- teardown --------------------------------------------------------------------

    def owns_fd(self, fd):
        """Whether ``fd`` was opened (or adopted) through this HostKernel."""
        return fd in self._fds

    def adopt(self, fd):
        """Track ``fd`` (opened elsewhere) as one of this HostKernel's; returns it."""
        self._fds.add(fd)
        return fd

    def close_all(self):
        """munmap every mapping and close every fd this object handed out."""
        for m in list(self._maps):
            try:
                m.close()
            except OSError:
                pass
        self._maps.clear()
        for fd in sorted(self._fds, reverse=True):
            try:
                _close(fd)
            except OSError:
                pass
        self._fds.clear()
        if self.trace is not None:
            self.trace.flush()
