"""How a handler reads and writes its ioctl argument, following fcntl.ioctl's rules.

An ``int`` argument is passed by value; an ioctl that takes a struct reads it as a
user address (copy_from_user: an unreadable address gives EFAULT, never a crash).
A buffer argument (bytearray, ctypes structure, memoryview) is the struct itself:
it is read from and written back in place. ``bytes`` never reach a handler: the
Kernel turns them into a bytearray and returns the filled copy.
"""

import ctypes
import errno

from . import _libc
from .errors import oserror
from .faults import USERCOPY, check_usercopy

U64 = (1 << 64) - 1


def copy_from_user(arg, ctype):
    """Read a ``ctype`` struct from the ioctl argument."""
    n = ctypes.sizeof(ctype)
    if type(arg) is int:
        return ctype.from_buffer_copy(_libc.copy_from_user(arg & U64, n))
    if type(arg) is bytearray:
        if len(arg) >= n:
            return ctype.from_buffer_copy(arg)
    elif isinstance(arg, ctypes.Structure) and ctypes.sizeof(arg) >= n:
        return ctype.from_buffer_copy(arg)
    return ctype.from_buffer_copy(_buffer_bytes(arg, n))


def copy_to_user(arg, obj, size=None):
    """Write struct ``obj`` (or its first ``size`` bytes) back to the ioctl argument."""
    if USERCOPY:
        check_usercopy()  # the "copy_to_user" failure point (kmock.faults)
    data = bytes(obj) if size is None else bytes(obj)[:size]
    if type(arg) is int:
        _libc.copy_to_user(arg & U64, data)
        return
    if type(arg) is bytearray:
        n = min(len(arg), len(data))
        arg[:n] = data[:n]
        return
    _write_buffer(arg, data, 0)


def write_user_at(arg, offset, data):
    """Write ``data`` at byte ``offset`` of the argument (variable-length structs)."""
    if USERCOPY:
        check_usercopy()
    if type(arg) is int:
        _libc.copy_to_user((arg + offset) & U64, data)
    elif type(arg) is bytearray:
        n = max(0, min(len(arg) - offset, len(data)))
        arg[offset:offset + n] = data[:n]
    else:
        _write_buffer(arg, data, offset)


def read_user_at(arg, offset, n):
    if type(arg) is int:
        return _libc.copy_from_user((arg + offset) & U64, n)
    return _buffer_bytes(arg, offset + n)[offset:]


def int_arg(arg):
    """An ioctl that takes its argument by value (e.g. KVM_CREATE_VCPU's id).

    A buffer argument arrives in the kernel as its address; kmock uses a value no
    valid id can have so that the call fails as it would.
    """
    if type(arg) is int:
        return arg & U64
    return U64


def _buffer_bytes(arg, n):
    try:
        mv = memoryview(arg).cast("B")
    except TypeError:
        raise TypeError("ioctl argument must be an int or a buffer") from None
    data = mv[:n].tobytes()
    return data.ljust(n, b"\0")


def _write_buffer(arg, data, offset):
    try:
        mv = memoryview(arg).cast("B")
    except TypeError:
        raise TypeError("ioctl argument must be an int or a buffer") from None
    if mv.readonly:
        raise oserror(errno.EFAULT)
    n = max(0, min(len(mv) - offset, len(data)))
    mv[offset:offset + n] = data[:n]
