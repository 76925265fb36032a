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

import mmap as _mmap
import stat

REAL_MMAP = _mmap.mmap

ACCESS_DEFAULT, ACCESS_READ, ACCESS_WRITE, ACCESS_COPY = (
    _mmap.ACCESS_DEFAULT, _mmap.ACCESS_READ, _mmap.ACCESS_WRITE, _mmap.ACCESS_COPY)
PROT_READ, PROT_WRITE = _mmap.PROT_READ, _mmap.PROT_WRITE
MAP_SHARED, MAP_PRIVATE = _mmap.MAP_SHARED, _mmap.MAP_PRIVATE


def mmap_args(kernel, fileno, length, flags, prot, access, offset):
    """CPython's checks and defaults: returns (length, prot, flags) for ``Kernel.mmap``."""
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
    return length, prot, flags


class MockMmap:
    """An mmap.mmap-like object over a kmock mapping (``mapping``: what Kernel.mmap gave)."""

    def __init__(self, mapping, length, prot, size):
        self.mapping = mapping
        self.address = mapping.address
        self._len = length
        self._prot = prot
        self._size = size
        self._pos = 0

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
        self._check()

    def madvise(self, option, start=0, length=None):
        self._check()

    def resize(self, newsize):
        raise SystemError("mremap of a kmock mapping is not supported")

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
            if fd not in fds and not patcher.adopt(fd):
                return REAL_MMAP(fileno, length, flags, prot, access, offset, **kw)
            length, prot, flags = mmap_args(kernel, fd, length, flags, prot, access, offset)
            if patcher.note is not None:
                patcher.note(("mmap", fd, length))
            m = kernel.mmap(fd, length, prot, flags, offset)
            mm = MockMmap(m, length, prot, kernel.fstat(fd).st_size)
            patcher.maps.add(mm)
            return mm

    return mmap
