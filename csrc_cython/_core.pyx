# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled memory core of kmock: RangeMap, PageTable, FrameAllocator.

Built as ``kmock.mm._core``. The pure-Python twin ``kmock/mm/_pure.py`` has the same API,
the same algorithms and the same exceptions; tests run on both. The classes' fields and
methods are declared in ``kmock/mm/_core.pxd``: the public methods on the hot paths are
cpdef, C calls from the compiled modules that type a field as RangeMap or PageTable.

RangeMap stores breakpoints (start page, value) of coalesced segments in sorted chunks of
up to CAP breakpoints, indexed by flat sorted arrays (the chunks' first keys, and a small
summary row per chunk): a B+tree whose upper levels are arrays, laid out so that a lookup
costs one round trip to the chunk's memory (see "Layout" below). Insert/erase cost
O(log n + CAP); a chunk never holds fewer than CAP/4 breakpoints unless both neighbours
are nearly full, so memory per stored segment stays around 16-40 bytes.
"""

from libc.stdint cimport uint64_t, int64_t, uint32_t
from libc.stdlib cimport malloc, free, realloc
from libc.string cimport memmove, memcpy
from cpython.exc cimport PyErr_Occurred, PyErr_Clear
from operator import index as _index

cdef extern from "Python.h":
    bint PyLong_Check(object)
    bint PyLong_CheckExact(object)
    unsigned long long _as_ull "PyLong_AsUnsignedLongLong"(object)

__all__ = ["RangeMap", "PageTable", "FrameAllocator"]

cdef extern from *:
    """
    #define KM_PREFETCH(p) __builtin_prefetch((const void *)(p))
    #define KM_PAD 0xFFFFFFFFFFFFFFFFULL

    /* Fast path of the argument checks: an exact, non-negative int that fits in 64 bits
       with at most two digits (compact), read without a call into the interpreter. 0 for
       anything else (the caller then takes the general path with its exceptions). */
    static inline int km_u64_fast(PyObject *o, uint64_t *out) {
        if (!PyLong_CheckExact(o))
            return 0;
    #if PY_VERSION_HEX >= 0x030C0000
        if (PyUnstable_Long_IsCompact((PyLongObject *)o)) {
            Py_ssize_t v = PyUnstable_Long_CompactValue((PyLongObject *)o);
            if (v < 0)
                return 0;
            *out = (uint64_t)v;
            return 1;
        }
        return 0;
    #else
        {
            const digit *d = ((PyLongObject *)o)->ob_digit;
            switch (Py_SIZE(o)) {
            case 0: *out = 0; return 1;
            case 1: *out = (uint64_t)d[0]; return 1;
            case 2: *out = (uint64_t)d[0] | ((uint64_t)d[1] << PyLong_SHIFT); return 1;
            default: return 0;
            }
        }
    #endif
    }
    """
    void KM_PREFETCH(const void*) noexcept nogil
    const uint64_t _PAD "KM_PAD"
    bint km_u64_fast(object o, uint64_t* out) noexcept

cdef extern from "stdlib.h":
    int posix_memalign(void** memptr, size_t alignment, size_t size) nogil

# Layout of a RangeMap (a three-level B+tree whose upper levels are flat arrays):
#
# * chunks: up to CAP breakpoints each, sorted, in keys[0:n] / vals[0:n]; keys[n:CAP] hold
#   _PAD (no breakpoint is that large: keys < npages <= 2**63), so searches need no n.
#   Chunks are 64-byte aligned: a group of G keys is a whole number of cache lines.
# * by chunk position ci: ch[ci], firsts[ci] (the chunk's first key) and slots[ci] (the
#   chunk's row in rows).
# * rows: one 64-byte row per chunk, indexed by a slot that stays put while chunks are
#   inserted and removed (so rows never move): row[0] is the chunk's n, row[g] (g >= 1)
#   is keys[g * G], the first key of group g.
# * dir: a directory over the page space, nbk (a power of two, at least nch / 2)
#   buckets of 2**dshift pages: dir[b] is the chunk holding page b << dshift, and
#   dir[nbk] == nch - 1. The chunk holding x lies in [dir[b], dir[b + 1]] for
#   b = x >> dshift: a few chunks when keys are spread out, and a branch-free binary
#   search of that range of firsts however the keys are distributed. (More buckets made
#   W1 slower: the directory must be patched on every chunk split.)
#
# A lookup reads two directory entries, binary-searches the (usually short) range of
# firsts, counts the group keys in the chunk's row (one line, in a compact array that
# stays cached), then counts one group of G keys while the matching vals lines are
# prefetched: one round trip to the chunk's memory instead of one per binary-search step,
# and no branches. A set also knows from the row which lines of the chunk its memmove
# will touch, and prefetches them all at once.
# (CAP = 128 breakpoints a chunk, G = 16 keys a group, NG = 8 row entries, and the Chunk
# struct are declared in kmock/mm/_core.pxd, with the classes' fields)

cdef object _U64 = 1 << 64
cdef object _MAX_NPAGES = 1 << 63


cdef object _int(object x, str what):
    """Return x as a Python int, or raise TypeError (accepts int subclasses and __index__)."""
    if PyLong_CheckExact(x):
        return x
    if PyLong_Check(x):
        return int(x)  # bool and other int subclasses: a plain int
    if isinstance(x, float) or x is None:
        raise TypeError(f"{what} must be an int, not {type(x).__name__}")
    try:
        return _index(x)
    except TypeError:
        raise TypeError(f"{what} must be an int, not {type(x).__name__}") from None


cdef inline bint _to_u64(object x, uint64_t* out):
    """Convert a Python int to uint64 without raising; False if it does not fit."""
    cdef unsigned long long r = _as_ull(x)
    if r == <unsigned long long>-1 and PyErr_Occurred() != NULL:
        PyErr_Clear()
        return False
    out[0] = r
    return True


cdef uint64_t _u64(object x, str what) except? 0xFFFFFFFFFFFFFFFF:
    """x as an unsigned 64-bit value, else TypeError/OverflowError."""
    cdef uint64_t r
    if PyLong_Check(x) and _to_u64(x, &r):
        return r
    x = _int(x, what)
    if x < 0 or x >= _U64:
        raise OverflowError(f"{what} {x} out of range for an unsigned 64-bit value")
    return <uint64_t>x


cdef inline Chunk* _chunk_new() noexcept nogil:
    """An uninitialised 64-byte aligned chunk, or NULL."""
    cdef void* p = NULL
    if posix_memalign(&p, 64, sizeof(Chunk)) != 0:
        return NULL
    return <Chunk*>p


cdef inline void _chunk_fix(Chunk* c, uint64_t* row, unsigned int n, int lo,
                            unsigned int old_n) noexcept nogil:
    """Record n and restore the padding and the row after keys[lo:] changed. Groups that
    start at or after both n and old_n were and stay padding (their lines are not read)."""
    cdef unsigned int u, hi = n if n > old_n else old_n
    cdef int i
    row[0] = n
    for u in range(n, old_n):
        c.keys[u] = _PAD
    i = lo // G
    if i == 0:
        i = 1
    while i < NG and <unsigned int>(i * G) < hi:
        row[i] = c.keys[i * G]
        i += 1


cdef inline int _group(uint64_t* row, uint64_t x) noexcept nogil:
    """Index of the first key of the group holding the last key <= x (0 if none)."""
    cdef int g = 0, i
    for i in range(1, NG):
        g += row[i] <= x
    return g * G


cdef inline int _cupper(Chunk* c, uint64_t* row, uint64_t x) noexcept nogil:
    """Number of keys <= x (x < 2**64 - 1)."""
    cdef int r = 0, i, base = _group(row, x)
    for i in range(0, G, 8):
        KM_PREFETCH(&c.vals[base + i])
    for i in range(G):
        r += c.keys[base + i] <= x
    return base + r


cdef inline int _clower(Chunk* c, uint64_t* row, uint64_t x) noexcept nogil:
    """Number of keys < x."""
    cdef int g = 0, r = 0, i, base
    for i in range(1, NG):
        g += row[i] < x
    base = g * G
    for i in range(G):
        r += c.keys[base + i] < x
    return base + r


cdef class RangeMap:
    """A total map from page index [0, npages) to an unsigned 64-bit value.

    Stored as coalesced segments: adjacent pages holding equal values share one segment.
    """

    def __cinit__(self, *args, **kwargs):
        self.ch = NULL
        self.firsts = NULL
        self.slots = NULL
        self.dir = NULL
        self.rows = NULL
        self.freeslots = NULL
        self._zero()
        self.n = 0
        self.version = 0

    def __init__(self, npages, default=0):
        """Create a map of npages pages (0 <= npages <= 2**63), every page holding default."""
        npages = _int(npages, "npages")
        if npages < 0:
            raise ValueError(f"npages must be >= 0, got {npages}")
        if npages > _MAX_NPAGES:
            raise OverflowError(f"npages {npages} exceeds the maximum 2**63")
        cdef uint64_t dv = _u64(default, "value")
        self._clear()
        self.n = <uint64_t>npages
        self._insert(0, dv)

    def __dealloc__(self):
        self._clear()

    cdef void _zero(self) noexcept:
        self.nch = 0
        self.cap = 0
        self.nbk = 0
        self.dcap = 0
        self.dshift = 0
        self.nslots = 0
        self.nfree = 0
        self.scap = 0

    cdef void _clear(self) noexcept:
        cdef Py_ssize_t i
        if self.ch != NULL:
            for i in range(self.nch):
                free(self.ch[i])
        free(self.ch)
        free(self.firsts)
        free(self.slots)
        free(self.dir)
        free(self.rows)
        free(self.freeslots)
        self.ch = NULL
        self.firsts = NULL
        self.slots = NULL
        self.dir = NULL
        self.rows = NULL
        self.freeslots = NULL
        self._zero()

    # -- top arrays ------------------------------------------------------------------
    cdef int _reserve(self, Py_ssize_t need) except -1:
        cdef Py_ssize_t newcap
        cdef void* p
        if need <= self.cap:
            return 0
        newcap = self.cap * 2 if self.cap else 16
        while newcap < need:
            newcap *= 2
        p = realloc(self.ch, newcap * sizeof(Chunk*))
        if p == NULL:
            raise MemoryError()
        self.ch = <Chunk**>p
        p = realloc(self.firsts, newcap * sizeof(uint64_t))
        if p == NULL:
            raise MemoryError()
        self.firsts = <uint64_t*>p
        p = realloc(self.slots, newcap * sizeof(uint32_t))
        if p == NULL:
            raise MemoryError()
        self.slots = <uint32_t*>p
        self.cap = newcap
        return 0

    cdef Py_ssize_t _slot_alloc(self) except -1:
        """A free row (rows never move while in use; the array only grows as a block)."""
        cdef Py_ssize_t newcap
        cdef void* p = NULL
        if self.nfree > 0:
            self.nfree -= 1
            return self.freeslots[self.nfree]
        if self.nslots == self.scap:
            newcap = self.scap * 2 if self.scap else 4
            if newcap > 0xFFFFFFFF:
                raise MemoryError()
            p = realloc(self.freeslots, newcap * sizeof(uint32_t))
            if p == NULL:
                raise MemoryError()
            self.freeslots = <uint32_t*>p
            p = NULL
            if posix_memalign(&p, 64, newcap * NG * sizeof(uint64_t)) != 0:
                raise MemoryError()
            if self.nslots:
                memcpy(p, self.rows, self.nslots * NG * sizeof(uint64_t))
            free(self.rows)
            self.rows = <uint64_t*>p
            self.scap = newcap
        self.nslots += 1
        return self.nslots - 1

    cdef inline void _slot_free(self, Py_ssize_t slot) noexcept nogil:
        self.freeslots[self.nfree] = <uint32_t>slot
        self.nfree += 1

    cdef inline uint64_t* _row(self, Py_ssize_t ci) noexcept nogil:
        return self.rows + <Py_ssize_t>self.slots[ci] * NG

    cdef inline int _cn(self, Py_ssize_t ci) noexcept nogil:
        """Number of breakpoints in chunk ci."""
        return <int>self.rows[<Py_ssize_t>self.slots[ci] * NG]

    # -- directory -------------------------------------------------------------------
    cdef int _dir_reserve(self, Py_ssize_t nch) except -1:
        """Make room for a directory sized for nch chunks; True if it must be refilled."""
        cdef Py_ssize_t nb = 1
        cdef int k = 0, bits = 0
        cdef uint64_t n = self.n
        cdef void* p
        if nch <= 2 * self.nbk:
            return 0
        while 2 * nb < nch:
            nb *= 2
            k += 1
        if nb + 1 > self.dcap:
            p = realloc(self.dir, (nb + 1) * sizeof(uint32_t))
            if p == NULL:
                raise MemoryError()
            self.dir = <uint32_t*>p
            self.dcap = nb + 1
        while n:
            bits += 1
            n >>= 1
        self.nbk = nb
        self.dshift = bits - k if bits > k else 0  # nb << dshift > npages
        if self.dshift > 63:
            self.dshift = 63
        return 1

    cdef void _dir_fill(self) noexcept nogil:
        """Recompute the whole directory from firsts."""
        cdef Py_ssize_t b, ci = 0, last = self.nch - 1 if self.nch > 0 else 0
        cdef uint64_t p
        for b in range(self.nbk):
            p = (<uint64_t>b) << self.dshift
            while ci < last and self.firsts[ci + 1] <= p:
                ci += 1
            self.dir[b] = <uint32_t>ci
        self.dir[self.nbk] = <uint32_t>last

    cdef inline Py_ssize_t _bucket_at(self, uint64_t k) noexcept nogil:
        """The first bucket whose first page is >= k (nbk if none)."""
        cdef uint64_t b = k >> self.dshift
        if (b << self.dshift) != k:
            b += 1
        return <Py_ssize_t>b if b < <uint64_t>self.nbk else self.nbk

    cdef void _set_first(self, Py_ssize_t ci, uint64_t key) noexcept nogil:
        """firsts[ci] = key, keeping the directory right."""
        cdef uint64_t old = self.firsts[ci]
        cdef Py_ssize_t b, b1
        cdef uint32_t v
        if key == old:
            return
        self.firsts[ci] = key
        if key < old:
            b = self._bucket_at(key)
            b1 = self._bucket_at(old)
            v = <uint32_t>ci
        else:
            b = self._bucket_at(old)
            b1 = self._bucket_at(key)
            v = <uint32_t>(ci - 1 if ci > 0 else 0)
        while b < b1:
            self.dir[b] = v
            b += 1

    cdef int _top_insert(self, Py_ssize_t idx, Chunk* c, Py_ssize_t slot) except -1:
        cdef Py_ssize_t b
        self._reserve(self.nch + 1)
        cdef bint refill = self._dir_reserve(self.nch + 1)
        memmove(&self.ch[idx + 1], &self.ch[idx], (self.nch - idx) * sizeof(Chunk*))
        memmove(&self.firsts[idx + 1], &self.firsts[idx], (self.nch - idx) * sizeof(uint64_t))
        memmove(&self.slots[idx + 1], &self.slots[idx], (self.nch - idx) * sizeof(uint32_t))
        self.ch[idx] = c
        self.firsts[idx] = c.keys[0]
        self.slots[idx] = <uint32_t>slot
        self.nch += 1
        if refill or self.nch == 1:  # (with no chunks, every bucket said "chunk 0")
            self._dir_fill()
        else:
            # every bucket at or after the new chunk's first key moves one chunk on
            for b in range(self._bucket_at(c.keys[0]), self.nbk + 1):
                self.dir[b] += 1
        return 0

    cdef void _top_remove(self, Py_ssize_t a, Py_ssize_t b) noexcept:
        """Free chunks [a, b) and their rows, and remove them from the top arrays."""
        cdef Py_ssize_t i
        for i in range(a, b):
            free(self.ch[i])
            self._slot_free(self.slots[i])
        memmove(&self.ch[a], &self.ch[b], (self.nch - b) * sizeof(Chunk*))
        memmove(&self.firsts[a], &self.firsts[b], (self.nch - b) * sizeof(uint64_t))
        memmove(&self.slots[a], &self.slots[b], (self.nch - b) * sizeof(uint32_t))
        self.nch -= b - a
        self._dir_fill()

    cdef int _new_chunk(self, Chunk** out) except -1:
        """A new chunk and a row for it (returns the slot)."""
        cdef Chunk* c = _chunk_new()
        cdef Py_ssize_t slot
        if c == NULL:
            raise MemoryError()
        try:
            slot = self._slot_alloc()
        except MemoryError:
            free(c)
            raise
        out[0] = c
        return <int>slot

    cdef inline Py_ssize_t _chunk_for(self, uint64_t x) noexcept nogil:
        """Index of the last chunk whose first key <= x (0 if none): the directory bounds
        it to [dir[b], dir[b + 1]], then a branch-free binary search of that range."""
        cdef uint64_t b = x >> self.dshift
        cdef uint64_t* f = self.firsts
        cdef Py_ssize_t base, m, half
        if b >= <uint64_t>self.nbk:
            b = self.nbk - 1
        base = self.dir[b]
        m = <Py_ssize_t>self.dir[b + 1] - base + 1
        while m > 1:
            half = m >> 1
            if f[base + half] <= x:
                base += half
            m -= half
        return base

    cdef inline void _locate(self, uint64_t x, Py_ssize_t* ci, int* j) noexcept nogil:
        cdef Py_ssize_t c = self._chunk_for(x)
        ci[0] = c
        j[0] = _cupper(self.ch[c], self._row(c), x) - 1

    cdef inline uint64_t _get(self, uint64_t x) noexcept nogil:
        cdef Py_ssize_t ci = self._chunk_for(x)
        cdef Chunk* c = self.ch[ci]
        return c.vals[_cupper(c, self._row(ci), x) - 1]

    # -- mutation --------------------------------------------------------------------
    cdef int _erase(self, uint64_t lo, uint64_t hi) except -1:
        """Remove every breakpoint k with lo <= k <= hi."""
        cdef Py_ssize_t ci = self._chunk_for(lo)
        cdef Py_ssize_t cj = self._chunk_for(hi)
        cdef Chunk* c = self.ch[ci]
        cdef Chunk* d
        cdef uint64_t* rc = self._row(ci)
        cdef uint64_t* rd = self._row(cj)
        cdef int j = _clower(c, rc, lo)
        cdef int k = _cupper(self.ch[cj], rd, hi)
        cdef Py_ssize_t touched[2]
        cdef int nt, t, cn, dn
        cdef Py_ssize_t x, a, b
        if ci == cj:
            if j >= k:
                return 0
            cn = <int>rc[0]
            memmove(&c.keys[j], &c.keys[k], (cn - k) * sizeof(uint64_t))
            memmove(&c.vals[j], &c.vals[k], (cn - k) * sizeof(uint64_t))
            _chunk_fix(c, rc, cn - (k - j), j, cn)
            touched[0] = ci
            nt = 1
        else:
            _chunk_fix(c, rc, j, j, <int>rc[0])
            d = self.ch[cj]
            dn = <int>rd[0]
            memmove(&d.keys[0], &d.keys[k], (dn - k) * sizeof(uint64_t))
            memmove(&d.vals[0], &d.vals[k], (dn - k) * sizeof(uint64_t))
            _chunk_fix(d, rd, dn - k, 0, dn)
            if cj > ci + 1:
                self._top_remove(ci + 1, cj)
            touched[0] = ci + 1
            touched[1] = ci
            nt = 2
        for t in range(nt):
            x = touched[t]
            if self._cn(x) == 0:
                self._top_remove(x, x + 1)
            else:
                self._set_first(x, self.ch[x].keys[0])
        for t in range(nt):
            x = touched[t]
            if x >= self.nch or self.nch < 2 or self._cn(x) >= CAP // 4:
                continue
            if x + 1 < self.nch:
                a = x
                b = x + 1
            else:
                a = x - 1
                b = x
            c = self.ch[a]
            d = self.ch[b]
            cn = self._cn(a)
            dn = self._cn(b)
            if cn + dn <= CAP:
                memcpy(&c.keys[cn], &d.keys[0], dn * sizeof(uint64_t))
                memcpy(&c.vals[cn], &d.vals[0], dn * sizeof(uint64_t))
                _chunk_fix(c, self._row(a), cn + dn, cn, 0)
                self._top_remove(b, b + 1)
        return 0

    cdef int _insert(self, uint64_t key, uint64_t val) except -1:
        cdef Chunk* c
        cdef Chunk* d
        cdef Py_ssize_t ci
        cdef int j, half, slot, cn
        if self.nch == 0:
            slot = self._new_chunk(&c)
            c.keys[0] = key
            c.vals[0] = val
            _chunk_fix(c, self.rows + slot * NG, 1, 0, CAP)
            try:
                self._top_insert(0, c, slot)
            except MemoryError:
                free(c)
                self._slot_free(slot)
                raise
            return 0
        ci = self._chunk_for(key)
        c = self.ch[ci]
        cn = self._cn(ci)
        if cn == CAP:
            slot = self._new_chunk(&d)
            half = CAP // 2
            memcpy(&d.keys[0], &c.keys[half], (CAP - half) * sizeof(uint64_t))
            memcpy(&d.vals[0], &c.vals[half], (CAP - half) * sizeof(uint64_t))
            _chunk_fix(d, self.rows + slot * NG, CAP - half, 0, CAP)
            try:
                self._top_insert(ci + 1, d, slot)
            except MemoryError:
                free(d)
                self._slot_free(slot)
                raise
            _chunk_fix(c, self._row(ci), half, half, CAP)
            cn = half
            if key >= d.keys[0]:
                ci += 1
                c = d
                cn = CAP - half
        j = _clower(c, self._row(ci), key)
        memmove(&c.keys[j + 1], &c.keys[j], (cn - j) * sizeof(uint64_t))
        memmove(&c.vals[j + 1], &c.vals[j], (cn - j) * sizeof(uint64_t))
        c.keys[j] = key
        c.vals[j] = val
        _chunk_fix(c, self._row(ci), cn + 1, j, 0)
        if j == 0:
            self._set_first(ci, key)
        return 0

    cdef inline int _set(self, uint64_t s, uint64_t e, uint64_t v) except -1:
        cdef bint has_e = e < self.n
        cdef uint64_t ve = 0
        cdef bint need_s, need_e
        cdef Py_ssize_t ci = 0
        cdef Chunk* c
        cdef uint64_t* row
        cdef int a, b, k, newn, old, i, hi
        cdef uint64_t vp = 0
        if s >= e:
            return 0
        # Fast path: the breakpoints at s-1 .. e all live in one chunk -> one memmove.
        if s > 0:
            ci = self._chunk_for(s - 1)
        c = self.ch[ci]
        row = self._row(ci)
        old = <int>row[0]
        # prefetch every line the search, the memmove and _chunk_fix will touch
        a = _group(row, s - 1) if s > 0 else 0
        hi = old + 2 if old + 2 < CAP else CAP
        i = a
        while i < hi:
            KM_PREFETCH(&c.keys[i])
            KM_PREFETCH(&c.vals[i])
            i += 8
        if ci + 1 == self.nch or self.firsts[ci + 1] > e:
            if s > 0:
                b = 0
                for i in range(G):
                    b += c.keys[a + i] <= s - 1
                a += b  # >= 1: keys[0] <= s - 1
                vp = c.vals[a - 1]
            b = a
            while b < old and c.keys[b] <= e:
                b += 1
            if has_e:
                ve = c.vals[b - 1] if b > a else vp
            need_s = s == 0 or vp != v
            need_e = has_e and ve != v
            k = need_s + need_e
            newn = old - (b - a) + k
            if newn <= CAP and (newn >= CAP // 4 or self.nch == 1):
                if b != a + k:
                    memmove(&c.keys[a + k], &c.keys[b], (old - b) * sizeof(uint64_t))
                    memmove(&c.vals[a + k], &c.vals[b], (old - b) * sizeof(uint64_t))
                if need_s:
                    c.keys[a] = s
                    c.vals[a] = v
                if need_e:
                    c.keys[a + need_s] = e
                    c.vals[a + need_s] = ve
                _chunk_fix(c, row, newn, a, old)
                if a == 0:
                    self._set_first(ci, c.keys[0])
                self.version += 1
                return 0
        if has_e:
            ve = self._get(e)
        need_s = s == 0 or self._get(s - 1) != v
        self._erase(s, e)
        if need_s:
            self._insert(s, v)
        if has_e and ve != v:
            self._insert(e, ve)
        self.version += 1
        return 0

    # -- scans -----------------------------------------------------------------------
    cdef int64_t _find(self, uint64_t s, uint64_t e, uint64_t v, bint negate) noexcept nogil:
        cdef Py_ssize_t ci
        cdef int j
        cdef Chunk* c
        cdef uint64_t pos = s
        if s >= e:
            return -1
        self._locate(s, &ci, &j)
        c = self.ch[ci]
        while True:
            if (c.vals[j] == v) != negate:
                return <int64_t>pos
            j += 1
            if j >= CAP or c.keys[j] == _PAD:
                ci += 1
                if ci >= self.nch:
                    return -1
                c = self.ch[ci]
                j = 0
            pos = c.keys[j]
            if pos >= e:
                return -1

    cdef uint64_t _count(self, uint64_t s, uint64_t e, uint64_t v) noexcept nogil:
        cdef Py_ssize_t ci
        cdef int j
        cdef Chunk* c
        cdef uint64_t pos = s, nk, total = 0, cur
        if s >= e:
            return 0
        self._locate(s, &ci, &j)
        c = self.ch[ci]
        while pos < e:
            cur = c.vals[j]
            j += 1
            if j >= CAP or c.keys[j] == _PAD:
                ci += 1
                j = 0
                if ci < self.nch:
                    c = self.ch[ci]
                    nk = c.keys[0]
                else:
                    nk = self.n
            else:
                nk = c.keys[j]
            if nk > e:
                nk = e
            if cur == v:
                total += nk - pos
            pos = nk
        return total

    cdef inline uint64_t _seg_end(self, Py_ssize_t ci, int j) noexcept nogil:
        cdef Chunk* c = self.ch[ci]
        if j + 1 < CAP and c.keys[j + 1] != _PAD:
            return c.keys[j + 1]
        if ci + 1 < self.nch:
            return self.ch[ci + 1].keys[0]
        return self.n

    cdef inline void _advance(self, Py_ssize_t* ci, int* j) noexcept nogil:
        j[0] += 1
        if j[0] >= CAP or self.ch[ci[0]].keys[j[0]] == _PAD:
            ci[0] += 1
            j[0] = 0

    # -- argument checks -------------------------------------------------------------
    cdef int _window(self, object start, object end, uint64_t* s, uint64_t* e) except -1:
        cdef bint ok
        if PyLong_Check(start) and (end is None or PyLong_Check(end)):
            ok = _to_u64(start, s)
            if ok:
                if end is None:
                    e[0] = self.n
                else:
                    ok = _to_u64(end, e)
            if ok and s[0] <= e[0] and e[0] <= self.n:
                return 0
        start = _int(start, "start")
        end = self.n if end is None else _int(end, "end")
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        if end < 0:
            raise ValueError(f"end must be >= 0, got {end}")
        if start > end:
            raise ValueError(f"reversed window: start {start} > end {end}")
        if end > self.n:
            raise IndexError(f"window end {end} beyond npages {self.n}")
        s[0] = <uint64_t>start
        e[0] = <uint64_t>end
        return 0

    cdef uint64_t _page(self, object index) except? 0xFFFFFFFFFFFFFFFF:
        cdef uint64_t r
        if PyLong_Check(index) and _to_u64(index, &r) and r < self.n:
            return r
        index = _int(index, "index")
        if index < 0 or index >= self.n:
            raise IndexError(f"page index {index} out of range [0, {self.n})")
        return <uint64_t>index

    # -- public API ------------------------------------------------------------------
    cpdef set(self, start, end, value):
        """Set every page in [start, end) to value (end exclusive). Returns None."""
        cdef uint64_t s, e, v
        if (km_u64_fast(start, &s) and km_u64_fast(end, &e) and km_u64_fast(value, &v)
                and s <= e and e <= self.n):
            self._set(s, e, v)
            return
        self._window(start, end, &s, &e)
        v = _u64(value, "value")
        self._set(s, e, v)

    cpdef get(self, index):
        """Return the value of page index."""
        cdef uint64_t i
        if km_u64_fast(index, &i) and i < self.n:
            return self._get(i)
        return self._get(self._page(index))

    cpdef ranges(self, start=0, end=None):
        """Iterate (start, end, value) segments clipped to the window [start, end)."""
        cdef uint64_t s, e
        self._window(start, end, &s, &e)
        return self._iter_ranges(s, e)

    def _iter_ranges(self, uint64_t s, uint64_t e):
        cdef Py_ssize_t ci
        cdef int j
        cdef uint64_t pos = s, nk, v
        cdef uint64_t version = self.version
        if s >= e:
            return
        self._locate(s, &ci, &j)
        while pos < e:
            if self.version != version:
                raise RuntimeError("RangeMap changed during iteration")
            v = self.ch[ci].vals[j]
            nk = self._seg_end(ci, j)
            if nk > e:
                nk = e
            yield (pos, nk, v)
            if self.version != version:
                raise RuntimeError("RangeMap changed during iteration")
            self._advance(&ci, &j)
            pos = nk

    cpdef find(self, start, end, value):
        """First page index in [start, end) holding value, or -1."""
        cdef uint64_t s, e
        self._window(start, end, &s, &e)
        cdef uint64_t v = _u64(value, "value")
        return self._find(s, e, v, False)

    cpdef find_not(self, start, end, value):
        """First page index in [start, end) NOT holding value, or -1."""
        cdef uint64_t s, e
        self._window(start, end, &s, &e)
        cdef uint64_t v = _u64(value, "value")
        return self._find(s, e, v, True)

    cpdef count(self, value, start=0, end=None):
        """Number of pages in [start, end) holding value."""
        cdef uint64_t v = _u64(value, "value")
        cdef uint64_t s, e
        self._window(start, end, &s, &e)
        return self._count(s, e, v)

    def __len__(self):
        """npages (Python's len() cannot report more than sys.maxsize)."""
        if self.n > <uint64_t>0x7FFFFFFFFFFFFFFF:
            raise OverflowError("npages 2**63 does not fit in len(); use .len()")
        return <Py_ssize_t>self.n

    def len(self):
        """npages, as an int (works for npages == 2**63 too)."""
        return self.n

    cdef uint64_t _segments(self) noexcept nogil:
        cdef uint64_t total = 0
        cdef Py_ssize_t i
        if self.n == 0:
            return 0
        for i in range(self.nch):
            total += <uint64_t>self._cn(i)
        return total

    def segments(self):
        """Number of stored (coalesced) segments."""
        return self._segments()

    def memory_bytes(self):
        """Bytes allocated for the segments: chunks, rows and the top arrays (with malloc's
        headers)."""
        return (self.nch * (sizeof(Chunk) + 16)
                + self.cap * (sizeof(Chunk*) + sizeof(uint64_t) + sizeof(uint32_t))
                + self.dcap * sizeof(uint32_t)
                + self.scap * (NG * sizeof(uint64_t) + sizeof(uint32_t)) + 6 * 16)

    cdef RangeMap _copy(self):
        cdef RangeMap new = RangeMap.__new__(RangeMap)
        cdef Chunk* c
        cdef Py_ssize_t i
        cdef int slot
        new.n = self.n
        new._reserve(self.nch if self.nch > 0 else 1)
        for i in range(self.nch):
            slot = new._new_chunk(&c)
            memcpy(c, self.ch[i], sizeof(Chunk))
            memcpy(new.rows + slot * NG, self._row(i), NG * sizeof(uint64_t))
            new.ch[i] = c
            new.firsts[i] = self.firsts[i]
            new.slots[i] = <uint32_t>slot
            new.nch = i + 1
        new._dir_reserve(new.nch)
        new._dir_fill()
        return new

    cpdef copy(self):
        """An independent copy (e.g. to roll back a failed multi-step operation)."""
        return self._copy()

    cdef bint _equal(self, RangeMap o) noexcept nogil:
        cdef Py_ssize_t ai = 0, bi = 0
        cdef int aj = 0, bj = 0
        if self.n != o.n:
            return False
        while ai < self.nch and bi < o.nch:
            if (self.ch[ai].keys[aj] != o.ch[bi].keys[bj]
                    or self.ch[ai].vals[aj] != o.ch[bi].vals[bj]):
                return False
            self._advance(&ai, &aj)
            o._advance(&bi, &bj)
        return ai >= self.nch and bi >= o.nch

    def __eq__(self, other):
        """Equal when both maps have the same npages and the same contents."""
        if not isinstance(other, RangeMap):
            return NotImplemented
        return self._equal(<RangeMap>other)

    def __ne__(self, other):
        if not isinstance(other, RangeMap):
            return NotImplemented
        return not self._equal(<RangeMap>other)

    __hash__ = None

    def __repr__(self):
        return f"<RangeMap npages={self.n} segments={self.segments()}>"


# ---------------------------------------------------------------------------------------
# PageTable: value = MAPPED | level << 61 | perm << 53 | (pfn - page) as 53-bit two's complement

cdef uint64_t _MAPPED = (<uint64_t>1) << 63
cdef uint64_t _DMASK = ((<uint64_t>1) << 53) - 1
cdef uint64_t _DSIGN = (<uint64_t>1) << 52
cdef uint64_t _LVLMASK = (<uint64_t>3) << 61


cdef inline int64_t _pt_delta(uint64_t v) noexcept nogil:
    cdef uint64_t d = v & _DMASK
    if d & _DSIGN:
        return <int64_t>d - (<int64_t>1 << 53)
    return <int64_t>d


cdef class PageTable:
    """A sparse translation table (stage-2 / IOMMU): iova (bytes) -> frame, perm, leaf size.

    Leaves come in the sizes of ``levels`` (smallest first); the smallest is the page, and
    pfns and npages are counted in smallest pages.
    """

    def __cinit__(self, *args, **kwargs):
        # a harmless empty table until __init__ runs (e.g. PageTable.__new__(PageTable))
        self._levels = ()
        self.shift = 12
        self.nl = 0
        self.space = 0
        self.rm = RangeMap(0)

    def __init__(self, levels=(4096, 2 * 1024 * 1024, 1024**3)):
        """levels: 1 to 4 increasing powers of two, the smallest at least 4096."""
        cdef int i
        if isinstance(levels, (str, bytes)):
            raise TypeError("levels must be a sequence of ints")
        try:
            levels = tuple([_int(x, "level") for x in levels])
        except TypeError as exc:
            raise TypeError(f"levels must be a sequence of ints: {exc}") from None
        if not 1 <= len(levels) <= 4:
            raise ValueError("levels must hold 1 to 4 leaf sizes")
        for i, lv in enumerate(levels):
            if lv < 4096 or lv >= _U64 or lv & (lv - 1):
                raise ValueError(f"leaf size {lv} is not a power of two in [4096, 2**64)")
            if i and lv <= levels[i - 1]:
                raise ValueError("levels must be strictly increasing")
        self._levels = levels
        self.shift = levels[0].bit_length() - 1
        self.nl = len(levels)
        for i in range(self.nl):
            self.lp[i] = <uint64_t>(levels[i] >> self.shift)
        self.space = (<uint64_t>1) << (64 - self.shift)
        self.rm = RangeMap(self.space)

    @property
    def levels(self):
        """The leaf sizes in bytes, smallest first."""
        return self._levels

    cdef uint64_t _addr(self, object x, str what) except? 0xFFFFFFFFFFFFFFFF:
        cdef uint64_t r
        if PyLong_Check(x) and _to_u64(x, &r):
            return r
        x = _int(x, what)
        if x < 0:
            raise ValueError(f"{what} must be >= 0, got {x}")
        raise OverflowError(f"{what} {x:#x} beyond the 64-bit address space")

    cdef uint64_t _aligned_page(self, object x, str what) except? 0xFFFFFFFFFFFFFFFF:
        cdef uint64_t a = self._addr(x, what)
        if a & ((<uint64_t>1 << self.shift) - 1):
            raise ValueError(f"{what} {a:#x} is not aligned to {self._levels[0]:#x}")
        return a >> self.shift

    cdef int _level_index(self, object size, str what) except -1:
        size = _int(size, what)
        try:
            return self._levels.index(size)
        except ValueError:
            raise ValueError(f"{what} {size} is not one of the levels {self._levels}") from None

    cdef int _run(self, object iova, object npages, uint64_t* p, uint64_t* n) except -1:
        p[0] = self._aligned_page(iova, "iova")
        cdef uint64_t r
        if PyLong_Check(npages) and _to_u64(npages, &r) and r <= self.space - p[0]:
            n[0] = r
            return 0
        npages = _int(npages, "npages")
        if npages < 0:
            raise ValueError(f"npages must be >= 0, got {npages}")
        if p[0] + npages > self.space:
            raise IndexError(f"range of {npages} pages at iova {iova:#x} beyond the address space")
        n[0] = <uint64_t>npages
        return 0

    cpdef map(self, iova, pfn, npages, perm, leaf_size=None):
        """Map npages pages at iova to frames pfn.., with the largest leaves alignment allows.

        A forced leaf_size must divide iova, pfn and the length. Raises ValueError if any
        page of the range is already mapped (unmap first).
        """
        cdef uint64_t p, n, upfn, e, pos, lp, lp1, run_end, nb, base, udelta
        cdef int forced = -1, lvl, L
        self._run(iova, npages, &p, &n)
        pfn = _int(pfn, "pfn")
        if pfn < 0:
            raise ValueError(f"pfn must be >= 0, got {pfn}")
        if pfn + n > self.space:
            raise IndexError(f"pfn range {pfn:#x}+{n} beyond the physical address space")
        upfn = <uint64_t>pfn
        perm = _int(perm, "perm")
        if perm < 0 or perm > 0xFF:
            raise ValueError(f"perm must be in [0, 255], got {perm}")
        if leaf_size is not None:
            forced = self._level_index(leaf_size, "leaf_size")
            lp = self.lp[forced]
            if (p & (lp - 1)) or (upfn & (lp - 1)) or (n & (lp - 1)):
                raise ValueError(
                    f"iova, pfn and length must be aligned to the forced leaf size {leaf_size:#x}"
                )
        if n == 0:
            return None
        e = p + n
        cdef int64_t hit = self.rm._find(p, e, 0, True)
        if hit != -1:
            raise ValueError(f"iova {(<uint64_t>hit) << self.shift:#x} is already mapped; unmap first")
        udelta = upfn - p  # two's complement delta
        base = _MAPPED | ((<uint64_t>perm) << 53) | (udelta & _DMASK)
        if forced >= 0:
            self.rm._set(p, e, base | ((<uint64_t>forced) << 61))
            return None
        pos = p
        while pos < e:
            lvl = 0
            for L in range(self.nl - 1, 0, -1):
                lp = self.lp[L]
                if (udelta & (lp - 1)) == 0 and (pos & (lp - 1)) == 0 and lp <= e - pos:
                    lvl = L
                    break
            lp = self.lp[lvl]
            run_end = pos + ((e - pos) // lp) * lp
            if lvl + 1 < self.nl and (udelta & (self.lp[lvl + 1] - 1)) == 0:
                lp1 = self.lp[lvl + 1]
                nb = (pos + lp1 - 1) & ~(lp1 - 1)
                if nb < run_end and lp1 <= e - nb:
                    run_end = nb
            self.rm._set(pos, run_end, base | ((<uint64_t>lvl) << 61))
            pos = run_end
        return None

    cdef int _split_at(self, uint64_t x) except -1:
        """Split the leaves straddling page x down until x is a leaf boundary."""
        cdef uint64_t v, lp, s
        cdef int lvl
        while True:
            v = self.rm._get(x)
            if v == 0:
                return 0
            lvl = (v >> 61) & 3
            if lvl == 0:
                return 0
            lp = self.lp[lvl]
            s = x & ~(lp - 1)
            if s == x:
                return 0
            self.rm._set(s, s + lp, (v & ~_LVLMASK) | ((<uint64_t>(lvl - 1)) << 61))

    cdef list _collect(self, uint64_t p, uint64_t e):
        cdef list out = []
        cdef RangeMap rm = self.rm
        cdef Py_ssize_t ci
        cdef int j
        cdef uint64_t pos = p, nk, v, perm, pperm = 0, rs = 0, rn = 0, pfn0 = 0
        cdef int64_t d, pd = 0
        cdef bint have = False
        if p >= e:
            return out
        rm._locate(p, &ci, &j)
        while pos < e:
            v = rm.ch[ci].vals[j]
            nk = rm._seg_end(ci, j)
            if nk > e:
                nk = e
            if v != 0:
                d = _pt_delta(v)
                perm = (v >> 53) & 0xFF
                if have and rs + rn == pos and d == pd and perm == pperm:
                    rn += nk - pos
                else:
                    if have:
                        out.append((rs << self.shift, pfn0, rn, pperm))
                    have = True
                    rs = pos
                    rn = nk - pos
                    pfn0 = <uint64_t>(<int64_t>pos + d)
                    pd = d
                    pperm = perm
            rm._advance(&ci, &j)
            pos = nk
        if have:
            out.append((rs << self.shift, pfn0, rn, pperm))
        return out

    cpdef unmap(self, iova, npages):
        """Unmap npages pages at iova; returns the removed (iova, pfn, npages, perm) runs.

        Huge leaves straddling the range edges are split first; holes are fine.
        """
        cdef uint64_t p, n, e
        self._run(iova, npages, &p, &n)
        if n == 0:
            return []
        e = p + n
        self._split_at(p)
        if e < self.space:
            self._split_at(e)
        out = self._collect(p, e)
        if out:
            self.rm._set(p, e, 0)
        return out

    cpdef lookup(self, iova):
        """(pfn, perm, leaf_size) of the smallest page containing iova, or None if unmapped."""
        cdef uint64_t page = self._addr(iova, "iova") >> self.shift
        cdef uint64_t v = self.rm._get(page)
        if v == 0:
            return None
        return (<uint64_t>(<int64_t>page + _pt_delta(v)), (v >> 53) & 0xFF,
                self._levels[(v >> 61) & 3])

    def split(self, iova, to_size):
        """Split the leaf containing iova into leaves of to_size (no-op if already that size)."""
        cdef uint64_t a = self._addr(iova, "iova")
        cdef int t = self._level_index(to_size, "to_size")
        cdef uint64_t page = a >> self.shift
        cdef uint64_t v = self.rm._get(page), lp, s
        cdef int lvl
        if v == 0:
            raise ValueError(f"nothing mapped at iova {a:#x}")
        lvl = (v >> 61) & 3
        if t > lvl:
            raise ValueError(
                f"cannot split a {self._levels[lvl]:#x} leaf into larger {self._levels[t]:#x} leaves"
            )
        if t == lvl:
            return None
        lp = self.lp[lvl]
        s = page & ~(lp - 1)
        self.rm._set(s, s + lp, (v & ~_LVLMASK) | ((<uint64_t>t) << 61))
        return None

    def merge(self, iova, size):
        """Merge the leaves in [iova, iova+size) into one leaf of size.

        Returns True if they were all mapped, contiguous, of equal perm, smaller than size,
        and the frames are size-aligned; False otherwise (nothing changes).
        """
        cdef int t = self._level_index(size, "size")
        cdef uint64_t p = self._aligned_page(iova, "iova")
        cdef uint64_t lp = self.lp[t], e, v0, v, key
        cdef Py_ssize_t ci
        cdef int j
        if p & (lp - 1):
            raise ValueError(f"iova {iova:#x} is not aligned to {size:#x}")
        if lp > self.space - p:
            raise IndexError(f"iova {iova:#x} + {size:#x} beyond the address space")
        e = p + lp
        v0 = self.rm._get(p)
        if v0 == 0 or <int>((v0 >> 61) & 3) >= t or ((v0 & _DMASK) & (lp - 1)):
            return False
        self.rm._locate(p, &ci, &j)
        while True:
            v = self.rm.ch[ci].vals[j]
            if (v & ~_LVLMASK) != (v0 & ~_LVLMASK):
                return False
            self.rm._advance(&ci, &j)
            if ci >= self.rm.nch:
                break
            key = self.rm.ch[ci].keys[j]
            if key >= e:
                break
        self.rm._set(p, e, (v0 & ~_LVLMASK) | ((<uint64_t>t) << 61))
        return True

    cpdef runs(self, start=0, end=None):
        """Mapped runs (iova, pfn, npages, perm) in [start, end) bytes, coalesced where the
        frames are contiguous and the perm equal. Returns a list."""
        cdef uint64_t p = self._aligned_page(start, "start"), e
        if end is None:
            e = self.space
        else:
            end = _int(end, "end")
            if end == _U64:
                e = self.space
            else:
                e = self._aligned_page(end, "end")
        if p > e:
            raise ValueError(f"reversed window: start {start:#x} > end {end:#x}")
        return self._collect(p, e)

    cdef list _leaf_counts(self):
        cdef uint64_t c[4]
        cdef RangeMap rm = self.rm
        cdef Py_ssize_t ci
        cdef int j, lvl, i
        cdef Chunk* ch
        cdef uint64_t v
        for i in range(4):
            c[i] = 0
        for ci in range(rm.nch):
            ch = rm.ch[ci]
            for j in range(rm._cn(ci)):
                v = ch.vals[j]
                if v != 0:
                    lvl = (v >> 61) & 3
                    c[lvl] += (rm._seg_end(ci, j) - ch.keys[j]) // self.lp[lvl]
        return [c[i] for i in range(self.nl)]

    def count(self, leaf_size):
        """Number of leaves of leaf_size."""
        cdef int t = self._level_index(leaf_size, "leaf_size")
        return self._leaf_counts()[t]

    def counts(self):
        """dict leaf_size -> number of leaves, for every level."""
        return dict(zip(self._levels, self._leaf_counts()))

    def mapped_pages(self):
        """Number of mapped smallest pages."""
        return self.space - self.rm._count(0, self.space, 0)

    def copy(self):
        """An independent copy."""
        cdef PageTable new = PageTable.__new__(PageTable)
        new._levels = self._levels
        new.shift = self.shift
        new.nl = self.nl
        new.lp = self.lp
        new.space = self.space
        new.rm = self.rm._copy()
        return new

    def __eq__(self, other):
        """Equal when levels and every leaf are equal."""
        if not isinstance(other, PageTable):
            return NotImplemented
        return self._levels == (<PageTable>other)._levels and self.rm._equal((<PageTable>other).rm)

    def __ne__(self, other):
        r = self.__eq__(other)
        return r if r is NotImplemented else not r

    __hash__ = None

    def __repr__(self):
        return f"<PageTable levels={self._levels} mapped_pages={self.mapped_pages()}>"


# ---------------------------------------------------------------------------------------
# FrameAllocator: value = ALLOC | order << 57 | owner (owner < 2**57)

cdef uint64_t _ALLOC = (<uint64_t>1) << 63
cdef uint64_t _OWNER_MASK = ((<uint64_t>1) << 57) - 1
cdef object _OWNER_MAX = 1 << 57


cdef class FrameAllocator:
    """Sparse physical memory: naturally aligned folios of 2**order 4K frames with owners."""

    def __cinit__(self, *args, **kwargs):
        self.n = 0
        self._orders = ()
        self.hint = 0
        self.rm = RangeMap(0)

    def __init__(self, nframes, orders=(0, 9, 18)):
        """nframes frames (1 <= nframes <= 2**63); orders: increasing folio orders in [0, 62]."""
        nframes = _int(nframes, "nframes")
        if nframes <= 0:
            raise ValueError(f"nframes must be > 0, got {nframes}")
        if nframes > _MAX_NPAGES:
            raise OverflowError(f"nframes {nframes} exceeds the maximum 2**63")
        if isinstance(orders, (str, bytes)):
            raise TypeError("orders must be a sequence of ints")
        try:
            orders = tuple([_int(o, "order") for o in orders])
        except TypeError as exc:
            raise TypeError(f"orders must be a sequence of ints: {exc}") from None
        if not orders:
            raise ValueError("orders must not be empty")
        for i, o in enumerate(orders):
            if o < 0 or o > 62:
                raise ValueError(f"order {o} out of range [0, 62]")
            if i and o <= orders[i - 1]:
                raise ValueError("orders must be strictly increasing")
        self.n = <uint64_t>nframes
        self._orders = orders
        self.rm = RangeMap(nframes)
        self.hint = 0

    @property
    def orders(self):
        """The allowed folio orders."""
        return self._orders

    def __len__(self):
        """nframes."""
        if self.n > <uint64_t>0x7FFFFFFFFFFFFFFF:
            raise OverflowError("nframes 2**63 does not fit in len()")
        return <Py_ssize_t>self.n

    cdef int _order(self, object order) except -1:
        order = _int(order, "order")
        if order not in self._orders:
            raise ValueError(f"order {order} is not one of {self._orders}")
        return <int>order

    cdef uint64_t _pfn(self, object pfn) except? 0xFFFFFFFFFFFFFFFF:
        cdef uint64_t r
        if PyLong_Check(pfn) and _to_u64(pfn, &r) and r < self.n:
            return r
        pfn = _int(pfn, "pfn")
        if pfn < 0 or pfn >= self.n:
            raise IndexError(f"pfn {pfn} out of range [0, {self.n})")
        return <uint64_t>pfn

    cdef int _head(self, object pfn, uint64_t* p, uint64_t* v) except -1:
        p[0] = self._pfn(pfn)
        v[0] = self.rm._get(p[0])
        if v[0] == 0:
            raise ValueError(f"pfn {p[0]} is not allocated")
        cdef int order = (v[0] >> 57) & 0x3F
        if p[0] & (((<uint64_t>1) << order) - 1):
            raise ValueError(f"pfn {p[0]} is not the head of its order-{order} folio")
        return order

    def alloc(self, order, owner=0):
        """Allocate the first free naturally aligned run of 2**order frames; returns its pfn.

        Raises MemoryError when there is none.
        """
        cdef int o = self._order(order)
        owner = _int(owner, "owner")
        if owner < 0 or owner >= _OWNER_MAX:
            raise ValueError(f"owner must be in [0, 2**57), got {owner}")
        cdef uint64_t own = <uint64_t>owner
        cdef uint64_t size = (<uint64_t>1) << o
        cdef RangeMap rm = self.rm
        cdef Py_ssize_t ci
        cdef int j
        cdef uint64_t pos, nk, st
        cdef int64_t nxt
        if self.hint < self.n:
            rm._locate(self.hint, &ci, &j)
            pos = self.hint
            while pos < self.n:
                nk = rm._seg_end(ci, j)
                if rm.ch[ci].vals[j] == 0:
                    st = (pos + size - 1) & ~(size - 1)
                    if st >= pos and st < nk and size <= nk - st:
                        rm._set(st, st + size, _ALLOC | ((<uint64_t>o) << 57) | own)
                        if st <= self.hint and self.hint - st < size:
                            nxt = rm._find(st + size, self.n, 0, False)
                            self.hint = self.n if nxt == -1 else <uint64_t>nxt
                        return st
                rm._advance(&ci, &j)
                pos = nk
        raise MemoryError(f"no free naturally aligned run of 2**{o} frames")

    def free(self, pfn):
        """Free the folio starting at pfn."""
        cdef uint64_t p, v
        cdef int order = self._head(pfn, &p, &v)
        self.rm._set(p, p + ((<uint64_t>1) << order), 0)
        if p < self.hint:
            self.hint = p

    def split(self, pfn, to_order):
        """Split the folio starting at pfn into folios of to_order (same owner)."""
        cdef uint64_t p, v
        cdef int order = self._head(pfn, &p, &v)
        cdef int t = self._order(to_order)
        if t > order:
            raise ValueError(f"cannot split an order-{order} folio into order-{t} folios")
        if t == order:
            return None
        self.rm._set(p, p + ((<uint64_t>1) << order),
                     (v & ~((<uint64_t>0x3F) << 57)) | ((<uint64_t>t) << 57))
        return None

    def merge(self, pfn, order):
        """Merge the folios in the aligned run [pfn, pfn + 2**order) into one folio.

        Returns True if they were all allocated, smaller, with equal owner; else False.
        """
        cdef uint64_t p = self._pfn(pfn)
        cdef int o = self._order(order)
        cdef uint64_t size = (<uint64_t>1) << o, v0, v, e
        cdef Py_ssize_t ci
        cdef int j
        if p & (size - 1):
            raise ValueError(f"pfn {p} is not aligned to order {o}")
        if size > self.n - p:
            raise IndexError(f"order-{o} run at pfn {p} beyond nframes {self.n}")
        e = p + size
        v0 = self.rm._get(p)
        if v0 == 0 or <int>((v0 >> 57) & 0x3F) >= o:
            return False
        self.rm._locate(p, &ci, &j)
        while True:
            v = self.rm.ch[ci].vals[j]
            if v == 0 or (v & _OWNER_MASK) != (v0 & _OWNER_MASK):
                return False
            self.rm._advance(&ci, &j)
            if ci >= self.rm.nch or self.rm.ch[ci].keys[j] >= e:
                break
        self.rm._set(p, e, _ALLOC | ((<uint64_t>o) << 57) | (v0 & _OWNER_MASK))
        return True

    def owner(self, pfn):
        """Owner of the folio containing pfn, or -1 if the frame is free."""
        cdef uint64_t v = self.rm._get(self._pfn(pfn))
        return (v & _OWNER_MASK) if v else -1

    def order_of(self, pfn):
        """Order of the folio containing pfn, or -1 if the frame is free."""
        cdef uint64_t v = self.rm._get(self._pfn(pfn))
        return ((v >> 57) & 0x3F) if v else -1

    def allocated(self):
        """Number of allocated frames."""
        return self.n - self.rm._count(0, self.n, 0)

    def folios(self, order):
        """Number of allocated folios of order."""
        cdef int o = self._order(order)
        cdef RangeMap rm = self.rm
        cdef Py_ssize_t ci
        cdef int j
        cdef uint64_t v, total = 0
        for ci in range(rm.nch):
            for j in range(rm._cn(ci)):
                v = rm.ch[ci].vals[j]
                if v != 0 and <int>((v >> 57) & 0x3F) == o:
                    total += (rm._seg_end(ci, j) - rm.ch[ci].keys[j]) >> o
        return total

    def copy(self):
        """An independent copy."""
        cdef FrameAllocator new = FrameAllocator.__new__(FrameAllocator)
        new.n = self.n
        new._orders = self._orders
        new.hint = self.hint
        new.rm = self.rm._copy()
        return new

    def __eq__(self, other):
        """Equal when nframes, orders and every folio and owner are equal."""
        if not isinstance(other, FrameAllocator):
            return NotImplemented
        cdef FrameAllocator o = <FrameAllocator>other
        return self.n == o.n and self._orders == o._orders and self.rm._equal(o.rm)

    def __ne__(self, other):
        r = self.__eq__(other)
        return r if r is NotImplemented else not r

    __hash__ = None

    def __repr__(self):
        return f"<FrameAllocator nframes={self.n} allocated={self.allocated()}>"
