# Cython declarations of kmock/kvm/guest_memfd.py (an augmenting .pxd, see
# kmock/notifier.pxd): the inode's fields that every invalidation, fault and punch reads,
# and the file's; creation and release call typed code.
cimport cython

from kmock._sync cimport RLock as SyncRLock
from kmock.file cimport File
from kmock.mm._core cimport RangeMap as CoreRangeMap
from kmock.notifier cimport GmemNotifier
from kmock.physmem cimport PhysMem


cdef class GmemInode:
    cdef dict __dict__
    cdef object __weakref__
    cdef public object kernel, size, flags, npages, backing
    cdef public SyncRLock invalidate_lock, lock
    cdef public CoreRangeMap attrs, allocated, poisoned, pins, prepared
    cdef public object mappings, pfn_base, maybe_dirty, in_place, folio_pages, vm
    cdef public object notifiers, _steps, _backing_entry, slots, orphans, atime, mtime

    @cython.locals(n=GmemNotifier, iommu_lock=SyncRLock, invalidate_lock=SyncRLock,
                   lock=SyncRLock)
    cpdef invalidate(self, event, store=*, check_refcount=*, clamp_error_index=*, vetoed=*)

    @cython.locals(n=GmemNotifier)
    cpdef veto_check(self, event)


cdef class BackingPool:
    cdef public dict by_size
    cdef public object count, limit, outstanding

    cpdef take(self, size)
    cpdef give(self, entry, dirty)


cdef class GmemFile(File):
    cdef public object vm
    cdef public GmemInode inode

    @cython.locals(inode=GmemInode, pool=BackingPool)
    cpdef release(self)


@cython.locals(inode=GmemInode, pool=BackingPool, physmem=PhysMem)
cpdef create_guest_memfd(vm, size, flags)
