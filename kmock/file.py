"""The open-file object behind every fd kmock hands out (the kernel's struct file).

A File is shared by every fd that refers to it (dup) and by every mapping made
from it; it is released when the last reference goes, as the kernel's fput() does.
The defaults below are what the VFS answers for an anonymous-inode file with no
read/write/llseek/fsync/fallocate operations; each file type overrides what its
file_operations provide.
"""

import errno
import os
import stat
import time

from . import _libc
from .errors import oserror
from .locks import RLock

# fallocate(2) mode bits (include/uapi/linux/falloc.h)
FALLOC_FL_KEEP_SIZE = _libc.FALLOC_FL_KEEP_SIZE
FALLOC_FL_PUNCH_HOLE = _libc.FALLOC_FL_PUNCH_HOLE
FALLOC_FL_COLLAPSE_RANGE = _libc.FALLOC_FL_COLLAPSE_RANGE
FALLOC_FL_ZERO_RANGE = _libc.FALLOC_FL_ZERO_RANGE
FALLOC_FL_INSERT_RANGE = _libc.FALLOC_FL_INSERT_RANGE
FALLOC_FL_UNSHARE_RANGE = _libc.FALLOC_FL_UNSHARE_RANGE
FALLOC_FL_WRITE_ZEROES = _libc.FALLOC_FL_WRITE_ZEROES
FALLOC_FL_MODE_MASK = (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_ZERO_RANGE
                       | FALLOC_FL_INSERT_RANGE | FALLOC_FL_UNSHARE_RANGE | FALLOC_FL_WRITE_ZEROES)
MAX_LFS_FILESIZE = (1 << 63) - 1

EBADF = oserror(errno.EBADF)
#: (a module constant: File.fallocate tests it on every call)
_S_IFREG = stat.S_IFREG
#: makes reference counts (File.refs, VM.refs) atomic: two threads that drop the last
#: two references at once must not both see 0 and release twice (a double munmap).
#: A kmock.locks.RLock: get and put run for every fd, dup and mapping, and the compiled
#: modules that type it (file.pxd, vm.pxd, fdtable.pxd) take and drop it with a C call
REFS_LOCK = RLock()


class File:
    """An open file description. Subclasses set ``file_type`` and override operations."""

    file_type = None
    #: st_mode of the inode (anonymous inodes have no file-type bits)
    i_mode = stat.S_IRUSR | stat.S_IWUSR
    #: whether the file has an llseek operation (noop_llseek counts)
    has_llseek = False
    cloexec = True
    #: the access mode the kernel opens the file with (anon_inode_getfd's flags:
    #: O_RDWR for VM, vCPU, device and guest_memfd files); the fd's placeholder gets it
    #: so F_GETFL agrees (kmock.fdtable)
    f_flags = os.O_RDWR

    def __init__(self, kernel, vmtype=None):
        self.kernel = kernel
        self.refs = 0
        #: the dispatch table {request: handler} of this file type, for the VM type of
        #: the VM the file belongs to (built once per Kernel)
        self.ioctls = kernel.ioctl_table(self.file_type, vmtype)

    # --- lifetime ------------------------------------------------------------------

    def get(self):
        get_file(self)

    def put(self):
        fput(self)

    def release(self):
        """The last reference went away (the kernel's ->release)."""

    # --- file operations ---------------------------------------------------------------

    def unknown_ioctl(self, request, arg):
        raise oserror(errno.ENOTTY)

    def read(self, n):
        # vfs_read: no ->read / ->read_iter -> EINVAL
        raise oserror(errno.EINVAL)

    def write(self, data):
        raise oserror(errno.EINVAL)

    def pread(self, n, offset):
        # anonymous files are opened without FMODE_PREAD
        raise oserror(errno.ESPIPE)

    def pwrite(self, data, offset):
        raise oserror(errno.ESPIPE)

    def lseek(self, pos, how):
        if not self.has_llseek:
            raise oserror(errno.ESPIPE)
        return 0  # noop_llseek: the position never moves

    def fstat(self):
        # anon_inode_getfile: every such file shares one inode (anon_inode_inode)
        return make_stat(self.i_mode, size=0, ino=ANON_INODE_INO)

    def ftruncate(self, length):
        # do_sys_ftruncate: EINVAL for a negative length and for anything but a
        # regular file opened for writing
        raise oserror(errno.EINVAL)

    def fchmod(self, mode):
        return None

    def fsync(self):
        raise oserror(errno.EINVAL)

    def fallocate(self, mode, offset, length):
        """vfs_fallocate's checks, in its order, then the file type's ->fallocate."""
        if offset < 0 or length <= 0:
            raise oserror(errno.EINVAL)
        if mode & ~(FALLOC_FL_MODE_MASK | FALLOC_FL_KEEP_SIZE):
            raise oserror(errno.EOPNOTSUPP)
        m = mode & FALLOC_FL_MODE_MASK
        if m == FALLOC_FL_PUNCH_HOLE:
            if not mode & FALLOC_FL_KEEP_SIZE:
                raise oserror(errno.EOPNOTSUPP)
        elif m in (FALLOC_FL_COLLAPSE_RANGE, FALLOC_FL_INSERT_RANGE, FALLOC_FL_WRITE_ZEROES):
            if mode & FALLOC_FL_KEEP_SIZE:
                raise oserror(errno.EOPNOTSUPP)
        elif m not in (0, FALLOC_FL_UNSHARE_RANGE, FALLOC_FL_ZERO_RANGE):
            raise oserror(errno.EOPNOTSUPP)
        fmt = self.i_mode & 0o170000  # S_IFMT
        if fmt != _S_IFREG:  # (a regular file: the common case, one test)
            if fmt == stat.S_IFIFO:
                raise oserror(errno.ESPIPE)
            if fmt == stat.S_IFDIR:
                raise oserror(errno.EISDIR)
            if fmt != stat.S_IFBLK:
                raise oserror(errno.ENODEV)
        if offset + length > MAX_LFS_FILESIZE:
            raise oserror(errno.EFBIG)
        return self.do_fallocate(mode, offset, length)

    def do_fallocate(self, mode, offset, length):
        raise oserror(errno.EOPNOTSUPP)

    def mmap(self, length, prot, flags, offset):
        """->mmap; Kernel.mmap has taken MAP_ANONYMOUS and the unaligned offset before
        the fd was looked up (ksys_mmap_pgoff, sys_mmap)."""
        check_mmap_args(length, prot, flags, offset, self.i_mode, has_mmap=False)
        raise oserror(errno.ENODEV)  # (check_mmap_args raised it: no ->mmap)


def get_file(f):
    """get_file: take a reference on the open file ``f``."""
    lock = REFS_LOCK
    lock.acquire()
    try:
        f.refs += 1
    finally:
        lock.release()


def fput(f):
    """fput: drop a reference on the open file ``f``; the last one releases it."""
    lock = REFS_LOCK
    lock.acquire()
    try:
        f.refs -= 1
        if f.refs:
            return
    finally:
        lock.release()
    f.release()  # once: only the fput that took the count to 0 gets here


# mmap(2) flag bits (x86-64 numbers, include/uapi/asm-generic/mman*.h, arch/x86 mman.h)
MAP_32BIT = 0x40
MAP_ABOVE4G = 0x80  # (x86, 6.6+: the shadow-stack series added it to LEGACY_MAP_MASK)
MAP_GROWSDOWN = 0x0100
MAP_DENYWRITE = 0x0800
MAP_EXECUTABLE = 0x1000
MAP_LOCKED = 0x2000
MAP_NONBLOCK = 0x10000
MAP_STACK = 0x20000
MAP_HUGETLB = 0x40000
MAP_SYNC = 0x80000
MAP_UNINITIALIZED = 0x4000000
MAP_HUGE_2MB = 21 << 26
MAP_HUGE_1GB = 30 << 26
MAP_ANONYMOUS = _libc.MAP_ANONYMOUS
MAP_POPULATE = _libc.MAP_POPULATE
#: include/linux/mman.h LEGACY_MAP_MASK: the flags every ->mmap accepts
LEGACY_MAP_MASK = (_libc.MAP_SHARED | _libc.MAP_PRIVATE | _libc.MAP_FIXED | MAP_ANONYMOUS
                   | MAP_DENYWRITE | MAP_EXECUTABLE | MAP_UNINITIALIZED | MAP_GROWSDOWN
                   | MAP_LOCKED | _libc.MAP_NORESERVE | MAP_POPULATE | MAP_NONBLOCK
                   | MAP_STACK | MAP_HUGETLB | MAP_32BIT | MAP_ABOVE4G | MAP_HUGE_2MB
                   | MAP_HUGE_1GB)
#: the user address space of x86-64 with 4-level paging (DEFAULT_MAP_WINDOW)
TASK_SIZE = (1 << 47) - 4096
_U64 = (1 << 64) - 1


def check_mmap_args(length, prot, flags, offset, i_mode=0, has_mmap=True, mmap_sync=False):
    """The checks mmap(2) makes before the file's ->mmap, in the kernel's order
    (arch/x86/kernel/sys_x86_64.c sys_mmap, mm/mmap.c ksys_mmap_pgoff and do_mmap).

    ``i_mode``: the inode's mode (file_mmap_size_max: a regular file's offsets end at
    MAX_LFS_FILESIZE, an anonymous inode's at ULONG_MAX; a character device is on /dev,
    taken to be mounted without noexec as devtmpfs is by default; every other kmock file
    is on the anon_inode mount, which is SB_I_NOEXEC: PROT_EXEC is EPERM there). ``has_mmap``: the file has a ->mmap (ENODEV otherwise, after the
    flag checks). ``mmap_sync``: FOP_MMAP_SYNC (MAP_SYNC allowed with
    MAP_SHARED_VALIDATE). MAP_LOCKED's rlimit checks (can_do_mlock, mlock_future_ok)
    are not modelled.
    """
    if offset & 0xFFF:
        raise oserror(errno.EINVAL)  # sys_mmap
    if flags & MAP_HUGETLB:
        raise oserror(errno.EINVAL)  # ksys_mmap_pgoff: not a hugetlbfs file
    if length == 0:
        raise oserror(errno.EINVAL)  # do_mmap
    aligned = (length + 0xFFF) & ~0xFFF
    if length < 0 or aligned > _U64 or aligned > TASK_SIZE:
        # PAGE_ALIGN(len) wraps to 0; __get_unmapped_area: len > TASK_SIZE
        raise oserror(errno.ENOMEM)
    # file_mmap_ok
    fmt = stat.S_IFMT(i_mode)
    maxsize = MAX_LFS_FILESIZE if fmt in (stat.S_IFREG, stat.S_IFBLK, stat.S_IFSOCK) else _U64
    if aligned > maxsize or ((offset & _U64) >> 12) > (maxsize - aligned) >> 12:
        raise oserror(errno.EOVERFLOW)
    maptype = flags & _libc.MAP_TYPE
    if maptype == _libc.MAP_SHARED:
        flags &= LEGACY_MAP_MASK  # unknown flags are ignored with MAP_SHARED
    if maptype in (_libc.MAP_SHARED, _libc.MAP_SHARED_VALIDATE):
        if flags & ~(LEGACY_MAP_MASK | (MAP_SYNC if mmap_sync else 0)):
            raise oserror(errno.EOPNOTSUPP)
    elif maptype != _libc.MAP_PRIVATE:
        raise oserror(errno.EINVAL)
    if prot & _libc.PROT_EXEC and fmt != stat.S_IFCHR:
        raise oserror(errno.EPERM)  # path_noexec
    if not has_mmap:
        raise oserror(errno.ENODEV)
    if flags & MAP_GROWSDOWN:
        raise oserror(errno.EINVAL)  # VM_GROWSDOWN on a file mapping


#: st_dev of the anon_inode mount: every anonymous-inode file (VM, vCPU, guest_memfd,
#: stats, device fds) has it (the number is this probe host's; only equality matters)
ANON_INODE_DEV = 16
#: st_ino of the one inode anon_inode_getfile/getfd share between their files (VM,
#: vCPU, stats, device fds); a guest_memfd has its own (anon_inode_create_getfile)
ANON_INODE_INO = 1044
#: the times of that shared inode: it was made at boot, long before any VM
ANON_INODE_TIME = time.time() - 3600.0


def make_stat(mode, size, ino, dev=ANON_INODE_DEV, nlink=1, blksize=4096, blocks=0, rdev=0,
              uid=0, gid=0, times=(ANON_INODE_TIME,) * 3):
    """An os.stat_result; ``times``: (atime, mtime, ctime) in seconds (floats)."""
    a, m, c = times
    return os.stat_result(
        (mode, ino, dev, nlink, uid, gid, size, int(a), int(m), int(c)),
        {"st_blksize": blksize, "st_blocks": blocks, "st_rdev": rdev,
         "st_atime": a, "st_mtime": m, "st_ctime": c,
         "st_atime_ns": int(a * 1e9), "st_mtime_ns": int(m * 1e9), "st_ctime_ns": int(c * 1e9)},
    )
