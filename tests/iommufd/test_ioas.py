"""IOAS areas, IOVA ranges, allowed/reserved ranges, COPY and IOMMU_OPTION (reference §3.4),
after the iommufd_ioas selftests (area, unmap_fully_contained_areas, area_auto_iova,
area_allowed, copy_area, iova_ranges, ioas_option_huge_pages, ioas_iova_alloc). The
``ioas`` fixture runs each test without a domain and with one mock domain, as the
selftest's no_domain / mock_domain variants.
"""

import pytest

from ._util import *  # noqa: F403


@pytest.fixture(scope="module")
def buf():
    return Buf(16 * P, align=2 << 20)


def test_area(ioas, buf):
    ictx, a, stdev, hwpt, base = ioas
    # unmapping nothing is ENOENT
    for i in range(10):
        assert err(ictx.unmap, a, i * P, P) == errno.ENOENT
    for i in range(10):
        ictx.map(a, buf.addr, P, iova=base + i * P)
    for i in range(10):
        assert ictx.unmap(a, base + i * P, P) == P
    # a split is refused: either half of a two-page area
    ictx.map(a, buf.addr, 2 * P, iova=base + 16 * P)
    assert err(ictx.unmap, a, base + 16 * P, P) == errno.ENOENT
    assert err(ictx.unmap, a, base + 17 * P, P) == errno.ENOENT
    # over-mapping [16,18) in any way is EEXIST
    for npages, at in ((2, 16), (1, 16), (1, 17), (2, 15), (3, 15)):
        assert err(ictx.map, a, buf.addr, npages * P, iova=base + at * P) == errno.EEXIST
    # the failed calls changed nothing: the area is whole
    ranges = ictx.unmap(a, base + 16 * P, 2 * P)
    assert ranges == 2 * P
    ictx.map(a, buf.addr, 2 * P, iova=base + 16 * P)
    # unmap all, twice (the second on an empty IOAS)
    assert ictx.unmap(a, 0, U64) == 2 * P
    assert ictx.unmap(a, 0, U64) == 0


def test_unmap_whole_area_returns_its_length(ioas, buf):
    ictx, a, stdev, hwpt, base = ioas
    iova = ictx.map(a, buf.addr, 5 * P)
    assert ictx.unmap(a, iova, 5 * P) == 5 * P
    assert err(ictx.unmap, a, iova, 5 * P) == errno.ENOENT


def test_unmap_fully_contained_areas(ioas, buf):
    ictx, a, stdev, hwpt, base = ioas
    base += 4 * P
    for i in range(4):
        ictx.map(a, buf.addr, 8 * P, iova=base + i * 16 * P)
    # a range cutting the first or the last area
    assert err(ictx.unmap, a, base - 4 * P, 8 * P) == errno.ENOENT
    assert err(ictx.unmap, a, base + 3 * 16 * P + 8 * P - 4 * P, 8 * P) == errno.ENOENT
    # one range over all four areas and the gaps between them
    assert ictx.unmap(a, base - 4 * P, 3 * 16 * P + 8 * P + 4 * P) == 32 * P
    assert ictx.unmap(a, 0, U64) == 0


def test_iova_ranges(ioas):
    ictx, a, stdev, hwpt, base = ioas
    ranges, align = ictx.iova_ranges(a)
    if not stdev:
        assert ranges == [(0, U64)] and align == 1
    else:
        assert ranges == [(AP_START, AP_LAST)] and align == MOCK_PAGE

    # too small a buffer: EMSGSIZE, num_iovas set to the total, nothing written
    arr = (I.iommu_iova_range * 4)()
    c = I.iommu_ioas_iova_ranges(size=32, ioas_id=a, num_iovas=0,
                                 allowed_iovas=ctypes.addressof(arr))
    assert err(ictx.ioctl, I.IOMMU_IOAS_IOVA_RANGES, c) == errno.EMSGSIZE
    assert c.num_iovas == 1
    assert (arr[0].start, arr[0].last) == (0, 0)

    # a reserved page splits the range (outside the mock aperture it changes nothing)
    ictx.add_reserved(a, P, P)
    ranges, align = ictx.iova_ranges(a)
    if not stdev:
        assert ranges == [(0, P - 1), (2 * P, U64)]
    else:
        assert ranges == [(AP_START, AP_LAST)]

    arr = (I.iommu_iova_range * 4)()
    c = I.iommu_ioas_iova_ranges(size=32, ioas_id=a, num_iovas=1,
                                 allowed_iovas=ctypes.addressof(arr))
    if not stdev:
        assert err(ictx.ioctl, I.IOMMU_IOAS_IOVA_RANGES, c) == errno.EMSGSIZE
        assert c.num_iovas == 2
        assert (arr[0].start, arr[0].last) == (0, P - 1)  # partially filled
    else:
        ictx.ioctl(I.IOMMU_IOAS_IOVA_RANGES, c)
        assert c.num_iovas == 1
        assert (arr[0].start, arr[0].last) == (AP_START, AP_LAST)
    assert (arr[1].start, arr[1].last) == (0, 0)
    assert c.out_iova_alignment == (MOCK_PAGE if stdev else 1)


def test_iova_ranges_errors(ictx):
    a = ictx.ioas_alloc()
    c = I.iommu_ioas_iova_ranges(size=32, ioas_id=a, num_iovas=0)
    setattr(c, "__reserved", 1)
    assert err(ictx.ioctl, I.IOMMU_IOAS_IOVA_RANGES, c) == errno.EOPNOTSUPP
    c = I.iommu_ioas_iova_ranges(size=32, ioas_id=a + 1, num_iovas=0)
    assert err(ictx.ioctl, I.IOMMU_IOAS_IOVA_RANGES, c) == errno.ENOENT


def test_iova_ranges_reserved_region_inside_aperture(ictx):
    a = ictx.ioas_alloc()
    ictx.mock_domain(a)
    ictx.add_reserved(a, AP_START + 4 * P, 2 * P)
    ranges, _ = ictx.iova_ranges(a)
    assert ranges == [(AP_START, AP_START + 4 * P - 1), (AP_START + 6 * P, AP_LAST)]


def test_area_auto_iova(ioas, buf):
    ictx, a, stdev, hwpt, base = ioas
    iovas = [ictx.map(a, buf.addr, P) for _ in range(10)]
    assert len(set(iovas)) == 10 and 0 not in iovas
    for iova in iovas:
        ictx.unmap(a, iova, P)
    # automatic IOVAs are aligned to the lowest set bit of the length
    for i in range(10):
        length = P * (i + 1)
        iovas[i] = ictx.map(a, buf.addr if stdev else 1 << 31, length)
        assert iovas[i] % (length & -length) == 0
    for i in range(10):
        ictx.unmap(a, iovas[i], P * (i + 1))

    # a reserved region is avoided
    ictx.add_reserved(a, 4 * P, 100 * P)
    for i in range(10):
        length = P * (i + 1)
        iovas[i] = ictx.map(a, buf.addr, length)
        assert iovas[i] % (length & -length) == 0
        assert not 4 * P < iovas[i] < 104 * P
    for i in range(10):
        ictx.unmap(a, iovas[i], P * (i + 1))

    # an allowed range intersecting the reserved one: EADDRINUSE
    assert err(ictx.allow_iovas, a, [(P, 600 * P)]) == errno.EADDRINUSE
    # allocation honours the allowed list
    lo, hi = ((AP_START + P, AP_START + 600 * P - 1) if stdev else (200 * P, 600 * P - 1))
    ictx.allow_iovas(a, [(lo, hi)])
    for i in range(10):
        length = P * (i + 1)
        iovas[i] = ictx.map(a, buf.addr, length)
        assert iovas[i] % (length & -length) == 0
        assert lo <= iovas[i] and iovas[i] + length - 1 <= hi
    for i in range(10):
        ictx.unmap(a, iovas[i], P * (i + 1))


def test_auto_iova_enospc_when_allowed_is_full(ictx, buf):
    a = ictx.ioas_alloc()
    ictx.allow_iovas(a, [(64 * P, 66 * P - 1)])
    ictx.map(a, buf.addr, 2 * P)
    assert err(ictx.map, a, buf.addr, P) == errno.ENOSPC


def test_fixed_map_outside_allowed_or_on_reserved(ictx, buf):
    a = ictx.ioas_alloc()
    ictx.add_reserved(a, 8 * P, P)
    assert err(ictx.map, a, buf.addr, P, iova=8 * P) == errno.EINVAL
    assert err(ictx.map, a, buf.addr, 2 * P, iova=7 * P) == errno.EINVAL
    ictx.allow_iovas(a, [(16 * P, 32 * P - 1)])
    assert err(ictx.map, a, buf.addr, P, iova=0) == errno.EINVAL
    assert err(ictx.map, a, buf.addr, 2 * P, iova=31 * P) == errno.EINVAL
    assert ictx.map(a, buf.addr, P, iova=31 * P) == 31 * P


def test_area_allowed(ioas):
    ictx, a, stdev, hwpt, base = ioas
    # a reserved region intersecting an allowed one: EADDRINUSE
    ictx.allow_iovas(a, [(base, base + 600 * P)])
    assert err(ictx.add_reserved, a, base + P, P) == errno.EADDRINUSE
    ictx.allow_iovas(a, [])  # num_iovas 0 clears the list
    # an allowed one intersecting a reserved one: EADDRINUSE
    ictx.add_reserved(a, base + P, P)
    assert err(ictx.allow_iovas, a, [(base, base + 600 * P)]) == errno.EADDRINUSE


def test_allow_iovas_einval(ictx):
    a = ictx.ioas_alloc()
    # start > last
    assert err(ictx.allow_iovas, a, [(2 * P, P)]) == errno.EINVAL
    # overlapping given ranges
    assert err(ictx.allow_iovas, a, [(0, 2 * P), (P, 3 * P)]) == errno.EINVAL
    assert err(ictx.allow_iovas, a, [(P, 3 * P), (0, 2 * P)]) == errno.EINVAL
    # a failed call did not replace the list: everything is still allowed
    assert ictx.iova_ranges(a)[0] == [(0, U64)]
    c = I.iommu_ioas_allow_iovas(size=24, ioas_id=a)
    setattr(c, "__reserved", 1)
    assert err(ictx.ioctl, I.IOMMU_IOAS_ALLOW_IOVAS, c) == errno.EOPNOTSUPP
    c = I.iommu_ioas_allow_iovas(size=24, ioas_id=a + 7)
    assert err(ictx.ioctl, I.IOMMU_IOAS_ALLOW_IOVAS, c) == errno.ENOENT


def test_allow_iovas_replaces_atomically(ictx, buf):
    a = ictx.ioas_alloc()
    ictx.allow_iovas(a, [(0, 16 * P - 1)])
    ictx.allow_iovas(a, [(32 * P, 48 * P - 1)])
    assert err(ictx.map, a, buf.addr, P, iova=0) == errno.EINVAL
    ictx.map(a, buf.addr, P, iova=32 * P)


def test_allow_iovas_vs_existing_area(ictx, buf):
    """An allowed list that would leave an existing area outside it is refused
    (EADDRINUSE, reference §3.4 [U]) and changes nothing."""
    a = ictx.ioas_alloc()
    ictx.map(a, buf.addr, P, iova=4 * P)
    assert err(ictx.allow_iovas, a, [(16 * P, 32 * P)]) == errno.EADDRINUSE
    ictx.allow_iovas(a, [(0, 32 * P)])


# --- IOAS_COPY ----------------------------------------------------------------------------


def test_copy_area(ioas, buf):
    ictx, a, stdev, hwpt, base = ioas
    ictx.map(a, buf.addr, P, iova=base)
    # inside one IOAS
    assert ictx.copy(a, a, base, P, dst_iova=base + P) == base + P
    # between two
    b = ictx.ioas_alloc()
    assert ictx.copy(b, a, base, P, dst_iova=0) == 0


def test_copy_exact_cover(ictx, buf):
    a = ictx.ioas_alloc()
    b = ictx.ioas_alloc()
    ictx.map(a, buf.addr, 2 * P, iova=8 * P)
    ictx.map(a, buf.addr + 2 * P, 2 * P, iova=10 * P)  # adjacent: boundary inside the copy
    ictx.map(a, buf.addr, P, iova=14 * P)  # after a hole
    # exactly covered (across an interior area boundary, and inside one area)
    assert ictx.copy(b, a, 8 * P, 4 * P, dst_iova=0) == 0
    assert ictx.copy(b, a, 9 * P, 2 * P, dst_iova=16 * P) == 16 * P
    # a hole inside, before or after: ENOENT
    assert err(ictx.copy, b, a, 8 * P, 7 * P, dst_iova=32 * P) == errno.ENOENT
    assert err(ictx.copy, b, a, 7 * P, 2 * P, dst_iova=32 * P) == errno.ENOENT
    assert err(ictx.copy, b, a, 11 * P, 2 * P, dst_iova=32 * P) == errno.ENOENT
    assert err(ictx.copy, b, a, 20 * P, P, dst_iova=32 * P) == errno.ENOENT
    # destination busy: EEXIST; the failed copies added nothing
    assert err(ictx.copy, b, a, 8 * P, P, dst_iova=0) == errno.EEXIST
    assert ictx.unmap(b, 0, U64) == 6 * P


def test_copy_sweep(ioas, buf):
    """copy_sweep: one MOCK_PAGE copied from every 511-byte step; outside the area ENOENT."""
    ictx, a, stdev, hwpt, base = ioas
    dst = ictx.ioas_alloc()
    size = 16 * P
    last = AP_START + size - 1 if stdev else AP_START + size - 2
    ictx.map(a, buf.addr, last - AP_START + 1, iova=AP_START)
    for iova in range(AP_START - P, last + 1, 511):
        if iova < AP_START or iova + MOCK_PAGE - 1 > last:
            assert err(ictx.copy, dst, a, iova, MOCK_PAGE, dst_iova=AP_START) == errno.ENOENT
        else:
            ictx.copy(dst, a, iova, MOCK_PAGE, dst_iova=AP_START)
            ictx.unmap(dst, AP_START, MOCK_PAGE)
    ictx.destroy(dst)


def test_copy_shares_pages_one_pin(ictx):
    b = Buf(4 * P)
    a = ictx.ioas_alloc()
    _, hwpt, _ = ictx.mock_domain(a)
    iova = ictx.map(a, b.addr, 4 * P)
    assert ictx.refs_ok(b.addr, 4 * P, 1)
    c = ictx.ioas_alloc()
    _, hwpt2, _ = ictx.mock_domain(c)
    iova2 = ictx.copy(c, a, iova, 4 * P)
    ictx.check_map(hwpt2, iova2, 4 * P, b.addr)
    assert ictx.refs_ok(b.addr, 4 * P, 1)  # the copy shares the pages: still one pin
    ictx.unmap(a, iova, 4 * P)
    assert ictx.refs_ok(b.addr, 4 * P, 1)  # the copy still holds them
    ictx.unmap(c, iova2, 4 * P)
    assert ictx.refs_ok(b.addr, 4 * P, 0)
    # a second MAP of the same memory is a second pages object: two pins
    ictx.map(a, b.addr, 4 * P)
    ictx.map(a, b.addr, 4 * P)
    assert ictx.refs_ok(b.addr, 4 * P, 2)


def test_copy_errors(ictx, buf):
    a = ictx.ioas_alloc()
    ictx.map(a, buf.addr, P, iova=0)
    c = I.iommu_ioas_copy(size=40, flags=RW | 8, dst_ioas_id=a, src_ioas_id=a, length=P)
    assert err(ictx.ioctl, I.IOMMU_IOAS_COPY, c) == errno.EOPNOTSUPP
    c = I.iommu_ioas_copy(size=40, flags=FIXED, dst_ioas_id=a, src_ioas_id=a, length=P,
                          dst_iova=P)
    assert err(ictx.ioctl, I.IOMMU_IOAS_COPY, c) == errno.EINVAL  # neither R nor W
    assert err(ictx.copy, a + 5, a, 0, P, dst_iova=P) == errno.ENOENT
    assert err(ictx.copy, a, a + 5, 0, P, dst_iova=P) == errno.ENOENT


# --- MAP / UNMAP argument checks ------------------------------------------------------------


def test_map_errors(ictx, buf):
    a = ictx.ioas_alloc()
    m = I.iommu_ioas_map(size=40, flags=RW | 8, ioas_id=a, user_va=buf.addr, length=P)
    assert err(ictx.ioctl, I.IOMMU_IOAS_MAP, m) == errno.EOPNOTSUPP
    m = I.iommu_ioas_map(size=40, flags=RW, ioas_id=a, user_va=buf.addr, length=P)
    setattr(m, "__reserved", 1)
    assert err(ictx.ioctl, I.IOMMU_IOAS_MAP, m) == errno.EOPNOTSUPP
    assert err(ictx.map, a, buf.addr, U64, iova=0) == errno.EOVERFLOW
    assert err(ictx.map, a, buf.addr, P, iova=U64) == errno.EOVERFLOW
    assert err(ictx.map, a, buf.addr, P, flags=0) == errno.EINVAL
    assert err(ictx.map, a + 1, buf.addr, P) == errno.ENOENT
    assert err(ictx.map, a, buf.addr, 0) == errno.EINVAL
    assert err(ictx.unmap, a + 1, 0, P) == errno.ENOENT


def test_ioas_iova_alloc_alignment_with_mock_domain(ioas, buf):
    """ioas_iova_alloc: with a mock domain lengths not a multiple of 2048 are EINVAL."""
    ictx, a, stdev, hwpt, base = ioas
    for length in list(range(1, 64)) + [MOCK_PAGE - 1, MOCK_PAGE, MOCK_PAGE + 1, P, 2 * P - 1]:
        if stdev and length % MOCK_PAGE:
            assert err(ictx.map, a, buf.addr, length) == errno.EINVAL
        else:
            iova = ictx.map(a, buf.addr, length)
            ictx.unmap(a, iova, length)


def test_mock_domain_aperture_is_reserved(ictx, buf):
    a = ictx.ioas_alloc()
    ictx.mock_domain(a)
    assert err(ictx.map, a, buf.addr, P, iova=AP_START - P) == errno.EINVAL
    assert err(ictx.map, a, buf.addr, P, iova=AP_LAST + 1) == errno.EINVAL
    assert err(ictx.map, a, buf.addr, P, iova=AP_START + MOCK_PAGE // 2) == errno.EINVAL
    assert ictx.map(a, buf.addr, P, iova=AP_START + MOCK_PAGE) == AP_START + MOCK_PAGE


def test_mock_domain_on_area_outside_aperture(ictx, buf):
    """Attaching a domain whose aperture excludes an existing area: EADDRINUSE, nothing
    attached."""
    a = ictx.ioas_alloc()
    ictx.map(a, buf.addr, P, iova=0)
    assert err(ictx.mock_domain, a) == errno.EADDRINUSE
    assert ictx.iova_ranges(a) == ([(0, U64)], 1)


# --- IOMMU_OPTION ----------------------------------------------------------------------------


def opt(ictx, option, op, object_id=0, val=0):
    c = I.iommu_option(size=24, option_id=option, op=op, object_id=object_id, val64=val)
    ictx.ioctl(I.IOMMU_OPTION, c)
    return c.val64


def test_global_options(ictx):
    assert opt(ictx, I.IOMMU_OPTION_RLIMIT_MODE, I.IOMMU_OPTION_OP_GET, val=1) == 0
    if os.geteuid() == 0:
        opt(ictx, I.IOMMU_OPTION_RLIMIT_MODE, I.IOMMU_OPTION_OP_SET, val=1)
        assert err(opt, ictx, I.IOMMU_OPTION_RLIMIT_MODE, I.IOMMU_OPTION_OP_SET,
                   val=2) == errno.EINVAL
        assert opt(ictx, I.IOMMU_OPTION_RLIMIT_MODE, I.IOMMU_OPTION_OP_GET) == 1
        opt(ictx, I.IOMMU_OPTION_RLIMIT_MODE, I.IOMMU_OPTION_OP_SET, val=0)
    else:
        assert err(opt, ictx, I.IOMMU_OPTION_RLIMIT_MODE, I.IOMMU_OPTION_OP_SET,
                   val=1) == errno.EPERM
    # HUGE_PAGES needs an IOAS id
    assert err(opt, ictx, I.IOMMU_OPTION_HUGE_PAGES, I.IOMMU_OPTION_OP_GET) == errno.ENOENT
    assert err(opt, ictx, I.IOMMU_OPTION_HUGE_PAGES, I.IOMMU_OPTION_OP_SET) == errno.ENOENT


def test_option_errors(ictx):
    c = I.iommu_option(size=24, option_id=I.IOMMU_OPTION_RLIMIT_MODE, op=I.IOMMU_OPTION_OP_GET)
    setattr(c, "__reserved", 1)
    assert err(ictx.ioctl, I.IOMMU_OPTION, c) == errno.EOPNOTSUPP
    assert err(opt, ictx, 7, I.IOMMU_OPTION_OP_GET) == errno.EOPNOTSUPP
    assert err(opt, ictx, I.IOMMU_OPTION_RLIMIT_MODE, 2) == errno.EOPNOTSUPP


def test_ioas_option_huge_pages(ictx):
    a = ictx.ioas_alloc()
    H = I.IOMMU_OPTION_HUGE_PAGES
    assert opt(ictx, H, I.IOMMU_OPTION_OP_GET, a, val=3) == 1
    opt(ictx, H, I.IOMMU_OPTION_OP_SET, a, val=0)
    assert opt(ictx, H, I.IOMMU_OPTION_OP_GET, a, val=3) == 0
    assert err(opt, ictx, H, I.IOMMU_OPTION_OP_SET, a, val=2) == errno.EINVAL
    opt(ictx, H, I.IOMMU_OPTION_OP_SET, a, val=1)
    assert opt(ictx, H, I.IOMMU_OPTION_OP_GET, a) == 1


def test_ioas_alloc_flags(ictx):
    c = I.iommu_ioas_alloc(size=12, flags=1)
    assert err(ictx.ioctl, I.IOMMU_IOAS_ALLOC, c) == errno.EOPNOTSUPP
