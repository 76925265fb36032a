# Cython declarations of kmock/kvm/vcpu.py (an augmenting .pxd, see kmock/notifier.pxd).
cimport cython

from kmock.kvm.vm cimport VM


cdef class Vcpu:
    cdef dict __dict__
    cdef object __weakref__
    cdef public object vm, id, mutex, run, run_hypercall, run_hypercall_args, guest
    cdef public object pending, stopped, halted, entered, mmu_root_loaded, signal_pending
    cdef public object stat, arch


@cython.locals(vm=VM, vcpu=Vcpu)
cpdef vcpu_run(f, arg)
