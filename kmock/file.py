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
import threading

from . import _libc
from .errors import oserror

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
#: makes reference counts (File.refs, VM.refs) atomic: two threads that drop the last
#: two references at once must not both see 0 and release twice (a double munmap)
REFS_LOCK = threading.Lock()


class File:
    """An open file description. Subclasses set ``file_type`` and override operations."""

    file_type = None
    #: st_mode of the inode (anonymous inodes have no file-type bits)
    i_mode = stat.S_IRUSR | stat.S_IWUSR
    #: whether the file has an llseek operation (noop_llseek counts)
    has_llseek = False
    cloexec = True

    def __init__(self, kernel, vmtype=None):
        self.kernel = kernel
        self.refs = 0
        #: the dispatch table {request: handler} of this file type, for the VM type of
        #: the VM the file belongs to (built once per Kernel)
        self.ioctls = kernel.ioctl_table(self.file_type, vmtype)

    # --- lifetime ------------------------------------------------------------------

    def get(self):
        with REFS_LOCK:
            self.refs += 1

    def put(self):
        with REFS_LOCK:
            self.refs -= 1
            if self.refs:
                return
        self.release()  # once: only the put that took the count to 0 gets here

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
        return make_stat(self.i_mode, size=0, ino=id(self) & 0xFFFFFFFF)

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
        if fmt != stat.S_IFREG:  # (a regular file: the common case, one test)
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
        check_mmap_args(length, prot, flags, offset)
        raise oserror(errno.ENODEV)


def check_mmap_args(length, prot, flags, offset):
    """The checks mmap(2) makes before it reaches the file's ->mmap, in the kernel's order."""
    if offset & 0xFFF:
        raise oserror(errno.EINVAL)
    if length == 0:
        raise oserror(errno.EINVAL)
    if length < 0 or ((length + 0xFFF) & ~0xFFF) >= (1 << 64):
        raise oserror(errno.ENOMEM)
    if offset < 0 or (offset >> 12) + ((length + 0xFFF) >> 12) >= (1 << 52):
        raise oserror(errno.EOVERFLOW)
    maptype = flags & _libc.MAP_TYPE
    if maptype not in (_libc.MAP_SHARED, _libc.MAP_PRIVATE, _libc.MAP_SHARED_VALIDATE):
        raise oserror(errno.EINVAL)


def make_stat(mode, size, ino, dev=16, nlink=1, blksize=4096, blocks=0, rdev=0):
    now = 0
    return os.stat_result(
        (mode, ino, dev, nlink, 0, 0, size, now, now, now),
        {"st_blksize": blksize, "st_blocks": blocks, "st_rdev": rdev},
    )
