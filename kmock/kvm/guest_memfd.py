"""guest_memfd: the memory provider (virt/kvm/guest_memfd.c, Linux 6.18).

A guest_memfd inode holds its size and flags, the shared/private state of every
page, which pages are allocated, its memslot bindings and its host mappings. Its
bytes live in a real memfd (the *backing*), so fstat, mapped bytes and PUNCH_HOLE
zeroing are real. The fd handed to the VMM is a placeholder (kmock.fdtable), never
the backing memfd, so nothing reaches the memory behind kmock's back.

Page state is kept per range in kmock.mm RangeMaps: ``attrs`` (PRIVATE bit = the
host may not fault the page), ``allocated`` (1 = a folio is present) and
``bindings`` (page index -> memslot token).
"""

import errno
import itertools
import os
import stat
from time import time as _now  # (the wall clock of st_atime/st_mtime)
from functools import partial

from .. import _libc
from ..errors import EHWPOISON, oserror
from ..file import (
    ANON_INODE_DEV,
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE,
    MAP_LOCKED,
    MAP_NONBLOCK,
    MAP_POPULATE,
    File,
    check_mmap_args,
    make_stat,
)
from ..locks import RLock
from ..mm import RangeMap
from ..notifier import GmemNotifier, InvalidateEvent, check_veto, step_lists
from ..uapi import kvm as K
from .folios import first_elevated_refcount, restructure_folios
from .vmtype import VmType

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PRIVATE = K.KVM_MEMORY_ATTRIBUTE_PRIVATE
#: page indexes a binding may reach: offset + size may exceed the file (6.18 loff_t bug)
BINDING_SPACE = 1 << 52
#: the step lists of an inode with no users
_NO_STEPS = step_lists(())
#: st_ino numbers of guest_memfd inodes (get_next_ino)
_INODE_NUMBERS = itertools.count(0x1000000)
_ENOMEM = errno.ENOMEM  # (a module attribute look-up from compiled code costs a dict look-up)


class ConversionError(OSError):
    """A refused invalidation: errno plus the page index to report (error_offset)."""

    def __init__(self, code, index):
        super().__init__(code, errno.errorcode.get(code, str(code)))
        self.index = index


# (the os calls of BackingPool, bound once: it runs on every guest_memfd creation and
# release, and a module attribute look-up from compiled code is a dict look-up of its own)
_memfd_create, _ftruncate, _fstat, _close = os.memfd_create, os.ftruncate, os.fstat, os.close
_MFD_CLOEXEC = os.MFD_CLOEXEC


class BackingPool:
    """Recycled memfds: memfd_create alone costs as much as a real KVM_CREATE_GUEST_MEMFD.

    A released guest_memfd's memfd is kept for the next one: as it is when no page
    was ever written (it holds nothing), truncated to 0 otherwise (its pages are
    freed). A memfd of the size asked for is taken as it is (no ftruncate, no fstat).
    Entries are (fd, size, st_ino, st_dev, maps): ``maps`` is None or the
    (attrs, allocated) RangeMaps of a released inode that nothing else can reach
    (no user was registered), reset by the next inode of the same size.
    """

    def __init__(self, limit=64):
        self.by_size = {}
        self.count = 0
        self.limit = limit
        #: the memfds guest_memfds hold now (closed by close_outstanding)
        self.outstanding = set()

    def take(self, size):
        entries = self.by_size.get(size)
        if entries:
            self.count -= 1
            entry = entries.pop()
        else:
            entries = self.by_size.get(0)
            if entries:
                self.count -= 1
                fd = entries.pop()[0]
            else:
                fd = _memfd_create("kmock-gmem", _MFD_CLOEXEC)
            try:
                _ftruncate(fd, size)
            except OSError:
                _close(fd)
                raise
            st = _fstat(fd)
            entry = (fd, size, st.st_ino, st.st_dev, None)
        self.outstanding.add(entry[0])
        return entry

    def close_outstanding(self):
        """Close the memfds of guest_memfds never released (their Kernel is garbage)."""
        for fd in list(self.outstanding):
            try:
                os.close(fd)
            except OSError:
                pass
        self.outstanding.clear()

    def give(self, entry, dirty):
        fd = entry[0]
        self.outstanding.discard(fd)
        if self.count >= self.limit:
            _close(fd)
            return
        if dirty:
            _ftruncate(fd, 0)
            entry = (fd, 0, entry[2], entry[3], None)
        size = entry[1]
        entries = self.by_size.get(size)
        if entries is None:
            entries = self.by_size[size] = []
        entries.append(entry)
        self.count += 1

    def close(self):
        for entries in self.by_size.values():
            for e in entries:
                os.close(e[0])
        self.by_size.clear()
        self.count = 0


class GmemInode:
    """The guest_memfd inode: size, flags, page state, users.

    Users (memslot bindings, host mappings, iommufd areas, the architecture, tests)
    register a ``kmock.notifier.GmemNotifier``; ``invalidate`` runs the one sequence
    that takes memory away from them. Locks, as the kernel's:

    ``invalidate_lock``  the filemap invalidate lock: held by every invalidation, by
                         bindings, by host accesses through a mapping and by pins, so
                         a host access never sees a page change kind under it.
    ``lock``             a leaf lock for the page-state RangeMaps touched from the
                         guest fault path (allocation, lazy make_private).
    """

    # Rarely used attributes that start as None/1 are class defaults, set on the
    # instance when first used: creating an inode is on the KVM_CREATE_GUEST_MEMFD fast
    # path. The hot ones are instance fields (see __init__).
    bindings = None  # RangeMap(BINDING_SPACE), created on first bind
    _next_token = 1
    #: per page, how many times PUNCH_HOLE removed pinned folios from the file
    #: (pins taken before that no longer hold the page at that index)
    pin_gen = None
    _pin_gen_next = 1
    #: per huge folio, whether it is split into 4K folios
    split = None

    def __init__(self, kernel, size, flags, backing, pfn_base):
        """``backing`` is a BackingPool entry (fd, size, st_ino, st_dev, maps);
        ``pfn_base`` the physical frame of page 0 (kmock.physmem: one frame space for
        every table)."""
        self.kernel = kernel
        self.size = size
        self.flags = flags
        self.npages = npages = size >> PAGE_SHIFT
        self._backing_entry = backing
        self.backing = backing[0]
        self.invalidate_lock = RLock()
        self.lock = RLock()
        maps = backing[4]
        if maps is None:
            #: PRIVATE = the host may not fault the page (the profile's model sets the start)
            self.attrs = RangeMap(npages, PRIVATE)
            self.allocated = RangeMap(npages)
        else:  # the maps of a released inode of this size that no one could reach
            self.attrs, self.allocated = maps
            self.attrs.set(0, npages, PRIVATE)
            self.allocated.set(0, npages, 0)
        self.slots = {}  # binding token -> Memslot
        self.mappings = set()
        #: bytes of pinned pages a PUNCH_HOLE orphaned, by (pin generation, index)
        self.orphans = {}
        self.pfn_base = pfn_base
        #: st_atime (the creation) and st_mtime = st_ctime (the last file_modified)
        self.atime = self.mtime = _now()
        # (instance fields, not class defaults: compiled, these are typed members of the
        # cdef class kmock/kvm/guest_memfd.pxd declares)
        #: some page may hold non-zero bytes (a host mapping or a guest write touched
        #: it), so PUNCH_HOLE must really punch the backing memfd
        self.maybe_dirty = False
        #: whether this guest_memfd decides shared/private itself (in-place conversion);
        #: set by the conversion model of the profile
        self.in_place = False
        #: pages hit by memory failure (kernel memory_failure -> later get_pfn EHWPOISON)
        self.poisoned = None
        #: long-term pins and extra references per page (Kernel.gup_pin, IOMMU pins)
        self.pins = None
        #: pages per folio (1, or 512 / 262144 for hugetlb-backed guest_memfd)
        self.folio_pages = 1
        #: pages whose make_private arch callback ran (see prepare_private)
        self.prepared = None
        self.vm = None
        #: registered users (kmock.notifier.GmemNotifier), in registration order; a new
        #: list replaces it at each (un)registration, never changed in place
        self.notifiers = ()
        #: (vetoes, begins, commits, ends): the users implementing each step
        self._steps = _NO_STEPS

    @property
    def ino(self):
        """st_ino: the inode's own number (get_next_ino: never reused, unlike the
        recycled backing memfd's), given at the first fstat."""
        ino = self._ino
        if ino is None:
            ino = self._ino = next(_INODE_NUMBERS)
        return ino

    _ino = None

    @property
    def dev(self):
        """st_dev: the anon_inode mount's (a VM fd's)."""
        return ANON_INODE_DEV

    def modified(self):
        """file_modified: a successful fallocate (or the first write fault of a page
        through a mapping: fault_dirty_shared_page) sets mtime and ctime to now."""
        self.mtime = _now()

    # --- users ------------------------------------------------------------------------------

    def register_notifier(self, notifier):
        """Register a user of this guest_memfd's pages (a kmock.notifier.GmemNotifier)."""
        with self.invalidate_lock:
            if notifier not in self.notifiers:
                self.notifiers = [*self.notifiers, notifier]
                self._steps = step_lists(self.notifiers)

    def unregister_notifier(self, notifier):
        with self.invalidate_lock:
            if notifier in self.notifiers:
                self.notifiers = [n for n in self.notifiers if n is not notifier]
                self._steps = step_lists(self.notifiers)

    def veto_check(self, event):
        """Ask every notifier's veto; raise ConversionError on a refusal (its index is the
        page the veto names, else the start of the range)."""
        for n in self._steps[0]:
            r = n.veto(event)
            if r is None:
                continue  # (what check_veto reads as "allowed", without the call)
            code, index = check_veto(n, r)
            if code:
                raise ConversionError(code, event.start if index is None else index)

    def invalidate(self, event, store=None, check_refcount=False, clamp_error_index=True,
                   vetoed=False):
        """Run guest_memfd's invalidation sequence for ``event`` (a kmock.notifier
        InvalidateEvent); ``store()`` makes the change. See kmock.notifier for the order.

        Raises ConversionError (an OSError with ``index``) when a notifier vetoes
        (index = start) or, with ``check_refcount`` on a to-private event, when a page
        is pinned (EAGAIN; index = the folio start, clamped to ``start`` when
        ``clamp_error_index``). Nothing has changed then. ``vetoed``: the caller already
        asked the vetoes (``veto_check``) for this event.
        """
        if not self.notifiers:
            # no user to tell (nothing bound, mapped or pinned by a device, no arch):
            # the sequence reduces to the checks and the store
            with self.invalidate_lock:
                if not self.notifiers:
                    if check_refcount and event.to_private:
                        index = self._elevated_refcount(event)
                        if index is not None:
                            raise ConversionError(
                                errno.EAGAIN,
                                max(event.start, index) if clamp_error_index else index)
                    if store is not None:
                        with self.lock:
                            store()
                    return
        # (the locks' own acquire/release: a ``with`` of two locks costs four Python-level
        # look-ups of __enter__/__exit__ on every invalidation)
        iommu_lock, invalidate_lock = self.kernel.iommu_lock, self.invalidate_lock
        iommu_lock.acquire()
        try:
            invalidate_lock.acquire()
            try:
                vetoes, begins, commits, ends = self._steps
                if vetoes and not vetoed:
                    self.veto_check(event)
                for n in begins:
                    n.invalidate_begin(event)
                try:
                    if check_refcount and event.to_private:
                        index = self._elevated_refcount(event)
                        if index is not None:
                            raise ConversionError(errno.EAGAIN, max(event.start, index)
                                                  if clamp_error_index else index)
                    for n in commits:
                        n.invalidate_commit(event)
                    if store is not None:
                        lock = self.lock
                        lock.acquire()
                        try:
                            store()
                        finally:
                            lock.release()
                except BaseException as e:
                    event.failed = getattr(e, "errno", None) or errno.EIO
                    for n in ends:
                        n.invalidate_end(event)
                    raise
                for n in ends:
                    n.invalidate_end(event)
            finally:
                invalidate_lock.release()
        finally:
            iommu_lock.release()

    def _elevated_refcount(self, event):
        """The first page of ``event`` with an elevated refcount, or None; the
        "gmem.refcount" failure point (kmock.faults) stands for a transient reference."""
        index = first_elevated_refcount(self, event.start, event.end)
        if index is None and self.kernel.faults.should_fail("gmem.refcount", errno.EAGAIN):
            return event.start
        return index

    # --- public queries (what other rooms may read) ---------------------------------------------

    @property
    def vmtype(self):
        """The VM type of the VM that created this guest_memfd."""
        return self.vm.vmtype

    def is_private(self, index):
        """Is page ``index`` private (the host may not fault it)?"""
        return bool(self.attrs.get(index) & PRIVATE)

    def is_poisoned(self, index):
        return self.poisoned is not None and bool(self.poisoned.get(index))

    def first_poisoned(self, start, end):
        """The first poisoned page of [start, end), or None."""
        if self.poisoned is None:
            return None
        i = self.poisoned.find_not(start, end, 0)
        return None if i == -1 else i

    def private_runs(self, start, end):
        """(s, e, private) runs of pages [start, end)."""
        return [(s, e, bool(v & PRIVATE)) for s, e, v in self.attrs.ranges(start, end)]

    def pfn(self, index):
        """The physical frame of page ``index`` (allocated or not)."""
        return self.pfn_base + index

    def convert(self, start, end, to_private, clamp_error_index=True):
        """Convert pages [start, end) (the in-place conversion UAPIs); raises
        ConversionError and changes nothing when refused."""
        target = PRIVATE if to_private else 0
        attrs = self.attrs
        if attrs.find_not(start, end, target) == -1:
            return  # the range already has these attributes: nothing is invalidated
        ev = InvalidateEvent(self, start, end, "convert_private" if to_private else "convert_shared",
                             to_private)

        def store():
            attrs.set(start, end, target)
            if not to_private:
                self.unprepare(start, end)
            if self.folio_pages > 1:
                restructure_folios(self, start, end, to_private)

        self.invalidate(ev, store, check_refcount=True, clamp_error_index=clamp_error_index)

    # --- pins -----------------------------------------------------------------------------------

    def set_folio_pages(self, n):
        self.folio_pages = n
        self.split = RangeMap((self.npages + n - 1) // n)

    def folio_split(self, folio):
        return self.split is None or bool(self.split.get(folio))

    def pin(self, start, end, delta):
        """Add ``delta`` to the pin count of pages [start, end) (a loop over runs, not pages)."""
        with self.lock:
            if self.pins is None:
                self.pins = RangeMap(self.npages)
            for s, e, v in list(self.pins.ranges(start, end)):
                self.pins.set(s, e, v + delta)

    def take_pin(self, start, end):
        """Pin pages [start, end); returns what ``drop_pin`` needs to undo exactly this pin."""
        with self.invalidate_lock:
            self.pin(start, end, 1)
            if self.pin_gen is None:
                return ((start, end, 0),)
            return tuple(self.pin_gen.ranges(start, end))

    def drop_pin(self, runs):
        """Drop a pin taken by ``take_pin``, except on pages PUNCH_HOLE orphaned since:
        the pinned folio left the file then, and the page there now is another one."""
        with self.invalidate_lock:
            for s, e, g in runs:
                if self.pin_gen is None:
                    self.pin(s, e, -1)
                    continue
                for cs, ce, cg in list(self.pin_gen.ranges(s, e)):
                    if cg == g:
                        self.pin(cs, ce, -1)

    def pinned_page_bytes(self, runs, index):
        """For a pin taken by ``take_pin``: the bytes page ``index`` held when PUNCH_HOLE
        orphaned it, or None while the file still holds the pinned page."""
        if self.pin_gen is None:
            return None
        for s, e, g in runs:
            if s <= index < e:
                if self.pin_gen.get(index) != g:
                    return self.orphans.get((g, index))
                return None
        return None

    # --- bindings (kvm_gmem_bind / kvm_gmem_unbind) -------------------------------------

    def range_bound(self, start, end):
        return self.bindings is not None and self.bindings.find_not(start, end, 0) != -1

    def bind(self, slot, start, end, notifier):
        """Bind pages [start, end) to ``slot``; ``notifier`` is the binding's user."""
        with self.invalidate_lock:
            if self.bindings is None:
                self.bindings = RangeMap(BINDING_SPACE)
            token = self._next_token
            self._next_token += 1
            self.bindings.set(start, end, token)
            self.slots[token] = slot
            self.register_notifier(notifier)
            return token

    def unbind(self, token, start, end, notifier):
        with self.invalidate_lock:
            if self.slots.pop(token, None) is not None:
                self.bindings.set(start, end, 0)
            self.unregister_notifier(notifier)

    def bound_slots(self, start, end):
        """The memslots (of any VM) bound to some page of [start, end)."""
        if self.bindings is None or not self.slots:
            return ()
        tokens = {v for _, _, v in self.bindings.ranges(start, end) if v}
        return [self.slots[t] for t in tokens if t in self.slots]

    def slot_at(self, index):
        """The memslot bound to page ``index``, or None."""
        if self.bindings is None:
            return None
        return self.slots.get(self.bindings.get(index))

    # --- contents -------------------------------------------------------------------------

    def punch_hole(self, start, end):
        """kvm_gmem_punch_hole over page indexes [start, end) (already clipped to the file).

        guest_memfd cannot change size (setattr is EINVAL), so this is also its truncate."""
        if not self.notifiers:
            lock = self.lock
            lock.acquire()  # (no ``with``: an RLock's costs two method look-ups more)
            try:
                if not self.notifiers:  # no user to tell: just the store
                    if (self.prepared is None and self.pins is None and not self.maybe_dirty
                            and not self.mappings):
                        self.allocated.set(start, end, 0)  # (_remove_pages, nothing else to do)
                        return
                    self._remove_pages(start, end)
                    return
            finally:
                lock.release()
        # (a partial, not a lambda: one Python call less per PUNCH_HOLE)
        self.invalidate(InvalidateEvent(self, start, end, "punch_hole"),
                        partial(self._remove_pages, start, end))

    def _remove_pages(self, start, end):
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

    def memory_failure(self, index):
        """memory_failure() on page ``index``: guest use gets EHWPOISON, host use SIGBUS.

        guest_memfd's error_remove_folio invalidates the page but does not truncate it.
        """
        def store():
            if self.poisoned is None:
                self.poisoned = RangeMap(self.npages)
            self.poisoned.set(index, index + 1, 1)

        self.invalidate(InvalidateEvent(self, index, index + 1, "memory_failure"), store)

    def allocate(self, start, end):
        """fallocate without PUNCH_HOLE: pages [start, end) get folios."""
        lock = self.lock
        lock.acquire()
        try:
            self.allocated.set(start, end, 1)
        finally:
            lock.release()

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
            lock = self.lock
            lock.acquire()
            try:
                self.allocated.set(index, index + 1, 1)
            finally:
                lock.release()
        return self.pfn_base + index

    def prepare_private(self, start, end):
        """The guest uses pages [start, end) as private memory: on first use the
        architecture's make_private runs (lazily, as kvm_gmem_get_pfn calls
        kvm_arch_gmem_make_private), once per run of not-yet-prepared pages.
        Forgotten on PUNCH_HOLE and to-shared conversion."""
        vm = self.vm
        lock = self.lock
        lock.acquire()
        try:
            prepared = self.prepared
            if prepared is None:
                prepared = self.prepared = RangeMap(self.npages)
                todo = [(start, end)]
            elif prepared.find(start, end, 0) == -1:
                return  # every page is prepared already
            elif prepared.find_not(start, end, 0) == -1:
                todo = [(start, end)]  # no page is prepared (the usual 4K fault)
            else:
                todo = [(s, e) for s, e, v in prepared.ranges(start, end) if not v]
            prepared.set(start, end, 1)
        finally:
            lock.release()
        if vm is None or not vm.vmtype.has_make_private:
            return
        for i, (s, e) in enumerate(todo):
            try:
                vm.vmtype.gmem_make_private(vm, self, s, e, self.pfn_base + s)
            except OSError as exc:
                # kvm_gmem_get_pfn: a folio whose prepare failed is not marked prepared
                # (and is prepared again at its next use); the fault fails with the error
                bad = getattr(exc, "index", None)
                if bad is None or not s <= bad < e:
                    bad = exc.index = s
                with self.lock:
                    self.prepared.set(bad, e, 0)
                    for s2, e2 in todo[i + 1:]:
                        self.prepared.set(s2, e2, 0)
                raise

    def mark_prepared(self, start, end):
        """Pages [start, end) hold their private contents (kvm_gmem_mark_prepared)."""
        if start >= end:
            return
        with self.lock:
            if self.prepared is None:
                self.prepared = RangeMap(self.npages)
            self.prepared.set(start, end, 1)

    def unprepare(self, start, end):
        if self.prepared is not None:
            self.prepared.set(start, end, 0)

    def read(self, offset, n):
        """Bytes of the file as the guest (or the kernel's direct map) sees them."""
        data = os.pread(self.backing, n, offset)
        if len(data) < n:  # one read(2) returns at most 0x7ffff000 bytes: go on
            parts = [data]
            got = len(data)
            while got < n:
                chunk = os.pread(self.backing, n - got, offset + got)
                if not chunk:
                    break  # end of file
                parts.append(chunk)
                got += len(chunk)
            data = b"".join(parts)
        return data

    def write(self, offset, data):
        self.maybe_dirty = True
        done = os.pwrite(self.backing, data, offset)
        if done < len(data):  # at most 0x7ffff000 bytes per write(2)
            view = memoryview(data)
            while done < len(data):
                done += os.pwrite(self.backing, view[done:], offset + done)

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

    def host_faulting_runs(self, start, end):
        """(s, e, fault) runs over pages [start, end): where a host fault would SIGBUS
        (private or poisoned pages)."""
        runs = [(s, e, bool(v & PRIVATE)) for s, e, v in self.attrs.ranges(start, end)]
        if self.poisoned is None or self.poisoned.find_not(start, end, 0) == -1:
            return runs
        out = []
        for s, e, f in runs:
            if f:
                out.append((s, e, True))
                continue
            for ps, pe, pv in self.poisoned.ranges(s, e):
                out.append((ps, pe, bool(pv)))
        return out

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


class GmemFile(File):
    """The guest_memfd file (anon_inode "[kvm-gmem]"); holds a reference on its VM."""

    file_type = "gmem"
    i_mode = stat.S_IFREG | stat.S_IRUSR | stat.S_IWUSR
    cloexec = False  # created with get_unused_fd_flags(0)

    def __init__(self, kernel, vm, inode):
        self.kernel = kernel
        self.refs = 0
        # (File.__init__, inlined; the VM holds its VM type's tables, which have "gmem"
        # when the Kernel knows the VM type: kernel.ioctl_table without its look-ups)
        tables = vm.ioctl_tables
        self.ioctls = tables["gmem"] if "gmem" in tables else kernel.ioctl_table("gmem", vm.vmtype)
        self.vm = vm
        self.inode = inode
        vm.get()

    def release(self):
        """kvm_gmem_release: invalidate everything, unbind every slot (the slots stay,
        pointing at nothing), give the memory back, drop the VM."""
        inode = self.inode
        if inode.notifiers:
            _release_users(inode)
            entry = inode._backing_entry
        else:  # nothing bound, mapped or watching: nothing to invalidate
            if inode.orphans:
                inode.orphans.clear()
            e = inode._backing_entry
            # no user is registered (none holds a page state): the next inode of
            # this size reuses its maps
            entry = (e[0], e[1], e[2], e[3], (inode.attrs, inode.allocated))
        pool = self.kernel.gmem_backing
        pool.give(entry, inode.maybe_dirty)
        inode.backing = -1
        self.vm.put()

    # --- file operations (kvm_gmem_fops: mmap, open, release, fallocate; setattr EINVAL) ---

    def fstat(self):
        """A new inode per file (anon_inode_create_getfile): S_IFREG, i_size, owned by
        the caller (alloc_anon_inode: current_fsuid/fsgid; read at fstat here), no
        i_blocks accounting."""
        i = self.inode
        return make_stat(self.i_mode, size=i.size, ino=i.ino, dev=ANON_INODE_DEV,
                         uid=os.geteuid(), gid=os.getegid(), times=(i.atime, i.mtime, i.mtime))

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
            inode.mtime = _now()  # file_modified (also for a punch past EOF: it returns 0)
            return None
        if offset + length > inode.size:
            raise oserror(errno.EINVAL)  # "Dedicated guest is immutable by default"
        inode.allocate(start, (offset + length) >> PAGE_SHIFT)
        inode.mtime = _now()  # file_modified
        return None

    def mmap(self, length, prot, flags, offset):
        """do_mmap's checks (an S_IFREG inode on the SB_I_NOEXEC anon_inode mount, no
        FOP_MMAP_SYNC), then kvm_gmem_mmap: ENODEV without GUEST_MEMFD_FLAG_MMAP, EINVAL
        unless MAP_SHARED."""
        check_mmap_args(length, prot, flags, offset, self.i_mode)
        inode = self.inode
        if not self.kernel.gmem_model.mmap_allowed(inode):
            raise oserror(errno.ENODEV)
        if flags & _libc.MAP_TYPE == _libc.MAP_PRIVATE:
            raise oserror(errno.EINVAL)
        from .gmem_mapping import GmemMapping

        # do_mmap: VM_LOCKED, or MAP_POPULATE without MAP_NONBLOCK, populates
        populate = bool(flags & MAP_LOCKED) or flags & (MAP_POPULATE | MAP_NONBLOCK) == MAP_POPULATE
        return GmemMapping(self, length, prot, offset, populate)


class ArchNotifier(GmemNotifier):
    """The architecture of the VM that created a guest_memfd, as one of its users.

    Registered only when the VM type implements a guest_memfd callback, so the
    software-only VM types cost nothing here. Calls the VM type's methods (see
    kmock.kvm.vmtype.VmType): ``gmem_veto``, ``gmem_invalidate`` (the arch step of
    every event) and, on to-shared conversion, ``gmem_make_shared`` per run of
    allocated pages.
    """

    def __new__(cls, vm):
        if cls is ArchNotifier and type(vm.vmtype).gmem_veto is VmType.gmem_veto:
            # the VM type never refuses: no veto step to call (as the VmType has_*
            # flags, decided once from the class)
            cls = _ArchNotifierNoVeto
        return super().__new__(cls)

    def __init__(self, vm):
        self.vm = vm
        vmtype = vm.vmtype
        if type(vmtype).gmem_make_shared is VmType.gmem_make_shared:
            # no make_shared step: the commit step is the VM type's gmem_invalidate itself
            # (one Python call less per invalidation; the step lists take it from here)
            self.invalidate_commit = partial(vmtype.gmem_invalidate, vm)

    def veto(self, event):
        return self.vm.vmtype.gmem_veto(self.vm, event)

    def invalidate_commit(self, event):
        vm = self.vm
        vmtype = vm.vmtype
        vmtype.gmem_invalidate(vm, event)
        if event.to_private is False and event.reason != "vm_attributes":
            inode = event.inode
            for s, e, v in list(inode.allocated.ranges(event.start, event.end)):
                if v:
                    vmtype.gmem_make_shared(vm, inode, s, e, inode.pfn_base + s)

    def __repr__(self):
        return f"<ArchNotifier {self.vm.vmtype.name}>"


class _ArchNotifierNoVeto(ArchNotifier):
    """An ArchNotifier of a VM type that does not implement gmem_veto."""

    # the base's no-op, which step_lists skips (read from the class dict: compiled, the
    # attribute itself is the C method)
    veto = vars(GmemNotifier)["veto"]


def _release_users(inode):
    """kvm_gmem_release with users registered: invalidate the whole file, unbind every
    slot, unregister every notifier."""
    def store():
        for token, slot in list(inode.slots.items()):
            slot.gmem_file = None
            slot.gmem_token = 0
            inode.unregister_notifier(slot.gmem_notifier)
            slot.gmem_notifier = None
        inode.slots.clear()
        inode.bindings = None
        inode.orphans.clear()

    inode.invalidate(InvalidateEvent(inode, 0, inode.npages, "release"), store)
    for n in list(inode.notifiers):
        inode.unregister_notifier(n)


def create_guest_memfd(vm, size, flags):
    """kvm_gmem_create: the profile's flag and size checks (EINVAL), then a new file."""
    kernel = vm.kernel
    model = kernel.gmem_model
    model.check_create(vm, size, flags)
    vmtype = vm.vmtype
    if vmtype.has_gmem_create:
        vmtype.gmem_create(vm, size, flags)
    faults = kernel.faults
    if faults.armed:  # (Faults.check's own test, without the call when nothing is armed)
        faults.check("gmem.create", _ENOMEM)  # __kvm_gmem_create: kzalloc, inode
    pool = kernel.gmem_backing
    physmem = kernel.physmem
    inode = GmemInode(kernel, size, flags, pool.take(size),
                      physmem.alloc_range(size >> PAGE_SHIFT))
    inode.vm = vm
    model.init_inode(inode)
    if vmtype.has_gmem_callbacks:
        inode.register_notifier(ArchNotifier(vm))
    return GmemFile(kernel, vm, inode)
