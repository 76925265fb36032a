"""iopt_pages: the memory behind IOAS areas, its frames and its pins.

A Pages object is the memory one IOMMU_IOAS_MAP / MAP_FILE named; IOMMU_IOAS_COPY
shares it. Three kinds:

``user``   a user VA range. Inside a kmock mapping of a guest_memfd it resolves to
           the guest_memfd's frames (and pins them, so conversion sees the pins);
           elsewhere it is process memory, read and written at the VA.
``file``   a memfd (shmem) named by fd + offset; the Pages keeps its own reference
           (a dup of the fd), as iopt_pages holds get_file().
``gmem``   a guest_memfd named by fd + offset (only under a policy that allows it).

Pinning is lazy (iopt: when a domain or an access needs the pages) and counted
once per Pages object, as FOLL_PIN does per page.
"""

import errno
import fcntl
import functools
import os

from .. import _libc
from ..compiled import pure_requested
from ..errors import oserror

if pure_requested():
    def file_identity(fd):
        """(st_dev, st_ino, st_size) of ``fd`` (kmock._fstat's interpreted twin)."""
        st = os.fstat(fd)
        return st.st_dev, st.st_ino, st.st_size
else:
    from .._fstat import identity as file_identity

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
#: pseudo frame numbers (kmock.mm page tables take frames below 2**52): guest_memfd
#: inodes get ranges from 2**18 up, process memory is USER_PFN_BASE + (hva >> 12),
#: shmem files mapped by MAP_FILE get spans from FILE_PFN_BASE up
USER_PFN_BASE = 1 << 48
FILE_PFN_BASE = 1 << 50
F_GET_SEALS = 1034


def user_pfn(hva):
    return USER_PFN_BASE | (hva >> PAGE_SHIFT)


class Pages:
    """Memory of one map call: ``length`` bytes of a user range, a file or a guest_memfd."""

    def __init__(self, kernel, kind, start, length, writable, *, fd=-1, gmem_file=None,
                 mapping=None, file_key=None):
        self.kernel = kernel
        self.memory = kernel.iommu_memory
        self.kind = kind
        self.start = start  # user VA or byte offset in the file
        self.length = length
        self.writable = writable
        self.fd = fd  # our reference on the file ("file" kind; IommuMemory.file_ref)
        self.gmem_file = gmem_file  # the GmemFile ("gmem" kind, or user VA in a gmem mapping)
        self.mapping = mapping
        self.users = 0  # areas sharing these pages
        self.pin_users = 0  # domains that need them pinned (accesses pin on demand)
        self._pin = None
        self._pin_runs = None  # the guest_memfd pin of a "user" kind over a gmem mapping
        if gmem_file is not None:
            gmem_file.get()
        self.file_key = file_key
        self.file_pfn_base = None
        if kind == "file":
            if file_key is None:
                st = os.fstat(fd)
                self.file_key = (st.st_dev, st.st_ino)
            self.file_pfn_base = self.memory._base_for(self.file_key)

    # --- frames ------------------------------------------------------------------------

    @property
    def npages(self):
        """How many pages [start, start + length) touches (a sub-page start or length
        still pins, maps and counts whole pages)."""
        return ((self.start + self.length + PAGE_SIZE - 1) >> PAGE_SHIFT) - (self.start >> PAGE_SHIFT)

    @property
    def inode(self):
        return None if self.gmem_file is None else self.gmem_file.inode

    def first_page(self):
        """Index of the first page in the backing object (file page or gmem page)."""
        if self.kind == "user" and self.gmem_file is not None:
            m = self.mapping
            return (m.offset + (self.start - m.address)) >> PAGE_SHIFT
        return self.start >> PAGE_SHIFT

    def pfn_runs(self, offset, npages):
        """[(page offset, first pfn, npages)] of contiguous frames for ``npages`` pages
        from byte ``offset``. Process memory may change frames at each VMA."""
        if self.gmem_file is not None:
            return [(0, self.inode.pfn_base + self.first_page() + (offset >> PAGE_SHIFT), npages)]
        if self.kind == "file":
            return [(0, self.file_pfn_base + ((self.start + offset) >> PAGE_SHIFT), npages)]
        va = (self.start + offset) & ~(PAGE_SIZE - 1)
        return self.memory.user_pfn_runs(va, npages)

    # --- pins --------------------------------------------------------------------------

    def need_pins(self):
        """A domain or an access needs the pages: pin them on first need (may fail)."""
        if self.pin_users == 0:
            self._pin = self._pin_pages()
        self.pin_users += 1

    def drop_pins(self):
        self.pin_users -= 1
        if self.pin_users == 0 and self._pin is not None:
            pin, self._pin = self._pin, None
            pin()

    @property
    def pinned(self):
        return self.pin_users > 0 and self._pin is not None

    def _pin_pages(self):
        if self.kind == "gmem":
            return _nothing  # rfc-2026-02 / notifier: guest_memfd pins, no refcount
        if self.kind == "file":
            return _nothing  # the memfd's pages: counted in kernel.iommu_memory below
        npages = self.npages
        if self.gmem_file is not None:
            # GUP on a guest_memfd mapping: private pages cannot be pinned
            m = self.mapping
            off = self.start - m.address
            if m.closed or m.fault_at(off, off + self.length) is not None:
                raise oserror(errno.EFAULT)
            inode = self.inode
            lo = self.first_page()
            runs = self._pin_runs = inode.take_pin(lo, lo + npages)
            # drop_pin skips pages a PUNCH_HOLE orphaned meanwhile (their count was reset)
            return functools.partial(inode.drop_pin, runs)
        check_user_range(self.start, self.length, self.writable)
        return _nothing

    def release(self):
        if self.fd >= 0:
            if self.file_key is not None:
                self.memory.file_unref(self.file_key)
            else:
                os.close(self.fd)
            self.fd = -1
        if self.gmem_file is not None:
            self.gmem_file.put()
            self.gmem_file = None

    # --- data for DMA ---------------------------------------------------------------------

    def _orphan(self, offset):
        """The bytes of our pinned guest_memfd page at ``offset`` if PUNCH_HOLE orphaned
        it (the pinner keeps the old folio), else None."""
        runs = self._pin_runs
        if runs is None or not self.pinned:
            return None
        return self.inode.pinned_page_bytes(runs, self.first_page() + (offset >> PAGE_SHIFT))

    def read(self, offset, n):
        if self.gmem_file is not None:
            inode = self.inode
            if not inode.orphans or not self.pinned:  # the common case: one read
                return inode.read((self.first_page() << PAGE_SHIFT) + offset, n)
            out = []  # after a PUNCH_HOLE of pinned pages: the orphans' old bytes
            while n > 0:
                k = min(n, PAGE_SIZE - (offset & (PAGE_SIZE - 1)))
                orphan = self._orphan(offset)
                if orphan is not None:
                    o = offset & (PAGE_SIZE - 1)
                    out.append(orphan[o:o + k])
                else:
                    out.append(inode.read((self.first_page() << PAGE_SHIFT) + offset, k))
                offset += k
                n -= k
            return b"".join(out)
        if self.kind == "file":
            return self.memory.file_read(self, self.start + offset, n)
        data, got = _libc.read_user(self.start + offset, n)
        if got != n:
            raise oserror(errno.EFAULT)
        return data

    def write(self, offset, data):
        if self.gmem_file is not None:
            self.inode.write((self.first_page() << PAGE_SHIFT) + offset, data)
        elif self.kind == "file":
            self.memory.file_write(self, self.start + offset, data)
        elif _libc.write_user(self.start + offset, data) != len(data):
            raise oserror(errno.EFAULT)


def _nothing():
    """The unpin of pages whose pin holds no reference kmock tracks."""


def check_user_range(start, length, writable):
    """GUP: every page of [start, start+length) must be mapped (readable, and writable
    when asked); EFAULT otherwise. Checked against /proc/self/maps, so no page is
    touched."""
    end = start + length
    pos = start
    with open("/proc/self/maps") as f:
        for line in f:
            rng, perms = line.split(None, 2)[:2]
            lo, hi = (int(x, 16) for x in rng.split("-"))
            if hi <= pos:
                continue
            if lo > pos:
                break
            if "r" not in perms or (writable and "w" not in perms):
                raise oserror(errno.EFAULT if not writable else errno.EPERM)
            pos = hi
            if pos >= end:
                return
    raise oserror(errno.EFAULT)


class IommuMemory:
    """Frames of files mapped into IOMMUs, and pages orphaned by a truncate.

    Each shmem inode gets a range of pseudo frames; a pinned page whose file is
    truncated (through the Kernel's API) keeps its bytes here, as a FOLL_PIN'd
    folio outlives truncate_inode_pages.
    """

    FILE_SPAN = 1 << 36

    def __init__(self, kernel):
        self.kernel = kernel
        self._bases = {}
        self._next = FILE_PFN_BASE
        self.orphans = {}  # pfn -> bytes of a pinned page the file no longer holds
        #: (dev, ino) -> [fd, refs]: one get_file() reference (a dup) per shmem file, shared
        #: by the Pages objects that map it; it keeps the inode alive, so its identity and
        #: its shmem-ness need no new look-up while Pages hold it
        self._file_refs = {}
        #: the Pages objects IOAS areas map (MD_CHECK_REFS and truncates look for pins here)
        self.mapped = set()

    def file_pages(self, fd, start, length, writable):
        """IOAS_MAP_FILE's file: a shmem memfd, or a guest_memfd under a policy that
        allows it."""
        kernel = self.kernel
        f = kernel.fdtable.get(fd)
        if f is not None:
            if f.file_type != "gmem" or kernel.profile.iommufd_gmem_policy == "upstream":
                raise oserror(errno.EINVAL)  # neither shmem nor hugetlbfs
            if start + length > f.inode.size or start & (PAGE_SIZE - 1):
                raise oserror(errno.EINVAL)
            return Pages(kernel, "gmem", start, length, writable, gmem_file=f)
        if fd < 0 or fd > 0x7FFFFFFF:
            raise oserror(errno.EBADF)
        try:
            dev, ino, size = file_identity(fd)  # fget(): one look-up gives the inode and the size
        except OSError:
            raise oserror(errno.EBADF) from None
        key = (dev, ino)
        ref = self._file_refs.get(key)
        if ref is None and not self.is_shmem(fd):
            raise oserror(errno.EINVAL)
        if start + length > size:
            raise oserror(errno.EINVAL)
        return Pages(kernel, "file", start, length, writable, fd=self.file_ref(fd, key, ref),
                     file_key=key)

    def area_added(self, area):
        """An IOAS area maps ``area.pages`` now; over guest_memfd pages it becomes one of
        the inode's users (Kernel.iommu_gmem_area_added)."""
        pages = area.pages
        self.mapped.add(pages)
        if pages.gmem_file is not None:
            self.kernel.iommu_gmem_area_added(area)

    def area_removed(self, area):
        """``area`` is gone (its Pages lost the area's use already)."""
        pages = area.pages
        if pages.users == 0:
            self.mapped.discard(pages)
        if pages.gmem_file is not None:
            self.kernel.iommu_gmem_area_removed(area)

    def file_ref(self, fd, key, ref=None):
        """A reference on the open file ``fd`` whose inode is ``key`` (already known to be
        shmem if a reference exists; ``ref``: that reference, when the caller has looked it
        up): returns our fd for it."""
        if ref is None:
            ref = self._file_refs.get(key)
        if ref is None:
            ref = self._file_refs[key] = [os.dup(fd), 0]
        ref[1] += 1
        return ref[0]

    def file_unref(self, key):
        ref = self._file_refs[key]
        ref[1] -= 1
        if ref[1] == 0:
            del self._file_refs[key]
            os.close(ref[0])

    def user_pfn_runs(self, va, npages):
        """Frames of process memory [va, va + npages pages): a shared shmem mapping gives
        the file's frames (so MAP and MAP_FILE of one memfd agree); other memory gives
        USER_PFN_BASE + va >> 12."""
        out = []
        end = va + (npages << PAGE_SHIFT)
        pos = va
        for lo, hi, key, off, shared in self._vmas():
            if hi <= pos or lo >= end:
                continue
            if lo > pos:
                out.append((pos - va >> PAGE_SHIFT, user_pfn(pos), (lo - pos) >> PAGE_SHIFT))
                pos = lo
            seg_end = min(hi, end)
            n = (seg_end - pos) >> PAGE_SHIFT
            if key is not None and shared:
                first = self._base_for(key) + ((off + pos - lo) >> PAGE_SHIFT)
            else:
                first = user_pfn(pos)
            out.append(((pos - va) >> PAGE_SHIFT, first, n))
            pos = seg_end
            if pos >= end:
                break
        if pos < end:
            out.append(((pos - va) >> PAGE_SHIFT, user_pfn(pos), (end - pos) >> PAGE_SHIFT))
        return out

    def user_pfn(self, va):
        return self.user_pfn_runs(va & ~(PAGE_SIZE - 1), 1)[0][1]

    def _base_for(self, key):
        base = self._bases.get(key)
        if base is None:
            base = self._bases[key] = self._next
            self._next += self.FILE_SPAN
        return base

    @staticmethod
    def _vmas():
        """(start, end, (dev, ino) of a shmem file or None, file offset, shared) per VMA."""
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                path = parts[5].strip() if len(parts) > 5 else ""
                key = None
                if path.startswith("/memfd:") or path.startswith("/dev/shm/"):
                    major, minor = (int(x, 16) for x in parts[3].split(":"))
                    key = (os.makedev(major, minor), int(parts[4]))
                yield lo, hi, key, int(parts[2], 16), parts[1][3] == "s"

    def file_pfn_base(self, fd):
        st = os.fstat(fd)
        return self._base_for((st.st_dev, st.st_ino))

    @staticmethod
    def is_shmem(fd):
        """memfd_pin_folios accepts only shmem and hugetlbfs files."""
        try:
            fcntl.fcntl(fd, F_GET_SEALS)
        except OSError:
            return False
        return True

    def file_read(self, pages, offset, n):
        """Bytes [offset, offset + n) of a MAP_FILE'd file as its pinned pages hold them:
        a page a truncate orphaned keeps its old bytes; beyond the end of the file,
        zeros."""
        if not self.orphans:
            return os.pread(pages.fd, n, offset).ljust(n, b"\0")
        out = []
        for lo, hi, orphan in self._split_orphans(pages, offset, offset + n):
            if orphan is None:
                out.append(os.pread(pages.fd, hi - lo, lo).ljust(hi - lo, b"\0"))
            else:
                o = lo & (PAGE_SIZE - 1)
                out.append(orphan[o:o + hi - lo])
        return b"".join(out)

    def file_write(self, pages, offset, data):
        """A write of ``data`` at ``offset`` through pinned pages: an orphaned page takes it;
        a page past the end of the file (truncated under the pin) drops it."""
        end = offset + len(data)
        view = memoryview(data)
        size = None
        for lo, hi, orphan in self._split_orphans(pages, offset, end):
            part = view[lo - offset:hi - offset]
            if orphan is not None:
                pfn = pages.file_pfn_base + (lo >> PAGE_SHIFT)
                o = lo & (PAGE_SIZE - 1)
                self.orphans[pfn] = orphan[:o] + bytes(part) + orphan[o + len(part):]
                continue
            if size is None:
                size = os.fstat(pages.fd).st_size
            # the pages that end within the file are written, page by page in order
            top = hi if hi <= size else max(lo, size & ~(PAGE_SIZE - 1))
            if lo < top:
                os.pwrite(pages.fd, part[:top - lo], lo)

    def _split_orphans(self, pages, lo, hi):
        """[lo, hi) in pieces (start, end, orphan bytes or None): orphaned pages apart
        (there are few: pinned pages a truncate removed)."""
        if not self.orphans:
            return [(lo, hi, None)]
        out = []
        pos = lo
        base = pages.file_pfn_base
        first, last = base + (lo >> PAGE_SHIFT), base + ((hi - 1) >> PAGE_SHIFT)
        for pfn in sorted(p for p in self.orphans if first <= p <= last):
            plo = max(lo, (pfn - base) << PAGE_SHIFT)
            phi = min(hi, (pfn - base + 1) << PAGE_SHIFT)
            if pos < plo:
                out.append((pos, plo, None))
            out.append((plo, phi, self.orphans[pfn]))
            pos = phi
        if pos < hi:
            out.append((pos, hi, None))
        return out

    def before_truncate(self, fd, start, end):
        """The file behind ``fd`` loses bytes [start, end): keep pinned pages' contents."""
        try:
            st = os.fstat(fd)
        except OSError:
            return
        base = self._bases.get((st.st_dev, st.st_ino))
        if base is None:
            return
        lo, hi = start >> PAGE_SHIFT, (min(end, st.st_size) + PAGE_SIZE - 1) >> PAGE_SHIFT
        for pages in self.kernel.iommu_pinned_file_pages(base):
            plo = pages.start >> PAGE_SHIFT
            phi = plo + pages.npages
            for i in range(max(lo, plo), min(hi, phi)):
                pfn = base + i
                if pfn not in self.orphans:
                    self.orphans[pfn] = os.pread(fd, PAGE_SIZE, i << PAGE_SHIFT).ljust(PAGE_SIZE, b"\0")
