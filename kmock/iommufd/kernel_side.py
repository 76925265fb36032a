"""What the Kernel does for iommufd: devices, the memory behind maps, DMA verdicts,
and guest_memfd's notifications to the IOMMU side.

guest_memfd and iommufd meet only here, through guest_memfd's notifier list
(``inode.iommu_areas``): guest_memfd announces that pages are converted, punched,
poisoned or released; what the IOMMU does about it is the profile's policy
(``Profile.iommufd_gmem_policy``, reference/conversion-and-iommufd.md §4):

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

import errno
import os

from ..errors import DmaFault, oserror
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
        self._iommu_pages = set()

    # --- devices ------------------------------------------------------------------------

    def add_vfio_device(self):
        """Create a mock PCI device at /dev/vfio/devices/vfioN; returns its device object
        (dma_read, dma_write, translate)."""
        from .vfio import MockPciDevice

        index = len(self.vfio_devices)
        dev = MockPciDevice(self, index, self.pci_iommu)
        self.vfio_devices[dev.path] = dev
        return dev

    def _open_iommu_path(self, path):
        if path == "/dev/iommu" and self.profile.iommufd:
            from .iommufd import IommufdCtx

            return IommufdCtx(self)
        dev = self.vfio_devices.get(path)
        if dev is not None:
            from .vfio import VfioDeviceFile

            return VfioDeviceFile(self, dev)
        return None

    # --- memory behind maps ------------------------------------------------------------------

    def _mapping_at(self, va, length):
        for m in self._mappings:
            if m.address <= va and va + length <= m.address + m._maplen and not m.closed:
                return m
        return None

    def user_pages(self, va, length, writable):
        m = self._mapping_at(va, length)
        if m is not None and getattr(m, "inode", None) is not None:
            return Pages(self, "user", va, length, writable, gmem_file=m.file, mapping=m)
        return Pages(self, "user", va, length, writable)

    def file_pages(self, fd, start, length, writable):
        """MAP_FILE's file: a shmem memfd, or a guest_memfd under a policy that allows it."""
        f = self._fds.get(fd)
        if f is not None:
            if f.file_type != "gmem" or self.profile.iommufd_gmem_policy == "upstream":
                raise oserror(errno.EINVAL)  # neither shmem nor hugetlbfs
            if start + length > f.inode.size or start & (PAGE_SIZE - 1):
                raise oserror(errno.EINVAL)
            return Pages(self, "gmem", start, length, writable, gmem_file=f)
        if fd < 0 or fd > 0x7FFFFFFF:
            raise oserror(errno.EBADF)
        try:
            st = os.fstat(fd)  # fget(): one look-up gives the inode and the size
        except OSError:
            raise oserror(errno.EBADF) from None
        key = (st.st_dev, st.st_ino)
        mem = self.iommu_memory
        if not mem.has_file_ref(key) and not IommuMemory.is_shmem(fd):
            raise oserror(errno.EINVAL)
        if start + length > st.st_size:
            raise oserror(errno.EINVAL)
        return Pages(self, "file", start, length, writable, fd=mem.file_ref(fd, key),
                     file_key=key)

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
        for pages in self._iommu_pages:
            if not pages.pinned or pages.kind == "gmem":
                continue
            for off, first, cnt in pages.pfn_runs(0, pages.npages):
                if first <= pfn < first + cnt:
                    n += 1
                    break
        return n

    def iommu_pinned_file_pages(self, base):
        return [p for p in self._iommu_pages if p.kind == "file" and p.file_pfn_base == base
                and p.pinned]

    def iommu_area_added(self, area):
        self._iommu_pages.add(area.pages)
        inode = area.pages.inode
        if inode is not None:
            inode.iommu_areas.add(area)

    def iommu_area_removed(self, area):
        if area.pages.users == 0:
            self._iommu_pages.discard(area.pages)
        inode = area.pages.inode
        if inode is not None:
            inode.iommu_areas.discard(area)

    # --- guest_memfd's notifications ------------------------------------------------------

    def iommu_gmem_event(self, inode, start, end, reason):
        """guest_memfd pages [start, end) are converted/punched/poisoned/released."""
        policy = self.profile.iommufd_gmem_policy
        for area in list(inode.iommu_areas):
            span = _iova_pages(area, start, end)
            if span is None:
                continue
            lo, hi = span
            if area.pages.kind == "user":
                if reason == "punch_hole" and area.pages.pinned:
                    self.violations.append({
                        "kind": "orphaned_pinned_pages", "iova": lo << PAGE_SHIFT,
                        "length": (hi - lo) << PAGE_SHIFT,
                        "detail": "PUNCH_HOLE under a GUP-pinned IOMMU mapping: the pages stay "
                                  "pinned and mapped, the file no longer contains them"})
                continue
            if policy == "rfc-2026-02":
                self.violations.append({
                    "kind": "stale_iommu_entry", "reason": reason, "iova": lo << PAGE_SHIFT,
                    "length": (hi - lo) << PAGE_SHIFT,
                    "detail": "no notifier: the IOMMU still maps guest_memfd pages whose "
                              f"state changed ({reason})"})
            elif policy == "notifier":
                if reason in ("punch_hole", "release", "memory_failure"):
                    self.revoke_area(area)
                else:
                    how = inode_vmtype(inode).iommu_conversion_policy
                    for d in area.ioas.domains:
                        if how == "zap":
                            d.unmap_area(area, lo, hi)
                        elif how == "split":
                            d.map_area(area, lo, hi)

    def revoke_area(self, area):
        """The notifier policy's answer to a truncate: the whole area stops translating."""
        area.revoked = True
        for d in area.ioas.domains:
            d.unmap_area(area)

    # --- DMA ------------------------------------------------------------------------------

    def dma_fault(self, dev, iova, reason):
        self.dma_faults.append((dev, iova, reason))
        raise DmaFault(iova, reason)

    def judge_dma(self, idev, area, iova, entry_private, write):
        """A DMA reached guest memory: is the IOMMU entry still of the page's kind?"""
        inode = area.pages.inode
        if inode is None:
            return
        index = area.pages.first_page() + ((area.offset + iova - area.iova) >> PAGE_SHIFT)
        if inode.poisoned is not None and inode.poisoned.get(index):
            self.violations.append({"kind": "dma_to_poisoned_page", "iova": iova})
            self.dma_fault(idev.dev, iova, "page is poisoned (memory failure)")
        page_private = bool(inode.attrs.get(index) & 8)
        if page_private == entry_private:
            return
        verdict = inode_vmtype(inode).judge_stale_dma(entry_private, page_private, write)
        record = {"kind": "stale_iommu_dma", "verdict": verdict, "iova": iova, "write": write,
                  "entry": "private" if entry_private else "shared",
                  "page": "private" if page_private else "shared"}
        self.violations.append(record)
        if verdict in ("fault", "machine_check"):
            self.dma_fault(idev.dev, iova, f"{verdict}: IOMMU entry ({record['entry']}) no longer "
                                           f"matches the page ({record['page']})")


def inode_vmtype(inode):
    from ..kvm.vmtype import DefaultVm

    vm = getattr(inode, "vm", None)
    return vm.vmtype if vm is not None else DefaultVm()


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

