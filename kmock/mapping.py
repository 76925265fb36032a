"""FileMapping: what Kernel.mmap returns, a real mapping with a fault model.

The address is real memory in this process (a memfd mapped MAP_SHARED), so other
calls may name it (a memslot's userspace_addr, an IOAS_MAP user_va) and native
code may touch it. Accesses through the object are checked first against the
file's fault model: where the kernel would send SIGBUS, kmock raises
``kmock.SigBus`` and records it instead of touching the memory.
"""

import ctypes
import threading

from . import _libc
from .errors import KmockUsageError, SigBus
from .syscall_api import Mapping

PAGE_SIZE = 4096


class FileMapping(Mapping):
    """A mapping of a mock file. Subclasses define ``fault_at`` (and ``_touch``).

    Indexing and slicing behave as mmap.mmap's: TypeError for an index that is not an
    int or a slice, IndexError out of range or for a slice assignment of the wrong
    size, TypeError writing a read-only mapping, ValueError once closed (as mmap.mmap),
    KmockUsageError (a ValueError) reading a mapping without PROT_READ or PROT_WRITE (a
    SIGSEGV in C), kmock.SigBus where the kernel would send SIGBUS."""

    def __init__(self, file, length, prot, offset, src_fd, src_offset):
        self.file = file
        self.length = length
        self.offset = offset
        self.prot = prot
        self.closed = False
        self.maplen = (length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
        if not hasattr(self, "_access_lock"):
            #: held by every access through the object and by close(), so a close from
            #: another thread never munmaps memory an access is copying (a real SIGSEGV
            #: or SIGBUS); GmemMapping uses its inode's invalidate lock
            self._access_lock = threading.RLock()
        self.address = _libc.mmap(None, self.maplen, prot, _libc.MAP_SHARED, src_fd, src_offset)
        file.get()
        file.kernel.mappings.add(self)

    def __len__(self):
        if self.closed:
            raise ValueError("mmap closed or invalid")  # (as mmap.mmap's)
        return self.length

    def close(self):
        """munmap; the file loses the reference this mapping held. Closing twice is a
        no-op; any later access raises ValueError (as a closed mmap.mmap's does) saying
        the mapping was closed."""
        with self._access_lock:
            if self.closed:
                return
            self.closed = True
            _libc.munmap(self.address, self.maplen)
            self.file.kernel.mappings.discard(self)
            self._on_close()
        self.file.put()  # (outside the lock: a release may take locks ordered before it)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # --- the fault model (subclasses) ----------------------------------------------

    def fault_at(self, start, stop):
        """Mapping offset of the first byte in [start, stop) whose page would SIGBUS."""
        return None

    def _touch(self, start, stop, write):
        """Pages [start, stop) were faulted in by the host."""

    def _on_close(self):
        pass

    def gup(self, start, stop):
        """get_user_pages over [start, stop): EFAULT where a host fault would fail, else
        fault the pages in and pin them; returns what ``unpin_pages`` needs."""
        import errno

        from .errors import oserror

        if self.fault_at(start, stop) is not None:
            raise oserror(errno.EFAULT)
        self._touch(start, stop, False)
        return self.pin_pages(start, stop, +1)

    def pin_pages(self, start, stop, delta):
        """Take pins on the pages under [start, stop); returns what ``unpin_pages`` needs."""
        return ()

    def unpin_pages(self, pages):
        pass

    # --- access ----------------------------------------------------------------------

    def _window(self, index):
        if self.closed:
            # a ValueError as a closed mmap.mmap's (and kmock.HostKernel's mappings')
            raise ValueError(
                f"mmap closed or invalid: {self!r} was closed (by its close(), munmap, or "
                f"Kernel.close_all())")
        if isinstance(index, slice):
            start, stop, step = index.indices(self.length)
            if step != 1:
                return range(start, stop, step)  # an extended slice (see _get/_set)
            return start, max(start, stop), False
        if not isinstance(index, int):
            raise TypeError("mmap indices must be integers or slices")
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError("mmap index out of range")
        return index, index + 1, True

    def _sigbus(self, at):
        self.file.kernel.sigbus_log.append((self, at))
        raise SigBus(at, self._sigbus_reason(at))

    def _sigbus_reason(self, at):
        return f"{self.file.file_type} host fault"

    def __getitem__(self, index):
        with self._access_lock:
            return self._get(index)

    def _get(self, index):
        w = self._window(index)
        if type(w) is range:  # m[a:b:step]: the bytes of the span, every step-th
            if not w:
                return b""
            lo = min(w[0], w[-1])
            return self._get(slice(lo, max(w[0], w[-1]) + 1))[w[0] - lo::w.step]
        start, stop, single = w
        if start == stop:
            return b""
        if not self.prot & (_libc.PROT_READ | _libc.PROT_WRITE):
            # C would take a SIGSEGV here (and mmap.mmap crashes the interpreter); a
            # PROT_WRITE-only mapping reads (x86 and arm64 have no write-only PTE)
            raise KmockUsageError(f"{self!r} was mapped without PROT_READ or PROT_WRITE: "
                                  f"reading it would be a SIGSEGV")
        fault = self.fault_at(start, stop)
        if fault is not None:
            self._sigbus(fault)
        self._touch(start, stop, False)
        data = ctypes.string_at(self.address + start, stop - start)
        return data[0] if single else data

    def __setitem__(self, index, data):
        with self._access_lock:
            return self._set(index, data)

    def _set(self, index, data):
        w = self._window(index)
        if type(w) is range:  # m[a:b:step] = data: byte by byte, as mmap.mmap
            data = memoryview(data).tobytes()  # (TypeError for a non-buffer, as mmap.mmap)
            if len(data) != len(w):
                raise IndexError("mmap slice assignment is wrong size")
            for i, b in zip(w, data):
                self._set(i, b)
            return
        start, stop, single = w
        if single:
            data = bytes([data])
        elif len(data) != stop - start:
            raise IndexError("mmap slice assignment is wrong size")
        if not self.prot & _libc.PROT_WRITE:
            raise TypeError("mmap can't modify a readonly memory map.")
        if start == stop:
            return
        fault = self.fault_at(start, stop)
        end = stop if fault is None else fault
        if end > start:
            self._touch(start, end, True)
            ctypes.memmove(self.address + start, bytes(data[: end - start]), end - start)
        if fault is not None:
            self._sigbus(fault)

    def __repr__(self):
        return (f"<{type(self).__name__} {self.length:#x} bytes at {self.address:#x} "
                f"offset {self.offset:#x}>")
