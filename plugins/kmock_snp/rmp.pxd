# Cython declarations of rmp.py (an augmenting .pxd, see state.pxd).

from kmock.mm._core cimport RangeMap as CoreRangeMap


cdef class Rmp:
    cdef dict __dict__
    cdef public object _n, faults
    cdef public CoreRangeMap _map, _leaked
