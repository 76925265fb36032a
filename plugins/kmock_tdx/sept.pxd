# Cython declarations of sept.py (an augmenting .pxd, see td.pxd): the single-page fast
# paths of a 4K conversion are C calls from typed callers.

cdef class Sept:
    cdef dict __dict__
    cdef public object npages, connect, runnable, epoch, _map, _bepoch, _nl_bepoch

    cpdef aug_page(self, gfn, pfn)
    cpdef zap_page(self, gfn)
    cpdef accept(self, gfn, npages, level=*)
    cpdef leaves(self, gfn, npages)
