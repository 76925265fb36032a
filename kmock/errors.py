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


def oserror(code):
    """The OSError the os module would raise for errno ``code``."""
    return OSError(code, _os.strerror(code))


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
