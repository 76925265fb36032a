"""The few libc calls the standard library does not wrap, through ctypes.

mmap/munmap/mprotect give kmock real addresses it can hand out (a mapping's
``address``); fallocate takes a mode, which ``os.posix_fallocate`` cannot;
process_vm_readv/writev on our own pid read and write user memory the way the
kernel's copy_from_user/copy_to_user do: an invalid address, or a page whose
fault handler would raise SIGBUS, returns EFAULT instead of a signal.
"""

import ctypes
import errno
import os
import threading

_libc = ctypes.CDLL(None, use_errno=True)

PROT_NONE = 0
PROT_READ = 1
PROT_WRITE = 2
PROT_EXEC = 4
MAP_SHARED = 0x01
MAP_PRIVATE = 0x02
MAP_SHARED_VALIDATE = 0x03
MAP_TYPE = 0x0F
MAP_FIXED = 0x10
MAP_ANONYMOUS = 0x20
MAP_NORESERVE = 0x4000
MAP_POPULATE = 0x8000
MAP_FAILED = ctypes.c_void_p(-1).value

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_NO_HIDE_STALE = 0x04
FALLOC_FL_COLLAPSE_RANGE = 0x08
FALLOC_FL_ZERO_RANGE = 0x10
FALLOC_FL_INSERT_RANGE = 0x20
FALLOC_FL_UNSHARE_RANGE = 0x40
FALLOC_FL_WRITE_ZEROES = 0x80

_mmap = _libc.mmap
_mmap.restype = ctypes.c_void_p
_mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int64]
_munmap = _libc.munmap
_munmap.restype = ctypes.c_int
_munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_mprotect = _libc.mprotect
_mprotect.restype = ctypes.c_int
_mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_fallocate = _libc.fallocate64
_fallocate.restype = ctypes.c_int
_fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


class _iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


_readv = _libc.process_vm_readv
_readv.restype = ctypes.c_ssize_t
_readv.argtypes = [ctypes.c_int, ctypes.POINTER(_iovec), ctypes.c_ulong, ctypes.POINTER(_iovec), ctypes.c_ulong, ctypes.c_ulong]
_writev = _libc.process_vm_writev
_writev.restype = ctypes.c_ssize_t
_writev.argtypes = _readv.argtypes

def _raise():
    e = ctypes.get_errno()
    raise OSError(e, os.strerror(e))


_ioctl = _libc.ioctl
_ioctl.restype = ctypes.c_int
_ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong]


def ioctl_value(fd, request, value):
    """ioctl(2) whose argument is an integer of any unsigned long value (fcntl.ioctl takes
    only a C int, so KVM_SET_TSS_ADDR 0xfffbd000, QEMU's, cannot go through it); returns
    the result or raises OSError like the os module."""
    r = _ioctl(fd, request & 0xFFFFFFFFFFFFFFFF, value & 0xFFFFFFFFFFFFFFFF)
    if r < 0:
        _raise()
    return r


def mmap(addr, length, prot, flags, fd, offset):
    """libc mmap; returns the address or raises OSError."""
    r = _mmap(addr, length, prot, flags, fd, offset)
    if r is None or r == MAP_FAILED:
        _raise()
    return r


def munmap(addr, length):
    if _munmap(addr, length) != 0:
        _raise()


def mprotect(addr, length, prot):
    if _mprotect(addr, length, prot) != 0:
        _raise()


_I64 = (-(1 << 63), (1 << 63) - 1)
_I32 = (-(1 << 31), (1 << 31) - 1)


def check_fallocate_args(fd, mode, offset, length):
    """Reject arguments a C caller could not pass (fallocate takes int, int, off_t, off_t)."""
    if (type(fd) is int and type(mode) is int and type(offset) is int and type(length) is int
            and -0x80000000 <= fd <= 0x7FFFFFFF and -0x80000000 <= mode <= 0x7FFFFFFF
            and -0x8000000000000000 <= offset <= 0x7FFFFFFFFFFFFFFF
            and -0x8000000000000000 <= length <= 0x7FFFFFFFFFFFFFFF):
        return  # the common case, in one expression
    for v in (fd, mode, offset, length):
        if type(v) is not int and not isinstance(v, int):
            raise TypeError("fallocate arguments must be integers")
    if not (_I32[0] <= fd <= _I32[1] and _I32[0] <= mode <= _I32[1]):
        raise OverflowError("fd or mode out of range for a C int")
    if not (_I64[0] <= offset <= _I64[1] and _I64[0] <= length <= _I64[1]):
        raise OverflowError("offset or length out of range for off_t")


def fallocate(fd, mode, offset, length):
    """fallocate(2); returns None or raises OSError like the os module."""
    check_fallocate_args(fd, mode, offset, length)
    if _fallocate(fd, mode, offset, length) != 0:
        _raise()


def reserve(length):
    """Reserve ``length`` bytes of address space that faults (SIGSEGV) until remapped."""
    return mmap(None, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)


#: arch/x86/include/uapi/asm/prctl.h; SYS_arch_prctl on x86-64
ARCH_GET_XCOMP_GUEST_PERM = 0x1024
_SYS_arch_prctl = 158


def guest_xcomp_perm():
    """The XSAVE features this process may give its guests (arch_prctl
    ARCH_GET_XCOMP_GUEST_PERM: what ARCH_REQ_XCOMP_GUEST_PERM granted, plus the
    always-permitted static ones); None where it cannot be asked (not x86-64, or a
    kmock serve thread answering another process, whose permissions it cannot see)."""
    if _task.pid is not None or os.uname().machine != "x86_64":
        return None
    mask = ctypes.c_uint64()
    if _libc.syscall(_SYS_arch_prctl, ARCH_GET_XCOMP_GUEST_PERM, ctypes.byref(mask)) != 0:
        return None
    return mask.value


class _Task(threading.local):
    pid = None
    tid = None


_task = _Task()
#: this process's pid, kept current across os.fork (getpid(2) is a syscall, and every
#: VM and vCPU ioctl asks for it)
_self = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _self.__setitem__(0, os.getpid()))


#: how many user_task contexts are open, in any thread (a list: changed under _SERVING_LOCK).
#: While none is, no thread serves a client and current_pid skips the thread-local read,
#: which costs as much as the rest of a VM ioctl's caller check
_serving = [0]
_SERVING_LOCK = threading.Lock()


def current_pid():
    """The process whose syscall this thread runs ("current"): this one, or the client
    process a ``kmock serve`` thread serves (user_task). After fork the child has a new
    pid; process_vm_* must name ourselves, or the process this thread serves."""
    if not _serving[0]:
        return _self[0]
    pid = _task.pid
    return _self[0] if pid is None else pid


_pid = current_pid  # (one frame: every VM and vCPU ioctl asks)


def current_tid():
    """The thread whose syscall this thread runs (task_pid_nr(current)): this thread, or
    the client thread a ``kmock serve`` thread serves (user_task's ``tid``; the client
    process's pid when the client did not say)."""
    pid = _task.pid
    if pid is None:
        return threading.get_native_id()
    return _task.tid or pid


class user_task:
    """``with user_task(pid, tid):`` copy_from_user/copy_to_user of this thread read and
    write the memory of process ``pid`` (the VMM a ``kmock serve`` thread serves),
    as the kernel's copies reach the calling task's mm, and current_pid() is ``pid``
    (the VM's ``kvm->mm != current->mm`` check), current_tid() ``tid``."""

    def __init__(self, pid, tid=None):
        self.pid = pid
        self.tid = tid or None

    def __enter__(self):
        with _SERVING_LOCK:
            _serving[0] += 1
        self.saved = _task.pid, _task.tid
        _task.pid, _task.tid = self.pid, self.tid
        return self

    def __exit__(self, *exc):
        _task.pid, _task.tid = self.saved
        with _SERVING_LOCK:
            _serving[0] -= 1
        return False


def read_user(addr, length):
    """Copy ``length`` bytes from user address ``addr``, as copy_from_user would.

    Returns ``(data, copied)``; ``copied < length`` means the copy faulted at
    ``addr + copied`` (EFAULT in the kernel).
    """
    if length == 0:
        return b"", 0
    buf = ctypes.create_string_buffer(length)
    local = _iovec(ctypes.addressof(buf), length)
    remote = _iovec(addr, length)
    n = _readv(_pid(), ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    if n < 0:
        n = 0
    return buf.raw[:n], n


def write_user(addr, data):
    """Copy ``data`` to user address ``addr``; returns the number of bytes copied."""
    length = len(data)
    if length == 0:
        return 0
    buf = ctypes.create_string_buffer(bytes(data), length)
    local = _iovec(ctypes.addressof(buf), length)
    remote = _iovec(addr, length)
    n = _writev(_pid(), ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    return n if n > 0 else 0


def copy_from_user(addr, length):
    """Like read_user, but raise OSError(EFAULT) unless every byte was copied."""
    data, n = read_user(addr, length)
    if n != length:
        raise OSError(errno.EFAULT, os.strerror(errno.EFAULT))
    return data


def copy_to_user(addr, data):
    if write_user(addr, data) != len(data):
        raise OSError(errno.EFAULT, os.strerror(errno.EFAULT))
