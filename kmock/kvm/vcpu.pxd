# Cython declarations of kmock/kvm/vcpu.py (an augmenting .pxd, see kmock/notifier.pxd).
cimport cython

from kmock.kvm.guest cimport Action, GuestScript
from kmock.kvm.stats cimport VcpuStat
from kmock.kvm.vm cimport VM


cdef class Vcpu:
    cdef dict __dict__
    cdef object __weakref__
    cdef public object vm, id, mutex, run, run_hypercall, run_hypercall_args, guest
    cdef public object pending, stopped, halted, entered, mmu_root_loaded, signal_pending
    cdef public object arch, dirty_ring, halts_in_kernel, run_addr, wake
    cdef public unsigned char[::1] run_u8
    cdef public unsigned int[::1] run_u32
    cdef public unsigned long long[::1] run_u64
    cdef public VcpuStat stat


@cython.locals(vcpu=Vcpu)
cpdef vcpu_run(f, arg)

@cython.locals(vm=VM, vcpu=Vcpu, pending=Action, script=GuestScript)
cdef _vcpu_run(f, vcpu, arg)
