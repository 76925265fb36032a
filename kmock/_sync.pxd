# Declarations of kmock._sync (built from csrc_cython/_sync.pyx), for the compiled modules
# that type a lock field as RLock: their acquire()/release() are then C calls.
from cpython.pythread cimport PyThread_type_lock


cdef class RLock:
    cdef PyThread_type_lock _lock
    cdef unsigned long _owner
    cdef unsigned long _count

    cpdef bint acquire(self, bint blocking=*, double timeout=*) except -1
    cpdef release(self)
    cdef bint _wait(self, bint blocking, double timeout) except -1


cdef class Condition(RLock):
    cdef list _waiters
