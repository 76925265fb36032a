"""Pure-Python twin of the compiled memory core (``kmock.mm._core``).

Same classes, same API, same exceptions (types and messages) as the Cython module
``csrc_cython/_core.pyx``. The algorithms are the same too, so that a behaviour difference
is a bug in one of them: RangeMap is a sorted list of chunks of breakpoints (a two-level
B+tree), PageTable and FrameAllocator are encodings over a RangeMap.

Selected with ``KMOCK_PURE_PYTHON=1``; always importable as ``kmock.mm.PyRangeMap`` etc.

Each call is one atomic step, as a call into the compiled core is (it holds the GIL from
entry to return): threads share these maps (a vCPU's fault reads a guest_memfd's
allocation map while a PUNCH_HOLE in another thread rewrites it), and a reader must never
see an update half done. One lock for the whole twin, as the GIL is one for the core.
"""

from bisect import bisect_left, bisect_right
import functools
from operator import index as _index
import sys
import threading

__all__ = ["RangeMap", "PageTable", "FrameAllocator"]

_U64 = 1 << 64
_MAX_NPAGES = 1 << 63
_CAP = 512  # breakpoints per chunk (the compiled core uses 128)


#: held for each call of a public method (see the module docstring); reentrant, since
#: PageTable and FrameAllocator call their RangeMap's methods
_LOCK = threading.RLock()
_ATOMIC_DUNDERS = ("__len__", "__eq__", "__repr__")


def _atomic(cls):
    """Make each public method of ``cls`` (and its ``__len__``, ``__eq__``, ``__repr__``)
    run under _LOCK."""
    for name, fn in list(vars(cls).items()):
        if callable(fn) and (not name.startswith("_") or name in _ATOMIC_DUNDERS):
            setattr(cls, name, _locked(fn))
    return cls


def _locked(fn):
    @functools.wraps(fn)
    def locked(*args, **kwargs):
        with _LOCK:
            r = fn(*args, **kwargs)
        return _LockedIterator(r) if type(r) is _GENERATOR else r
    return locked


class _LockedIterator:
    """An iterator the twin returns (``RangeMap.ranges``): each step atomic, as each step
    of the compiled core's iterator is; a change between two steps is the same
    RuntimeError in both."""

    __slots__ = ("_it",)

    def __init__(self, it):
        self._it = it

    def __iter__(self):
        return self

    def __next__(self):
        with _LOCK:
            return next(self._it)


def _generator():
    yield


_GENERATOR = type(_generator())


def _int(x, what):
    """Return x as a Python int, or raise TypeError (accepts int subclasses and __index__)."""
    if type(x) is int:
        return x
    if isinstance(x, int):
        return int(x)  # bool and other int subclasses: a plain int
    if isinstance(x, float) or x is None:
        raise TypeError(f"{what} must be an int, not {type(x).__name__}")
    try:
        return _index(x)
    except TypeError:
        raise TypeError(f"{what} must be an int, not {type(x).__name__}") from None


def _u64(x, what):
    """Return x as an int in [0, 2**64), else TypeError/OverflowError."""
    x = _int(x, what)
    if x < 0 or x >= _U64:
        raise OverflowError(f"{what} {x} out of range for an unsigned 64-bit value")
    return x


@_atomic
class RangeMap:
    """A total map from page index [0, npages) to an unsigned 64-bit value.

    Stored as coalesced segments: adjacent pages holding equal values share one segment.
    """

    __slots__ = ("_n", "_keys", "_vals", "_firsts", "_version")

    def __init__(self, npages, default=0):
        """Create a map of npages pages (0 <= npages <= 2**63), every page holding default."""
        npages = _int(npages, "npages")
        if npages < 0:
            raise ValueError(f"npages must be >= 0, got {npages}")
        if npages > _MAX_NPAGES:
            raise OverflowError(f"npages {npages} exceeds the maximum 2**63")
        default = _u64(default, "value")
        self._n = npages
        self._keys = [[0]]
        self._vals = [[default]]
        self._firsts = [0]
        self._version = 0

    # -- argument checks -------------------------------------------------------------
    def _window(self, start, end):
        start = _int(start, "start")
        end = self._n if end is None else _int(end, "end")
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        if end < 0:
            raise ValueError(f"end must be >= 0, got {end}")
        if start > end:
            raise ValueError(f"reversed window: start {start} > end {end}")
        if end > self._n:
            raise IndexError(f"window end {end} beyond npages {self._n}")
        return start, end

    def _page(self, index):
        index = _int(index, "index")
        if index < 0 or index >= self._n:
            raise IndexError(f"page index {index} out of range [0, {self._n})")
        return index

    # -- internals -------------------------------------------------------------------
    def _locate(self, x):
        ci = bisect_right(self._firsts, x) - 1
        if ci < 0:
            ci = 0
        return ci, bisect_right(self._keys[ci], x) - 1

    def _get(self, x):
        ci = bisect_right(self._firsts, x) - 1
        if ci < 0:
            ci = 0
        return self._vals[ci][bisect_right(self._keys[ci], x) - 1]

    def _erase(self, lo, hi):
        """Remove every breakpoint k with lo <= k <= hi."""
        keys, vals, firsts = self._keys, self._vals, self._firsts
        ci = max(bisect_right(firsts, lo) - 1, 0)
        j = bisect_left(keys[ci], lo)
        cj = max(bisect_right(firsts, hi) - 1, 0)
        k = bisect_right(keys[cj], hi)
        if ci == cj:
            if j >= k:
                return
            del keys[ci][j:k]
            del vals[ci][j:k]
            touched = [ci]
        else:
            del keys[ci][j:]
            del vals[ci][j:]
            del keys[cj][:k]
            del vals[cj][:k]
            if cj > ci + 1:
                del keys[ci + 1 : cj]
                del vals[ci + 1 : cj]
                del firsts[ci + 1 : cj]
            touched = [ci + 1, ci]
        for c in touched:
            if not keys[c]:
                del keys[c]
                del vals[c]
                del firsts[c]
            else:
                firsts[c] = keys[c][0]
        # keep chunks reasonably full: merge a small chunk into a neighbour
        for c in touched:
            if c >= len(keys) or len(keys) < 2 or len(keys[c]) >= _CAP // 4:
                continue
            other = c + 1 if c + 1 < len(keys) else c - 1
            a, b = min(c, other), max(c, other)
            if len(keys[a]) + len(keys[b]) <= _CAP:
                keys[a].extend(keys[b])
                vals[a].extend(vals[b])
                del keys[b]
                del vals[b]
                del firsts[b]

    def _insert(self, key, val):
        keys, vals, firsts = self._keys, self._vals, self._firsts
        if not keys:
            keys.append([key])
            vals.append([val])
            firsts.append(key)
            return
        ci = max(bisect_right(firsts, key) - 1, 0)
        ks = keys[ci]
        vs = vals[ci]
        j = bisect_left(ks, key)
        ks.insert(j, key)
        vs.insert(j, val)
        if j == 0:
            firsts[ci] = key
        if len(ks) > _CAP:
            half = len(ks) // 2
            keys.insert(ci + 1, ks[half:])
            vals.insert(ci + 1, vs[half:])
            firsts.insert(ci + 1, ks[half])
            del ks[half:]
            del vs[half:]

    def _segs(self, start, end):
        """Yield (seg_start, seg_end, value) clipped to [start, end), start < end."""
        keys, vals = self._keys, self._vals
        ci, j = self._locate(start)
        nch = len(keys)
        pos = start
        ks = keys[ci]
        vs = vals[ci]
        while pos < end:
            v = vs[j]
            j += 1
            if j < len(ks):
                nk = ks[j]
            else:
                ci += 1
                j = 0
                if ci < nch:
                    ks = keys[ci]
                    vs = vals[ci]
                    nk = ks[0]
                else:
                    nk = self._n
            if nk > end:
                nk = end
            yield pos, nk, v
            pos = nk

    # -- public API ------------------------------------------------------------------
    def set(self, start, end, value):
        """Set every page in [start, end) to value (end exclusive). Returns None."""
        start, end = self._window(start, end)
        value = _u64(value, "value")
        if start == end:
            return None
        n = self._n
        ve = self._get(end) if end < n else None
        need_s = start == 0 or self._get(start - 1) != value
        self._erase(start, end)
        if need_s:
            self._insert(start, value)
        if ve is not None and ve != value:
            self._insert(end, ve)
        self._version += 1
        return None

    def get(self, index):
        """Return the value of page index."""
        return self._get(self._page(index))

    def ranges(self, start=0, end=None):
        """Iterate (start, end, value) segments clipped to the window [start, end)."""
        start, end = self._window(start, end)
        return self._iter_ranges(start, end)

    def _iter_ranges(self, start, end):
        if start == end:
            return
        version = self._version
        for seg in self._segs(start, end):
            if self._version != version:
                raise RuntimeError("RangeMap changed during iteration")
            yield seg
            if self._version != version:
                raise RuntimeError("RangeMap changed during iteration")

    def find(self, start, end, value):
        """First page index in [start, end) holding value, or -1."""
        start, end = self._window(start, end)
        value = _u64(value, "value")
        if start == end:
            return -1
        for s, _e, v in self._segs(start, end):
            if v == value:
                return s
        return -1

    def find_not(self, start, end, value):
        """First page index in [start, end) NOT holding value, or -1."""
        start, end = self._window(start, end)
        value = _u64(value, "value")
        if start == end:
            return -1
        for s, _e, v in self._segs(start, end):
            if v != value:
                return s
        return -1

    def count(self, value, start=0, end=None):
        """Number of pages in [start, end) holding value."""
        value = _u64(value, "value")
        start, end = self._window(start, end)
        if start == end:
            return 0
        total = 0
        for s, e, v in self._segs(start, end):
            if v == value:
                total += e - s
        return total

    def __len__(self):
        """npages (Python's len() cannot report more than sys.maxsize)."""
        return self._n

    def len(self):
        """npages, as an int (works for npages == 2**63 too)."""
        return self._n

    def segments(self):
        """Number of stored (coalesced) segments."""
        if self._n == 0:
            return 0
        return sum(len(k) for k in self._keys)

    def copy(self):
        """An independent copy (e.g. to roll back a failed multi-step operation)."""
        new = RangeMap.__new__(RangeMap)
        new._n = self._n
        new._keys = [list(k) for k in self._keys]
        new._vals = [list(v) for v in self._vals]
        new._firsts = list(self._firsts)
        new._version = 0
        return new

    def memory_bytes(self):
        """Approximate bytes held by the stored segments (lists and their int objects)."""
        total = sys.getsizeof(self._keys) + sys.getsizeof(self._vals) + sys.getsizeof(self._firsts)
        for ks, vs in zip(self._keys, self._vals):
            total += sys.getsizeof(ks) + sys.getsizeof(vs)
            total += sum(sys.getsizeof(k) for k in ks if k > 256)
            total += sum(sys.getsizeof(v) for v in vs if v > 256)
        return total

    def __eq__(self, other):
        """Equal when both maps have the same npages and the same contents."""
        if not isinstance(other, RangeMap):
            return NotImplemented
        if self._n != other._n:
            return False
        return list(self._flat()) == list(other._flat())

    __hash__ = None

    def _flat(self):
        for ks, vs in zip(self._keys, self._vals):
            yield from zip(ks, vs)

    def __repr__(self):
        return f"<RangeMap npages={self._n} segments={self.segments()}>"


# ---------------------------------------------------------------------------------------
# PageTable: value = MAPPED | level << 61 | perm << 53 | (pfn - page) as 53-bit two's complement

_MAPPED = 1 << 63
_DBITS = 53
_DMASK = (1 << _DBITS) - 1
_DSIGN = 1 << (_DBITS - 1)


def _pt_dec(v):
    d = v & _DMASK
    if d & _DSIGN:
        d -= 1 << _DBITS
    return d, (v >> 53) & 0xFF, (v >> 61) & 3


@_atomic
class PageTable:
    """A sparse translation table (stage-2 / IOMMU): iova (bytes) -> frame, perm, leaf size.

    Leaves come in the sizes of ``levels`` (smallest first); the smallest is the page, and
    pfns and npages are counted in smallest pages.
    """

    __slots__ = ("_levels", "_shift", "_lp", "_space", "_rm")

    def __init__(self, levels=(4096, 2 * 1024 * 1024, 1024**3)):
        """levels: 1 to 4 increasing powers of two, the smallest at least 4096."""
        if isinstance(levels, (str, bytes)):
            raise TypeError("levels must be a sequence of ints")
        try:
            levels = tuple(_int(x, "level") for x in levels)
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
        self._shift = levels[0].bit_length() - 1
        self._lp = tuple(lv >> self._shift for lv in levels)
        self._space = 1 << (64 - self._shift)
        self._rm = RangeMap(self._space)

    @property
    def levels(self):
        """The leaf sizes in bytes, smallest first."""
        return self._levels

    def _addr(self, x, what):
        x = _int(x, what)
        if x < 0:
            raise ValueError(f"{what} must be >= 0, got {x}")
        if x >= _U64:
            raise OverflowError(f"{what} {x:#x} beyond the 64-bit address space")
        return x

    def _aligned_page(self, x, what):
        x = self._addr(x, what)
        if x & (self._levels[0] - 1):
            raise ValueError(f"{what} {x:#x} is not aligned to {self._levels[0]:#x}")
        return x >> self._shift

    def _level_index(self, size, what):
        size = _int(size, what)
        try:
            return self._levels.index(size)
        except ValueError:
            raise ValueError(f"{what} {size} is not one of the levels {self._levels}") from None

    def _run(self, iova, npages):
        p = self._aligned_page(iova, "iova")
        npages = _int(npages, "npages")
        if npages < 0:
            raise ValueError(f"npages must be >= 0, got {npages}")
        if p + npages > self._space:
            raise IndexError(f"range of {npages} pages at iova {iova:#x} beyond the address space")
        return p, npages

    def map(self, iova, pfn, npages, perm, leaf_size=None):
        """Map npages pages at iova to frames pfn.., with the largest leaves alignment allows.

        A forced leaf_size must divide iova, pfn and the length. Raises ValueError if any
        page of the range is already mapped (unmap first).
        """
        p, npages = self._run(iova, npages)
        pfn = _int(pfn, "pfn")
        if pfn < 0:
            raise ValueError(f"pfn must be >= 0, got {pfn}")
        if pfn + npages > self._space:
            raise IndexError(f"pfn range {pfn:#x}+{npages} beyond the physical address space")
        perm = _int(perm, "perm")
        if perm < 0 or perm > 0xFF:
            raise ValueError(f"perm must be in [0, 255], got {perm}")
        forced = None
        if leaf_size is not None:
            forced = self._level_index(leaf_size, "leaf_size")
            lp = self._lp[forced]
            if p % lp or pfn % lp or npages % lp:
                raise ValueError(
                    f"iova, pfn and length must be aligned to the forced leaf size {leaf_size:#x}"
                )
        if npages == 0:
            return None
        e = p + npages
        hit = self._rm.find_not(p, e, 0)
        if hit != -1:
            raise ValueError(f"iova {hit << self._shift:#x} is already mapped; unmap first")
        delta = pfn - p
        base = _MAPPED | (perm << 53) | (delta & _DMASK)
        if forced is not None:
            self._rm.set(p, e, base | (forced << 61))
            return None
        lps = self._lp
        nl = len(lps)
        pos = p
        while pos < e:
            lvl = 0
            for L in range(nl - 1, 0, -1):
                lp = lps[L]
                if delta % lp == 0 and pos % lp == 0 and pos + lp <= e:
                    lvl = L
                    break
            lp = lps[lvl]
            run_end = pos + ((e - pos) // lp) * lp
            if lvl + 1 < nl and delta % lps[lvl + 1] == 0:
                lp1 = lps[lvl + 1]
                nb = -(-pos // lp1) * lp1
                if nb + lp1 <= e and nb < run_end:
                    run_end = nb
            self._rm.set(pos, run_end, base | (lvl << 61))
            pos = run_end
        return None

    def _split_at(self, x):
        """Split the leaves straddling page x down until x is a leaf boundary."""
        rm = self._rm
        while True:
            v = rm._get(x)
            if not v:
                return
            lvl = (v >> 61) & 3
            if lvl == 0:
                return
            lp = self._lp[lvl]
            s = x - x % lp
            if s == x:
                return
            rm.set(s, s + lp, (v & ~(3 << 61)) | ((lvl - 1) << 61))

    def _collect(self, p, e):
        out = []
        shift = self._shift
        pe = pd = pp = None
        for s, se, v in self._rm._segs(p, e):
            if not v:
                continue
            d, perm, _lvl = _pt_dec(v)
            if out and pe == s and pd == d and pp == perm:
                io, pf, n, pm = out[-1]
                out[-1] = (io, pf, n + se - s, pm)
            else:
                out.append((s << shift, s + d, se - s, perm))
            pe, pd, pp = se, d, perm
        return out

    def unmap(self, iova, npages):
        """Unmap npages pages at iova; returns the removed (iova, pfn, npages, perm) runs.

        Huge leaves straddling the range edges are split first; holes are fine.
        """
        p, npages = self._run(iova, npages)
        if npages == 0:
            return []
        e = p + npages
        self._split_at(p)
        if e < self._space:
            self._split_at(e)
        out = self._collect(p, e)
        if out:
            self._rm.set(p, e, 0)
        return out

    def lookup(self, iova):
        """(pfn, perm, leaf_size) of the smallest page containing iova, or None if unmapped."""
        iova = self._addr(iova, "iova")
        page = iova >> self._shift
        v = self._rm._get(page)
        if not v:
            return None
        d, perm, lvl = _pt_dec(v)
        return page + d, perm, self._levels[lvl]

    def split(self, iova, to_size):
        """Split the leaf containing iova into leaves of to_size (no-op if already that size)."""
        iova = self._addr(iova, "iova")
        t = self._level_index(to_size, "to_size")
        page = iova >> self._shift
        v = self._rm._get(page)
        if not v:
            raise ValueError(f"nothing mapped at iova {iova:#x}")
        lvl = (v >> 61) & 3
        if t > lvl:
            raise ValueError(
                f"cannot split a {self._levels[lvl]:#x} leaf into larger {self._levels[t]:#x} leaves"
            )
        if t == lvl:
            return None
        lp = self._lp[lvl]
        s = page - page % lp
        self._rm.set(s, s + lp, (v & ~(3 << 61)) | (t << 61))
        return None

    def merge(self, iova, size):
        """Merge the leaves in [iova, iova+size) into one leaf of size.

        Returns True if they were all mapped, contiguous, of equal perm, smaller than size,
        and the frames are size-aligned; False otherwise (nothing changes).
        """
        t = self._level_index(size, "size")
        p = self._aligned_page(iova, "iova")
        lp = self._lp[t]
        if p % lp:
            raise ValueError(f"iova {iova:#x} is not aligned to {size:#x}")
        e = p + lp
        if e > self._space:
            raise IndexError(f"iova {iova:#x} + {size:#x} beyond the address space")
        v0 = self._rm._get(p)
        if not v0:
            return False
        d0, perm0, lvl0 = _pt_dec(v0)
        if lvl0 >= t or d0 % lp:
            return False
        for _s, _e, v in self._rm._segs(p, e):
            if not v:
                return False
            d, perm, _lvl = _pt_dec(v)
            if d != d0 or perm != perm0:
                return False
        self._rm.set(p, e, (v0 & ~(3 << 61)) | (t << 61))
        return True

    def runs(self, start=0, end=None):
        """Mapped runs (iova, pfn, npages, perm) in [start, end) bytes, coalesced where the
        frames are contiguous and the perm equal. Returns a list."""
        p = self._aligned_page(start, "start")
        if end is None:
            e = self._space
        else:
            end = _int(end, "end")
            if end == _U64:
                e = self._space
            else:
                e = self._aligned_page(end, "end")
        if p > e:
            raise ValueError(f"reversed window: start {start:#x} > end {end:#x}")
        if p == e:
            return []
        return self._collect(p, e)

    def count(self, leaf_size):
        """Number of leaves of leaf_size."""
        t = self._level_index(leaf_size, "leaf_size")
        lp = self._lp[t]
        n = 0
        for s, e, v in self._rm._segs(0, self._space):
            if v and (v >> 61) & 3 == t:
                n += (e - s) // lp
        return n

    def counts(self):
        """dict leaf_size -> number of leaves, for every level."""
        c = [0] * len(self._levels)
        lps = self._lp
        for s, e, v in self._rm._segs(0, self._space):
            if v:
                lvl = (v >> 61) & 3
                c[lvl] += (e - s) // lps[lvl]
        return dict(zip(self._levels, c))

    def mapped_pages(self):
        """Number of mapped smallest pages."""
        return self._space - self._rm.count(0)

    def copy(self):
        """An independent copy."""
        new = PageTable.__new__(PageTable)
        new._levels, new._shift, new._lp, new._space = (
            self._levels, self._shift, self._lp, self._space)
        new._rm = self._rm.copy()
        return new

    def __eq__(self, other):
        """Equal when levels and every leaf are equal."""
        if not isinstance(other, PageTable):
            return NotImplemented
        return self._levels == other._levels and self._rm == other._rm

    __hash__ = None

    def __repr__(self):
        return f"<PageTable levels={self._levels} mapped_pages={self.mapped_pages()}>"


# ---------------------------------------------------------------------------------------
# FrameAllocator: value = ALLOC | order << 57 | owner (owner < 2**57)

_ALLOC = 1 << 63
_OWNER_MAX = 1 << 57


@_atomic
class FrameAllocator:
    """Sparse physical memory: naturally aligned folios of 2**order 4K frames with owners."""

    __slots__ = ("_n", "_orders", "_rm", "_hint")

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
            orders = tuple(_int(o, "order") for o in orders)
        except TypeError as exc:
            raise TypeError(f"orders must be a sequence of ints: {exc}") from None
        if not orders:
            raise ValueError("orders must not be empty")
        for i, o in enumerate(orders):
            if o < 0 or o > 62:
                raise ValueError(f"order {o} out of range [0, 62]")
            if i and o <= orders[i - 1]:
                raise ValueError("orders must be strictly increasing")
        self._n = nframes
        self._orders = orders
        self._rm = RangeMap(nframes)
        self._hint = 0

    @property
    def orders(self):
        """The allowed folio orders."""
        return self._orders

    def __len__(self):
        """nframes."""
        return self._n

    def _order(self, order):
        order = _int(order, "order")
        if order not in self._orders:
            raise ValueError(f"order {order} is not one of {self._orders}")
        return order

    def _pfn(self, pfn):
        pfn = _int(pfn, "pfn")
        if pfn < 0 or pfn >= self._n:
            raise IndexError(f"pfn {pfn} out of range [0, {self._n})")
        return pfn

    def _head(self, pfn):
        pfn = self._pfn(pfn)
        v = self._rm._get(pfn)
        if not v:
            raise ValueError(f"pfn {pfn} is not allocated")
        order = (v >> 57) & 0x3F
        if pfn & ((1 << order) - 1):
            raise ValueError(f"pfn {pfn} is not the head of its order-{order} folio")
        return pfn, v, order

    def alloc(self, order, owner=0):
        """Allocate the first free naturally aligned run of 2**order frames; returns its pfn.

        Raises MemoryError when there is none.
        """
        order = self._order(order)
        owner = _int(owner, "owner")
        if owner < 0 or owner >= _OWNER_MAX:
            raise ValueError(f"owner must be in [0, 2**57), got {owner}")
        size = 1 << order
        n = self._n
        if self._hint < n:
            for s, e, v in self._rm._segs(self._hint, n):
                if v:
                    continue
                st = (s + size - 1) & ~(size - 1)
                if st + size <= e:
                    self._rm.set(st, st + size, _ALLOC | (order << 57) | owner)
                    if st <= self._hint < st + size:
                        nxt = self._rm.find(st + size, n, 0) if st + size < n else -1
                        self._hint = n if nxt == -1 else nxt
                    return st
        raise MemoryError(f"no free naturally aligned run of 2**{order} frames")

    def free(self, pfn):
        """Free the folio starting at pfn."""
        pfn, _v, order = self._head(pfn)
        self._rm.set(pfn, pfn + (1 << order), 0)
        if pfn < self._hint:
            self._hint = pfn

    def split(self, pfn, to_order):
        """Split the folio starting at pfn into folios of to_order (same owner)."""
        pfn, v, order = self._head(pfn)
        to_order = self._order(to_order)
        if to_order > order:
            raise ValueError(f"cannot split an order-{order} folio into order-{to_order} folios")
        if to_order == order:
            return None
        self._rm.set(pfn, pfn + (1 << order), (v & ~(0x3F << 57)) | (to_order << 57))
        return None

    def merge(self, pfn, order):
        """Merge the folios in the aligned run [pfn, pfn + 2**order) into one folio.

        Returns True if they were all allocated, smaller, with equal owner; else False.
        """
        pfn = self._pfn(pfn)
        order = self._order(order)
        size = 1 << order
        if pfn & (size - 1):
            raise ValueError(f"pfn {pfn} is not aligned to order {order}")
        if pfn + size > self._n:
            raise IndexError(f"order-{order} run at pfn {pfn} beyond nframes {self._n}")
        v0 = self._rm._get(pfn)
        if not v0 or (v0 >> 57) & 0x3F >= order:
            return False
        owner0 = v0 & (_OWNER_MAX - 1)
        for _s, _e, v in self._rm._segs(pfn, pfn + size):
            if not v or (v & (_OWNER_MAX - 1)) != owner0:
                return False
        self._rm.set(pfn, pfn + size, _ALLOC | (order << 57) | owner0)
        return True

    def owner(self, pfn):
        """Owner of the folio containing pfn, or -1 if the frame is free."""
        v = self._rm._get(self._pfn(pfn))
        return v & (_OWNER_MAX - 1) if v else -1

    def order_of(self, pfn):
        """Order of the folio containing pfn, or -1 if the frame is free."""
        v = self._rm._get(self._pfn(pfn))
        return (v >> 57) & 0x3F if v else -1

    def allocated(self):
        """Number of allocated frames."""
        return self._n - self._rm.count(0)

    def folios(self, order):
        """Number of allocated folios of order."""
        order = self._order(order)
        n = 0
        for s, e, v in self._rm._segs(0, self._n):
            if v and (v >> 57) & 0x3F == order:
                n += (e - s) >> order
        return n

    def copy(self):
        """An independent copy."""
        new = FrameAllocator.__new__(FrameAllocator)
        new._n, new._orders, new._hint = self._n, self._orders, self._hint
        new._rm = self._rm.copy()
        return new

    def __eq__(self, other):
        """Equal when nframes, orders and every folio and owner are equal."""
        if not isinstance(other, FrameAllocator):
            return NotImplemented
        return self._n == other._n and self._orders == other._orders and self._rm == other._rm

    __hash__ = None

    def __repr__(self):
        return f"<FrameAllocator nframes={self._n} allocated={self.allocated()}>"
