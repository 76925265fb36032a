"""Folios of a guest_memfd: the safe-refcount check and huge-folio split/merge.

Both work on page ranges through the inode's RangeMaps, never page by page.
"""


def first_elevated_refcount(inode, start, end):
    """kvm_gmem_has_safe_refcount: the first folio in range with extra references.

    A pinned page (gup, IOMMU) pins its whole folio, so the index returned is the
    start of the folio holding the first pinned page. Only the folios that
    filemap_get_folios() finds for [start, end) count: an unsplit huge folio at
    either end counts whole, but once split its 4K folios outside the range do not.
    """
    pins = inode.pins
    if pins is None:
        return None
    fp = inode.folio_pages
    lo, hi = start, end
    if fp > 1:
        if not inode.folio_split(start // fp):
            lo = start - start % fp
        if not inode.folio_split((end - 1) // fp):
            hi = min(inode.npages, _round_up(end, fp))
    p = pins.find_not(lo, hi, 0)
    if p == -1:
        return None
    if fp > 1 and not inode.folio_split(p // fp):
        return p - p % fp
    return p


def restructure_folios(inode, start, end, to_private):
    """RFC v2 patch 38: split huge folios that now hold a shared page; merge back those
    whose pages are all private again."""
    fp = inode.folio_pages
    first, last = start // fp, (end + fp - 1) // fp
    if not to_private:
        inode.split.set(first, last, 1)
        return
    attrs = inode.attrs
    for f in range(first, last):  # folios, not pages: at most (end - start) / fp + 2
        if inode.split.get(f) and attrs.find(f * fp, min((f + 1) * fp, inode.npages), 0) == -1:
            inode.split.set(f, f + 1, 0)


def _round_up(x, a):
    return (x + a - 1) // a * a
