"""iommufd objects other than the IOAS: HWPTs (domains), devices, vIOMMUs, vDEVICEs.

A paging HWPT is an IOMMU domain: a kmock.mm PageTable from IOVA to frame, with
R/W permission bits and a bit recording that the page was private guest memory
when the entry was made (so a later conversion can be judged).
"""

import errno

from ..errors import oserror
from ..mm import PageTable
from .ioas import PERM_PRIVATE, PERM_WRITE, ULONG_MAX
from .pages import PAGE_SHIFT, PAGE_SIZE


class HwptPaging:
    """A paging domain attached to an IOAS (automatic, or from IOMMU_HWPT_ALLOC)."""

    object_type = "hwpt_paging"

    def __init__(self, ictx, ioas, page_size=PAGE_SIZE, aperture=None, auto=False,
                 nest_parent=False, dirty_tracking=False):
        self.ictx = ictx
        self.id = 0
        self.ioas = ioas
        self.page_size = page_size
        self.auto = auto
        self.nest_parent = nest_parent
        self.dirty_tracking = dirty_tracking
        self.table = PageTable()
        self.devices = set()
        self.children = 0
        self.reserved = []
        if aperture is not None:
            lo, hi = aperture
            if lo > 0:
                self.reserved.append((0, lo - 1, self))
            if hi < ULONG_MAX:
                self.reserved.append((hi + 1, ULONG_MAX, self))

    @property
    def users(self):
        return len(self.devices) + self.children

    # --- mirroring the IOAS ----------------------------------------------------------------

    def map_area(self, area, start=None, end=None):
        """Map the area (or IOVA pages [start, end) of it) into the table, in runs of
        equal kind for guest memory."""
        if area.revoked:
            return
        first, lo, hi = _iova_pages(area, start, end)
        if lo >= hi:
            return
        pages = area.pages
        perm = area.perm()
        base_off = area.offset - ((area.iova & (PAGE_SIZE - 1)))
        # Entries can already be there only when re-mapping part of an area (a "split"
        # conversion) or when two sub-page areas share a 4 KiB IOVA page.
        replace = start is not None or (area.iova | (area.last + 1)) & (PAGE_SIZE - 1)
        if pages.gmem_file is None:  # not guest memory: one run of one kind (what _kinds gives)
            table = self.table
            if replace:
                table.unmap(lo << PAGE_SHIFT, hi - lo)
            for poff, pfn, n in pages.pfn_runs(base_off + ((lo - first) << PAGE_SHIFT), hi - lo):
                table.map((lo + poff) << PAGE_SHIFT, pfn, n, perm)
            return
        inode = pages.inode
        for s, e, private in _kinds(area, inode, lo, hi, first):
            off = base_off + ((s - first) << PAGE_SHIFT)
            bits = perm | (PERM_PRIVATE if private else 0)
            if replace:
                self.table.unmap(s << PAGE_SHIFT, e - s)
            for poff, pfn, n in pages.pfn_runs(off, e - s):
                self.table.map((s + poff) << PAGE_SHIFT, pfn, n, bits)

    def unmap_area(self, area, start=None, end=None):
        _, lo, hi = _iova_pages(area, start, end)
        if lo < hi:
            self.table.unmap(lo << PAGE_SHIFT, hi - lo)

    def translate(self, iova):
        """The IOMMU walk: (pfn, perm) of the page holding ``iova``, or None."""
        hit = self.table.lookup(iova & ~(PAGE_SIZE - 1))
        if hit is None:
            return None
        return hit[0], hit[1]

    def reserved_key(self):
        """The aperture (lo, hi) the reserved ranges leave, or None."""
        if not self.reserved:
            return None
        lo = self.reserved[0][1] + 1 if self.reserved[0][0] == 0 else 0
        hi = self.reserved[-1][0] - 1 if self.reserved[-1][1] == ULONG_MAX else ULONG_MAX
        return (lo, hi)


def _iova_pages(area, start, end):
    """(first, lo, hi): ``area`` touches IOVA pages [first, top); [lo, hi) is their part
    inside [start, end) (a bound that is None does not limit)."""
    first = area.iova >> PAGE_SHIFT
    top = (area.last >> PAGE_SHIFT) + 1
    lo = first if start is None or start < first else start
    hi = top if end is None or end > top else end
    return first, lo, hi


def _kinds(area, inode, lo, hi, first):
    """Runs [s, e) of IOVA pages of ``area`` with the same private/shared kind."""
    if inode is None:
        return [(lo, hi, False)]
    gfirst = area.pages.first_page() + ((area.offset - (area.iova & (PAGE_SIZE - 1))) >> PAGE_SHIFT)
    shift = gfirst - first
    out = []
    for s, e, private in inode.private_runs(lo + shift, min(hi + shift, inode.npages)):
        out.append((s - shift, e - shift, private))
    if not out:
        out.append((lo, hi, False))
    return out


class IommuDevice:
    """iommufd_device: a device bound to this iommufd (VFIO cdev bind or selftest)."""

    object_type = "device"

    def __init__(self, ictx, dev):
        self.ictx = ictx
        self.id = 0
        self.dev = dev
        self.hwpt = None
        self.vdevice = None
        self.user_destroyable = False

    @property
    def users(self):
        return 1 if self.hwpt is not None else 0

    def attach(self, pt):
        """Attach to an IOAS (through an automatic HWPT) or a paging HWPT; returns the HWPT."""
        ictx = self.ictx
        if self.hwpt is not None:
            raise oserror(errno.EBUSY)
        if pt.object_type == "ioas":
            hwpt = None
            for d in pt.domains:
                if d.auto and d.page_size == self.dev.iommu_page_size and \
                        d.reserved_key() == self.dev.aperture:
                    hwpt = d
                    break
            if hwpt is None:
                hwpt = HwptPaging(ictx, pt, self.dev.iommu_page_size, self.dev.aperture, auto=True)
                pt.add_domain(hwpt)
                ictx.add(hwpt)
                pt.users += 1
        elif pt.object_type == "hwpt_paging":
            hwpt = pt  # a domain of its IOAS since IOMMU_HWPT_ALLOC
        else:
            raise oserror(errno.EINVAL)
        hwpt.devices.add(self)
        self.hwpt = hwpt
        return hwpt

    def detach(self):
        hwpt = self.hwpt
        if hwpt is None:
            raise oserror(errno.EINVAL)
        hwpt.devices.discard(self)
        self.hwpt = None
        if not hwpt.devices and hwpt.auto:
            # an automatic HWPT dies with its last device; an allocated one stays a
            # domain of its IOAS until IOMMU_DESTROY (iommufd_hw_pagetable_destroy)
            hwpt.ioas.remove_domain(hwpt)
            hwpt.ioas.users -= 1
            self.ictx.remove(hwpt)

    # --- DMA -----------------------------------------------------------------------------

    def dma(self, iova, length, data=None):
        """A DMA through the attached domain: bytes read, or ``data`` written.

        Runs under the kernel's iommu lock, so a guest_memfd invalidation (which takes
        it first) never changes a page between the translation and the copy."""
        with self.ictx.kernel.iommu_lock:
            return self._dma(iova, length, data)

    def _dma(self, iova, length, data):
        """The transfer, one run of the domain's table and one area at a time (never a
        page at a time): the bytes before the first page that faults are transferred,
        as a device's writes before an IOMMU fault land."""
        kernel = self.ictx.kernel
        hwpt = self.hwpt
        if hwpt is None:
            kernel.dma_fault(self.dev, iova, "device not attached to an I/O page table")
        write = data is not None
        out = []
        pos = iova
        end = iova + length
        if pos < end:
            mask = PAGE_SIZE - 1
            top = min((end + mask) & ~mask, 1 << 64)  # (2**64: the end of the IOVA space)
            for riova, _pfn, npages, perm in hwpt.table.runs(iova & ~mask, top):
                if riova > pos:
                    break  # a hole before this run: pos is not mapped
                if write and not perm & PERM_WRITE:
                    kernel.dma_fault(self.dev, pos, "IOVA not writable")
                if not write and not perm & 1:
                    kernel.dma_fault(self.dev, pos, "IOVA not readable")
                run_end = min(end, riova + (npages << PAGE_SHIFT))
                while pos < run_end:
                    area = hwpt.ioas.area_at(pos)
                    if area is None or area.revoked:
                        kernel.dma_fault(self.dev, pos, "IOVA not mapped")
                    seg_end = min(run_end, area.last + 1)
                    ok_end, fault = kernel.judge_dma(self, area, pos, seg_end,
                                                     bool(perm & PERM_PRIVATE), write)
                    if pos < ok_end:
                        off = area.offset + (pos - area.iova)
                        if write:
                            area.pages.write(off, data[pos - iova:ok_end - iova])
                        else:
                            out.append(area.pages.read(off, ok_end - pos))
                    if fault is not None:
                        kernel.dma_fault(self.dev, *fault)
                    pos = seg_end
                if pos >= end:
                    break
            if pos < end:
                kernel.dma_fault(self.dev, pos, "IOVA not mapped")
        return None if write else b"".join(out)


class Viommu:
    object_type = "viommu"

    def __init__(self, ictx, hwpt, dev, type):
        self.ictx = ictx
        self.id = 0
        self.hwpt = hwpt
        self.dev = dev
        self.type = type
        self.vdevices = {}  # virt_id -> Vdevice
        hwpt.children += 1

    @property
    def users(self):
        return len(self.vdevices)

    def on_destroy(self):
        self.hwpt.children -= 1


class Vdevice:
    object_type = "vdevice"

    def __init__(self, ictx, viommu, idev, virt_id):
        self.ictx = ictx
        self.id = 0
        self.viommu = viommu
        self.idev = idev
        self.virt_id = virt_id
        viommu.vdevices[virt_id] = self
        idev.vdevice = self

    users = 0

    def on_destroy(self):
        del self.viommu.vdevices[self.virt_id]
        self.idev.vdevice = None

