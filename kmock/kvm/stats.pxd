# Cython declarations of kmock/kvm/stats.py (an augmenting .pxd, see kmock/notifier.pxd).

cdef class VcpuStat:
    cdef public dict counts, per_reason

    cpdef count_exit(self, run)
