"""Pages and pins (reference §3.4, §4.1): lazy pinning of IOAS_MAP, IOMMU pins on guest_memfd
memory reached through its host mapping blocking to-private conversion (EAGAIN with
error_offset) until IOAS_UNMAP, and a truncated memfd under a pinned MAP_FILE keeping its
old bytes for the device."""

import pytest

import kmock

from ._gmem import GuestMem
from ._util import *  # noqa: F403


def dead_va():
    b = Buf(4 * P)
    addr = b.addr
    b.m.close()
    return addr


# --- lazy pinning ----------------------------------------------------------------------------


def test_map_of_unmapped_va_is_lazy(ictx):
    a = ictx.ioas_alloc()
    va = dead_va()
    iova = ictx.map(a, va, 4 * P, iova=AP_START)  # no domain: only recorded
    # a domain needs the pages: EFAULT, and nothing is attached
    assert err(ictx.mock_domain, a) == errno.EFAULT
    assert ictx.iova_ranges(a) == ([(0, U64)], 1)
    assert ictx.unmap(a, iova, 4 * P) == 4 * P
    stdev, hwpt, _ = ictx.mock_domain(a)  # fine once the bad area is gone


def test_map_of_unmapped_va_with_domain_is_efault(ictx):
    a = ictx.ioas_alloc()
    ictx.mock_domain(a)
    assert err(ictx.map, a, dead_va(), 4 * P) == errno.EFAULT
    assert ictx.unmap(a, 0, U64) == 0  # no area was left behind


def test_vfio_attach_pins_lazily_mapped_areas(k, ictx):
    a = ictx.ioas_alloc()
    ictx.map(a, dead_va(), P)
    dev = k.add_vfio_device()
    vfd = vfio_open(k, dev)
    vfio_bind(k, vfd, ictx.fd)
    assert err(vfio_attach, k, vfd, a) == errno.EFAULT
    assert err(vfio_detach, k, vfd) == errno.EINVAL  # not attached


def test_pins_follow_domains(ictx):
    b = Buf(4 * P)
    a = ictx.ioas_alloc()
    ictx.map(a, b.addr, 4 * P, iova=AP_START)
    assert ictx.refs_ok(b.addr, 4 * P, 0)
    stdev, _, _ = ictx.mock_domain(a)
    assert ictx.refs_ok(b.addr, 4 * P, 1)
    ictx.destroy(stdev)
    assert ictx.refs_ok(b.addr, 4 * P, 0)


def test_readonly_memory_writeable_map(k, ictx):
    """GUP FOLL_WRITE on read-only memory fails when the pages are pinned (EFAULT/EPERM,
    §3.4); a READABLE-only map of it works."""
    from kmock import _libc

    fd = os.memfd_create("ro")
    os.ftruncate(fd, 2 * P)
    addr = _libc.mmap(None, 2 * P, _libc.PROT_READ, _libc.MAP_SHARED, fd, 0)
    try:
        a = ictx.ioas_alloc()
        ictx.mock_domain(a)
        assert err(ictx.map, a, addr, 2 * P) in (errno.EFAULT, errno.EPERM)
        iova = ictx.map(a, addr, 2 * P, flags=RO)
        ictx.unmap(a, iova, 2 * P)
    finally:
        _libc.munmap(addr, 2 * P)
        os.close(fd)


# --- guest_memfd reached by VA ------------------------------------------------------------


@pytest.fixture
def k8():
    with kmock.Kernel("gmem-attributes-v8") as kernel:
        yield kernel


def test_gmem_va_pins_block_to_private(k8):
    ictx = Iommufd(k8)
    g = GuestMem(k8)
    m = g.mmap()
    a = ictx.ioas_alloc()
    _, hwpt, _ = ictx.mock_domain(a)
    iova = ictx.map(a, m.address + 2 * P, 2 * P)
    ictx.check_map(hwpt, iova, 2 * P, m.address + 2 * P)
    assert ictx.refs_ok(m.address + 2 * P, 2 * P, 1)
    # to-private over the pinned pages: EAGAIN at the first pinned page
    assert g.to_private(0, 8 * P) == (errno.EAGAIN, 2 * P)
    assert g.to_private(3 * P) == (errno.EAGAIN, 3 * P)
    assert not g.is_private(0) and not g.is_private(3 * P)  # the failed call changed nothing
    # pages outside the map convert
    assert g.to_private(5 * P) == (0, 0)
    assert k8.snapshot()["guest_memfds"][0]["pinned_pages"] == 2
    assert ictx.unmap(a, iova, 2 * P) == 2 * P
    assert k8.snapshot()["guest_memfds"][0]["pinned_pages"] == 0
    assert g.to_private(2 * P, 2 * P) == (0, 0)


def test_gmem_va_map_without_domain_does_not_pin(k8):
    ictx = Iommufd(k8)
    g = GuestMem(k8)
    m = g.mmap()
    a = ictx.ioas_alloc()
    ictx.map(a, m.address, 2 * P, iova=AP_START)
    assert g.to_private(P) == (0, 0)  # lazy: nothing pinned, conversion succeeds
    # now a domain must pin a private page through the host mapping: GUP fails
    assert err(ictx.mock_domain, a) == errno.EFAULT
    assert g.to_shared(P) == (0, 0)
    stdev, hwpt, _ = ictx.mock_domain(a)
    assert g.to_private(P) == (errno.EAGAIN, P)


def test_gmem_va_map_of_private_page_is_efault(k8):
    ictx = Iommufd(k8)
    g = GuestMem(k8)
    m = g.mmap()
    assert g.to_private(P) == (0, 0)
    a = ictx.ioas_alloc()
    ictx.mock_domain(a)
    assert err(ictx.map, a, m.address, 2 * P) == errno.EFAULT
    ictx.map(a, m.address + 2 * P, 2 * P)


def test_gmem_va_dma_reaches_guest_memory(k8):
    ictx = Iommufd(k8)
    g = GuestMem(k8)
    m = g.mmap()
    dev = k8.add_vfio_device()
    vfd = vfio_open(k8, dev)
    vfio_bind(k8, vfd, ictx.fd)
    a = ictx.ioas_alloc()
    vfio_attach(k8, vfd, a)
    iova = ictx.map(a, m.address, 8 * P)
    m[P:P + 5] = b"guest"
    assert dev.dma_read(iova + P, 5) == b"guest"
    dev.dma_write(iova + 3 * P, b"device")
    assert m[3 * P:3 * P + 6] == b"device"


# --- a truncated memfd under a pinned MAP_FILE --------------------------------------------------


def test_truncate_under_pinned_map_file_keeps_old_bytes(k, ictx):
    fd = k.memfd_create("trunc")
    k.ftruncate(fd, 4 * P)
    k.pwrite(fd, b"A" * P + b"B" * P + b"C" * P + b"D" * P, 0)
    dev = k.add_vfio_device()
    vfd = vfio_open(k, dev)
    vfio_bind(k, vfd, ictx.fd)
    a = ictx.ioas_alloc()
    vfio_attach(k, vfd, a)
    iova = ictx.map_file(a, fd, 0, 4 * P)
    k.ftruncate(fd, P)  # pages 1-3 leave the file, but stay pinned and mapped
    assert k.fstat(fd).st_size == P
    assert dev.dma_read(iova + P, 4) == b"BBBB"
    assert dev.dma_read(iova + 3 * P + P - 2, 2) == b"DD"
    dev.dma_write(iova + 2 * P, b"orphan")  # writes go to the orphaned page
    assert dev.dma_read(iova + 2 * P, 6) == b"orphan"
    # the file does not see them: it regrows with zeroes
    k.ftruncate(fd, 4 * P)
    assert k.pread(fd, 6, 2 * P) == bytes(6)
    # page 0 is still the file's page
    dev.dma_write(iova, b"still")
    assert k.pread(fd, 5, 0) == b"still"
    assert ictx.unmap(a, iova, 4 * P) == 4 * P


def test_punch_hole_under_pinned_map_file_keeps_old_bytes(k, ictx):
    fd = k.memfd_create("punch")
    k.ftruncate(fd, 2 * P)
    k.pwrite(fd, b"x" * 2 * P, 0)
    a = ictx.ioas_alloc()
    dev = k.add_vfio_device()
    vfd = vfio_open(k, dev)
    vfio_bind(k, vfd, ictx.fd)
    vfio_attach(k, vfd, a)
    iova = ictx.map_file(a, fd, 0, 2 * P)
    k.fallocate(fd, 0x02 | 0x01, P, P)  # PUNCH_HOLE | KEEP_SIZE
    assert k.pread(fd, 4, P) == bytes(4)
    assert dev.dma_read(iova + P, 4) == b"xxxx"


def test_truncate_of_unpinned_map_file_reads_new_contents(k, ictx):
    """Without a domain nothing is pinned: a later attach pins what the file holds."""
    fd = k.memfd_create("lazy")
    k.ftruncate(fd, 2 * P)
    k.pwrite(fd, b"old!", P)
    a = ictx.ioas_alloc()
    iova = ictx.map_file(a, fd, 0, 2 * P)
    k.ftruncate(fd, P)
    k.ftruncate(fd, 2 * P)
    dev = k.add_vfio_device()
    vfd = vfio_open(k, dev)
    vfio_bind(k, vfd, ictx.fd)
    vfio_attach(k, vfd, a)
    assert dev.dma_read(iova + P, 4) == bytes(4)


def test_gmem_punch_under_pinned_va_map_dma_reads_old_bytes(k8):
    ictx = Iommufd(k8)
    g = GuestMem(k8)
    m = g.mmap()
    m[P:P + 4] = b"old!"
    dev = k8.add_vfio_device()
    vfd = vfio_open(k8, dev)
    vfio_bind(k8, vfd, ictx.fd)
    a = ictx.ioas_alloc()
    vfio_attach(k8, vfd, a)
    iova = ictx.map(a, m.address, 4 * P)
    g.punch(P)
    assert m[P:P + 4] == bytes(4)  # the file has a fresh page
    assert dev.dma_read(iova + P, 4) == b"old!"  # the device still has the pinned one


def test_one_dma_across_file_pages_and_orphaned_pages(k, ictx):
    """A DMA spanning the file's page and orphaned pages reads and writes each where its
    page lives (one transfer per piece, not per page)."""
    fd = k.memfd_create("trunc2")
    k.ftruncate(fd, 4 * P)
    k.pwrite(fd, b"A" * P + b"B" * P + b"C" * P + b"D" * P, 0)
    dev = k.add_vfio_device()
    vfd = vfio_open(k, dev)
    vfio_bind(k, vfd, ictx.fd)
    a = ictx.ioas_alloc()
    vfio_attach(k, vfd, a)
    iova = ictx.map_file(a, fd, 0, 4 * P)
    k.ftruncate(fd, 2 * P)  # pages 2-3 orphaned
    assert dev.dma_read(iova + P - 1, 2 * P + 2) == b"A" + b"B" * P + b"C" * P + b"D"
    dev.dma_write(iova + P, b"x" * (2 * P + 1))
    assert k.pread(fd, P, P) == b"x" * P  # page 1: the file's
    assert dev.dma_read(iova + 2 * P, P + 2) == b"x" * (P + 1) + b"D"  # the orphans took the rest
    k.ftruncate(fd, 4 * P)
    assert k.pread(fd, 2, 2 * P) == bytes(2)
