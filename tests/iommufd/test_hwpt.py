"""IOMMU_HWPT_ALLOC, IOMMU_VIOMMU_ALLOC, IOMMU_VDEVICE_ALLOC (reference §3.4) and the
destroy rules between them; the kernel's code is drivers/iommu/iommufd/hw_pagetable.c
(iommufd_hwpt_alloc, iommufd_hwpt_paging_alloc) and viommu.c.
"""

import pytest

from ._util import *  # noqa: F403


def hwpt_alloc(ictx, dev_id, pt_id, flags=0, data_type=0, data_len=0, data_uptr=0,
               fault_id=0, size=48, reserved=0):
    c = I.iommu_hwpt_alloc(size=size, flags=flags, dev_id=dev_id, pt_id=pt_id,
                           data_type=data_type, data_len=data_len, data_uptr=data_uptr,
                           fault_id=fault_id)
    setattr(c, "__reserved", reserved)
    ictx.ioctl(I.IOMMU_HWPT_ALLOC, c)
    return c.out_hwpt_id


def viommu_alloc(ictx, dev_id, hwpt_id, type=I.IOMMU_VIOMMU_TYPE_SELFTEST, flags=0):
    c = I.iommu_viommu_alloc(size=40, flags=flags, type=type, dev_id=dev_id, hwpt_id=hwpt_id)
    ictx.ioctl(I.IOMMU_VIOMMU_ALLOC, c)
    return c.out_viommu_id


def vdevice_alloc(ictx, viommu_id, dev_id, virt_id):
    c = I.iommu_vdevice_alloc(size=24, viommu_id=viommu_id, dev_id=dev_id, virt_id=virt_id)
    ictx.ioctl(I.IOMMU_VDEVICE_ALLOC, c)
    return c.out_vdevice_id


@pytest.fixture
def env(ictx):
    """An IOAS with one mock device: (ictx, ioas, stdev, auto hwpt, idev)."""
    a = ictx.ioas_alloc()
    stdev, hwpt, idev = ictx.mock_domain(a)
    return ictx, a, stdev, hwpt, idev


def test_hwpt_alloc_paging(env):
    ictx, a, stdev, auto, idev = env
    h = hwpt_alloc(ictx, idev, a)
    assert h not in (a, stdev, auto, idev)
    # a second mock device attaches straight to it (selftest hwpt_attach)
    s2, h2, _ = ictx.mock_domain(h)
    assert h2 == h
    b = Buf(4 * P)
    iova = ictx.map(a, b.addr, 4 * P)
    ictx.check_map(h, iova, 4 * P, b.addr)
    ictx.check_map(auto, iova, 4 * P, b.addr)


def test_hwpt_alloc_adds_the_domain_to_the_ioas_at_once(ictx):
    """iommufd_hwpt_paging_alloc() calls iopt_table_add_domain(): a HWPT with no device
    already maps the IOAS (and its aperture and page size apply)."""
    a = ictx.ioas_alloc()
    stdev, auto, idev = ictx.mock_domain(ictx.ioas_alloc())  # a device on another IOAS
    b = Buf(4 * P)
    iova = ictx.map(a, b.addr, 2 * P, iova=AP_START)
    assert ictx.refs_ok(b.addr, 2 * P, 0)  # no domain yet: lazy
    h = hwpt_alloc(ictx, idev, a)
    ictx.check_map(h, iova, 2 * P, b.addr)
    assert ictx.refs_ok(b.addr, 2 * P, 1)
    assert ictx.iova_ranges(a) == ([(AP_START, AP_LAST)], MOCK_PAGE)
    # destroying it takes the domain away again
    ictx.destroy(h)
    assert ictx.refs_ok(b.addr, 2 * P, 0)
    assert ictx.iova_ranges(a) == ([(0, U64)], 1)


def test_hwpt_alloc_fails_on_area_outside_aperture(ictx):
    a = ictx.ioas_alloc()
    _, _, idev = ictx.mock_domain(ictx.ioas_alloc())
    b = Buf(P)
    ictx.map(a, b.addr, P, iova=0)
    assert err(hwpt_alloc, ictx, idev, a) == errno.EADDRINUSE
    # nothing was created: ids 1-5 are the IOASes and the mock device, 6 is free
    assert ictx.ioas_alloc() == 6
    ictx.destroy(a)


def test_hwpt_stays_after_its_device_detaches(env):
    ictx, a, stdev, auto, idev = env
    h = hwpt_alloc(ictx, idev, a)
    s2, _, _ = ictx.mock_domain(h)
    assert err(ictx.destroy, h) == errno.EBUSY  # a device is attached
    assert err(ictx.destroy, a) == errno.EBUSY  # HWPTs use the IOAS
    ictx.destroy(s2)
    b = Buf(P)
    iova = ictx.map(a, b.addr, P)
    ictx.check_map(h, iova, P, b.addr)  # still a domain of the IOAS
    ictx.destroy(h)
    assert err(ictx.check_map, h, iova, P, b.addr) == errno.ENOENT


def test_hwpt_alloc_errors(env):
    ictx, a, stdev, auto, idev = env
    assert err(hwpt_alloc, ictx, idev, a, reserved=1) == errno.EOPNOTSUPP
    assert err(hwpt_alloc, ictx, idev, a, data_len=4) == errno.EINVAL  # NONE with data
    assert err(hwpt_alloc, ictx, idev, a,
               data_type=I.IOMMU_HWPT_DATA_SELFTEST) == errno.EINVAL  # a type, no data
    assert err(hwpt_alloc, ictx, a, a) == errno.ENOENT  # dev_id names an IOAS
    assert err(hwpt_alloc, ictx, 99, a) == errno.ENOENT
    assert err(hwpt_alloc, ictx, idev, 99) == errno.ENOENT
    assert err(hwpt_alloc, ictx, idev, idev) == errno.EINVAL  # pt_id names a device
    assert err(hwpt_alloc, ictx, idev, stdev) == errno.EINVAL
    assert err(hwpt_alloc, ictx, idev, a, flags=1 << 7) == errno.EOPNOTSUPP
    # size 24 (the minimum: data_* and fault_id are optional extensions)
    h = hwpt_alloc(ictx, idev, a, size=24)
    assert h > idev


def test_hwpt_alloc_fault_id_needs_a_fault_object(env):
    """IOMMU_HWPT_FAULT_ID_VALID looks fault_id up (iommufd_get_fault): kmock models no
    fault queue, so any id is ENOENT, and nothing is left behind."""
    ictx, a, stdev, auto, idev = env
    assert err(hwpt_alloc, ictx, idev, a, flags=I.IOMMU_HWPT_FAULT_ID_VALID,
               fault_id=a) == errno.ENOENT
    assert err(hwpt_alloc, ictx, idev, a, flags=I.IOMMU_HWPT_FAULT_ID_VALID,
               fault_id=0) == errno.ENOENT
    assert ictx.ioas_alloc() == 5  # ioas, stdev, idev, auto hwpt: nothing left behind


def test_hwpt_alloc_nested(env):
    """Nested HWPTs: the parent must be NEST_PARENT (EINVAL); NEST_PARENT on a nested
    allocation is EOPNOTSUPP; nested translation itself is not modelled (EOPNOTSUPP,
    documented in kmock.iommufd.iommufd.hwpt_alloc)."""
    ictx, a, stdev, auto, idev = env
    plain = hwpt_alloc(ictx, idev, a)
    parent = hwpt_alloc(ictx, idev, a, flags=I.IOMMU_HWPT_ALLOC_NEST_PARENT)
    data = ctypes.c_uint32(0)
    kw = dict(data_type=I.IOMMU_HWPT_DATA_SELFTEST, data_len=4,
              data_uptr=ctypes.addressof(data))
    assert err(hwpt_alloc, ictx, idev, plain, **kw) == errno.EINVAL
    assert err(hwpt_alloc, ictx, idev, parent, flags=I.IOMMU_HWPT_ALLOC_NEST_PARENT,
               **kw) == errno.EOPNOTSUPP
    assert err(hwpt_alloc, ictx, idev, parent, **kw) == errno.EOPNOTSUPP  # not modelled


# --- vIOMMU / vDEVICE ---------------------------------------------------------------------


def test_viommu_and_vdevice(env):
    ictx, a, stdev, auto, idev = env
    parent = hwpt_alloc(ictx, idev, a, flags=I.IOMMU_HWPT_ALLOC_NEST_PARENT)
    v = viommu_alloc(ictx, idev, parent)
    vd = vdevice_alloc(ictx, v, idev, 0x1234)
    # a second vDEVICE for the device, or the same virt_id on the vIOMMU: EEXIST
    assert err(vdevice_alloc, ictx, v, idev, 0x99) == errno.EEXIST
    s2, _, idev2 = ictx.mock_domain(a)
    assert err(vdevice_alloc, ictx, v, idev2, 0x1234) == errno.EEXIST
    vd2 = vdevice_alloc(ictx, v, idev2, 0x5678)
    # users: the parent is busy while the vIOMMU exists, the vIOMMU while vDEVICEs do
    assert err(ictx.destroy, parent) == errno.EBUSY
    assert err(ictx.destroy, v) == errno.EBUSY
    ictx.destroy(vd)
    ictx.destroy(vd2)
    # the virt_id is free again
    vd = vdevice_alloc(ictx, v, idev, 0x5678)
    ictx.destroy(vd)
    ictx.destroy(v)
    ictx.destroy(parent)


def test_viommu_alloc_errors(env):
    ictx, a, stdev, auto, idev = env
    plain = hwpt_alloc(ictx, idev, a)
    parent = hwpt_alloc(ictx, idev, a, flags=I.IOMMU_HWPT_ALLOC_NEST_PARENT)
    assert err(viommu_alloc, ictx, idev, parent, flags=1) == errno.EOPNOTSUPP
    assert err(viommu_alloc, ictx, idev, parent,
               type=I.IOMMU_VIOMMU_TYPE_DEFAULT) == errno.EOPNOTSUPP
    assert err(viommu_alloc, ictx, a, parent) == errno.ENOENT  # dev_id is an IOAS
    assert err(viommu_alloc, ictx, idev, plain) == errno.EINVAL  # not a NEST_PARENT
    # hwpt_id of another type: iommufd_get_hwpt_paging() -> ENOENT
    assert err(viommu_alloc, ictx, idev, a) == errno.ENOENT
    assert err(viommu_alloc, ictx, idev, 99) == errno.ENOENT
    # a type the device's IOMMU has no vIOMMU for: EOPNOTSUPP, checked before hwpt_id
    assert err(viommu_alloc, ictx, idev, parent, type=0x77) == errno.EOPNOTSUPP
    assert err(viommu_alloc, ictx, idev, 99, type=0x77) == errno.EOPNOTSUPP


def test_vdevice_alloc_errors(ictx, k):
    a = ictx.ioas_alloc()
    _, _, idev = ictx.mock_domain(a)
    parent = hwpt_alloc(ictx, idev, a, flags=I.IOMMU_HWPT_ALLOC_NEST_PARENT)
    v = viommu_alloc(ictx, idev, parent)
    assert err(vdevice_alloc, ictx, parent, idev, 1) == errno.ENOENT  # not a vIOMMU
    assert err(vdevice_alloc, ictx, v, a, 1) == errno.ENOENT  # not a device
    # a device behind another IOMMU (a VFIO PCI device): EINVAL
    dev = k.add_vfio_device()
    vfd = vfio_open(k, dev)
    devid = vfio_bind(k, vfd, ictx.fd)
    assert err(vdevice_alloc, ictx, v, devid, 1) == errno.EINVAL
