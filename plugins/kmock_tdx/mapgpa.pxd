# Cython declarations of mapgpa.py (an augmenting .pxd, see td.pxd): the call's steps are
# C calls from the MapGPA action (kmock_tdx.guest), computing with the register values as
# C u64 (checked to be u64 by __init__), and the constants they use as C constants (module
# variables only the compiled module sees; nothing imports them).
cimport cython

cdef unsigned long long _U64, _PAGE_MASK, _MAX_LEN
cdef int _PAGE_SHIFT

cdef class MapGpa:
    cdef public object end, exit_enabled, gpa, maxphyaddr, next, result, shared_bit, size
    cdef public tuple args

    cpdef bint _finish(self, r10, r11)

    @cython.locals(gpa=cython.ulonglong, size=cython.ulonglong, end=cython.ulonglong,
                   last=cython.ulonglong, shared_bit=cython.ulonglong)
    cpdef bint begin(self)

    @cython.locals(nxt=cython.ulonglong, end=cython.ulonglong, shared_bit=cython.ulonglong,
                   size=cython.ulonglong, shared=cython.ulonglong)
    cpdef bint _chunk(self)

    cpdef bint answer(self, ret, has_events=*)
