# Cython declarations of mapgpa.py (an augmenting .pxd, see td.pxd).

cdef class MapGpa:
    cdef public object end, exit, exit_enabled, gpa, maxphyaddr, next, result, shared_bit, size
