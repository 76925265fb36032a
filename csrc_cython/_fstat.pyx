# cython: language_level=3
"""A file's identity and size from its fd, without os.fstat's result object.

Built as ``kmock._fstat``. IOMMU_IOAS_MAP_FILE stands for the kernel's fget() with one
fstat per call (the fd may name another file at any time, so nothing can be cached);
``os.fstat`` builds a 20-field stat_result, about 5,800 instructions, for the three
fields it needs. The interpreted twin is ``kmock.iommufd.pages``'s os.fstat fallback.
"""

from libc.errno cimport errno
from posix.stat cimport fstat, struct_stat

import os


def identity(int fd):
    """(st_dev, st_ino, st_size) of ``fd``; OSError as os.fstat raises it."""
    cdef struct_stat st
    cdef int rc
    with nogil:  # as os.fstat: the GIL is not held across the syscall
        rc = fstat(fd, &st)
    if rc != 0:
        e = errno
        raise OSError(e, os.strerror(e))
    return st.st_dev, st.st_ino, st.st_size
