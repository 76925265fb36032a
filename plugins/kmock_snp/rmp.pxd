# Cython declarations of rmp.py (an augmenting .pxd, see state.pxd).

cdef class Rmp:
    cdef dict __dict__
    cdef public object _map, _n, faults
