# Cython declarations of kmock/physmem.py (an augmenting .pxd, see kmock/notifier.pxd):
# alloc_range runs on every guest_memfd creation; typed members are one load each.

cdef class PhysMem:
    cdef object _next, _lock

    cpdef alloc_range(self, npages)
