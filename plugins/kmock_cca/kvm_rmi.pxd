# Cython declarations of kvm_rmi.py (an augmenting .pxd, see rtt.pxd): the helpers a
# conversion runs type the realm and granule table they are given, so that the RMM
# commands are C calls.
cimport cython

from kmock_cca.rtt cimport GranuleTable, Realm


cdef class HostPool:
    cdef dict __dict__
    cdef public object base, free, granules, kernel, lock, next


@cython.locals(realm=Realm)
cpdef ensure_tables(realm, pool, ipa, end)

@cython.locals(granules=GranuleTable)
cpdef _delegate(granules, pa, size)

@cython.locals(realm=Realm, g=GranuleTable)
cpdef map_protected(realm, pool, ipa, pa, size)

@cython.locals(realm=Realm, g=GranuleTable)
cpdef unmap_protected(realm, ipa, end)

@cython.locals(realm=Realm)
cpdef _walk_ripas(realm, pool, base, top, rec)

cpdef set_ripas(realm, rec, pool, base, top)
