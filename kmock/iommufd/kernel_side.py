"""What the Kernel does for iommufd: devices, the memory behind maps, DMA verdicts,
and guest_memfd's notifications to the IOMMU side.

guest_memfd and iommufd meet only here, through guest_memfd's notifier interface
(kmock.notifier): an area that maps guest_memfd pages registers an ``AreaNotifier``
on the inode; guest_memfd runs it when pages are converted, punched, poisoned or
released, and iommufd reads the inode only through its public queries
(``is_private``, ``is_poisoned``, ``private_runs``, ``vmtype``). What the IOMMU does
is the profile's policy (``Profile.iommufd_gmem_policy``,
reference/conversion-and-iommufd.md §4):

``upstream``      a guest_memfd fd in IOAS_MAP_FILE is EINVAL. guest_memfd memory
                  reaches the IOMMU only through a host mapping (IOAS_MAP of its VA),
                  which GUP-pins it, so a to-private conversion fails with EAGAIN
                  until IOAS_UNMAP.
``rfc-2026-02``   MAP_FILE accepts a guest_memfd: no pin, no notifier. A conversion
                  or PUNCH_HOLE leaving an IOMMU entry that points at memory of the
                  wrong kind is recorded as a hazard; a DMA through it is judged by
                  the VM's architecture (VmType.judge_stale_dma).
``notifier``      the reviewers' proposal: PUNCH_HOLE (or release, memory failure)
                  under an area revokes the whole area (DMA through it faults;
                  IOAS_UNMAP still works); a conversion applies the architecture's
                  VmType.iommu_conversion_policy: "zap" the entries of the range,
                  "keep" them (and judge DMA), or "split" (follow the new kind).
"""

from ..errors import DmaFault
from ..fdtable import is_open_fd  # noqa: F401 (used by vfio/selftest through this module)
from ..notifier import GmemNotifier
from .pages import PAGE_SHIFT, PAGE_SIZE, IommuMemory, Pages

POLICIES = ("upstream", "rfc-2026-02", "notifier")


class IommufdSupport:
    """Mixed into kmock.Kernel."""

    def _init_iommufd(self):
        from .vfio import MockIommu

        self.iommu_memory = IommuMemory(self)
        self.selftest_iommu = MockIommu("iommufd_mock")
        self.pci_iommu = MockIommu("kmock-pci")
        self.vfio_devices = {}
        self.dma_faults = []
        self._area_notifiers = {}

    def _iommu_devices(self):
        """Device nodes for the device registry: /dev/iommu when the profile has it."""
        if not self.profile.iommufd:
            return {}
        from .iommufd import IommufdCtx

        return {"/dev/iommu": lambda k, flags: IommufdCtx(k)}

    # --- devices ------------------------------------------------------------------------

    def add_vfio_device(self):
        """Create a mock PCI device at /dev/vfio/devices/vfioN; returns its device object
        (dma_read, dma_write, translate)."""
        from .vfio import MockPciDevice

        from .vfio import VfioDeviceFile

        index = len(self.vfio_devices)
        dev = MockPciDevice(self, index, self.pci_iommu)
        self.vfio_devices[dev.path] = dev
        self.devices[dev.path] = lambda k, flags: VfioDeviceFile(k, dev)
        return dev

    # --- memory behind maps ------------------------------------------------------------------

    def _mapping_at(self, va, length):
        for m in list(self.mappings):
            if m.address <= va and va + length <= m.address + m.maplen and not m.closed:
                return m
        return None

    def user_pages(self, va, length, writable):
        m = self._mapping_at(va, length)
        if m is not None and getattr(m, "inode", None) is not None:
            return Pages(self, "user", va, length, writable, gmem_file=m.file, mapping=m)
        return Pages(self, "user", va, length, writable)

    def user_pfn(self, va):
        """The frame GUP would find at ``va`` (for MD_CHECK_MAP / MD_CHECK_REFS)."""
        m = self._mapping_at(va, 1)
        inode = getattr(m, "inode", None)
        if inode is not None:
            return inode.pfn_base + ((m.offset + va - m.address) >> PAGE_SHIFT)
        return self.iommu_memory.user_pfn(va)

    def iommu_pin_count(self, pfn):
        """How many pinned Pages objects hold frame ``pfn``."""
        n = 0
        for pages in self.iommu_memory.mapped:
            if not pages.pinned or pages.kind == "gmem":
                continue
            for off, first, cnt in pages.pfn_runs(0, pages.npages):
                if first <= pfn < first + cnt:
                    n += 1
                    break
        return n

    def iommu_pinned_file_pages(self, base):
        return [p for p in self.iommu_memory.mapped if p.kind == "file" and p.file_pfn_base == base
                and p.pinned]

    def iommu_gmem_area_added(self, area):
        """An IOAS area maps guest_memfd pages: it registers its notifier on the inode."""
        n = self._area_notifiers[id(area)] = AreaNotifier(self, area)
        area.pages.inode.register_notifier(n)

    def iommu_gmem_area_removed(self, area):
        n = self._area_notifiers.pop(id(area), None)
        if n is not None:
            area.pages.inode.unregister_notifier(n)

    def revoke_area(self, area):
        """The notifier policy's answer to a truncate: the whole area stops translating."""
        area.revoked = True
        for d in area.ioas.domains:
            d.unmap_area(area)

    # --- DMA ------------------------------------------------------------------------------

    def dma_fault(self, dev, iova, reason):
        self.dma_faults.append((dev, iova, reason))
        raise DmaFault(iova, reason)

    def judge_dma(self, idev, area, iova, end, entry_private, write):
        """A DMA through ``area`` reaches bytes [iova, end) (one IOMMU run: one entry
        kind, ``entry_private``). For guest memory, each page is judged as the hardware
        would, in page order: poisoned (fault), refused by the architecture
        (VmType.dma_access: fault), or reached through an entry of the other kind than
        the page now is (VmType.judge_stale_dma: recorded, and a fault when the verdict
        says so). Returns ``(ok_end, fault)``: the bytes [iova, ok_end) may be
        transferred, then ``fault`` (None, or (iova, reason) for kmock.DmaFault) stops
        the DMA. Works on runs of pages (RangeMap queries; the architecture is asked
        about whole ranges, bisected to find its first refused page)."""
        inode = area.pages.inode
        if inode is None:
            return end, None
        fp = area.pages.first_page()
        base = area.iova - area.offset  # the IOVA of byte 0 of page fp
        lo = fp + ((iova - base) >> PAGE_SHIFT)
        hi = fp + ((end - 1 - base) >> PAGE_SHIFT) + 1

        def iova_of(index):  # the first byte of the DMA in page ``index``
            return max(iova, base + ((index - fp) << PAGE_SHIFT))

        stop = hi  # the first page that faults (hi: none)
        why = None
        kind = None
        p = inode.first_poisoned(lo, stop)
        if p is not None:
            stop, kind = p, "poisoned"
        vm = inode.vm
        if vm.vmtype.has_dma_access and lo < stop:
            b = _first_refused(vm, inode, lo, stop, write)
            if b is not None:
                stop, why = b
                kind = "blocked"
        # stale entries, in page order, up to the first page that faults
        for s, e, page_private in inode.private_runs(lo, stop):
            if page_private == entry_private:
                continue
            verdict = vm.vmtype.judge_stale_dma(entry_private, page_private, write)
            entry = "private" if entry_private else "shared"
            page = "private" if page_private else "shared"
            self.violations.record(
                "stale_iommu_dma",
                f"a device {'wrote' if write else 'read'} through an IOMMU entry made when "
                f"the page was {entry}; the page is now {page} (verdict: {verdict})",
                vm=vm, iova=iova_of(s), verdict=verdict, write=write, entry=entry, page=page,
                npages=e - s)
            if verdict in ("fault", "machine_check"):
                return iova_of(s), (iova_of(s), f"{verdict}: IOMMU entry ({entry}) no longer "
                                                f"matches the page ({page})")
        if kind is None:
            return end, None
        at = iova_of(stop)
        if kind == "poisoned":
            self.violations.record("dma_to_poisoned_page",
                                   "a device DMA reached a guest_memfd page hit by memory failure",
                                   iova=at, index=stop)
            return at, (at, "page is poisoned (memory failure)")
        self.violations.record("dma_blocked", why, vm=vm, iova=at, index=stop, write=write,
                               device=getattr(idev.dev, "path", None))
        return at, (at, why)


def _first_refused(vm, inode, lo, hi, write):
    """(page, explanation) of the first page of [lo, hi) the architecture refuses a DMA
    to (VmType.dma_access answers for a range: any page refused), or None. A bisection:
    O(log n) questions, never one per page."""
    why = vm.vmtype.dma_access(vm, inode, lo, hi, write)
    if why is None:
        return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        w = vm.vmtype.dma_access(vm, inode, lo, mid, write)
        if w is not None:
            hi, why = mid, w
        else:
            lo = mid
    return lo, why


class AreaNotifier(GmemNotifier):
    """An IOAS area over guest_memfd pages, as one of guest_memfd's users.

    ``invalidate_begin``: the notifier policy revokes the area when pages go away
    (punch, release, memory failure) and zaps the range's entries on a conversion
    when the architecture's policy is "zap"; a GUP-pinned area under a PUNCH_HOLE
    keeps its (orphaned) pages, recorded. ``invalidate_end`` (after the store): the
    "split" policy maps the entries to the new kind; the no-notifier RFC policy
    records the stale entries it leaves.
    """

    def __init__(self, kernel, area):
        self.kernel = kernel
        self.area = area

    def _span(self, event):
        return _iova_pages(self.area, event.start, event.end)

    def invalidate_begin(self, event):
        span = self._span(event)
        if span is None or event.reason == "vm_attributes":
            return
        lo, hi = span
        area, kernel = self.area, self.kernel
        if area.pages.kind == "user":
            if event.reason == "punch_hole" and area.pages.pinned:
                kernel.violations.record(
                    "orphaned_pinned_pages",
                    "PUNCH_HOLE under a GUP-pinned IOMMU mapping: the pages stay pinned and "
                    "mapped, the file no longer contains them",
                    iova=lo << PAGE_SHIFT, length=(hi - lo) << PAGE_SHIFT)
            return
        if kernel.profile.iommufd_gmem_policy != "notifier":
            return
        if event.to_private is None:
            kernel.revoke_area(area)
        elif event.inode.vmtype.iommu_conversion_policy == "zap":
            for d in area.ioas.domains:
                d.unmap_area(area, lo, hi)

    def invalidate_end(self, event):
        span = self._span(event)
        if span is None or event.failed or event.reason == "vm_attributes":
            return
        lo, hi = span
        area, kernel = self.area, self.kernel
        if area.pages.kind == "user":
            return
        policy = kernel.profile.iommufd_gmem_policy
        if policy == "rfc-2026-02":
            kernel.violations.record(
                "stale_iommu_entry",
                f"no notifier: the IOMMU still maps guest_memfd pages whose state changed "
                f"({event.reason})",
                vm=event.inode.vm, iova=lo << PAGE_SHIFT, length=(hi - lo) << PAGE_SHIFT,
                reason=event.reason)
        elif policy == "notifier" and event.to_private is not None and \
                event.inode.vmtype.iommu_conversion_policy == "split" and not area.revoked:
            for d in area.ioas.domains:
                d.map_area(area, lo, hi)

    def __repr__(self):
        return f"<AreaNotifier iova {self.area.iova:#x}>"


def _iova_pages(area, start, end):
    """IOVA page range of ``area`` whose guest_memfd pages fall in [start, end)."""
    pages = area.pages
    first_g = pages.first_page() + (area.offset >> PAGE_SHIFT)
    n = (area.length + PAGE_SIZE - 1) >> PAGE_SHIFT
    lo = max(start, first_g)
    hi = min(end, first_g + n)
    if lo >= hi:
        return None
    base = area.iova >> PAGE_SHIFT
    return base + (lo - first_g), base + (hi - first_g)

