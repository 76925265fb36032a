"""The mock's fd table: real, unique descriptors mapped to open file objects.

Every fd kmock hands out is a real descriptor of this process (a duplicate of a
placeholder), so it never collides with the process's own fds. The placeholder is
an fd of ``/dev/null`` opened read-only: an ``os``/``fcntl``/``mmap`` call that
reaches it behind kmock's back fails (ENOTTY, ENODEV, EBADF ...) instead of
touching memory kmock owns (a guest_memfd's backing memfd is never handed out).
"""

import errno
import fcntl
import os
import threading

from .errors import oserror
from .file import REFS_LOCK


class FdTable:
    """fd -> File. ``install`` gives a file a new fd, ``lookup`` finds it (EBADF otherwise)."""

    def __init__(self):
        self._files = {}
        self.placeholder = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        self._lock = threading.Lock()
        #: ``get(fd, default=None)``: the file behind ``fd`` or ``default`` (the dict's
        #: own method: the ioctl fast path makes no Python call for it)
        self.get = self._files.get

    # --- installing and removing ----------------------------------------------------------

    def install(self, file, cloexec=None):
        """Give ``file`` a new real, unique fd (taking a reference) and return it."""
        if cloexec is None:
            cloexec = file.cloexec
        cmd = fcntl.F_DUPFD_CLOEXEC if cloexec else fcntl.F_DUPFD
        fd = fcntl.fcntl(self.placeholder, cmd, 0)
        file.get()
        self._files[fd] = file
        return fd

    def dup(self, fd):
        """dup(2): a new fd for the same open file (FD_CLOEXEC never set)."""
        f = self.fdget(fd)
        try:
            new = fcntl.fcntl(fd, fcntl.F_DUPFD, 0)
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
        with REFS_LOCK:  # no close can drop the last reference between look-up and get
            f = self.lookup(fd)
            f.refs += 1
        return f

    def remove(self, fd):
        """Close ``fd``; returns its file (the caller drops the reference)."""
        f = self._files.pop(fd, None)  # atomic: one thread of two closing an fd wins
        if f is None:
            raise oserror(errno.EBADF)
        os.close(fd)
        return f

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


def is_open_fd(fd):
    """Is ``fd`` (a u32 from a struct) an open descriptor of this process at all?"""
    if fd > 0x7FFFFFFF:
        return False
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True
