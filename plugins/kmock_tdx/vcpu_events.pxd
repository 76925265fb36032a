# Cython declarations of vcpu_events.py (an augmenting .pxd, see td.pxd): the NMI injection
# every KVM_RUN of a TD vCPU does is a C call with typed locals.
cimport cython

from kmock.kvm.vcpu cimport Vcpu

from kmock_tdx.td cimport TdxVcpu


@cython.locals(vcpu=Vcpu, tv=TdxVcpu)
cpdef inject_pending_nmi(vcpu)
