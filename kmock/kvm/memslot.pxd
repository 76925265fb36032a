# Cython declarations of kmock/kvm/memslot.py (an augmenting .pxd, see kmock/notifier.pxd).
cimport cython

from kmock.kvm.vm cimport VM
from kmock.notifier cimport GmemNotifier, InvalidateEvent


cdef class Memslot:
    cdef public object vm, as_id, id, base_gfn, npages, flags, userspace_addr
    cdef public object gmem_file, gmem_pgoff, gmem_token, gmem_notifier


cdef class GmemBinding(GmemNotifier):
    cdef public Memslot slot

    @cython.locals(slot=Memslot, vm=VM, event=InvalidateEvent)
    cpdef invalidate_begin(self, event)

    @cython.locals(vm=VM, event=InvalidateEvent)
    cpdef invalidate_end(self, event)
