# Cython declarations of rtt.py (an augmenting .pxd: the .py stays the source and runs
# unchanged when interpreted): the RMM's tables as cdef classes with typed fields when
# compiled (see kmock/notifier.pxd).

cdef class GranuleTable:
    cdef dict __dict__
    cdef public object _map, base, nr_granules


cdef class Realm:
    cdef dict __dict__
    cdef object __weakref__
    cdef public object _entries, granules, ipa_bits, ipa_size, par_size, rd_pa, rim
    cdef public object rmm_state, unprotected_bit, init_ripas_skips_assigned_ram


cdef class Rec:
    cdef dict __dict__
    cdef public object change_destroyed, pending_exit, realm, rec_pa, ripas_addr
    cdef public object ripas_base, ripas_top, ripas_value, running
