# Cython declarations of td.py (an augmenting .pxd: the .py stays the source and runs
# unchanged when interpreted): the TD's fields each conversion and KVM_RUN reads, as
# typed members of cdef classes when compiled.

cdef class TdxVcpu:
    cdef dict __dict__
    cdef public object initialized, rcx, pending_event, signal_after_pages


cdef class Td:
    cdef dict __dict__
    cdef object __weakref__
    cdef public object vm, kernel, lock, state, connect, huge_pages, gpaw, shared_bit, sept
    cdef public object nr_premapped, premapped, pulled
