# Cython declarations of kmock/kvm/vm.py (an augmenting .pxd, see kmock/notifier.pxd):
# the fields the conversion and KVM_RUN paths read, as typed members; every other
# attribute lives in the instance __dict__ as before.
cimport cython

from kmock._sync cimport Condition as SyncCondition
from kmock._sync cimport RLock as SyncRLock
from kmock.fdtable cimport FdTable
from kmock.kvm.guest_memfd cimport GmemInode
from kmock.kvm.memslot cimport Memslot, Memslots
from kmock.kvm.stage2 cimport Stage2
from kmock.mm._core cimport RangeMap as CoreRangeMap


cdef class VM:
    cdef dict __dict__
    cdef object __weakref__
    cdef public object kernel, vmtype, owner_pid, dead, refs
    cdef public SyncCondition mmu_lock
    cdef public SyncRLock slots_lock
    cdef public object mmu_invalidate_in_progress, mmu_invalidate_seq, mmu_waiters
    cdef public Stage2 stage2
    cdef public CoreRangeMap mem_attrs
    cdef public object arch, hypercall_exit_enabled, mem_attrs_supported
    cdef public object _as

    cpdef check_caller(self)

    @cython.locals(lock=SyncRLock)
    cpdef get(self)

    @cython.locals(lock=SyncRLock)
    cpdef put(self)
    cpdef mmu_invalidate_end(self)

    @cython.locals(slots=Memslots)
    cpdef lookup_memslot(self, gfn, as_id=*)

    @cython.locals(slot=Memslot, inode=GmemInode, slots=Memslots)
    cpdef set_memory_attributes(self, start, end, attributes)


cdef class _GuestAccess:
    cdef public SyncCondition cond
    cdef public VM vm


@cython.locals(vm=VM, table=FdTable)
cpdef vm_create_guest_memfd(f, arg)


@cython.locals(vm=VM)
cpdef vm_set_memory_attributes(f, arg)
