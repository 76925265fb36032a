# Cython declarations of mapgpa.py (an augmenting .pxd, see td.pxd): the call's steps are
# C calls from the MapGPA action (kmock_tdx.guest).

cdef class MapGpa:
    cdef public object end, exit, exit_enabled, gpa, maxphyaddr, next, result, shared_bit, size

    cpdef _finish(self, r10, r11)
    cpdef start(self)
    cpdef _chunk(self)
    cpdef complete(self, ret, has_events=*)
