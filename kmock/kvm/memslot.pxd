# Cython declarations of kmock/kvm/memslot.py (an augmenting .pxd, see kmock/notifier.pxd).
cimport cython

from kmock.kvm.vm cimport VM
from kmock.notifier cimport GmemNotifier, InvalidateEvent


cdef class Memslot:
    cdef public object vm, as_id, id, base_gfn, npages, flags, userspace_addr
    cdef public object gmem_file, gmem_pgoff, gmem_token, gmem_notifier


cdef class Memslots:
    cdef public dict by_id
    cdef public tuple _sorted

    @cython.locals(starts=tuple, slots=tuple, s=Memslot, i=Py_ssize_t, j=Py_ssize_t)
    cpdef overlapping(self, start, end)

    @cython.locals(starts=tuple, slots=tuple, s=Memslot, i=Py_ssize_t)
    cpdef lookup(self, gfn)


cdef class GmemBinding(GmemNotifier):
    cdef public Memslot slot

    @cython.locals(slot=Memslot, vm=VM)
    cpdef invalidate_begin(self, InvalidateEvent event)

    @cython.locals(vm=VM)
    cpdef invalidate_end(self, InvalidateEvent event)
