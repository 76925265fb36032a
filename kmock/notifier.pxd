# Cython declarations of kmock/notifier.py (an augmenting .pxd: the .py stays the
# source and runs unchanged when interpreted). Typed attributes let compiled code read
# an event's fields without a generic attribute look-up.

cdef class InvalidateEvent:
    cdef public object inode, start, end, reason, to_private, vm, failed

cdef class GmemNotifier:
    cpdef veto(self, InvalidateEvent event)
    cpdef invalidate_begin(self, InvalidateEvent event)
    cpdef invalidate_commit(self, InvalidateEvent event)
    cpdef invalidate_end(self, InvalidateEvent event)
