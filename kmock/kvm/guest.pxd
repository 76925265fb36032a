# Cython declarations of kmock/kvm/guest.py (an augmenting .pxd, see kmock/notifier.pxd):
# the script and action fields KVM_RUN's loop reads on every step.
cimport cython


cdef class Action:
    cdef dict __dict__
    cdef public object done, result, exits


cdef class GuestScript:
    cdef dict __dict__
    cdef public object actions, pc, retired, history


@cython.locals(script=GuestScript, action=Action)
cpdef run(vcpu)
