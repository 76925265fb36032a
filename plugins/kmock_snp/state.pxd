# Cython declarations of state.py (an augmenting .pxd: the .py stays the source and
# runs unchanged when interpreted): the fields each conversion and KVM_RUN reads, as
# typed members of cdef classes when compiled.

cdef class Machine:
    cdef dict __dict__
    cdef object __weakref__
    cdef public object lock, rmp, faults, lost, invalidations, _last_key, _keep


cdef class SevInfo:
    cdef dict __dict__
    cdef public object machine, es, snp, need_init, active, asid


cdef class VcpuInfo:
    cdef dict __dict__
    cdef public object guest_state_protected, terminated
