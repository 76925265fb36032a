"""asm-generic/ioctl.h: how an ioctl request number is encoded (x86-64, arm64)."""

import ctypes

_IOC_NRBITS = 8
_IOC_TYPEBITS = 8
_IOC_SIZEBITS = 14
_IOC_DIRBITS = 2

_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS

_IOC_NONE = 0
_IOC_WRITE = 1
_IOC_READ = 2


def _size(t):
    return t if isinstance(t, int) else ctypes.sizeof(t)


def _IOC(dir, type, nr, size):
    return (dir << _IOC_DIRSHIFT) | (size << _IOC_SIZESHIFT) | (type << _IOC_TYPESHIFT) | (nr << _IOC_NRSHIFT)


def _IO(type, nr):
    return _IOC(_IOC_NONE, type, nr, 0)


def _IOR(type, nr, t):
    return _IOC(_IOC_READ, type, nr, _size(t))


def _IOW(type, nr, t):
    return _IOC(_IOC_WRITE, type, nr, _size(t))


def _IOWR(type, nr, t):
    return _IOC(_IOC_READ | _IOC_WRITE, type, nr, _size(t))


def _IOC_DIR(nr):
    return (nr >> _IOC_DIRSHIFT) & ((1 << _IOC_DIRBITS) - 1)


def _IOC_TYPE(nr):
    return (nr >> _IOC_TYPESHIFT) & ((1 << _IOC_TYPEBITS) - 1)


def _IOC_NR(nr):
    return (nr >> _IOC_NRSHIFT) & ((1 << _IOC_NRBITS) - 1)


def _IOC_SIZE(nr):
    return (nr >> _IOC_SIZESHIFT) & ((1 << _IOC_SIZEBITS) - 1)
