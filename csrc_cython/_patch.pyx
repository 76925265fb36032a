# cython: language_level=3
"""The patcher's hot fd calls, compiled (kmock.testing._patch).

Same behaviour as the Python fakes in kmock/testing/fake_os.py for read, write,
pread, pwrite, lseek, fstat and fcntl.ioctl: ``fd in fds`` picks the Kernel or the
real function. The state is that of the one active Patcher (``activate``); with none
active every call goes to the real function. Compiled because the Python wrapper's
call overhead alone exceeds the cost targets of issue 12 (kmock.benchmarks.patching).
"""

import errno as _errno
import fcntl as _fcntl
import os as _os

cdef object _real_read = _os.read
cdef object _real_write = _os.write
cdef object _real_pread = _os.pread
cdef object _real_pwrite = _os.pwrite
cdef object _real_lseek = _os.lseek
cdef object _real_fstat = _os.fstat
cdef object _real_ioctl = _fcntl.ioctl
cdef int _ENOTTY = _errno.ENOTTY

cdef set _fds = set()
cdef bint _tracing = False
# The trace: a ring of the last RING calls routed to the Kernel, kept as parallel lists
# (no tuple per call). kind None = an entry tuple given to note().
cdef enum:
    DEF_RING = 64
cdef list _rk = [None] * DEF_RING
cdef list _rf = [None] * DEF_RING
cdef list _ra = [None] * DEF_RING
cdef list _rb = [None] * DEF_RING
cdef Py_ssize_t _pos = 0
cdef object _owns = None
cdef object _adopt = None
cdef object _k_read = None
cdef object _k_write = None
cdef object _k_pread = None
cdef object _k_pwrite = None
cdef object _k_lseek = None
cdef object _k_fstat = None
cdef object _k_ioctl = None


cdef inline void _rec(str kind, fd, a, b):
    global _pos
    cdef Py_ssize_t i = _pos % DEF_RING
    _rk[i] = kind
    _rf[i] = fd
    _ra[i] = a
    _rb[i] = b
    _pos += 1


def note(entry):
    """Record a call made by the Python fakes (``entry``: a tuple, name first)."""
    if _tracing:
        _rec(None, entry, None, None)


def tail():
    """The recorded calls, oldest first, as tuples (name, fd, args...)."""
    out = []
    cdef Py_ssize_t n = min(_pos, DEF_RING)
    cdef Py_ssize_t j, i
    for j in range(_pos - n, _pos):
        i = j % DEF_RING
        if _rk[i] is None:
            out.append(_rf[i])
        elif _rb[i] is None:
            out.append((_rk[i], _rf[i], _ra[i]))
        else:
            out.append((_rk[i], _rf[i], _ra[i], _rb[i]))
    return out


def activate(patcher):
    """Route through ``patcher`` (a kmock.testing.patcher.Patcher), or nothing (None).
    Activation starts a new trace (recorded only if the patcher traces)."""
    global _fds, _tracing, _pos, _owns, _adopt, _k_read, _k_write, _k_pread, _k_pwrite
    global _k_lseek, _k_fstat, _k_ioctl
    _pos = 0
    if patcher is None:
        _fds = set()
        _tracing = False
        return
    k = patcher.kernel
    _tracing = bool(patcher.tracing)
    _owns, _adopt = k.owns_fd, patcher.adopt
    _k_read, _k_write, _k_pread, _k_pwrite = k.read, k.write, k.pread, k.pwrite
    _k_lseek, _k_fstat, _k_ioctl = k.lseek, k.fstat, k.ioctl
    _fds = patcher.fds


def read(fd, n):
    if fd in _fds:
        if _tracing:
            _rec("read", fd, n, None)
        return _k_read(fd, n)
    return _real_read(fd, n)


def write(fd, data):
    if fd in _fds:
        if _tracing:
            _rec("write", fd, len(data), None)
        return _k_write(fd, data)
    return _real_write(fd, data)


def pread(fd, n, offset):
    if fd in _fds:
        if _tracing:
            _rec("pread", fd, n, offset)
        return _k_pread(fd, n, offset)
    return _real_pread(fd, n, offset)


def pwrite(fd, data, offset):
    if fd in _fds:
        if _tracing:
            _rec("pwrite", fd, len(data), offset)
        return _k_pwrite(fd, data, offset)
    return _real_pwrite(fd, data, offset)


def lseek(fd, pos, how):
    if fd in _fds:
        if _tracing:
            _rec("lseek", fd, pos, how)
        return _k_lseek(fd, pos, how)
    return _real_lseek(fd, pos, how)


def fstat(fd):
    if fd in _fds:
        return _k_fstat(fd)
    return _real_fstat(fd)


def ioctl(fd, request, arg=0, mutate_flag=True):
    if fd in _fds:
        if _tracing:
            _rec("ioctl", fd, request, None)
        r = _k_ioctl(fd, request, arg, mutate_flag)
        if type(r) is int and r > 2 and r not in _fds and _owns(r):
            _fds.add(r)  # KVM_CREATE_VM, _VCPU, _GUEST_MEMFD, ...
        return r
    try:
        return _real_ioctl(fd, request, arg, mutate_flag)
    except OSError as e:
        # a kmock fd made by a direct Kernel call while patched: adopt it
        if e.errno == _ENOTTY and _adopt is not None and _adopt(fd):
            return ioctl(fd, request, arg, mutate_flag)
        raise
