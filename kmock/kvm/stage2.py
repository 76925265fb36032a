"""Stage-2 (the TDP MMU) of one VM, and the guest fault path that fills it.

``Stage2`` is a ``kmock.mm.PageTable`` (leaves 4K, 2M, 1G) keyed by guest physical
address. An entry maps a gfn run to frames with permission bits:

``PERM_R`` (1), ``PERM_W`` (2)
    readable / writable (a read-only memslot maps without W).
``PERM_PRIVATE`` (0x10)
    the entry was made by a private fault (its frames are guest_memfd pages, the
    kernel's "private SPTE"); without it the entry is shared.

Frames:

* guest_memfd pages: ``inode.get_pfn(index)``, i.e. ``inode.pfn_base + index``.
* userspace (``userspace_addr``) pages: ``kmock.physmem.user_pfn(hva)``, i.e.
  ``USER_PFN_BASE | (hva >> 12)``; ``user_hva(pfn)`` decodes it. Every page table
  of the Kernel uses this one frame space (kmock.physmem).

Leaf sizes: guest_memfd mappings are 4K leaves (6.18 guest_memfd allocates order-0
folios, so ``kvm_gmem_get_pfn`` reports max_order 0); userspace mappings use the
largest leaves the alignment of gpa and hva allows, as for THP-backed memory.

The fault path (``faultin``) mirrors ``kvm_mmu_faultin_pfn`` for a run of gfns, on
ranges (memslot by memslot, attribute run by attribute run), and raises
``MemoryFault`` (an OSError carrying the ``KVM_EXIT_MEMORY_FAULT`` payload) where
KVM would prepare a memory-fault exit. Its order, per run:

1. the access kind (``vmtype.access_is_private``) differs from the gfn's attribute
   (``vm.gfn_is_private``) -> memory fault, flags PRIVATE if the access was, EFAULT;
2. no memslot: a private access -> memory fault (EFAULT); a shared one is emulated
   MMIO (``kvm_handle_noslot_fault``);
3. private, or a gmem-only slot (6.18: guest_memfd with GUEST_MEMFD_FLAG_MMAP; with
   in-place conversion: a guest_memfd that holds its shared pages): the slot has
   no guest_memfd -> memory fault (EFAULT); ``get_pfn`` fails -> memory fault with
   its errno (EFAULT closed file, EHWPOISON poisoned page; EIO for an index past
   the end of the file, which only the 6.18 offset-overflow binding can produce);
4. shared: the userspace address must be readable (``process_vm_readv``; a short copy
   is the kernel's failed ``hva_to_pfn``) -> else memory fault, flags 0, EFAULT. A
   write to a KVM_MEM_READONLY slot is emulated MMIO (KVM_PFN_ERR_RO_FAULT).

Pages before the faulting one are mapped, as KVM maps each page it faulted in before
the next fault exits. Stage-2 is never consulted to skip these checks: every guest
access takes the slow path, whose result equals the fast one because zaps keep
stage-2 coherent.

Known limit: the mock has no MMU notifier on the VMM's own memory, so munmap of a
memslot's userspace memory does not zap the userspace entries; guest accesses read
the hva at access time regardless.
"""

import array
import ctypes
import errno
import struct

from .. import _libc
from ..mm import PageTable
from ..physmem import USER_PFN_BASE, user_hva, user_pfn  # noqa: F401 (re-exported)
from ..uapi import kvm as K
from . import dirty_log

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
LEVELS = (PAGE_SIZE, 2 << 20, 1 << 30)

PERM_R = 0x1
PERM_W = 0x2
PERM_PRIVATE = 0x10

_PROBE_CHUNK = 1 << 20

_EXIT_MEMORY_FAULT = K.KVM_EXIT_MEMORY_FAULT
#: kvm_run.memory_fault: flags, gpa, size
_MEMORY_FAULT = struct.Struct("=QQQ")
_MEMORY_FAULT_OFFSET = K.kvm_run.memory_fault.offset


class MemoryFault(OSError):
    """A fault KVM turns into KVM_EXIT_MEMORY_FAULT; ``errno`` is KVM_RUN's errno.

    ``gpa`` is page aligned, ``flags`` is KVM_MEMORY_EXIT_FLAG_PRIVATE for a private
    access, ``done`` the pages of the faulting range handled before this one.
    """

    # (slots: stored without a dict insertion each, at every memory-fault exit)
    __slots__ = ("gfn", "gpa", "size", "private", "flags", "done")

    def __init__(self, err, gfn, private, done=0):
        gpa = gfn << PAGE_SHIFT
        # (hex(gpa) is f"{gpa:#x}" for a gpa >= 0, at a fraction of the format's cost)
        OSError.__init__(self, err, f"KVM_EXIT_MEMORY_FAULT at gpa "
                                    f"{hex(gpa) if gpa >= 0 else format(gpa, '#x')}"
                                    f"{' (private)' if private else ''}")
        self.gfn = gfn
        self.gpa = gpa
        self.size = PAGE_SIZE
        self.private = private
        self.flags = K.KVM_MEMORY_EXIT_FLAG_PRIVATE if private else 0
        self.done = done

    def fill(self, run):
        """kvm_prepare_memory_fault_exit: write the exit into ``run`` (a kvm_run).

        run->memory_fault's three u64s are packed in one call (three ctypes field writes
        cost three times as much); a value outside the u64 range is taken modulo 2**64,
        as a ctypes field takes it."""
        run.exit_reason = _EXIT_MEMORY_FAULT
        try:
            _MEMORY_FAULT.pack_into(run, _MEMORY_FAULT_OFFSET, self.flags, self.gpa, self.size)
        except struct.error:
            mf = run.memory_fault
            mf.flags = self.flags
            mf.gpa = self.gpa
            mf.size = self.size


class Stage2:
    """One VM's stage-2 page table: gfn runs -> (frame, private, writable).

    When the VM's type implements ``stage2_map`` / ``stage2_zap`` (S-EPT AUG and
    removal, RMP, RTT), each map and each zap calls it once with the runs, never per
    page. Changes are made under the VM's mmu_lock.
    """

    def __init__(self, vm=None):
        self.pt = PageTable(LEVELS)
        self.vm = vm

    # --- changes -----------------------------------------------------------------------

    def map(self, gfn, pfn, npages, private, writable=True, leaf_size=None):
        """Map gfns [gfn, gfn + npages) to frames pfn.. (replacing what was there)."""
        if npages <= 0:
            return
        perm = PERM_R | (PERM_W if writable else 0) | (PERM_PRIVATE if private else 0)
        iova = gfn << PAGE_SHIFT
        pt = self.pt
        old = pt.runs(iova, iova + (npages << PAGE_SHIFT))
        if old:
            if len(old) == 1 and old[0] == (iova, pfn, npages, perm):
                return  # already mapped exactly so (a spurious fault)
            removed = pt.unmap(iova, npages)
            self._zapped(removed)
        pt.map(iova, pfn, npages, perm, leaf_size)
        vm = self.vm
        if vm is None:
            return
        vmtype = vm.vmtype
        if vmtype.has_stage2_hooks:
            try:
                vmtype.stage2_map(vm, gfn, pfn, npages, bool(private))
            except BaseException:
                # the architecture refused (a failed S-EPT AUG, RTT map ...): the fault
                # fails and KVM installs no SPTE, so the new mapping goes (unheard: the
                # VM type undid its own part before raising)
                pt.unmap(iova, npages)
                raise

    def _zapped(self, removed):
        """The removed PageTable runs as (gfn, pfn, npages, private, writable) entries;
        the VM type's ``stage2_zap`` hears of them (once, when there are any)."""
        if not removed:
            return []
        # (_entry, inlined)
        entries = [(iova >> PAGE_SHIFT, pfn, n, bool(perm & PERM_PRIVATE), bool(perm & PERM_W))
                   for iova, pfn, n, perm in removed]
        vm = self.vm
        if vm is not None:
            vmtype = vm.vmtype
            if vmtype.has_stage2_hooks:
                vmtype.stage2_zap(vm, list(entries))
        return entries

    def zap(self, start, end, kind=None, entries=True):
        """Unmap gfns [start, end) of ``kind`` ("shared", "private", None = both).

        Returns the removed (gfn, pfn, npages, private, writable) runs; with
        ``entries=False`` returns None (the runs are then built only for the VM type's
        ``stage2_zap``: the invalidation's zap reads nothing back).
        """
        if end <= start:
            return [] if entries else None
        pt = self.pt
        lo, hi = start << PAGE_SHIFT, end << PAGE_SHIFT
        if kind is None:
            removed = pt.unmap(lo, end - start)
        elif kind in ("shared", "private"):
            want = PERM_PRIVATE if kind == "private" else 0
            removed = None
            for iova, pfn, n, perm in pt.runs(lo, hi):
                if perm & PERM_PRIVATE == want:
                    if removed is None:
                        removed = pt.unmap(iova, n)  # (a new list: extended in place below)
                    else:
                        removed.extend(pt.unmap(iova, n))
        else:
            raise ValueError(f"zap kind must be 'shared', 'private' or None, not {kind!r}")
        if not removed:
            return [] if entries else None
        if entries:
            return self._zapped(removed)
        vm = self.vm
        if vm is not None and vm.vmtype.has_stage2_hooks:
            self._zapped(removed)
        return None

    def clear(self):
        self.pt = PageTable(LEVELS)

    # --- inspection ----------------------------------------------------------------------

    def lookup(self, gfn):
        """(pfn, private, writable) of ``gfn``, or None if unmapped."""
        r = self.pt.lookup(gfn << PAGE_SHIFT)
        if r is None:
            return None
        pfn, perm, _ = r
        return pfn, bool(perm & PERM_PRIVATE), bool(perm & PERM_W)

    def leaf_size(self, gfn):
        r = self.pt.lookup(gfn << PAGE_SHIFT)
        return None if r is None else r[2]

    def entries(self, start=0, end=None):
        """Mapped runs (gfn, pfn, npages, private, writable) in gfns [start, end)."""
        hi = None if end is None else end << PAGE_SHIFT
        return [_entry(r) for r in self.pt.runs(start << PAGE_SHIFT, hi)]

    def mapped_pages(self):
        return self.pt.mapped_pages()

    def counts(self):
        """Leaf size -> number of leaves."""
        return self.pt.counts()

    def __repr__(self):
        return f"<Stage2 {self.pt.mapped_pages()} pages {self.pt.counts()}>"

    # --- invariants (for tests) --------------------------------------------------------

    def audit(self, vm):
        """Every way stage-2 disagrees with the VM, as a list of strings (empty = coherent).

        Checks, run by run: the gfns are in a memslot; the entry's kind is the gfns'
        attribute (``vm.gfn_is_private``); a guest_memfd entry points at allocated pages
        of the slot's guest_memfd at the binding's offsets; a userspace entry at the
        slot's ``userspace_addr`` pages; a writable entry is not in a read-only slot.
        """
        problems = []
        for gfn, pfn, n, private, writable in self.entries():
            end = gfn + n
            g = gfn
            while g < end:
                slot = vm.lookup_memslot(g)
                if slot is None:
                    problems.append(f"gfn {g:#x}: mapped outside any memslot")
                    break
                hi = min(end, slot.end_gfn)
                for s, e, attr in private_runs(vm, slot, g, hi):
                    if attr != private:
                        problems.append(f"gfns {s:#x}-{e:#x}: {'private' if private else 'shared'}"
                                        f" entry where the attribute is "
                                        f"{'private' if attr else 'shared'}")
                p = pfn + (g - gfn)
                if private or _gmem_only(slot):
                    f = slot.gmem_file
                    if f is None:
                        problems.append(f"gfn {g:#x}: gmem entry in a slot without guest_memfd")
                    else:
                        inode = f.inode
                        idx = slot.gmem_pgoff + g - slot.base_gfn
                        if p != inode.pfn_base + idx:
                            problems.append(f"gfn {g:#x}: pfn {p:#x} is not gmem page {idx}")
                        elif inode.allocated.find(idx, idx + hi - g, 0) != -1:
                            problems.append(f"gfns {g:#x}-{hi:#x}: maps unallocated gmem pages")
                else:
                    hva = slot.userspace_addr + ((g - slot.base_gfn) << PAGE_SHIFT)
                    if p != user_pfn(hva):
                        problems.append(f"gfn {g:#x}: pfn {p:#x} is not hva {hva:#x}")
                    if writable and slot.flags & K.KVM_MEM_READONLY:
                        problems.append(f"gfn {g:#x}: writable entry in a read-only slot")
                g = hi
        return problems


def _entry(r):
    iova, pfn, n, perm = r
    return iova >> PAGE_SHIFT, pfn, n, bool(perm & PERM_PRIVATE), bool(perm & PERM_W)


# --- attribute runs ----------------------------------------------------------------------


_PRIVATE = K.KVM_MEMORY_ATTRIBUTE_PRIVATE


def private_runs(vm, slot, start, end):
    """Runs (s, e, private) over gfns [start, end) of ``slot``, as vm.gfn_is_private says.

    The range form of ``kvm_mem_is_private``: the guest_memfd's own attribute where an
    in-place-conversion profile makes it authoritative, else the VM attribute array.
    """
    priv = _PRIVATE
    rm, delta = vm.mem_attrs, 0
    if slot is not None:
        f = slot.gmem_file
        # (the inode's in_place first: it is False outside the in-place conversion
        # profiles, and cheaper to read than the profile)
        if f is not None:
            inode = f.inode
            if inode.in_place and vm.kernel.profile.conversion != "none":
                rm, delta = inode.attrs, slot.gmem_pgoff - slot.base_gfn
    if end - start == 1:
        # one page (every 4K access): its value, without the ranges generator
        try:
            v = rm.get(start + delta)
        except IndexError:
            pass  # (beyond the map: ranges below raises its own IndexError)
        else:
            return [(start, end, bool(v & priv))]
    return [(s - delta, e - delta, bool(v & priv))
            for s, e, v in rm.ranges(start + delta, end + delta)]


def _gmem_only(slot):
    """kvm_memslot_is_gmem_only: guest faults are always served from guest_memfd.

    The profile's guest_memfd model decides (6.18: GUEST_MEMFD_FLAG_MMAP; in-place
    conversion profiles: a guest_memfd that holds shared pages itself).
    """
    f = slot.gmem_file
    if f is None:
        return False
    inode = f.inode
    model = getattr(inode.kernel, "gmem_model", None)
    if model is not None:
        return bool(model.gmem_only(inode))
    return bool(inode.flags & K.GUEST_MEMFD_FLAG_MMAP)


def gmem_get_pfns(inode, index, n):
    """kvm_gmem_get_pfn for pages [index, index + n): the first frame (they are contiguous).

    Allocates the pages. Raises OSError at the first page that cannot be had; its
    ``index`` attribute names that page.
    """
    if index + n > inode.npages:
        e = OSError(errno.EIO, "guest_memfd index beyond the file")
        e.index = max(index, inode.npages)
        raise e
    try:
        pfn = inode.get_pfn(index)  # file-level errors, and page ``index`` itself
    except OSError as e:
        e.index = index
        raise
    if n == 1:
        return pfn  # (get_pfn checked and allocated the only page)
    if inode.poisoned is not None:
        bad = inode.poisoned.find_not(index, index + n, 0)
        if bad != -1:
            inode.allocated.set(index, bad, 1)
            try:
                inode.get_pfn(bad)
            except OSError as e:
                e.index = bad
                raise
    inode.allocated.set(index, index + n, 1)
    return pfn


_libc_so = ctypes.CDLL(None, use_errno=True)
_process_vm_readv = _libc_so.process_vm_readv
_process_vm_readv.restype = ctypes.c_ssize_t
_process_vm_readv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p,
                              ctypes.c_ulong, ctypes.c_ulong]
_IOV_MAX = 1024


def probe_user(hva, nbytes):
    """How many bytes from ``hva`` the kernel could fault in (hva_to_pfn, for reading).

    Small ranges are read whole; large ones one byte per page, through
    process_vm_readv with one iovec per page (built in C by array slicing, up to
    IOV_MAX pages per call), which stops at the first page that faults.
    """
    if nbytes <= _PROBE_CHUNK:
        return _libc.read_user(hva, nbytes)[1]
    end = hva + nbytes
    first = hva & ~(PAGE_SIZE - 1)
    npages = (end - first + PAGE_SIZE - 1) >> PAGE_SHIFT
    pid = _libc.current_pid()
    local = ctypes.create_string_buffer(_IOV_MAX)
    liov = array.array("Q", (ctypes.addressof(local), _IOV_MAX))
    done_pages = 0
    while done_pages < npages:
        n = min(_IOV_MAX, npages - done_pages)
        base = first + (done_pages << PAGE_SHIFT)
        riov = array.array("Q", bytes(16 * n))
        riov[0::2] = array.array("Q", range(base, base + (n << PAGE_SHIFT), PAGE_SIZE))
        riov[1::2] = array.array("Q", [1]) * n
        liov[1] = n
        got = _process_vm_readv(pid, liov.buffer_info()[0], 1, riov.buffer_info()[0], n, 0)
        got = max(got, 0)
        done_pages += got
        if got < n:
            break
    return max(0, min(nbytes, (first + (done_pages << PAGE_SHIFT)) - hva))


# --- the fault path -------------------------------------------------------------------------


class Segment:
    """A run of an access resolved by ``faultin``.

    ``kind``: "gmem" (``inode``, byte ``offset`` of the first byte), "user" (``hva``
    of the first byte; ``data`` holds the bytes read for a read access) or "mmio".
    ``gpa`` and ``length`` are bytes.
    """

    __slots__ = ("kind", "gpa", "length", "inode", "offset", "hva", "data", "gfn", "npages")

    def __init__(self, kind, gpa, length, gfn, npages, inode=None, offset=0, hva=0, data=None):
        self.kind = kind
        self.gpa = gpa
        self.length = length
        self.gfn = gfn
        self.npages = npages
        self.inode = inode
        self.offset = offset
        self.hva = hva
        self.data = data

    def __repr__(self):
        return f"<Segment {self.kind} gpa {self.gpa:#x}+{self.length:#x}>"


def faultin(vm, gpa, end, requested, write, want_data=True):
    """Resolve guest accesses to bytes [gpa, end), mapping what gets faulted in.

    ``requested``: the guest's private/shared choice, or None to let the VM type
    decide. ``want_data``: for a shared read of userspace memory keep the bytes read
    by the probe (``Segment.data``). Returns the segments in address order, or raises
    MemoryFault at the first page that needs a memory-fault exit (``done`` = pages of
    the range before it).
    """
    stage2 = vm.stage2
    vmtype = vm.vmtype
    first = gpa >> PAGE_SHIFT
    gfn = first
    last = (end + PAGE_SIZE - 1) >> PAGE_SHIFT
    segs = []
    while gfn < last:
        slot = vm.lookup_memslot(gfn)
        if slot is None:
            private = bool(vmtype.access_is_private(vm, gfn, requested))
            if private != vm.gfn_is_private(gfn):
                raise MemoryFault(errno.EFAULT, gfn, private, gfn - first)
            if private:
                raise MemoryFault(errno.EFAULT, gfn, private, gfn - first)
            lo, hi = max(gpa, gfn << PAGE_SHIFT), min(end, (gfn + 1) << PAGE_SHIFT)
            segs.append(Segment("mmio", lo, hi - lo, gfn, 1))
            gfn += 1
            continue
        slot_end = slot.base_gfn + slot.npages  # (min(last, slot.end_gfn))
        if last < slot_end:
            slot_end = last
        for s, e, attr in private_runs(vm, slot, gfn, slot_end):
            private = bool(vmtype.access_is_private(vm, s, requested))
            if private != attr:
                raise MemoryFault(errno.EFAULT, s, private, s - first)
            lo = s << PAGE_SHIFT
            if gpa > lo:
                lo = gpa
            hi = e << PAGE_SHIFT
            if end < hi:
                hi = end
            n = e - s
            if private or _gmem_only(slot):
                f = slot.gmem_file
                if f is None:
                    raise MemoryFault(errno.EFAULT, s, private, s - first)
                inode = f.inode
                index = slot.gmem_pgoff + s - slot.base_gfn
                try:
                    pfn = gmem_get_pfns(inode, index, n)
                    if private:
                        inode.prepare_private(index, index + n)
                except OSError as exc:
                    # the pages before the one that failed are faulted in; KVM_RUN fails
                    # with the error and a KVM_EXIT_MEMORY_FAULT at that page
                    bad = s + getattr(exc, "index", index) - index
                    if bad > s:
                        stage2.map(s, inode.pfn_base + index, bad - s, private, True, PAGE_SIZE)
                    raise MemoryFault(exc.errno, bad, private, bad - first) from None
                stage2.map(s, pfn, n, private, True, PAGE_SIZE)
                # (inode and offset by position: a call without keywords costs less)
                segs.append(Segment("gmem", lo, hi - lo, s, n, inode,
                                    (index << PAGE_SHIFT) + (lo - (s << PAGE_SHIFT))))
                continue
            # shared, served from the memslot's userspace memory
            readonly = bool(slot.flags & K.KVM_MEM_READONLY)
            if write and readonly:
                segs.append(Segment("mmio", lo, hi - lo, s, n))  # KVM_PFN_ERR_RO_FAULT: emulate
                continue
            hva0 = slot.userspace_addr + ((s - slot.base_gfn) << PAGE_SHIFT)
            hva = hva0 + (lo - (s << PAGE_SHIFT))
            if want_data:
                data, got = _libc.read_user(hva, hi - lo)
            else:
                data, got = None, probe_user(hva, hi - lo)
            if got < hi - lo:
                bad = (lo + got) >> PAGE_SHIFT
                if bad > s:
                    stage2.map(s, user_pfn(hva0), bad - s, False, not readonly)
                raise MemoryFault(errno.EFAULT, bad, False, bad - first)
            stage2.map(s, user_pfn(hva0), n, False, not readonly)
            if write:
                dirty_log.mark(slot, s, n)  # mark_page_dirty_in_slot, per run
            segs.append(Segment("user", lo, hi - lo, s, n, hva=hva, data=data))
        gfn = slot_end
    return segs
