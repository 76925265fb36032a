# Cython declarations of td.py (an augmenting .pxd: the .py stays the source and runs
# unchanged when interpreted): the TD's fields each conversion and KVM_RUN reads, as
# typed members of cdef classes when compiled, and the S-EPT mirror's map and zap as C
# calls with typed locals.
cimport cython

from kmock._sync cimport RLock as SyncRLock
from kmock.kvm.memslot cimport Memslot
from kmock.kvm.vm cimport VM

from kmock_tdx.sept cimport Sept


cdef class TdxVcpu:
    cdef dict __dict__
    cdef public object initialized, rcx, pending_event, signal_after_pages, x86


cdef class Td:
    cdef dict __dict__
    cdef object __weakref__
    cdef public object vm, kernel, faults, state, connect, connect_precheck, huge_pages, gpaw
    cdef public SyncRLock lock
    cdef public object shared_bit, sept
    cdef public object nr_premapped, premapped, pulled, reason

    @cython.locals(sept=Sept, lock=SyncRLock)
    cpdef sept_map(self, gfn, pfn, npages)

    @cython.locals(sept=Sept, lock=SyncRLock)
    cpdef sept_remove(self, gfn, end, reason=*)


@cython.locals(vm=VM, slot=Memslot)
cpdef gmem_page_of(vm, gfn)

cpdef zero_pages(inode, index, npages)
