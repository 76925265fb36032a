"""mmap.mmap while kmock patches: real mmap objects for real fds, MockMmap for kmock fds.

``PatchedMmap`` takes the place of ``mmap.mmap``. Called with a kmock fd it makes the
mapping with ``Kernel.mmap`` (the mock's fault model: a private guest_memfd page
raises ``kmock.SigBus`` instead of killing the interpreter) and returns a
``MockMmap``, which has mmap.mmap's methods; with any other fd it returns a real
``mmap.mmap``. ``isinstance(x, mmap.mmap)`` is true for both.

The argument rules are CPython's (Modules/mmapmodule.c, new_mmap_object): ``access``
excludes ``flags``/``prot``; a negative length or offset is OverflowError; for a
regular file (a guest_memfd is one), length 0 maps the rest of the file and a length
past its end is ValueError.

Limit: before Python 3.12 a Python class cannot export the buffer protocol, so
``memoryview(m)`` and ``ctypes.X.from_buffer(m)`` do not work on a MockMmap; use
``ctypes.X.from_address(m.address)`` (the real address of the mock's mapping). From
3.12 ``__buffer__`` gives a memoryview of that memory.
"""

import errno
import mmap as _mmap
import operator
import stat
import sys

from ..errors import oserror
from ..file import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, MAP_ANONYMOUS, MAP_LOCKED

REAL_MMAP = _mmap.mmap

ACCESS_DEFAULT, ACCESS_READ, ACCESS_WRITE, ACCESS_COPY = (
    _mmap.ACCESS_DEFAULT, _mmap.ACCESS_READ, _mmap.ACCESS_WRITE, _mmap.ACCESS_COPY)
PROT_READ, PROT_WRITE = _mmap.PROT_READ, _mmap.PROT_WRITE
MAP_SHARED, MAP_PRIVATE = _mmap.MAP_SHARED, _mmap.MAP_PRIVATE
MAP_TYPE = 0x0F
PAGE_MASK_LOW = 0xFFF
MADV_FREE, MADV_REMOVE, MADV_WIPEONFORK, MADV_COLLAPSE = 8, 9, 18, 25
#: mm/madvise.c madvise_behavior_valid (6.18, x86-64 config): every other advice is EINVAL
VALID_ADVICE = frozenset(range(0, 5)) | frozenset(range(8, 26)) | {100, 101, 102, 103}


def mmap_args(kernel, fileno, length, flags, prot, access, offset):
    """CPython's checks and defaults: returns (length, prot, flags) for ``Kernel.mmap``
    and the access CPython records (ACCESS_DEFAULT/READ/WRITE/COPY)."""
    if length < 0:
        raise OverflowError("memory mapped length must be positive")
    if offset < 0:
        raise OverflowError("memory mapped offset must be positive")
    if access != ACCESS_DEFAULT and (flags != MAP_SHARED or prot != PROT_READ | PROT_WRITE):
        raise ValueError("mmap can't specify both access and flags, prot.")
    if access == ACCESS_READ:
        flags, prot = MAP_SHARED, PROT_READ
    elif access == ACCESS_WRITE:
        flags, prot = MAP_SHARED, PROT_READ | PROT_WRITE
    elif access == ACCESS_COPY:
        flags, prot = MAP_PRIVATE, PROT_READ | PROT_WRITE
    elif access != ACCESS_DEFAULT:
        raise ValueError("mmap invalid access parameter.")
    elif not prot & PROT_WRITE:
        access = ACCESS_READ  # new_mmap_object maps prot to an access type
    elif not prot & PROT_READ:
        access = ACCESS_WRITE
    st = kernel.fstat(fileno)
    if stat.S_ISREG(st.st_mode):
        size = st.st_size
        if length == 0:
            if size == 0:
                raise ValueError("cannot mmap an empty file")
            if offset >= size:
                raise ValueError("mmap offset is greater than file size")
            length = size - offset
        elif offset > size or size - offset < length:
            raise ValueError("mmap length is greater than file size")
    return length, prot, flags, access


class MockMmap:
    """An mmap.mmap-like object over a kmock mapping (``mapping``: what Kernel.mmap gave).

    flush, madvise and resize make CPython's checks, then answer as the kernel does on
    the file behind the mapping (compared with mmap.mmap on a real guest_memfd mapping,
    tests/testing/test_fake_mmap_kernel.py)."""

    def __init__(self, mapping, length, prot, size, flags=MAP_SHARED, access=ACCESS_DEFAULT):
        self.mapping = mapping
        self.address = mapping.address
        self._len = length
        self._prot = prot
        self._size = size
        self._pos = 0
        self._flags = flags
        self._access = access

    # --- the sequence interface (through the mock's fault model) --------------------------

    def __len__(self):
        self._check()
        return self._len

    def __getitem__(self, index):
        return self.mapping[index]

    def __setitem__(self, index, value):
        self.mapping[index] = value

    def _check(self):
        if self.mapping.closed:
            raise ValueError("mmap closed or invalid")

    @property
    def closed(self):
        return self.mapping.closed

    def close(self):
        self.mapping.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- the file-like interface -------------------------------------------------------------

    def size(self):
        self._check()
        return self._size

    def tell(self):
        self._check()
        return self._pos

    def seek(self, pos, whence=0):
        self._check()
        base = (0, self._pos, self._len)[whence] if whence in (0, 1, 2) else None
        if base is None:
            raise ValueError("unknown seek type")
        new = base + pos
        if not 0 <= new <= self._len:
            raise ValueError("seek out of range")
        self._pos = new
        return new

    def read(self, n=None):
        self._check()
        end = self._len if n is None or n < 0 else min(self._len, self._pos + n)
        data = self.mapping[self._pos:end]
        self._pos = max(self._pos, end)
        return data

    def read_byte(self):
        self._check()
        if self._pos >= self._len:
            raise ValueError("read byte out of range")
        b = self.mapping[self._pos]
        self._pos += 1
        return b

    def readline(self):
        self._check()
        rest = self.mapping[self._pos:self._len]
        i = rest.find(b"\n")
        line = rest if i < 0 else rest[: i + 1]
        self._pos += len(line)
        return line

    def write(self, data):
        self._check()
        data = bytes(data)
        if self._pos + len(data) > self._len:
            raise ValueError("data out of range")
        self.mapping[self._pos:self._pos + len(data)] = data
        self._pos += len(data)
        return len(data)

    def write_byte(self, b):
        self._check()
        if self._pos >= self._len:
            raise ValueError("write byte out of range")
        self.mapping[self._pos] = b
        self._pos += 1

    def find(self, sub, start=None, end=None):
        self._check()
        return self.mapping[0:self._len].find(sub, self._pos if start is None else start,
                                              self._len if end is None else end)

    def rfind(self, sub, start=None, end=None):
        self._check()
        return self.mapping[0:self._len].rfind(sub, self._pos if start is None else start,
                                               self._len if end is None else end)

    def move(self, dest, src, count):
        self._check()
        if max(dest, src) + count > self._len or min(dest, src, count) < 0:
            raise ValueError("source, destination, or count out of range")
        self.mapping[dest:dest + count] = self.mapping[src:src + count]

    def flush(self, offset=0, size=None):
        """msync(MS_SYNC) over the range (mm/msync.c): an unaligned start is EINVAL; on a
        shared mapping vfs_fsync_range calls the file's ->fsync, which no kmock file
        has (EINVAL, as kvm_gmem_fops and kvm_vcpu_fops)."""
        self._check()
        offset = operator.index(offset)
        size = self._len if size is None else operator.index(size)
        if size < 0 or offset < 0 or self._len - offset < size:
            raise ValueError("flush values out of range")
        if self._access in (ACCESS_READ, ACCESS_COPY):
            return None  # CPython does not call msync
        if offset & PAGE_MASK_LOW:
            raise oserror(errno.EINVAL)
        if size and self._flags & MAP_TYPE != MAP_PRIVATE:
            self.mapping.file.fsync()
        return None

    def madvise(self, option, start=0, length=None):
        """madvise(2) over the range (mm/madvise.c): an advice madvise_behavior_valid
        refuses, or an unaligned start, is EINVAL; MADV_REMOVE (madvise_remove) punches
        the file range behind it (vfs_fallocate PUNCH_HOLE|KEEP_SIZE: reads 0 after),
        EACCES on a private mapping, EINVAL on a locked one; MADV_FREE (not anonymous
        memory), MADV_WIPEONFORK (a file mapping) and MADV_COLLAPSE are EINVAL; every
        other advice succeeds without effect on what kmock models."""
        self._check()
        option = operator.index(option)
        start = operator.index(start)
        length = self._len if length is None else operator.index(length)
        if start < 0 or start >= self._len:
            raise ValueError("madvise start out of bounds")
        if length < 0:
            raise ValueError("madvise length invalid")
        if sys.maxsize - start < length:
            raise OverflowError("madvise length too large")
        length = min(length, self._len - start)
        if option not in VALID_ADVICE or start & PAGE_MASK_LOW:
            raise oserror(errno.EINVAL)
        length = (length + PAGE_MASK_LOW) & ~PAGE_MASK_LOW
        if not length:
            return None
        if option == MADV_REMOVE:
            if self._flags & MAP_LOCKED:
                raise oserror(errno.EINVAL)
            if self._flags & MAP_TYPE == MAP_PRIVATE:
                raise oserror(errno.EACCES)  # vma_is_shared_maywrite
            m = self.mapping
            m.file.fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, m.offset + start, length)
        elif option in (MADV_FREE, MADV_WIPEONFORK, MADV_COLLAPSE):
            raise oserror(errno.EINVAL)
        return None

    def resize(self, newsize):
        """CPython ftruncates the file to offset + newsize before mremap: every kmock
        file refuses (kvm_gmem_setattr; do_sys_ftruncate: not a regular file): EINVAL."""
        self._check()
        newsize = operator.index(newsize)
        if self._access not in (ACCESS_WRITE, ACCESS_DEFAULT):
            raise TypeError("mmap can't resize a readonly or copy-on-write memory map.")
        if newsize < 0 or sys.maxsize - newsize < self.mapping.offset:
            raise ValueError("new size out of range")
        self.mapping.file.ftruncate(self.mapping.offset + newsize)
        raise oserror(errno.ENOSYS)  # (no kmock file can be truncated: no mremap model)

    def __buffer__(self, flags):  # Python >= 3.12 (PEP 688)
        import ctypes

        self._check()
        return memoryview((ctypes.c_char * self._len).from_address(self.address)).cast("B")

    def __repr__(self):
        state = "closed" if self.closed else f"length={self._len:#x} address={self.address:#x}"
        return f"<kmock.MockMmap {state}>"


class _MmapMeta(type):
    def __instancecheck__(cls, obj):
        return isinstance(obj, (REAL_MMAP, MockMmap))

    def __subclasscheck__(cls, sub):
        return issubclass(sub, (REAL_MMAP, MockMmap))


def make_mmap_class(patcher):
    """The class that replaces mmap.mmap while ``patcher`` is active."""
    fds = patcher.fds
    kernel = patcher.kernel

    class mmap(metaclass=_MmapMeta):  # noqa: N801 (the name user code sees)
        __doc__ = REAL_MMAP.__doc__

        def __new__(cls, fileno, length, flags=MAP_SHARED, prot=PROT_READ | PROT_WRITE,
                    access=ACCESS_DEFAULT, offset=0, **kw):
            fd = fileno if type(fileno) is int else getattr(fileno, "fileno", lambda: fileno)()
            if (fd not in fds and not patcher.adopt(fd)) or (type(flags) is int
                                                               and flags & MAP_ANONYMOUS):
                # (MAP_ANONYMOUS: the kernel never looks at the fd)
                return REAL_MMAP(fileno, length, flags, prot, access, offset, **kw)
            length, prot, flags, acc = mmap_args(kernel, fd, length, flags, prot, access, offset)
            if patcher.note is not None:
                patcher.note(("mmap", fd, length))
            m = kernel.mmap(fd, length, prot, flags, offset)
            mm = MockMmap(m, length, prot, kernel.fstat(fd).st_size, flags, acc)
            patcher.maps.add(mm)
            return mm

    return mmap
