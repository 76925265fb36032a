# Cython declarations of kmock/kvm/guest_memfd.py (an augmenting .pxd, see
# kmock/notifier.pxd): the inode's fields that every invalidation, fault and punch reads.

from kmock._sync cimport RLock as SyncRLock


cdef class GmemInode:
    cdef dict __dict__
    cdef object __weakref__
    cdef public object kernel, size, flags, npages, backing
    cdef public SyncRLock invalidate_lock, lock
    cdef public object attrs, allocated, mappings, pfn_base
    cdef public object maybe_dirty, in_place, poisoned, pins, folio_pages, prepared, vm
    cdef public object notifiers, _steps, _backing_entry, slots, orphans, atime, mtime

cdef class BackingPool:
    cdef dict __dict__
    cdef public dict by_size
    cdef public object count, limit, outstanding
