# Cython declarations of guest.py (an augmenting .pxd, see td.pxd): the accept and MapGPA
# actions each conversion runs.
cimport cython

from kmock.kvm.guest cimport Action
from kmock.kvm.vcpu cimport Vcpu
from kmock.kvm.vm cimport VM

from kmock_tdx.mapgpa cimport MapGpa
from kmock_tdx.td cimport Td


cdef class Accept(Action):
    cdef public object gpa, level

    @cython.locals(vcpu=Vcpu, vm=VM, td=Td)
    cpdef step(self, vcpu)


cdef class MapGpaCall(Action):
    cdef public object gpa, size, call
