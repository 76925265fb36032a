"""The mock's fd table: real, unique descriptors mapped to open file objects.

Every fd kmock hands out is a real descriptor of this process (a placeholder), so it
never collides with the process's own fds, and a raw ``os``/``fcntl``/``mmap`` call that
reaches it behind kmock's back never touches memory kmock owns (a guest_memfd's backing
memfd is never handed out). The placeholder is chosen so that ``fcntl(F_GETFL)`` gives
what the kernel gives for the file it stands for (measured on Linux 6.18):

* an anonymous-inode file opened O_RDWR (``File.f_flags``: VM, vCPU, device, iommufd
  objects): a fresh epoll fd.
  It is itself an anon_inode file (anon_inode_getfile: f_flags O_RDWR, no O_LARGEFILE,
  as kvm_dev_ioctl_create_vm / create_vcpu_fd give), with no read/write/mmap: a raw
  read/write is EINVAL, pread ESPIPE, mmap ENODEV, ftruncate/fsync EINVAL, as on a VM fd.
* a guest_memfd (an S_IFREG inode; __kvm_gmem_create sets O_LARGEFILE): a dup of one
  ``/dev/null`` opened O_RDWR (F_GETFL O_RDWR|O_LARGEFILE). A raw read gives b"" and
  a raw write succeeds (the kernel: EINVAL); F_SETFL flags are shared between the
  guest_memfds of one Kernel (one open file description).
* another anonymous-inode file (a stats fd: O_RDONLY): /dev/null opened with its
  access mode (F_GETFL then also has O_LARGEFILE).
* a character device opened by path (/dev/kvm, /dev/iommu, VFIO cdevs): ``/dev/null``
  opened with the caller's access mode and status flags (``File.f_flags``, which
  Kernel.open sets; build_open_flags adds O_LARGEFILE on 64-bit, as for the real node).

What a raw call still answers differently from the kernel is listed in
docs/api-errors.md ("Raw syscalls on a kmock fd").
"""

import ctypes
import errno
import fcntl
import os
import stat
import threading

from .errors import oserror
from .file import REFS_LOCK, fput, get_file


class FdTable:
    """fd -> File. ``install`` gives a file a new fd, ``lookup`` finds it (EBADF otherwise).

    ``on_install``: None, or a callable given each fd ``install`` hands out, once the
    fd is in the table (the preload server learns which fds its calls install).
    Compiled, a cdef class (kmock/fdtable.pxd) whose install, close_fd, fdget and lookup
    are C calls from typed callers.
    """

    def __init__(self):
        self._files = {}
        #: the guest_memfd placeholder (O_RDWR: F_GETFL O_RDWR|O_LARGEFILE)
        self.placeholder = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
        self._lock = threading.Lock()
        #: ``get(fd, default=None)``: the file behind ``fd`` or ``default`` (the dict's
        #: own method: the ioctl fast path makes no Python call for it)
        self.get = self._files.get
        self.on_install = None

    # --- installing and removing ----------------------------------------------------------

    def install(self, file, cloexec=None):
        """Give ``file`` a new real, unique fd (taking a reference) and return it; its
        placeholder follows ``file.i_mode`` and ``file.f_flags`` (see above)."""
        if cloexec is None:
            cloexec = file.cloexec
        fmt = file.i_mode & _S_IFMT
        if fmt == _S_IFCHR:
            fd = _open_null(file.f_flags & OPEN_FLAGS_KEPT, cloexec)
        elif fmt == _S_IFREG:
            # (no third argument: it is 0 then, and fcntl.fcntl skips trying to read an
            # int as a buffer first, which costs an exception, about 3,400 instructions)
            fd = _fcntl(self.placeholder, _F_DUPFD_CLOEXEC if cloexec else _F_DUPFD)
        elif file.f_flags & _O_ACCMODE == _O_RDWR:
            fd = anon_placeholder(cloexec)
        else:  # (e.g. a stats fd, O_RDONLY: F_GETFL has the right access mode)
            fd = _open_null(file.f_flags & _O_ACCMODE, cloexec)
        get_file(file)
        self._files[fd] = file
        if self.on_install is not None:
            self.on_install(fd)
        return fd

    def dup(self, fd):
        """dup(2): a new fd for the same open file (FD_CLOEXEC never set)."""
        f = self.fdget(fd)
        try:
            new = fcntl.fcntl(fd, fcntl.F_DUPFD)  # (the argument 0: see install)
        except BaseException:
            f.put()
            raise
        self._files[new] = f  # the reference fdget took is the new fd's
        return new

    def fdget(self, fd):
        """The file behind ``fd`` with a reference taken (the caller puts it): a close
        of ``fd`` by another thread meanwhile does not release the file under the
        caller (the kernel's fdget when the fd table is shared). OSError EBADF if
        ``fd`` is not one of ours."""
        lock = REFS_LOCK
        lock.acquire()  # no close can drop the last reference between look-up and get
        try:
            f = self.lookup(fd)
            f.refs += 1
        finally:
            lock.release()
        return f

    def close_fd(self, fd):
        """close(2) (the kernel's close_fd): remove ``fd`` and drop its reference on the
        file (released if it was the last). OSError EBADF if ``fd`` is not one of ours."""
        f = self._files.pop(fd, None)  # atomic: one thread of two closing an fd wins
        if f is None:
            raise oserror(errno.EBADF)
        _close(fd)
        fput(f)

    def forget(self, fd):
        """``fd``'s number was closed behind kmock's back and now names another file:
        drop our entry without closing the number; returns the file (the caller drops
        the reference), or None."""
        with self._lock:
            return self._files.pop(fd, None)

    # --- look-ups --------------------------------------------------------------------------

    def lookup(self, fd):
        """The file behind ``fd``; OSError(EBADF) if it is not one of ours."""
        try:
            return self._files[fd]
        except (KeyError, TypeError):
            if not isinstance(fd, int):
                raise TypeError("an integer file descriptor is required") from None
            raise oserror(errno.EBADF) from None

    def __contains__(self, fd):
        return fd in self._files

    def fds(self):
        return list(self._files)

    def items(self):
        """(fd, file) pairs."""
        return list(self._files.items())

    def files(self):
        """Each open file once (an fd and its dups share one)."""
        return list({id(f): f for f in list(self._files.values())}.values())

    def __len__(self):
        return len(self._files)

    def close(self):
        if self.placeholder >= 0:
            os.close(self.placeholder)
            self.placeholder = -1


# (module constants: install and close_fd run on every fd creation and close, and a
# module attribute look-up from compiled code is a dict look-up of its own)
_S_IFMT = 0o170000  # stat.S_IFMT's mask
_S_IFCHR = stat.S_IFCHR
_S_IFREG = stat.S_IFREG
_O_ACCMODE = os.O_ACCMODE
_O_RDWR = os.O_RDWR
_F_DUPFD = fcntl.F_DUPFD
_F_DUPFD_CLOEXEC = fcntl.F_DUPFD_CLOEXEC
_fcntl = fcntl.fcntl
_close = os.close
#: the open(2) flags a device placeholder keeps: the access mode and the status flags
#: F_GETFL reports (O_CREAT, O_TRUNC, O_EXCL, O_NOCTTY are not kept by do_dentry_open)
OPEN_FLAGS_KEPT = os.O_ACCMODE | os.O_NONBLOCK | os.O_APPEND | os.O_SYNC | os.O_DSYNC
_epoll_create1 = ctypes.CDLL(None, use_errno=True).epoll_create1
_epoll_create1.argtypes = (ctypes.c_int,)
_EPOLL_CLOEXEC = os.O_CLOEXEC


def _open_null(flags, cloexec):
    fd = os.open("/dev/null", flags | os.O_CLOEXEC)
    if not cloexec:
        os.set_inheritable(fd, True)  # (os.open makes every fd O_CLOEXEC: PEP 446)
    return fd


def anon_placeholder(cloexec):
    """A new epoll fd: an anon_inode file with f_flags O_RDWR and no file operations a
    raw call could reach (the placeholder of VM, vCPU and other anonymous-inode fds)."""
    fd = _epoll_create1(_EPOLL_CLOEXEC if cloexec else 0)
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return fd


def is_open_fd(fd):
    """Is ``fd`` (a u32 from a struct) an open descriptor of this process at all?"""
    if fd > 0x7FFFFFFF:
        return False
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True
