# Cython declarations of kvm_rmi.py (an augmenting .pxd, see rtt.pxd).

cdef class HostPool:
    cdef dict __dict__
    cdef public object base, free, granules, kernel, lock, next
