# Cython declarations of kmock/kvm/stage2.py (an augmenting .pxd, see kmock/notifier.pxd).

cdef class Stage2:
    cdef public object pt, vm
