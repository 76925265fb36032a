# Declarations of kmock.mm._core (built from csrc_cython/_core.pyx), for the compiled
# modules that type a field as RangeMap or PageTable: the methods of the public API that
# conversions, faults and zaps call are cpdef, so such a call is a C call instead of a
# Python method call (an attribute look-up, then argument parsing). They behave exactly
# as when called from Python (same argument checks, same errors). Nothing else here is
# for other modules: the fields and the cdef methods are declared only because Cython
# needs a class's whole layout in its .pxd.
from libc.stdint cimport int64_t, uint32_t, uint64_t


# the RangeMap layout (see "Layout" in csrc_cython/_core.pyx)
cdef enum:
    CAP = 128
    G = 16
    NG = 8

cdef struct Chunk:
    uint64_t keys[CAP]
    uint64_t vals[CAP]


cdef class RangeMap:
    cdef uint64_t n
    cdef Chunk** ch
    cdef uint64_t* firsts
    cdef uint32_t* slots
    cdef Py_ssize_t nch
    cdef Py_ssize_t cap
    cdef uint32_t* dir
    cdef Py_ssize_t nbk
    cdef Py_ssize_t dcap
    cdef int dshift
    cdef uint64_t* rows
    cdef uint32_t* freeslots
    cdef Py_ssize_t nslots
    cdef Py_ssize_t nfree
    cdef Py_ssize_t scap
    cdef uint64_t version

    cpdef set(self, start, end, value)
    cpdef get(self, index)
    cpdef ranges(self, start=*, end=*)
    cpdef find(self, start, end, value)
    cpdef find_not(self, start, end, value)
    cpdef count(self, value, start=*, end=*)
    cpdef copy(self)

    cdef void _zero(self) noexcept
    cdef void _clear(self) noexcept
    cdef int _reserve(self, Py_ssize_t need) except -1
    cdef Py_ssize_t _slot_alloc(self) except -1
    cdef inline void _slot_free(self, Py_ssize_t slot) noexcept nogil
    cdef inline uint64_t* _row(self, Py_ssize_t ci) noexcept nogil
    cdef inline int _cn(self, Py_ssize_t ci) noexcept nogil
    cdef int _dir_reserve(self, Py_ssize_t nch) except -1
    cdef void _dir_fill(self) noexcept nogil
    cdef inline Py_ssize_t _bucket_at(self, uint64_t k) noexcept nogil
    cdef void _set_first(self, Py_ssize_t ci, uint64_t key) noexcept nogil
    cdef int _top_insert(self, Py_ssize_t idx, Chunk* c, Py_ssize_t slot) except -1
    cdef void _top_remove(self, Py_ssize_t a, Py_ssize_t b) noexcept
    cdef int _new_chunk(self, Chunk** out) except -1
    cdef inline Py_ssize_t _chunk_for(self, uint64_t x) noexcept nogil
    cdef inline void _locate(self, uint64_t x, Py_ssize_t* ci, int* j) noexcept nogil
    cdef inline uint64_t _get(self, uint64_t x) noexcept nogil
    cdef int _erase(self, uint64_t lo, uint64_t hi) except -1
    cdef int _insert(self, uint64_t key, uint64_t val) except -1
    cdef inline int _set(self, uint64_t s, uint64_t e, uint64_t v) except -1
    cdef int64_t _find(self, uint64_t s, uint64_t e, uint64_t v, bint negate) noexcept nogil
    cdef uint64_t _count(self, uint64_t s, uint64_t e, uint64_t v) noexcept nogil
    cdef inline uint64_t _seg_end(self, Py_ssize_t ci, int j) noexcept nogil
    cdef inline void _advance(self, Py_ssize_t* ci, int* j) noexcept nogil
    cdef int _window(self, object start, object end, uint64_t* s, uint64_t* e) except -1
    cdef uint64_t _page(self, object index) except? 0xFFFFFFFFFFFFFFFF
    cdef uint64_t _segments(self) noexcept nogil
    cdef RangeMap _copy(self)
    cdef bint _equal(self, RangeMap o) noexcept nogil


cdef class PageTable:
    cdef tuple _levels
    cdef int shift
    cdef int nl
    cdef uint64_t lp[4]
    cdef uint64_t space
    cdef RangeMap rm

    cpdef map(self, iova, pfn, npages, perm, leaf_size=*)
    cpdef unmap(self, iova, npages)
    cpdef lookup(self, iova)
    cpdef runs(self, start=*, end=*)

    cdef uint64_t _addr(self, object x, str what) except? 0xFFFFFFFFFFFFFFFF
    cdef uint64_t _aligned_page(self, object x, str what) except? 0xFFFFFFFFFFFFFFFF
    cdef int _level_index(self, object size, str what) except -1
    cdef int _run(self, object iova, object npages, uint64_t* p, uint64_t* n) except -1
    cdef int _split_at(self, uint64_t x) except -1
    cdef list _collect(self, uint64_t p, uint64_t e)
    cdef list _leaf_counts(self)


cdef class FrameAllocator:
    cdef uint64_t n
    cdef tuple _orders
    cdef RangeMap rm
    cdef uint64_t hint

    cdef int _order(self, object order) except -1
    cdef uint64_t _pfn(self, object pfn) except? 0xFFFFFFFFFFFFFFFF
    cdef int _head(self, object pfn, uint64_t* p, uint64_t* v) except -1
