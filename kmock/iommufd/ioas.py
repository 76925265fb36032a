"""IOAS: an I/O address space of areas (drivers/iommu/iommufd/io_pagetable.c).

An IOAS holds areas (an IOVA range backed by Pages at an offset), reserved ranges
(from domain apertures and IOMMU_TEST_OP_ADD_RESERVED), an optional allowed list,
and the domains (paging HWPTs) it is mapped into. Every domain mirrors every area
in its kmock.mm PageTable; device DMA translates through that table.

Errors and their order follow reference/conversion-and-iommufd.md §3.4.
"""

import errno
from bisect import bisect_left, bisect_right

from ..errors import oserror
from .pages import PAGE_SIZE

ULONG_MAX = (1 << 64) - 1
_HALF_ULONG_MAX = ULONG_MAX // 2  # (the largest length iopt_alloc_iova takes, exclusive)
PERM_READ = 1
PERM_WRITE = 2
PERM_PRIVATE = 0x10  # the page was private guest memory when the entry was made


class Area:
    """One mapping of an IOAS: [iova, last] -> pages at pages_offset."""

    __slots__ = ("ioas", "iova", "last", "pages", "offset", "readable", "writable", "revoked")

    def __init__(self, ioas, iova, length, pages, offset, readable, writable):
        self.ioas = ioas
        self.iova = iova
        self.last = iova + length - 1
        self.pages = pages
        self.offset = offset
        self.readable = readable
        self.writable = writable
        self.revoked = False

    @property
    def length(self):
        return self.last - self.iova + 1

    def perm(self):
        return (PERM_READ if self.readable else 0) | (PERM_WRITE if self.writable else 0)

    def __repr__(self):
        return f"<Area {self.iova:#x}-{self.last:#x} {self.pages.kind}>"


def _roundup_pow2(x):
    if x > 0 and x & (x - 1) == 0:
        return x  # a power of two already (the usual length)
    return 1 << (x - 1).bit_length()


class IOAS:
    object_type = "ioas"

    def __init__(self, ictx):
        self.ictx = ictx
        self.kernel = ictx.kernel
        self.memory = ictx.kernel.iommu_memory
        self.id = 0
        self._starts = []
        self._areas = []
        self.reserved = []  # (start, last, owner)
        self.allowed = []  # (start, last); empty = everything
        self.domains = []  # paging HWPTs this IOAS is mapped into
        self.accesses = []
        self.users = 0  # devices attached (through an automatic HWPT) and HWPTs
        self.huge_pages = 1

    # --- queries ------------------------------------------------------------------------

    @property
    def areas(self):
        return list(self._areas)

    @property
    def iova_alignment(self):
        return self.calculate_iova_alignment()

    def calculate_iova_alignment(self):
        """iopt_calculate_iova_alignment: the largest page size of the domains, at least
        PAGE_SIZE when an access exists."""
        align = 1
        for d in self.domains:
            align = max(align, d.page_size)
        for a in self.accesses:
            align = max(align, PAGE_SIZE)
        return align

    def area_at(self, iova):
        i = bisect_right(self._starts, iova) - 1
        if i >= 0 and iova <= self._areas[i].last:
            return self._areas[i]
        return None

    def _overlaps(self, start, last):
        i = bisect_right(self._starts, last) - 1
        return i >= 0 and self._areas[i].last >= start

    def _reserved_hit(self, start, last):
        return any(s <= last and start <= l for s, l, _ in self.reserved)

    def _allowed_covers(self, start, last):
        if not self.allowed:
            return True
        return any(s <= start and last <= l for s, l in self.allowed)

    def iova_ranges(self, within_allowed=False):
        """The holes of the reserved ranges (IOAS_IOVA_RANGES reports exactly these);
        ``within_allowed`` also clips them to the allowed list (for allocation)."""
        spans = (list(self.allowed) if within_allowed else []) or [(0, ULONG_MAX)]
        out = []
        res = sorted((s, l) for s, l, _ in self.reserved)
        for s, l in sorted(spans):
            pos = s
            for rs, rl in res:
                if rl < pos or rs > l:
                    continue
                if rs > pos:
                    out.append((pos, rs - 1))
                pos = max(pos, rl + 1)
                if pos > l:
                    break
            if pos <= l:
                out.append((pos, l))
        return out

    # --- map / unmap ---------------------------------------------------------------------

    def alloc_iova(self, length, addr, iova_alignment=None):
        """iopt_alloc_iova: the lowest suitably aligned hole (never IOVA 0).
        ``iova_alignment``: self.iova_alignment, when the caller has it already."""
        if length == 0 or length >= _HALF_ULONG_MAX:
            raise oserror(errno.EOVERFLOW)
        align = _roundup_pow2(length)
        if addr:
            align = min(align, addr & -addr)
        if align < (self.iova_alignment if iova_alignment is None else iova_alignment):
            raise oserror(errno.EINVAL)
        if not self.reserved and not self.allowed:
            # fast path, same answer: one range [0, ULONG_MAX], and the areas are sorted
            pos = align
            end = pos + length - 1
            for a in self._areas:
                if a.last < pos:
                    continue
                if a.iova > end:
                    break
                pos = (a.last + align) // align * align
                end = pos + length - 1
            if end <= ULONG_MAX:
                return pos
            raise oserror(errno.ENOSPC)
        used = sorted([(a.iova, a.last) for a in self._areas]
                      + [(s, l) for s, l, _ in self.reserved])
        for lo, hi in self.iova_ranges(within_allowed=True):
            pos = max(lo, align)
            pos = (pos + align - 1) // align * align
            for us, ul in used:
                if ul < pos:
                    continue
                if us > pos + length - 1:
                    break
                pos = (ul + 1 + align - 1) // align * align
            if pos + length - 1 <= hi and pos + length - 1 >= pos:
                return pos
        raise oserror(errno.ENOSPC)

    def check_fixed(self, iova, length):
        align = self.iova_alignment
        if iova % align or length % align:
            raise oserror(errno.EINVAL)
        last = iova + length - 1
        if last > ULONG_MAX:
            raise oserror(errno.EOVERFLOW)
        if not self._allowed_covers(iova, last) or self._reserved_hit(iova, last):
            raise oserror(errno.EINVAL)
        if self._overlaps(iova, last):
            raise oserror(errno.EEXIST)

    def map(self, pages, offset, length, iova, fixed, readable, writable):
        """iopt_map_pages: returns the IOVA. The pages are pinned at once when a domain
        or an access exists (lazily otherwise)."""
        iova_alignment = self.calculate_iova_alignment()
        if length == 0 or length % iova_alignment:
            raise oserror(errno.EINVAL)
        if fixed:
            self.check_fixed(iova, length)
        else:
            iova = self.alloc_iova(length, pages.start + offset, iova_alignment)
        area = Area(self, iova, length, pages, offset, readable, writable)
        pages.users += 1
        try:
            if self.domains:  # iopt_fill_domains_pages: only domains pin at map time
                pages.need_pins()
                try:
                    for d in self.domains:
                        d.map_area(area)
                except BaseException:
                    for d in self.domains:
                        d.unmap_area(area)
                    pages.drop_pins()
                    raise
        except BaseException:
            pages.users -= 1
            raise
        i = bisect_left(self._starts, iova)
        self._starts.insert(i, iova)
        self._areas.insert(i, area)
        self.memory.area_added(area)
        return iova

    def remove_area(self, area):
        i = bisect_left(self._starts, area.iova)  # starts are unique: areas never overlap
        if i >= len(self._areas) or self._areas[i] is not area:
            i = self._areas.index(area)
        self._remove_at(i)

    def _remove_at(self, i):
        """Remove the area at index ``i`` of the sorted list: out of the domains, its
        pages unpinned and, when no other area shares them, released."""
        area = self._areas[i]
        del self._starts[i]
        del self._areas[i]
        for d in self.domains:
            d.unmap_area(area)
        if self.domains:
            area.pages.drop_pins()
        area.pages.users -= 1
        # off guest_memfd's notifier list before release() drops the file (else a stale
        # area stays listed and a later PUNCH_HOLE revokes its IOVA range under new areas)
        self.memory.area_removed(area)
        if area.pages.users == 0:
            area.pages.release()

    def unmap(self, iova, length):
        """iopt_unmap_iova: whole areas only; returns the bytes unmapped."""
        if iova == 0 and length == ULONG_MAX:
            return self.unmap_all()
        if length == 0:
            raise oserror(errno.EINVAL)
        last = iova + length - 1
        if last > ULONG_MAX:
            raise oserror(errno.EOVERFLOW)
        areas = self._areas
        i = bisect_left(self._starts, iova)
        if i < len(areas) and self._starts[i] == iova and areas[i].last == last:
            self._remove_at(i)  # exactly one area (areas never overlap): the common case
            return length
        inside = []
        i = max(0, bisect_right(self._starts, iova) - 1)  # the first area that may meet iova
        for a in areas[i:bisect_right(self._starts, last)]:
            if a.last < iova or a.iova > last:
                continue
            if a.iova < iova or a.last > last:
                raise oserror(errno.ENOENT)  # would split an area
            inside.append(a)
        if not inside:
            raise oserror(errno.ENOENT)
        total = 0
        for a in inside:
            self.remove_area(a)
            total += a.last - a.iova + 1
        return total

    def unmap_all(self):
        total = 0
        for a in list(self._areas):
            total += a.length
            self.remove_area(a)
        return total

    def areas_covering(self, iova, length):
        """IOAS_COPY: [iova, iova+length) must be covered exactly by contiguous areas."""
        last = iova + length - 1
        out = []
        pos = iova
        for a in self._areas:
            if a.last < iova or a.iova > last:
                continue
            if a.iova > pos or (not out and a.iova != iova and a.iova > iova):
                raise oserror(errno.ENOENT)
            out.append(a)
            pos = a.last + 1
        if not out or pos <= last or out[0].iova > iova:
            raise oserror(errno.ENOENT)
        return out

    # --- domains ---------------------------------------------------------------------------

    def add_domain(self, domain):
        """iopt_table_add_domain: pin everything and map every area into the domain."""
        align = max(self.iova_alignment, domain.page_size)
        if align > PAGE_SIZE:
            raise oserror(errno.EINVAL)
        for a in self._areas:
            if a.iova % domain.page_size or a.length % domain.page_size:
                raise oserror(errno.EINVAL)
        for s, l, owner in domain.reserved:
            for a in self._areas:
                if a.iova <= l and s <= a.last:
                    raise oserror(errno.EADDRINUSE)
        first = not self.domains
        done = []
        try:
            for a in self._areas:
                if first:
                    a.pages.need_pins()
                done.append(a)
        except BaseException:
            for a in done:
                a.pages.drop_pins()
            raise
        for a in self._areas:
            domain.map_area(a)
        self.domains.append(domain)
        self.reserved.extend((s, l, domain) for s, l, _ in domain.reserved)

    def remove_domain(self, domain):
        self.domains.remove(domain)
        self.reserved = [r for r in self.reserved if r[2] is not domain]
        for a in self._areas:
            domain.unmap_area(a)
            if not self.domains:
                a.pages.drop_pins()

    def destroy(self):
        self.unmap_all()
