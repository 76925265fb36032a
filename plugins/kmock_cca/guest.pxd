# Cython declarations of guest.py (an augmenting .pxd, see rtt.pxd).
from kmock.kvm.guest cimport Action


cdef class IpaStateSet(Action):
    cdef public object base, top, ripas, flags, _exited
