"""guest_memfd: the memory provider (virt/kvm/guest_memfd.c, Linux 6.18).

A guest_memfd inode holds its size and flags, the shared/private state of every
page, which pages are allocated, its memslot bindings and its host mappings. Its
bytes live in a real memfd (the *backing*), so fstat, mapped bytes and PUNCH_HOLE
zeroing are real. The fd handed to the VMM is a duplicate of the backing memfd.

Page state is kept per range in kmock.mm RangeMaps: ``attrs`` (PRIVATE bit = the
host may not fault the page), ``allocated`` (1 = a folio is present) and
``bindings`` (page index -> memslot token).
"""

import errno
import os
import stat

from .. import _libc
from ..errors import EHWPOISON, oserror
from ..file import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, File, check_mmap_args, make_stat
from ..mm import RangeMap
from ..mapping import FileMapping
from ..uapi import kvm as K

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PRIVATE = K.KVM_MEMORY_ATTRIBUTE_PRIVATE
#: page indexes a binding may reach: offset + size may exceed the file (6.18 loff_t bug)
BINDING_SPACE = 1 << 52


class BackingPool:
    """Recycled memfds: memfd_create alone costs as much as a real KVM_CREATE_GUEST_MEMFD.

    A released guest_memfd's memfd is kept for the next one: as it is when no page
    was ever written (it holds nothing), truncated to 0 otherwise (its pages are
    freed). Entries are (fd, size, st_ino, st_dev).
    """

    def __init__(self, limit=64):
        self.by_size = {}
        self.count = 0
        self.limit = limit

    def take(self, size):
        entries = self.by_size.get(size)
        if entries:
            self.count -= 1
            return entries.pop()
        entries = self.by_size.get(0)
        if entries:
            self.count -= 1
            fd = entries.pop()[0]
        else:
            fd = os.memfd_create("kmock-gmem", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
        except OSError:
            os.close(fd)
            raise
        st = os.fstat(fd)
        return fd, size, st.st_ino, st.st_dev

    def give(self, entry, dirty):
        fd, size, ino, dev = entry
        if self.count >= self.limit:
            os.close(fd)
            return
        if dirty:
            os.ftruncate(fd, 0)
            size = 0
        self.by_size.setdefault(size, []).append((fd, size, ino, dev))
        self.count += 1

    def close(self):
        for entries in self.by_size.values():
            for e in entries:
                os.close(e[0])
        self.by_size.clear()
        self.count = 0


class GmemInode:
    """The guest_memfd inode: size, flags, page state, users."""

    def __init__(self, kernel, size, flags, backing):
        """``backing`` is a BackingPool entry (fd, size, st_ino, st_dev)."""
        self.kernel = kernel
        self.size = size
        self.flags = flags
        self.npages = size >> PAGE_SHIFT
        self._backing_entry = backing
        self.backing = backing[0]
        self.ino = backing[2]
        self.dev = backing[3]
        #: PRIVATE = the host may not fault the page (the profile's model sets the start)
        self.attrs = RangeMap(self.npages, PRIVATE)
        self.allocated = RangeMap(self.npages)
        self.bindings = None  # RangeMap(BINDING_SPACE), created on first bind
        self.slots = {}  # binding token -> Memslot
        self._next_token = 1
        self.mappings = set()
        #: some page may hold non-zero bytes (a host mapping or a guest write touched
        #: it), so PUNCH_HOLE must really punch the backing memfd
        self.maybe_dirty = False
        #: whether this guest_memfd decides shared/private itself (in-place conversion);
        #: set by the conversion model of the profile
        self.in_place = False
        #: pages hit by memory failure (kernel memory_failure -> later get_pfn EHWPOISON)
        self.poisoned = None
        #: pseudo physical frame number of page 0 (unique per inode, 1G-aligned), so
        #: stage-2 and IOMMU page tables have frames to point at
        self.pfn_base = kernel._alloc_pfn_range(self.npages)
        #: long-term pins and extra references per page (Kernel.gup_pin, IOMMU pins)
        self.pins = None
        #: per page, how many times PUNCH_HOLE removed pinned folios from the file
        #: (pins taken before that no longer hold the page at that index)
        self.pin_gen = None
        self._pin_gen_next = 1
        #: pages per folio (1, or 512 / 262144 for hugetlb-backed guest_memfd) and, per
        #: huge folio, whether it is split into 4K folios
        self.folio_pages = 1
        self.split = None
        #: pages whose make_private arch callback ran (see prepare_private)
        self.prepared = None
        #: bytes of pinned pages a PUNCH_HOLE orphaned, by (pin generation, index)
        self.orphans = {}
        #: IOMMU areas mapping these pages (guest_memfd's notifier list for iommufd)
        self.iommu_areas = set()
        self.vm = None

    def set_folio_pages(self, n):
        self.folio_pages = n
        self.split = RangeMap((self.npages + n - 1) // n)

    def folio_split(self, folio):
        return self.split is None or bool(self.split.get(folio))

    def pin(self, start, end, delta):
        """Add ``delta`` to the pin count of pages [start, end) (a loop over runs, not pages)."""
        if self.pins is None:
            self.pins = RangeMap(self.npages)
        for s, e, v in list(self.pins.ranges(start, end)):
            self.pins.set(s, e, v + delta)

    def take_pin(self, start, end):
        """Pin pages [start, end); returns what ``drop_pin`` needs to undo exactly this pin."""
        self.pin(start, end, 1)
        if self.pin_gen is None:
            return ((start, end, 0),)
        return tuple(self.pin_gen.ranges(start, end))

    def drop_pin(self, runs):
        """Drop a pin taken by ``take_pin``, except on pages PUNCH_HOLE orphaned since:
        the pinned folio left the file then, and the page there now is another one."""
        for s, e, g in runs:
            if self.pin_gen is None:
                self.pin(s, e, -1)
                continue
            for cs, ce, cg in list(self.pin_gen.ranges(s, e)):
                if cg == g:
                    self.pin(cs, ce, -1)

    # --- bindings (kvm_gmem_bind / kvm_gmem_unbind) -------------------------------------

    def range_bound(self, start, end):
        return self.bindings is not None and self.bindings.find_not(start, end, 0) != -1

    def bind(self, slot, start, end):
        if self.bindings is None:
            self.bindings = RangeMap(BINDING_SPACE)
        token = self._next_token
        self._next_token += 1
        self.bindings.set(start, end, token)
        self.slots[token] = slot
        return token

    def unbind(self, token, start, end):
        if self.slots.pop(token, None) is not None:
            self.bindings.set(start, end, 0)

    # --- contents -------------------------------------------------------------------------

    def punch_hole(self, start, end):
        """kvm_gmem_punch_hole over page indexes [start, end) (already clipped to the file)."""
        for slot in self.bound_slots(start, end):
            slot.vm.gmem_invalidate(slot, start, end)
        self.kernel._hook_invalidate(self, start, end, "punch_hole")
        if self.iommu_areas:
            self.kernel.iommu_gmem_event(self, start, end, "punch_hole")
        self.allocated.set(start, end, 0)
        self.unprepare(start, end)
        if self.pins is not None and self.pins.find_not(start, end, 0) != -1:
            # truncate_inode_pages_range() removes pinned folios too: they live on,
            # orphaned, for their pinner (who still reads their old bytes); the file no
            # longer holds them, so they do not block a later conversion
            # (filemap_get_folios cannot find them).
            for s, e, v in list(self.pins.ranges(start, end)):
                if v:
                    for i in range(s, e):  # pinned pages only: few
                        g = 0 if self.pin_gen is None else self.pin_gen.get(i)
                        self.orphans[(g, i)] = os.pread(self.backing, PAGE_SIZE, i << PAGE_SHIFT)
            self.pins.set(start, end, 0)
            if self.pin_gen is None:
                self.pin_gen = RangeMap(self.npages)
            self.pin_gen.set(start, end, self._pin_gen_next)
            self._pin_gen_next += 1
        if self.maybe_dirty or self.mappings:
            _libc.fallocate(self.backing, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                            start << PAGE_SHIFT, (end - start) << PAGE_SHIFT)

    def bound_slots(self, start, end):
        """The memslots (of any VM) bound to some page of [start, end)."""
        if self.bindings is None or not self.slots:
            return ()
        tokens = {v for _, _, v in self.bindings.ranges(start, end) if v}
        return [self.slots[t] for t in tokens if t in self.slots]

    # --- the guest's side: kvm_gmem_get_pfn and the page contents ---------------------------

    def get_pfn(self, index):
        """kvm_gmem_get_pfn: the frame of page ``index``, allocating it.

        Raises OSError: EFAULT once the file is released, EHWPOISON for a poisoned page.
        """
        if self.backing < 0:
            raise oserror(errno.EFAULT)
        if self.poisoned is not None and self.poisoned.get(index):
            raise oserror(EHWPOISON)
        if not self.allocated.get(index):
            self.allocated.set(index, index + 1, 1)
        return self.pfn_base + index

    def prepare_private(self, start, end):
        """The guest uses pages [start, end) as private memory: on first use the
        architecture's make_private runs (lazily, as kvm_gmem_get_pfn calls
        kvm_arch_gmem_make_private). Forgotten on PUNCH_HOLE and to-shared conversion."""
        kernel = self.kernel
        if not kernel._has["kmock_gmem_make_private"]:
            return
        if self.prepared is None:
            self.prepared = RangeMap(self.npages)
        for s, e, v in list(self.prepared.ranges(start, end)):
            if not v:
                kernel.pm.hook.kmock_gmem_make_private(kernel=kernel, gmem=self, start=s, end=e)
        self.prepared.set(start, end, 1)

    def unprepare(self, start, end):
        if self.prepared is not None:
            self.prepared.set(start, end, 0)

    def read(self, offset, n):
        """Bytes of the file as the guest (or the kernel's direct map) sees them."""
        return os.pread(self.backing, n, offset)

    def write(self, offset, data):
        self.maybe_dirty = True
        os.pwrite(self.backing, data, offset)

    def host_fault_offset(self, lo, hi):
        """First file offset in [lo, hi) whose host fault would SIGBUS, or None."""
        fault = None
        if hi > self.size:
            fault = max(lo, self.size)
        top = min(hi, self.size)
        if lo < top:
            plo, phi = lo >> PAGE_SHIFT, (top + PAGE_SIZE - 1) >> PAGE_SHIFT
            p = self.attrs.find(plo, phi, PRIVATE)
            if self.poisoned is not None:
                q = self.poisoned.find(plo, phi, 1)
                if q != -1 and (p == -1 or q < p):
                    p = q
            if p != -1 and (fault is None or (p << PAGE_SHIFT) < fault):
                fault = max(lo, p << PAGE_SHIFT)
        return fault

    def snapshot(self):
        """Plain-data state of this guest_memfd (for Kernel.snapshot)."""
        snap = {
            "size": self.size,
            "flags": self.flags,
            "in_place": self.in_place,
            "allocated_pages": self.allocated.count(1),
            "private_pages": self.attrs.count(PRIVATE),
            "pinned_pages": 0 if self.pins is None else self.npages - self.pins.count(0),
            "poisoned_pages": 0 if self.poisoned is None else self.poisoned.count(1),
            "host_mappings": len(self.mappings),
            "bindings": len(self.slots),
            "folio_pages": self.folio_pages,
        }
        if self.split is not None:
            n = len(self.split)
            split = self.split.count(1)
            snap["huge_folios"] = n - split
            snap["split_folios"] = split
        return snap

    def memory_failure(self, index):
        """memory_failure() on page ``index``: guest use gets EHWPOISON, host use SIGBUS.

        guest_memfd's error_remove_folio invalidates the page but does not truncate it.
        """
        if self.poisoned is None:
            self.poisoned = RangeMap(self.npages)
        self.poisoned.set(index, index + 1, 1)
        for slot in self.bound_slots(index, index + 1):
            slot.vm.gmem_invalidate(slot, index, index + 1)
        self.kernel._hook_invalidate(self, index, index + 1, "memory_failure")
        if self.iommu_areas:
            self.kernel.iommu_gmem_event(self, index, index + 1, "memory_failure")
        for m in list(self.mappings):
            m.remap(index, index + 1, True)


class GmemFile(File):
    """The guest_memfd file (anon_inode "[kvm-gmem]"); holds a reference on its VM."""

    file_type = "gmem"
    i_mode = stat.S_IFREG | stat.S_IRUSR | stat.S_IWUSR
    cloexec = False  # created with get_unused_fd_flags(0)

    def __init__(self, kernel, vm, inode):
        super().__init__(kernel)
        self.vm = vm
        self.inode = inode
        vm.get()

    def placeholder_fd(self):
        return self.inode.backing

    def release(self):
        """kvm_gmem_release: unbind every slot (they stay, pointing at nothing), drop the VM."""
        inode = self.inode
        if inode.slots:
            for slot in list(inode.slots.values()):
                slot.vm.gmem_invalidate(slot, slot.gmem_pgoff, slot.gmem_pgoff + slot.npages)
                slot.gmem_file = None
                slot.gmem_token = 0
            inode.slots.clear()
            inode.bindings = None
        if inode.orphans:
            inode.orphans.clear()
        self.kernel._hook_invalidate(inode, 0, inode.npages, "release")
        if inode.iommu_areas:
            self.kernel.iommu_gmem_event(inode, 0, inode.npages, "release")
        self.kernel._gmem_pool.give(inode._backing_entry, inode.maybe_dirty)
        inode.backing = -1
        self.vm.put()

    # --- file operations (kvm_gmem_fops: mmap, open, release, fallocate; setattr EINVAL) ---

    def fstat(self):
        i = self.inode
        return make_stat(self.i_mode, size=i.size, ino=i.ino, dev=i.dev)

    def ftruncate(self, length):
        raise oserror(errno.EINVAL)  # kvm_gmem_setattr: the size is immutable

    def fchmod(self, mode):
        raise oserror(errno.EINVAL)  # kvm_gmem_setattr

    def do_fallocate(self, mode, offset, length):
        """kvm_gmem_fallocate."""
        if not mode & FALLOC_FL_KEEP_SIZE:
            raise oserror(errno.EOPNOTSUPP)
        if mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE):
            raise oserror(errno.EOPNOTSUPP)
        if offset & (PAGE_SIZE - 1) or length & (PAGE_SIZE - 1):
            raise oserror(errno.EINVAL)
        inode = self.inode
        start = offset >> PAGE_SHIFT
        if mode & FALLOC_FL_PUNCH_HOLE:
            end = min((offset + length) >> PAGE_SHIFT, inode.npages)
            if start < end:
                inode.punch_hole(start, end)
            return None
        if offset + length > inode.size:
            raise oserror(errno.EINVAL)  # "Dedicated guest is immutable by default"
        inode.allocated.set(start, (offset + length) >> PAGE_SHIFT, 1)
        return None

    def mmap(self, length, prot, flags, offset):
        """kvm_gmem_mmap: ENODEV without GUEST_MEMFD_FLAG_MMAP, EINVAL unless MAP_SHARED."""
        check_mmap_args(length, prot, flags, offset)
        inode = self.inode
        if not self.kernel.gmem_model.mmap_allowed(inode):
            raise oserror(errno.ENODEV)
        if flags & _libc.MAP_TYPE == _libc.MAP_PRIVATE:
            raise oserror(errno.EINVAL)
        return GmemMapping(self, length, prot, offset)


class GmemMapping(FileMapping):
    """A host mapping of a guest_memfd (one VMA). Its address is real memory.

    Where every page is shared the memfd itself is mapped; where pages are private
    a zero-length memfd is mapped instead, so even native code in the VMM process
    gets a real SIGBUS there, as it would from kvm_gmem_fault_user_mapping.
    """

    def __init__(self, file, length, prot, offset):
        inode = file.inode
        self.inode = inode
        super().__init__(file, length, prot, offset, inode.backing, offset)
        lo = offset >> PAGE_SHIFT
        hi = min(inode.npages, (offset + self._maplen) >> PAGE_SHIFT)
        if lo < hi:
            for s, e, v in inode.attrs.ranges(lo, hi):
                if v & PRIVATE:
                    self.remap(s, e, True)
            if inode.poisoned is not None:
                for s, e, v in inode.poisoned.ranges(lo, hi):
                    if v:
                        self.remap(s, e, True)
        inode.mappings.add(self)
        if prot & _libc.PROT_WRITE:
            inode.maybe_dirty = True

    def remap(self, start, end, fault):
        """Make file pages [start, end) fault (``fault``) or map them again, in place.

        This is the real counterpart of unmap_mapping_pages(): native code touching
        the address of a faulting page gets SIGBUS from a zero-length memfd.
        """
        first = self.offset >> PAGE_SHIFT
        lo = max(start, first)
        hi = min(end, first + (self._maplen >> PAGE_SHIFT), self.inode.npages)
        if lo >= hi or self.closed:
            return
        addr = self.address + ((lo - first) << PAGE_SHIFT)
        length = (hi - lo) << PAGE_SHIFT
        flags = _libc.MAP_SHARED | _libc.MAP_FIXED
        # Both files are mapped at the page's own file offset, so that neighbouring
        # pages of the same kind stay one VMA (the kernel zaps PTEs and makes no VMA;
        # here every remap at offset 0 would leave a VMA behind until mmap fails with
        # ENOMEM at vm.max_map_count). A zero-length memfd faults at any offset.
        fd = self.file.kernel._sigbus_memfd if fault else self.inode.backing
        _libc.mmap(addr, length, self.prot, flags, fd, lo << PAGE_SHIFT)

    def _on_close(self):
        self.inode.mappings.discard(self)

    def pin_pages(self, start, stop, delta):
        lo = (self.offset + start) >> PAGE_SHIFT
        hi = (self.offset + stop + PAGE_SIZE - 1) >> PAGE_SHIFT
        return (self.inode, self.inode.take_pin(lo, hi))

    def unpin_pages(self, pages):
        inode, runs = pages
        inode.drop_pin(runs)

    def _fault(self, start, stop):
        f = self.inode.host_fault_offset(self.offset + start, self.offset + stop)
        return None if f is None else f - self.offset

    def _touch(self, start, stop, write):
        inode = self.inode
        lo = (self.offset + start) >> PAGE_SHIFT
        hi = (self.offset + stop + PAGE_SIZE - 1) >> PAGE_SHIFT
        if inode.allocated.find(lo, hi, 0) != -1:
            inode.allocated.set(lo, hi, 1)  # a host fault allocates the folio
        if write:
            inode.maybe_dirty = True


def create_guest_memfd(vm, size, flags):
    """kvm_gmem_create: the profile's flag and size checks (EINVAL), then a new file."""
    kernel = vm.kernel
    model = kernel.gmem_model
    model.check_create(vm, size, flags)
    kernel._hook_gmem_create(vm, size, flags)
    backing = kernel._gmem_pool.take(size)
    inode = GmemInode(kernel, size, flags, backing)
    inode.vm = vm
    model.init_inode(inode)
    return GmemFile(kernel, vm, inode)
