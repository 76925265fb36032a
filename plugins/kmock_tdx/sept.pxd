# Cython declarations of sept.py (an augmenting .pxd, see td.pxd): the single-page fast
# paths of a 4K conversion are C calls from typed callers, with the packed value of a gfn
# (a RangeMap u64) as a C integer.
cimport cython

cdef class Sept:
    cdef dict __dict__
    cdef public object npages, connect, runnable, epoch, _map, _bepoch, _nl_bepoch

    @cython.locals(v=cython.ulonglong)
    cpdef aug_page(self, gfn, pfn)

    @cython.locals(v=cython.ulonglong)
    cpdef zap_page(self, gfn)

    @cython.locals(v=cython.ulonglong)
    cpdef accept(self, gfn, npages, level=*)

    cpdef leaves(self, gfn, npages)
