# Cython declarations of rtt.py (an augmenting .pxd: the .py stays the source and runs
# unchanged when interpreted): the RMM's tables as cdef classes with typed fields when
# compiled (see kmock/notifier.pxd). The commands a 4K conversion issues (RTT_SET_RIPAS,
# the DATA map/unmap, the granule transitions, the RSI calls) are cpdef: C calls from
# typed callers (kvm_rmi, realm, guest).
cimport cython


cdef class Rec


from kmock.mm._core cimport RangeMap as CoreRangeMap


cdef class GranuleTable:
    cdef dict __dict__
    cdef public object base, nr_granules
    cdef public CoreRangeMap _map

    cpdef index(self, pa)
    cpdef in_state(self, index, n, state)
    cpdef set_state(self, index, n, state)
    cpdef delegate_range(self, pa, size)
    cpdef undelegate_range(self, pa, size)
    cpdef _transition_range(self, pa, size, old, new)


cdef class Realm:
    cdef dict __dict__
    cdef object __weakref__
    cdef public object granules, ipa_bits, ipa_size, par_size, rd_pa, rim
    cdef public CoreRangeMap _entries, _l2, _l3
    cdef public object rmm_state, unprotected_bit, init_ripas_skips_assigned_ram

    cpdef level(self, ipa)
    cpdef _entry_runs(self, lo, hi)
    cpdef _first_table(self, child_level, page_lo, page_hi)
    @cython.locals(page=cython.longlong, level=cython.int, n=cython.longlong,
                   table_end=cython.longlong, stop=cython.longlong)
    cpdef _entry_window(self, base, top)
    @cython.locals(rec=Rec)
    cpdef rtt_set_ripas(self, rec, base, top)
    cpdef missing_tables(self, level, ipa, end)
    cpdef unassigned_runs(self, ipa, end)
    cpdef ripas_runs(self, ipa, end)
    cpdef assigned_runs(self, ipa, end)
    cpdef _data_check(self, data_idx, ipa, src_idx, flags, known)
    cpdef _pages_at_level3(self, page, n)
    cpdef data_create_range(self, data_pa, ipa, src_pa, size, flags=*)
    cpdef _destroy_check(self, page)
    cpdef data_destroy_range(self, ipa, size)


cdef class Rec:
    cdef dict __dict__
    cdef public object change_destroyed, pending_exit, realm, rec_pa, ripas_addr
    cdef public object ripas_base, ripas_top, ripas_value, running

    cpdef ipa_state_set(self, base, top, ripas, flags=*)
    cpdef enter(self, flags=*)


cpdef _rmi_result(ret, x1=*, x2=*)
cpdef _update_ripas(v, ripas, change_destroyed)
