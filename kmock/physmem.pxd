# Cython declarations of kmock/physmem.py (an augmenting .pxd, see kmock/notifier.pxd):
# alloc_range runs on every guest_memfd creation; typed members are one load each.
cimport cython

from kmock._sync cimport RLock as SyncRLock


cdef class PhysMem:
    cdef object _next
    cdef SyncRLock _lock

    @cython.locals(lock=SyncRLock)
    cpdef alloc_range(self, npages)
