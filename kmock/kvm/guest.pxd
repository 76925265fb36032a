# Cython declarations of kmock/kvm/guest.py (an augmenting .pxd, see kmock/notifier.pxd):
# the script and action fields KVM_RUN's loop reads on every step, and the core's memory
# and hypercall actions as cdef classes whose steps are typed (their vCPU, VM and
# segments) and call each other in C.
cimport cython

from kmock.kvm.stage2 cimport Segment, faultin
from kmock.kvm.vcpu cimport Vcpu
from kmock.kvm.vm cimport VM


cdef class Action:
    cdef dict __dict__
    cdef public object done, result, exits

    cpdef finish(self, result=*)


cdef class _Access(Action):
    cdef public object gpa, size, private, progress, aborted, _mmio

    @cython.locals(vcpu=Vcpu, vm=VM, seg=Segment)
    cpdef step(self, vcpu)
    @cython.locals(vcpu=Vcpu, seg=Segment)
    cpdef _ram(self, vcpu, seg, shift=*)
    cpdef _complete_access(self)
    @cython.locals(vcpu=Vcpu, seg=Segment)
    cpdef _mmio_exit(self, vcpu, seg, shift=*)


cdef class Read(_Access):
    cdef public object _buf

    @cython.locals(vcpu=Vcpu, seg=Segment)
    cpdef _ram(self, vcpu, seg, shift=*)
    cpdef _complete_access(self)
    @cython.locals(vcpu=Vcpu)
    cpdef step(self, vcpu)


cdef class Write(_Access):
    cdef public object data

    @cython.locals(vcpu=Vcpu, seg=Segment)
    cpdef _ram(self, vcpu, seg, shift=*)
    cpdef _complete_access(self)


cdef class Hypercall(Action):
    cdef public object nr, args, _waiting

    @cython.locals(vcpu=Vcpu, vm=VM)
    cpdef step(self, vcpu)
    @cython.locals(vcpu=Vcpu)
    cpdef complete(self, vcpu)


cdef class GuestScript:
    cdef dict __dict__
    cdef public list actions
    cdef public object pc, retired, history


@cython.locals(vcpu=Vcpu, words='unsigned long long[::1]')
cpdef hypercall_exit(vcpu, nr, a0, a1, a2, ret=*, flags=*)

@cython.locals(vcpu=Vcpu, script=GuestScript, action=Action)
cpdef run(vcpu)
