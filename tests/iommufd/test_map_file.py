"""IOMMU_IOAS_MAP_FILE with a memfd (reference §4.1) and the selftest checks MD_CHECK_MAP /
MD_CHECK_REFS (§3.6), after iommufd_mock_domain basic / all_aligns with and without the
``file`` variant (Steve Sistare's MAP_FILE selftests).
"""


import pytest

from ._util import *  # noqa: F403


@pytest.fixture
def mfd(k):
    """A memfd of 16 pages made through Kernel.memfd_create, and a shared mapping of it."""
    fd = k.memfd_create("kmock-test")
    k.ftruncate(fd, 16 * P)
    b = Buf(16 * P, fd=fd)
    yield fd, b
    k.close(fd)


@pytest.fixture
def dom(ictx):
    a = ictx.ioas_alloc()
    stdev, hwpt, idev = ictx.mock_domain(a)
    return ictx, a, hwpt


def test_basic_file(k, dom, mfd):
    ictx, a, hwpt = dom
    fd, b = mfd
    iova = ictx.map_file(a, fd, 0, P)
    ictx.check_map(hwpt, iova, P, b.addr)

    fd2 = k.memfd_create("tmp")
    k.ftruncate(fd2, 8 * P)
    assert err(ictx.map_file, a, fd2, 0, 8 * P + 1) == errno.EINVAL  # beyond EOF
    assert err(ictx.map_file, a, fd2, 4 * P, 5 * P) == errno.EINVAL
    ictx.map_file(a, fd2, 0, 8 * P)
    k.ftruncate(fd2, 0)
    assert err(ictx.map_file, a, fd2, 0, 8 * P) == errno.EINVAL  # after ftruncate(0)
    k.close(fd2)


def test_map_file_without_domain_is_lazy_but_checks_eof(ictx, k, mfd):
    a = ictx.ioas_alloc()
    fd, b = mfd
    assert err(ictx.map_file, a, fd, 0, 17 * P) == errno.EINVAL
    iova = ictx.map_file(a, fd, 0, 16 * P, iova=AP_START)
    assert ictx.refs_ok(b.addr, 16 * P, 0)  # no domain, no access: nothing pinned
    _, hwpt, _ = ictx.mock_domain(a)  # the domain pins and maps everything
    ictx.check_map(hwpt, iova, 16 * P, b.addr)
    assert ictx.refs_ok(b.addr, 16 * P, 1)


def test_map_file_ebadf(ictx, k):
    a = ictx.ioas_alloc()
    assert err(ictx.map_file, a, -1, 0, P) == errno.EBADF
    fd = k.memfd_create("gone")
    k.ftruncate(fd, P)
    k.close(fd)
    assert err(ictx.map_file, a, fd, 0, P) == errno.EBADF
    assert err(ictx.map_file, a, 0x7FFFFFF0, 0, P) == errno.EBADF


def test_map_file_not_shmem(ictx, k, tmp_path):
    a = ictx.ioas_alloc()
    path = tmp_path / "regular"
    path.write_bytes(bytes(4 * P))
    fd = os.open(path, os.O_RDWR)
    try:
        assert err(ictx.map_file, a, fd, 0, P) == errno.EINVAL  # memfd_pin_folios: not shmem
    finally:
        os.close(fd)
    null = k.open("/dev/null", os.O_RDWR)
    assert err(ictx.map_file, a, null, 0, P) == errno.EINVAL
    k.close(null)
    # a kmock file that is not a memfd: the iommufd itself, a KVM fd
    assert err(ictx.map_file, a, ictx.fd, 0, P) == errno.EINVAL
    kvm = k.open("/dev/kvm", os.O_RDWR)
    assert err(ictx.map_file, a, kvm, 0, P) == errno.EINVAL


def test_map_file_argument_checks(ictx, mfd):
    a = ictx.ioas_alloc()
    fd, b = mfd
    c = I.iommu_ioas_map_file(size=40, flags=RW | 8, ioas_id=a, fd=fd, length=P)
    assert err(ictx.ioctl, I.IOMMU_IOAS_MAP_FILE, c) == errno.EOPNOTSUPP
    assert err(ictx.map_file, a, fd, 0, P, flags=0) == errno.EINVAL
    assert err(ictx.map_file, a, fd, 0, U64) == errno.EOVERFLOW
    assert err(ictx.map_file, a + 1, fd, 0, P) == errno.ENOENT
    assert err(ictx.map_file, a, fd, 0, 0) == errno.EINVAL
    # ENOENT before EBADF: the IOAS is looked up first
    assert err(ictx.map_file, a + 1, -1, 0, P) == errno.ENOENT


def test_map_file_and_map_of_mmap_agree(dom, mfd):
    """MAP_FILE(memfd, off) and MAP(mmap(memfd) + off) reach the same frames."""
    ictx, a, hwpt = dom
    fd, b = mfd
    i1 = ictx.map_file(a, fd, 4 * P, 4 * P)
    i2 = ictx.map(a, b.addr + 4 * P, 4 * P)
    ictx.check_map(hwpt, i1, 4 * P, b.addr + 4 * P)
    ictx.check_map(hwpt, i2, 4 * P, b.addr + 4 * P)
    # and not other frames
    assert err(ictx.check_map, hwpt, i1, 4 * P, b.addr) == errno.EINVAL
    # two pages objects over the same pages: two pins each
    assert ictx.refs_ok(b.addr + 4 * P, 4 * P, 2)
    assert ictx.refs_ok(b.addr, 4 * P, 0)
    ictx.unmap(a, i1, 4 * P)
    assert ictx.refs_ok(b.addr + 4 * P, 4 * P, 1)
    ictx.unmap(a, i2, 4 * P)
    assert ictx.refs_ok(b.addr + 4 * P, 4 * P, 0)


def test_check_map_wrong_memory_and_unmapped(dom):
    ictx, a, hwpt = dom
    b = Buf(4 * P)
    other = Buf(4 * P)
    iova = ictx.map(a, b.addr, 4 * P)
    ictx.check_map(hwpt, iova, 4 * P, b.addr)
    assert err(ictx.check_map, hwpt, iova, 4 * P, other.addr) == errno.EINVAL
    assert err(ictx.check_map, hwpt, iova + 4 * P, P, b.addr) == errno.EINVAL
    assert err(ictx.check_map, hwpt, iova + 1, MOCK_PAGE, b.addr) == errno.EINVAL
    ictx.unmap(a, iova, 4 * P)
    assert err(ictx.check_map, hwpt, iova, 4 * P, b.addr) == errno.EINVAL


def test_refs_with_two_domains_one_pin(ictx):
    """Pins are per pages object, not per domain."""
    b = Buf(4 * P)
    a = ictx.ioas_alloc()
    ictx.mock_domain(a)
    ictx.mock_domain(a)
    iova = ictx.map(a, b.addr, 4 * P)
    assert ictx.refs_ok(b.addr, 4 * P, 1)
    ictx.unmap(a, iova, 4 * P)
    assert ictx.refs_ok(b.addr, 4 * P, 0)


def test_refs_drop_when_the_last_domain_goes(ictx):
    b = Buf(4 * P)
    a = ictx.ioas_alloc()
    stdev, hwpt, _ = ictx.mock_domain(a)
    ictx.map(a, b.addr, 4 * P)
    assert ictx.refs_ok(b.addr, 4 * P, 1)
    ictx.destroy(stdev)
    assert ictx.refs_ok(b.addr, 4 * P, 0)  # no domain left: unpinned, area kept
    stdev, hwpt, _ = ictx.mock_domain(a)
    assert ictx.refs_ok(b.addr, 4 * P, 1)


@pytest.mark.parametrize("file", [False, True], ids=["mmap", "file"])
def test_all_aligns(k, dom, file):
    """Every MOCK_PAGE-aligned [start, end) of an 8-page buffer: mapped where it should be,
    each touched page pinned once while mapped, nothing pinned after the unmap."""
    ictx, a, hwpt = dom
    size = 8 * P
    fd = k.memfd_create("aligns")
    k.ftruncate(fd, size)
    b = Buf(size, fd=fd) if file else Buf(size)
    for start in range(0, size, MOCK_PAGE):
        for end in range(start + MOCK_PAGE, size, MOCK_PAGE):
            length = end - start
            if file:
                iova = ictx.map_file(a, fd, start, length)
            else:
                iova = ictx.map(a, b.addr + start, length)
            ictx.check_map(hwpt, iova, length, b.addr + start)
            lo = start // P * P
            hi = -(-end // P) * P
            assert ictx.refs_ok(b.addr + lo, hi - lo, 1), (start, end)
            assert ictx.unmap(a, iova, length) == length
    assert ictx.refs_ok(b.addr, size, 0)
    k.close(fd)


def test_check_refs_arguments(ictx):
    b = Buf(4 * P)
    assert err(ictx.check_refs, b.addr + 1, P, 0) == errno.EINVAL
    assert err(ictx.check_refs, b.addr, 0, 0) == errno.EINVAL


def test_check_map_is_byte_exact_per_mock_page(dom):
    """The mock IOMMU has 2 KiB pages: an area may start half-way into a CPU page, and
    MD_CHECK_MAP compares iova_to_phys with the user address byte for byte at every
    MOCK_PAGE (selftest.c: pfn * PAGE_SIZE + uptr % PAGE_SIZE)."""
    ictx, a, hwpt = dom
    b = Buf(4 * P, align=2 << 20)
    iova = ictx.map(a, b.addr + MOCK_PAGE, P)  # 2 KiB-aligned user address: 2 KiB-aligned IOVA
    assert iova % MOCK_PAGE == 0
    ictx.check_map(hwpt, iova, P, b.addr + MOCK_PAGE)
    ictx.check_map(hwpt, iova + MOCK_PAGE, MOCK_PAGE, b.addr + P)
    assert err(ictx.check_map, hwpt, iova, P, b.addr) == errno.EINVAL
    assert err(ictx.check_map, hwpt, iova, MOCK_PAGE, b.addr) == errno.EINVAL
    # fixed IOVA with the other in-page offset
    i2 = ictx.map(a, b.addr, P, iova=AP_START + 64 * P + MOCK_PAGE)
    ictx.check_map(hwpt, i2, P, b.addr)
    ictx.check_map(hwpt, i2 + MOCK_PAGE, MOCK_PAGE, b.addr + MOCK_PAGE)
    assert err(ictx.check_map, hwpt, i2, MOCK_PAGE, b.addr + MOCK_PAGE) == errno.EINVAL
