"""Exceptions kmock raises besides OSError.

A syscall that fails raises ``OSError`` with the kernel's errno, exactly as the
``os``/``fcntl``/``mmap`` modules do. The classes here stand for what the real
kernel would deliver as a signal or a hardware event, which kmock reports as an
exception instead of letting it reach the interpreter.
"""

import errno as _errno
import os as _os


class SigBus(Exception):
    """A host access through a mapping that the kernel would answer with SIGBUS.

    ``offset`` is the offset, within the mapping, of the first byte whose page
    faulted. For a write, every page before that offset was written (as a
    ``memset`` that faults part-way leaves the earlier bytes written).
    """

    def __init__(self, offset, reason=""):
        self.offset = offset
        self.reason = reason
        super().__init__(f"SIGBUS at mapping offset {offset:#x}" + (f" ({reason})" if reason else ""))


class DmaFault(Exception):
    """A device DMA that the IOMMU refused (unmapped IOVA, no permission, platform rule)."""

    def __init__(self, iova, reason=""):
        self.iova = iova
        self.reason = reason
        super().__init__(f"DMA fault at IOVA {iova:#x}" + (f" ({reason})" if reason else ""))


#: errno -> its strerror message, read once: os.strerror decodes the C library's message
#: (through the locale) on every call, and every errno kmock returns builds one
_STRERROR = {}


def oserror(code):
    """The OSError the os module would raise for errno ``code``."""
    msg = _STRERROR.get(code)
    if msg is None:
        msg = _STRERROR[code] = _os.strerror(code)
    return OSError(code, msg)


EFAULT = _errno.EFAULT
#: Linux's "memory page has hardware error"; Python's errno module does not name it
EHWPOISON = getattr(_errno, "EHWPOISON", 133)


class PluginError(Exception):
    """A plugin broke the contract (kmock/hookspecs.py): an unknown hook, a duplicate VM
    type, a non-int ioctl key, a veto that returns something other than an errno, an
    entry point that fails to load. The message names the plugin."""


class KmockUsageError(ValueError):
    """A kmock Python API was called with an argument it does not accept; the message
    names the argument."""


#: the most bytes one Python-level access returns or takes (a guest script read or
#: write, a device DMA): larger accesses are refused with KmockUsageError rather than
#: building a multi-GiB bytes object (split them)
MAX_ACCESS_BYTES = 1 << 30


def check_int(name, value, lo=None, hi=None):
    """``value`` as an int in [lo, hi]; KmockUsageError naming ``name`` otherwise.

    bool is refused (``True`` is almost always a mistake for a number); int
    subclasses such as IntEnum members are accepted."""
    if type(value) is int and (lo is None or value >= lo) and (hi is None or value <= hi):
        return value  # the common case, in one test
    if not isinstance(value, int) or isinstance(value, bool):
        raise KmockUsageError(f"{name} must be an int, not {type(value).__name__} {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        lo_s = "-inf" if lo is None else hex(lo) if lo > 4096 else str(lo)
        hi_s = "inf" if hi is None else hex(hi) if hi > 4096 else str(hi)
        raise KmockUsageError(f"{name} must be in [{lo_s}, {hi_s}], not {value!r}")
    return int(value)


def check_bytes(name, value):
    """``value`` (bytes, bytearray, memoryview or another buffer) as bytes; an int or a
    str is refused (``bytes(5)`` would silently be five zero bytes)."""
    if isinstance(value, (int, str)) or value is None:
        raise KmockUsageError(f"{name} must be bytes-like, not {type(value).__name__} {value!r}")
    try:
        return bytes(memoryview(value).cast("B"))
    except TypeError:
        raise KmockUsageError(f"{name} must be bytes-like, not {type(value).__name__}") from None


def check_length(name, value):
    """A byte count for one Python-level access: an int in [0, MAX_ACCESS_BYTES]."""
    if isinstance(value, int) and not isinstance(value, bool) and value > MAX_ACCESS_BYTES:
        raise KmockUsageError(
            f"{name} is {value:#x} bytes; one access is limited to MAX_ACCESS_BYTES "
            f"({MAX_ACCESS_BYTES:#x}, kmock.errors): split it")
    return check_int(name, value, 0, MAX_ACCESS_BYTES)
