"""One physical frame space for everything a page table can point at.

Stage-2 tables, IOMMU domains and architecture tables keyed by host frame (SNP's
RMP, CCA's granules) all name memory by frame number, so every kind of memory gets
its frames here, from one space of 52-bit frame numbers:

* files with pages of their own (guest_memfd inodes, shmem files mapped by
  IOMMU_IOAS_MAP_FILE): a 1 GiB-aligned range each, from ``FILE_PFN_BASE`` up to
  ``USER_PFN_BASE`` (``PhysMem.alloc_range``), then from ``HIGH_PFN_BASE`` up once
  that is used (a guest_memfd may be up to 2**63 bytes: frames are names, not
  memory; a frame past 2**52, which no page table can hold, is never mapped in
  practice because a memslot binds at most 2**31 pages);
* process memory (a memslot's userspace_addr, an IOAS_MAP user VA):
  ``USER_PFN_BASE | (hva >> 12)``; hva < 2**47, so these never meet file ranges.
"""

from .locks import RLock

PAGE_SHIFT = 12
FILE_PFN_BASE = 1 << 18
USER_PFN_BASE = 1 << 44
HIGH_PFN_BASE = 1 << 45
_ALIGN = 1 << 18  # 1 GiB in pages


def user_pfn(hva):
    """The frame of the process page at ``hva``."""
    return USER_PFN_BASE | (hva >> PAGE_SHIFT)


def user_hva(pfn):
    """The process address of a frame made by ``user_pfn`` (None for a file frame)."""
    if pfn & USER_PFN_BASE:
        return (pfn & (USER_PFN_BASE - 1)) << PAGE_SHIFT
    return None


class PhysMem:
    """The Kernel's frame allocator for files (one per Kernel)."""

    def __init__(self):
        self._next = FILE_PFN_BASE  # ranges are never reused: a frame names one page ever
        self._lock = RLock()  # (kmock.locks: compiled, a C call from alloc_range)

    def alloc_range(self, npages):
        """A 1 GiB-aligned range of ``npages`` frames for a file; returns its first frame."""
        if npages <= _ALIGN:
            if npages < 0:
                raise ValueError("npages must be >= 0")
            span = _ALIGN
        else:
            span = (npages + _ALIGN - 1) & ~(_ALIGN - 1)
        lock = self._lock
        lock.acquire()  # (not a ``with``: two look-ups of __enter__/__exit__ less)
        try:
            base = self._next
            if base < USER_PFN_BASE and base + span > USER_PFN_BASE:
                base = HIGH_PFN_BASE
            self._next = base + span
        finally:
            lock.release()
        return base
