# Cython declarations of guest.py (an augmenting .pxd, see state.pxd): the page-state
# actions each SNP conversion runs, as cdef classes with typed fields when compiled.
cimport cython

from kmock.kvm.guest cimport Action, hypercall_exit
from kmock.kvm.stage2 cimport Stage2
from kmock.kvm.vcpu cimport Vcpu
from kmock.kvm.vm cimport VM

from kmock_snp.state cimport Machine, SevInfo


cdef class Pvalidate(Action):
    cdef public object gpa, validate, page_size, npfs

    @cython.locals(vcpu=Vcpu, vm=VM, sev=SevInfo, m=Machine, stage2=Stage2)
    cpdef step(self, vcpu)


cdef class PscMsr(Action):
    cdef public object gpa, private, msr, _waiting
