# Cython declarations of sept.py (an augmenting .pxd, see td.pxd).

cdef class Sept:
    cdef dict __dict__
    cdef public object npages, connect, runnable, epoch, _map, _bepoch, _nl_bepoch
