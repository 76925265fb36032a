"""ctypes calls of libc ioctl/fallocate/mmap/munmap while kmock patches.

A ctypes VMM gets libc with ``ctypes.CDLL(None)`` or ``CDLL("libc.so.6")`` and calls
``libc.ioctl(fd, req, ctypes.byref(s))``. ctypes caches each looked-up function as an
attribute of the CDLL instance, so the patcher sets ``ioctl``, ``fallocate``,
``fallocate64``, ``posix_fallocate``, ``mmap``, ``mmap64`` and ``munmap`` on every libc
CDLL instance it finds in the modules it scans (and restores them on stop), and
replaces module globals that hold those function objects themselves
(``_ioctl = libc.ioctl``). A LibcFunc forwards attribute access (``argtypes``,
``restype``) to the real function, and calls the real function for non-kmock fds.

For a kmock fd it calls the Kernel and returns what C would see: the result, or -1
(MAP_FAILED for mmap) with ``ctypes.get_errno()`` set to the errno. Pointer arguments
(``byref``, ``pointer``, ``c_void_p``, a ctypes array or structure) are passed as the
user address they point to, which the Kernel reads with copy_from_user.

Limits (documented): a libc handle created while patching is active, or held other
than in a module global, is not wrapped; mmap at a fixed address and munmap of part of
a kmock mapping are refused with EINVAL; ``syscall(SYS_ioctl, ...)`` is not seen.
"""

import ctypes
import errno

NAMES = ("ioctl", "fallocate", "fallocate64", "posix_fallocate", "posix_fallocate64",
         "mmap", "mmap64", "munmap")
MAP_FAILED = ctypes.c_void_p(-1).value
MAP_FIXED = 0x10

_LIBC = ctypes.CDLL(None)
#: address of each libc function -> its name (to recognise function objects in modules)
ADDRESSES = {ctypes.cast(getattr(_LIBC, n), ctypes.c_void_p).value: n for n in NAMES
             if hasattr(_LIBC, n)}


def _ignore(call):
    pass


def is_libc(obj):
    """A CDLL instance of libc (``CDLL(None)`` resolves libc's symbols too)."""
    if not isinstance(obj, ctypes.CDLL):
        return False
    name = getattr(obj, "_name", None)
    return name is None or str(name).rsplit("/", 1)[-1].startswith("libc.")


def func_name(obj):
    """The libc name of a ctypes function object, if it is one of NAMES."""
    if not isinstance(obj, ctypes._CFuncPtr):
        return None
    return ADDRESSES.get(ctypes.cast(obj, ctypes.c_void_p).value)


def _value(a):
    """A ctypes argument as the integer C receives."""
    if a is None:
        return 0
    if isinstance(a, int):
        return a
    if isinstance(a, (ctypes._SimpleCData,)) and not isinstance(a, ctypes.c_char_p):
        v = a.value
        return 0 if v is None else v
    try:
        return ctypes.cast(a, ctypes.c_void_p).value or 0
    except (TypeError, ctypes.ArgumentError):
        return ctypes.addressof(a)


class LibcFunc:
    """A libc function with kmock fds routed to the Kernel."""

    def __init__(self, real, name, patcher):
        object.__setattr__(self, "real", real)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "patcher", patcher)

    def __getattr__(self, attr):
        return getattr(self.real, attr)

    def __setattr__(self, attr, value):
        setattr(self.real, attr, value)

    def _fail(self, e):
        ctypes.set_errno(e.errno)
        restype = self.real.restype
        return MAP_FAILED if self.name.startswith("mmap") and restype is ctypes.c_void_p else -1

    def __call__(self, *args):
        p = self.patcher
        name = self.name
        if name == "munmap":
            m = p.c_maps.get(_value(args[0]))
            if m is None:
                return self.real(*args)
            n = len(m)
            if _value(args[1]) not in (n, (n + 4095) & ~4095):
                return self._fail(OSError(errno.EINVAL, "partial munmap of a kmock mapping"))
            del p.c_maps[m.address]
            m.close()
            return 0
        fd_pos = 4 if name.startswith("mmap") else 0
        fd = _value(args[fd_pos]) if len(args) > fd_pos else -1
        if fd not in p.fds and not p.adopt(fd):
            return self.real(*args)
        k = p.kernel
        try:
            if name == "ioctl":
                (p.note or _ignore)(("ioctl", fd, _value(args[1])))
                arg = args[2] if len(args) > 2 else 0
                if not isinstance(arg, (ctypes.Structure, ctypes.Union, ctypes.Array)):
                    arg = _value(arg)
                r = k.ioctl(fd, _value(args[1]) & 0xFFFFFFFF, arg)
                if type(r) is int and r > 2:
                    p.adopt(r)  # KVM_CREATE_VM, _VCPU, _GUEST_MEMFD, ...
                return r
            if name.startswith("mmap"):
                addr, length, prot, flags, _, offset = (_value(a) for a in args[:6])
                if addr and flags & MAP_FIXED:
                    raise OSError(errno.EINVAL, "MAP_FIXED over a kmock mapping")
                (p.note or _ignore)(("mmap", fd, length))
                m = k.mmap(fd, length, prot, flags, offset)
                p.c_maps[m.address] = m
                return m.address
            if name.startswith("posix_fallocate"):
                try:
                    p.fake("os", "posix_fallocate")(fd, _value(args[1]), _value(args[2]))
                except OSError as e:
                    return e.errno  # posix_fallocate returns the error number
                return 0
            mode, offset, length = (_value(a) for a in args[1:4])
            (p.note or _ignore)(("fallocate", fd, mode, offset, length))
            k.fallocate(fd, mode, offset, length)
            return 0
        except OSError as e:
            return self._fail(e)
