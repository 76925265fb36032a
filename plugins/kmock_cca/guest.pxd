# Cython declarations of guest.py (an augmenting .pxd, see rtt.pxd): the RSI_IPA_STATE_SET
# action each conversion runs, its vCPU and REC typed.
cimport cython

from kmock.kvm.guest cimport Action
from kmock.kvm.vcpu cimport Vcpu

from kmock_cca.rtt cimport Rec


@cython.final
cdef class IpaStateSet(Action):
    cdef public object base, top, ripas, flags, _exited

    @cython.locals(vcpu=Vcpu, rec=Rec)
    cpdef step(self, vcpu)
