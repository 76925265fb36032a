# Cython declarations of kmock/kvm/stage2.py (an augmenting .pxd, see kmock/notifier.pxd):
# the fault path's locals are typed, and stage-2's map/zap/lookup are C calls from
# typed callers (and _zapped from map and zap); its table is the core's PageTable, so
# their table calls are C calls too.
cimport cython

from kmock.kvm.guest_memfd cimport GmemInode
from kmock.kvm.memslot cimport Memslot
from kmock.kvm.vm cimport VM
from kmock.mm._core cimport PageTable as CorePageTable


cdef class Stage2:
    cdef public CorePageTable pt
    cdef public VM vm

    @cython.locals(vm=VM)
    cpdef map(self, gfn, pfn, npages, private, writable=*, leaf_size=*)
    @cython.locals(vm=VM)
    cpdef zap(self, start, end, kind=*, entries=*)
    cpdef lookup(self, gfn)
    @cython.locals(vm=VM)
    cdef list _zapped(self, list removed)


@cython.locals(inode=GmemInode)
cpdef gmem_get_pfns(inode, index, n)

@cython.locals(vm=VM, slot=Memslot, inode=GmemInode)
cpdef private_runs(vm, slot, start, end)

@cython.locals(vm=VM, slot=Memslot, inode=GmemInode, stage2=Stage2)
cpdef faultin(vm, gpa, end, requested, write, want_data=*)


cdef class Segment:
    cdef public object kind, gpa, length, inode, offset, hva, data, gfn, npages
