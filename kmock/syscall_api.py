"""The syscall API that kmock.Kernel (the mock) and kmock.HostKernel (the real OS) share.

Every method has the signature, return value and errors of its namesake in the
``os``, ``fcntl`` or ``mmap`` modules, so a scenario written once runs on both and
the results can be compared. A failure raises ``OSError`` with the errno; a host
access that the kernel answers with SIGBUS raises ``kmock.SigBus``.
"""


class SyscallAPI:
    """Abstract base: the contract. Subclasses implement every method."""

    def open(self, path, flags, mode=0o777):
        """os.open: returns a new fd."""
        raise NotImplementedError

    def close(self, fd):
        """os.close."""
        raise NotImplementedError

    def dup(self, fd):
        """os.dup: a new fd for the same open file."""
        raise NotImplementedError

    def ioctl(self, fd, request, arg=0, mutate_flag=True):
        """fcntl.ioctl argument rules: an int is passed by value (a struct ioctl reads it
        as a user address); ``bytes`` returns a copy with the outputs filled in; a
        mutable buffer (bytearray, ctypes structure) is updated in place and the int
        return value is returned."""
        raise NotImplementedError

    def mmap(self, fd, length, prot, flags, offset=0):
        """mmap(2): returns a Mapping (see below)."""
        raise NotImplementedError

    def fallocate(self, fd, mode, offset, length):
        """fallocate(2): returns None."""
        raise NotImplementedError

    def read(self, fd, n):
        raise NotImplementedError

    def write(self, fd, data):
        raise NotImplementedError

    def pread(self, fd, n, offset):
        raise NotImplementedError

    def pwrite(self, fd, data, offset):
        raise NotImplementedError

    def lseek(self, fd, pos, how):
        raise NotImplementedError

    def fstat(self, fd):
        """os.fstat: an os.stat_result."""
        raise NotImplementedError

    def ftruncate(self, fd, length):
        raise NotImplementedError

    def fchmod(self, fd, mode):
        raise NotImplementedError

    def fsync(self, fd):
        raise NotImplementedError

    def close_all(self):
        """Close every fd and mapping this object handed out."""
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close_all()
        return False


class Mapping:
    """What ``mmap`` returns: slicing like ``mmap.mmap``.

    ``m[i]`` -> int, ``m[a:b]`` -> bytes, ``m[a:b] = data`` (same length), ``len(m)``,
    ``close()`` (munmap), ``closed``, and ``address``: the real address of the mapping
    in this process. An access that faults raises ``kmock.SigBus(offset)``; for a write,
    the pages before the faulting one are written (as a faulting memset leaves them).
    """

    address = 0

    def __len__(self):
        raise NotImplementedError

    def __getitem__(self, index):
        raise NotImplementedError

    def __setitem__(self, index, data):
        raise NotImplementedError

    def close(self):
        raise NotImplementedError
