# Cython declarations of guest.py (an augmenting .pxd, see td.pxd): the accept and MapGPA
# actions each conversion runs, with typed locals and C calls to the S-EPT, the fault path
# and MapGPA.
cimport cython

from kmock._sync cimport RLock as SyncRLock
from kmock.kvm.guest cimport Action, hypercall_exit
from kmock.kvm.stage2 cimport faultin
from kmock.kvm.vcpu cimport Vcpu
from kmock.kvm.vm cimport VM

from kmock_tdx.mapgpa cimport MapGpa
from kmock_tdx.sept cimport Sept
from kmock_tdx.td cimport Td, TdxVcpu, gmem_page_of, zero_pages


cdef int PAGE_SHIFT

@cython.final
cdef class Accept(Action):
    cdef public object gpa, level

    @cython.locals(vcpu=Vcpu, vm=VM, td=Td, sept=Sept, lock=SyncRLock, gpa=cython.ulonglong,
                   shared_bit=cython.ulonglong, gpaw=cython.int, gfn=cython.ulonglong,
                   npages=cython.longlong, at=cython.ulonglong, size=cython.longlong)
    cpdef step(self, vcpu)


@cython.final
cdef class MapGpaCall(Action):
    cdef public object gpa, size, call

    @cython.locals(vcpu=Vcpu, call=MapGpa)
    cdef _exit(self, vcpu)

    @cython.locals(vcpu=Vcpu, vm=VM, td=Td, call=MapGpa)
    cpdef step(self, vcpu)

    @cython.locals(vcpu=Vcpu, tv=TdxVcpu, call=MapGpa)
    cpdef complete(self, vcpu)
