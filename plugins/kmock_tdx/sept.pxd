# Cython declarations of sept.py (an augmenting .pxd, see td.pxd): the single-page fast
# paths of a 4K conversion are C calls from typed callers, with the packed value of a gfn
# (a RangeMap u64) as a C integer, and the states and bits they compare it with as C
# constants (module variables only the compiled module sees; nothing imports them).
cimport cython

from kmock.mm._core cimport RangeMap as CoreRangeMap

cdef int _FREE, _PENDING, _MAPPED, _WALK
cdef unsigned long long _NL_BLOCKED_ABOVE_4K, _DMASK

cdef class Sept:
    cdef dict __dict__
    cdef public object npages, connect, runnable, epoch, _nl_bepoch
    cdef public CoreRangeMap _map, _bepoch

    @cython.locals(v=cython.ulonglong, delta=cython.longlong)
    cpdef aug_page(self, gfn, pfn)

    @cython.locals(v=cython.ulonglong)
    cpdef zap_page(self, gfn)

    @cython.locals(v=cython.ulonglong)
    cpdef accept(self, gfn, npages, level=*)

    @cython.locals(v=cython.ulonglong, st=cython.int)
    cpdef accept_page(self, gfn)

    cpdef leaves(self, gfn, npages)
