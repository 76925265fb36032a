"""A host mapping of a guest_memfd: real memory, and one of guest_memfd's users.

Where pages are shared the backing memfd is mapped; where they are private (or
poisoned) a zero-length memfd is mapped instead, so even native code in the VMM
process gets a real SIGBUS there, as it would from kvm_gmem_fault_user_mapping.

As a guest_memfd notifier the mapping zaps (remaps to fault) the pages the host
loses at ``invalidate_begin`` (to private, memory failure: the kernel's
unmap_mapping_pages, which runs before the refcount check) and re-syncs with the
page state at ``invalidate_end`` (the pages that became shared fault in again; a
failed conversion is restored). Accesses through the object hold the inode's
invalidate lock, so a page never changes kind between the check and the copy: a
page that turns private under a host access gives ``kmock.SigBus``, never a signal.
"""

from .. import _libc
from ..mapping import FileMapping
from ..mm import RangeMap
from ..notifier import GmemNotifier
from .guest_memfd import PAGE_SHIFT, PAGE_SIZE

_ZAPPING = ("convert_private", "memory_failure")
_UNMAPPING = ("convert_private", "memory_failure", "punch_hole")
_SYNCING = ("convert_private", "convert_shared", "memory_failure")


class GmemMapping(FileMapping, GmemNotifier):
    """One VMA over a guest_memfd."""

    def __init__(self, file, length, prot, offset, populate=False):
        """``populate``: MAP_POPULATE (without MAP_NONBLOCK) or MAP_LOCKED asked do_mmap
        to fault the pages in (mm_populate)."""
        inode = file.inode
        self.inode = inode
        self._access_lock = inode.invalidate_lock  # (see FileMapping)
        super().__init__(file, length, prot, offset, inode.backing, offset)
        #: file pages currently mapped onto the zero-length memfd (1) or the backing (0)
        self._faulting = RangeMap(max(inode.npages, 1))
        #: file pages this VMA has a PTE for (1): an access elsewhere is a fault
        self._present = RangeMap(max(inode.npages, 1))
        with inode.invalidate_lock:
            self._sync(*self._window_pages())
            inode.mappings.add(self)
            inode.register_notifier(self)
        if prot & _libc.PROT_WRITE:
            inode.maybe_dirty = True
        if populate and prot & (_libc.PROT_READ | _libc.PROT_WRITE):
            self._populate()

    def _populate(self):
        """__mm_populate: read faults (a shared mapping) from the start up to the first
        page that would SIGBUS, where it stops and mmap still succeeds. The page state
        decides; an architecture's host_access veto is not asked."""
        inode = self.inode
        with inode.invalidate_lock:
            stop = inode.host_fault_offset(self.offset, self.offset + self.maplen)
            end = self.maplen if stop is None else stop - self.offset
            if end > 0:
                self._touch(0, end, False)

    # --- the notifier ---------------------------------------------------------------------

    def invalidate_begin(self, event):
        if event.reason in _UNMAPPING:
            # truncate_inode_pages_range / unmap_mapping_pages: the PTEs go, the next
            # access faults again
            lo, hi = self._window_pages()
            lo, hi = max(lo, event.start), min(hi, event.end)
            if lo < hi:
                self._present.set(lo, hi, 0)
        if event.reason in _ZAPPING:
            # unmap_mapping_pages: the pages still mapped shared now fault
            lo, hi = self._window_pages()
            lo, hi = max(lo, event.start), min(hi, event.end)
            if lo < hi and not self.closed:
                faulting = self._faulting
                if faulting.find(lo, hi, 0) == -1:
                    return  # nothing of the range is mapped any more
                if faulting.find(lo, hi, 1) == -1:
                    self._remap(lo, hi, True)  # one run: all mapped
                    return
                for s, e, cur in list(faulting.ranges(lo, hi)):
                    if not cur:
                        self._remap(s, e, True)

    def invalidate_end(self, event):
        reason = event.reason
        if reason not in _SYNCING:
            return
        if event.failed:
            self._sync(event.start, event.end)  # restore what begin zapped
        elif reason == "convert_shared":
            # the pages are shared now: those mapped to fault come back, unless poisoned
            inode = self.inode
            lo, hi = self._window_pages()
            lo, hi = max(lo, event.start), min(hi, event.end)
            if lo >= hi or self.closed:
                return
            if inode.poisoned is not None and inode.poisoned.find_not(lo, hi, 0) != -1:
                self._sync(lo, hi)
                return
            faulting = self._faulting
            if faulting.find(lo, hi, 1) == -1:
                return  # every page is mapped already
            if faulting.find(lo, hi, 0) == -1:
                self._remap(lo, hi, False)  # one run: all faulting
                return
            for s, e, cur in list(faulting.ranges(lo, hi)):
                if cur:
                    self._remap(s, e, False)
        # a to-private conversion or a memory failure that succeeded: begin already
        # zapped every page of the range

    # --- keeping the real mapping in step with the page state -----------------------------------

    def _window_pages(self):
        """File pages [first, last) this mapping covers (fixed for its lifetime)."""
        w = self._window_cache
        if w is None:
            first = self.offset >> PAGE_SHIFT
            w = self._window_cache = (first, min(first + (self.maplen >> PAGE_SHIFT),
                                                 self.inode.npages))
        return w

    _window_cache = None

    def _sync(self, start, end):
        """Remap the pages of [start, end) whose mapping differs from the page state."""
        lo, hi = self._window_pages()
        lo, hi = max(lo, start), min(hi, end)
        if lo >= hi or self.closed:
            return
        for s, e, fault in self.inode.host_faulting_runs(lo, hi):
            for cs, ce, cur in list(self._faulting.ranges(s, e)):
                if bool(cur) != fault:
                    self._remap(cs, ce, fault)

    def remap(self, start, end, fault):
        """Make file pages [start, end) fault (``fault``) or map them again, in place."""
        with self.inode.invalidate_lock:
            self._remap(start, end, fault)

    def _remap(self, start, end, fault):
        first, last = self._window_pages()
        lo = start if start > first else first
        hi = end if end < last else last
        if lo >= hi or self.closed:
            return
        addr = self.address + ((lo - first) << PAGE_SHIFT)
        length = (hi - lo) << PAGE_SHIFT
        flags = _libc.MAP_SHARED | _libc.MAP_FIXED
        # Both files are mapped at the page's own file offset, so that neighbouring
        # pages of the same kind stay one VMA (the kernel zaps PTEs and makes no VMA;
        # here every remap at offset 0 would leave a VMA behind until mmap fails with
        # ENOMEM at vm.max_map_count). A zero-length memfd faults at any offset.
        fd = self.file.kernel.sigbus_memfd if fault else self.inode.backing
        _libc.mmap(addr, length, self.prot, flags, fd, lo << PAGE_SHIFT)
        self._faulting.set(lo, hi, 1 if fault else 0)

    def _on_close(self):
        inode = self.inode
        with inode.invalidate_lock:
            inode.mappings.discard(self)
            inode.unregister_notifier(self)

    # --- host accesses: check and copy under the invalidate lock ---------------------------------

    def __getitem__(self, index):
        with self.inode.invalidate_lock:
            self._writing = False
            return self._get(index)

    def __setitem__(self, index, data):
        with self.inode.invalidate_lock:
            self._writing = True
            return self._set(index, data)

    _writing = False
    _arch_why = None

    def _sigbus_reason(self, at):
        why, self._arch_why = self._arch_why, None
        if why is not None:
            return why  # recorded by _fault already
        inode = self.inode
        index = (self.offset + at) >> PAGE_SHIFT
        vm = inode.vm
        why = None
        if vm is not None and index < inode.npages:
            why = vm.vmtype.explain_host_fault(vm, inode, index)
        if why is None:
            return "guest_memfd host fault"
        self.file.kernel.violations.record("host_access_fault", why, vm=vm,
                                           index=index, offset=at)
        return why

    def gup(self, start, stop):
        with self.inode.invalidate_lock:
            return super().gup(start, stop)

    def pin_pages(self, start, stop, delta):
        lo = (self.offset + start) >> PAGE_SHIFT
        hi = (self.offset + stop + PAGE_SIZE - 1) >> PAGE_SHIFT
        return (self.inode, self.inode.take_pin(lo, hi))

    def unpin_pages(self, pages):
        inode, runs = pages
        inode.drop_pin(runs)

    def fault_at(self, start, stop):
        inode = self.inode
        f = inode.host_fault_offset(self.offset + start, self.offset + stop)
        f = None if f is None else f - self.offset
        vm = inode.vm
        if vm is not None and vm.vmtype.has_host_access:
            # pages the page state allows: the architecture may still refuse (RMP #PF ...)
            hi = stop if f is None else f
            lo_page = (self.offset + start) >> PAGE_SHIFT
            hi_page = min(inode.npages, (self.offset + hi + PAGE_SIZE - 1) >> PAGE_SHIFT)
            if lo_page < hi_page:
                why = vm.vmtype.host_access(vm, inode, lo_page, hi_page, self._writing)
                if why is not None:
                    self._arch_why = why
                    self.file.kernel.violations.record("host_access_fault", why, vm=vm,
                                                       index=lo_page, offset=start)
                    return start
        return f

    def _touch(self, start, stop, write):
        inode = self.inode
        lo = (self.offset + start) >> PAGE_SHIFT
        hi = (self.offset + stop + PAGE_SIZE - 1) >> PAGE_SHIFT
        if inode.allocated.find(lo, hi, 0) != -1:
            inode.allocate(lo, min(hi, inode.npages))  # a host fault allocates the folio
        present = self._present
        if present.find(lo, hi, 0) != -1:
            # a fault; on a shared writable VMA without writenotify even a read fault
            # installs a writable PTE, so only a write that faults updates the times
            # (fault_dirty_shared_page: kvm_gmem_vm_ops has no ->page_mkwrite)
            if write:
                inode.modified()
            present.set(lo, min(hi, inode.npages), 1)
        if write:
            inode.maybe_dirty = True
