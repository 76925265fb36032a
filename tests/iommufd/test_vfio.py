"""VFIO cdev devices bound to iommufd (reference §3.5) and device DMA through the IOMMU:
translation, permissions, faults recorded in ``kernel.dma_faults``, and the bytes landing
in the memory behind the map (a mapping of this process, a memfd)."""

import pytest

from ._util import *  # noqa: F403


@pytest.fixture
def dev(k):
    return k.add_vfio_device()


@pytest.fixture
def bound(k, ictx, dev):
    """A VFIO device bound to ``ictx`` and attached to a fresh IOAS: (dev, vfd, devid, ioas, hwpt)."""
    vfd = vfio_open(k, dev)
    devid = vfio_bind(k, vfd, ictx.fd)
    a = ictx.ioas_alloc()
    hwpt = vfio_attach(k, vfd, a)
    return dev, vfd, devid, a, hwpt


# --- BIND / ATTACH / DETACH ------------------------------------------------------------------


def test_cdev_path_and_open(k, dev):
    assert dev.path == "/dev/vfio/devices/vfio0"
    assert k.add_vfio_device().path == "/dev/vfio/devices/vfio1"
    vfd = vfio_open(k, dev)
    k.close(vfd)


def test_bind_errors(k, ictx, dev, tmp_path):
    vfd = vfio_open(k, dev)
    assert err(vfio_bind, k, vfd, -1) == errno.EBADF
    fd = k.memfd_create("x")
    k.close(fd)
    assert err(vfio_bind, k, vfd, fd) == errno.EBADF  # closed
    kvm = k.open("/dev/kvm", os.O_RDWR)
    assert err(vfio_bind, k, vfd, kvm) == errno.EINVAL  # not an iommufd
    assert err(vfio_bind, k, vfd, vfd) == errno.EINVAL
    null = os.open("/dev/null", os.O_RDONLY)
    try:
        assert err(vfio_bind, k, vfd, null) == errno.EINVAL  # a real fd of another file
    finally:
        os.close(null)
    assert err(vfio_bind, k, vfd, ictx.fd, argsz=15) == errno.EINVAL
    assert err(vfio_bind, k, vfd, ictx.fd, flags=1 << 5) == errno.EINVAL
    # none of that bound anything
    devid = vfio_bind(k, vfd, ictx.fd, argsz=16)
    assert devid == 1
    assert err(vfio_bind, k, vfd, ictx.fd) == errno.EINVAL  # a second bind
    other = Iommufd(k)
    assert err(vfio_bind, k, vfd, other.fd) == errno.EINVAL


def test_bind_out_devid_is_an_iommufd_device(k, ictx, dev):
    a = ictx.ioas_alloc()
    vfd = vfio_open(k, dev)
    devid = vfio_bind(k, vfd, ictx.fd)
    assert devid == a + 1  # the shared id space
    # the device object cannot be destroyed by id (VFIO owns it)
    assert err(ictx.destroy, devid) == errno.EBUSY
    # usable as dev_id
    h = I.iommu_hwpt_alloc(size=48, dev_id=devid, pt_id=a)
    ictx.ioctl(I.IOMMU_HWPT_ALLOC, h)
    assert h.out_hwpt_id == devid + 1


def test_ioctls_before_bind(k, dev):
    vfd = vfio_open(k, dev)
    assert err(vfio_attach, k, vfd, 1) == errno.EINVAL
    assert err(vfio_detach, k, vfd) == errno.EINVAL


def test_attach_ioas_writes_back_the_auto_hwpt(k, ictx, dev):
    vfd = vfio_open(k, dev)
    devid = vfio_bind(k, vfd, ictx.fd)
    a = ictx.ioas_alloc()
    hwpt = vfio_attach(k, vfd, a)
    assert hwpt not in (devid, a)
    assert err(ictx.destroy, a) == errno.EBUSY
    assert err(ictx.destroy, hwpt) == errno.EBUSY
    # a second device on the same IOAS shares the automatic HWPT
    d2 = k.add_vfio_device()
    v2 = vfio_open(k, d2)
    vfio_bind(k, v2, ictx.fd)
    assert vfio_attach(k, v2, a) == hwpt
    vfio_detach(k, vfd)
    vfio_detach(k, v2)
    assert err(ictx.destroy, hwpt) == errno.ENOENT  # the auto HWPT went with its devices
    ictx.destroy(a)


def test_attach_hwpt_and_detach(k, ictx, dev):
    vfd = vfio_open(k, dev)
    devid = vfio_bind(k, vfd, ictx.fd)
    a = ictx.ioas_alloc()
    h = I.iommu_hwpt_alloc(size=48, dev_id=devid, pt_id=a)
    ictx.ioctl(I.IOMMU_HWPT_ALLOC, h)
    assert vfio_attach(k, vfd, h.out_hwpt_id) == h.out_hwpt_id
    assert err(ictx.destroy, h.out_hwpt_id) == errno.EBUSY
    vfio_detach(k, vfd)
    assert err(vfio_detach, k, vfd) == errno.EINVAL  # nothing attached
    ictx.destroy(h.out_hwpt_id)


def test_attach_errors(k, ictx, dev):
    vfd = vfio_open(k, dev)
    devid = vfio_bind(k, vfd, ictx.fd)
    a = ictx.ioas_alloc()
    assert err(vfio_attach, k, vfd, 99) == errno.ENOENT
    assert err(vfio_attach, k, vfd, devid) == errno.EINVAL  # not an IOAS or HWPT
    assert err(vfio_attach, k, vfd, a, argsz=11) == errno.EINVAL
    assert err(vfio_attach, k, vfd, a, flags=1 << 4) == errno.EINVAL
    assert err(vfio_detach, k, vfd, argsz=7) == errno.EINVAL
    assert err(vfio_detach, k, vfd, flags=1 << 4) == errno.EINVAL


def test_close_unbinds(k, ictx, dev):
    vfd = vfio_open(k, dev)
    devid = vfio_bind(k, vfd, ictx.fd)
    a = ictx.ioas_alloc()
    hwpt = vfio_attach(k, vfd, a)
    k.close(vfd)
    assert err(ictx.destroy, hwpt) == errno.ENOENT
    assert err(ictx.destroy, devid) == errno.ENOENT
    ictx.destroy(a)
    vfd = vfio_open(k, dev)
    vfio_bind(k, vfd, ictx.fd)  # can bind again


def test_unknown_ioctl_on_cdev(k, dev):
    vfd = vfio_open(k, dev)
    assert err(k.ioctl, vfd, I._IO(0x3B, 0x30), 0) == errno.ENOTTY


# --- DMA ---------------------------------------------------------------------------------------


def test_dma_translation_and_bytes_in_process_memory(k, ictx, bound):
    dev, vfd, devid, a, hwpt = bound
    b = Buf(4 * P)
    b[0:5] = b"hello"
    iova = ictx.map(a, b.addr, 4 * P)
    assert dev.dma_read(iova, 5) == b"hello"
    dev.dma_write(iova + P + 10, b"world")
    assert b[P + 10:P + 15] == b"world"  # the bytes land in the mapping
    # a DMA crossing pages
    dev.dma_write(iova + P - 2, b"abcd")
    assert b[P - 2:P + 2] == b"abcd"
    assert dev.dma_read(iova + P - 2, 4) == b"abcd"
    pfn, perm = dev.translate(iova + P)
    assert pfn == dev.translate(iova)[0] + 1
    assert k.dma_faults == []


def test_dma_fixed_iova_offsets(k, ictx, bound):
    dev, vfd, devid, a, hwpt = bound
    b = Buf(8 * P)
    ictx.map(a, b.addr + 2 * P, 2 * P, iova=0x100000)
    b[2 * P + 7] = 0x5A
    assert dev.dma_read(0x100007, 1) == b"\x5a"


def test_dma_write_to_readonly_map_faults(k, ictx, bound):
    dev, vfd, devid, a, hwpt = bound
    b = Buf(2 * P)
    iova = ictx.map(a, b.addr, 2 * P, flags=RO)
    b[0:3] = b"abc"
    assert dev.dma_read(iova, 3) == b"abc"
    with pytest.raises(kmock.DmaFault) as e:
        dev.dma_write(iova + 1, b"X")
    assert e.value.iova == iova + 1
    assert b[0:3] == b"abc"  # nothing written
    assert len(k.dma_faults) == 1
    fdev, fiova, reason = k.dma_faults[0]
    assert fdev is dev and fiova == iova + 1 and "writ" in reason


def test_dma_to_unmapped_iova_faults(k, ictx, bound):
    dev, vfd, devid, a, hwpt = bound
    b = Buf(2 * P)
    iova = ictx.map(a, b.addr, P)
    with pytest.raises(kmock.DmaFault):
        dev.dma_read(iova + P, 1)
    with pytest.raises(kmock.DmaFault):
        dev.dma_read(iova + P - 1, 2)  # the second byte is unmapped
    ictx.unmap(a, iova, P)
    with pytest.raises(kmock.DmaFault):
        dev.dma_read(iova, 1)
    assert [f[1] for f in k.dma_faults] == [iova + P, iova + P, iova]
    assert dev.translate(iova) is None


def test_dma_without_attachment_faults(k, ictx, dev):
    with pytest.raises(kmock.DmaFault):
        dev.dma_read(0, 1)  # not bound
    vfd = vfio_open(k, dev)
    vfio_bind(k, vfd, ictx.fd)
    with pytest.raises(kmock.DmaFault):
        dev.dma_read(0, 1)  # bound, not attached
    a = ictx.ioas_alloc()
    b = Buf(P)
    iova = ictx.map(a, b.addr, P)
    vfio_attach(k, vfd, a)
    dev.dma_read(iova, 1)
    vfio_detach(k, vfd)
    with pytest.raises(kmock.DmaFault):
        dev.dma_read(iova, 1)
    assert len(k.dma_faults) == 3
    assert all(f[0] is dev for f in k.dma_faults)  # recorded against the device


def test_dma_through_map_file_lands_in_the_memfd(k, ictx, bound):
    dev, vfd, devid, a, hwpt = bound
    fd = k.memfd_create("dma")
    k.ftruncate(fd, 4 * P)
    k.pwrite(fd, b"from file", P)
    iova = ictx.map_file(a, fd, P, 2 * P)
    assert dev.dma_read(iova, 9) == b"from file"
    dev.dma_write(iova + P, b"from device")
    assert k.pread(fd, 11, 2 * P) == b"from device"
    # the memfd's mapping sees the same bytes
    b = Buf(4 * P, fd=fd)
    assert b[2 * P:2 * P + 11] == b"from device"
    # closing the VMM's fd keeps the pages (iopt_pages holds a file reference)
    k.close(fd)
    assert dev.dma_read(iova + P, 11) == b"from device"


def test_dma_through_ioas_copy(k, ictx, bound):
    dev, vfd, devid, a, hwpt = bound
    src = ictx.ioas_alloc()
    b = Buf(2 * P)
    s_iova = ictx.map(src, b.addr, 2 * P)
    iova = ictx.copy(a, src, s_iova, 2 * P)
    dev.dma_write(iova + 3, b"copied")
    assert b[3:9] == b"copied"


def test_dma_map_after_attach_and_before(k, ictx, dev):
    """Areas mapped before the attach are mapped into the domain at attach time."""
    vfd = vfio_open(k, dev)
    vfio_bind(k, vfd, ictx.fd)
    a = ictx.ioas_alloc()
    b = Buf(2 * P)
    before = ictx.map(a, b.addr, P)
    vfio_attach(k, vfd, a)
    after = ictx.map(a, b.addr + P, P)
    b[0:1] = b"1"
    b[P:P + 1] = b"2"
    assert dev.dma_read(before, 1) == b"1"
    assert dev.dma_read(after, 1) == b"2"


def test_map_munmapped_va_with_device_attached_is_efault(k, ictx, bound):
    dev, vfd, devid, a, hwpt = bound
    b = Buf(2 * P)
    addr = b.addr
    b.m.close()
    assert err(ictx.map, a, addr, 2 * P) == errno.EFAULT


def test_attach_replaces(k, ictx, dev):
    """ATTACH on an attached device replaces the attachment (iommufd_device_replace):
    onto its own IOAS or HWPT nothing changes; onto another one the old automatic HWPT
    goes; a failing replace leaves the device where it was."""
    vfd = vfio_open(k, dev)
    vfio_bind(k, vfd, ictx.fd)
    a = ictx.ioas_alloc()
    b = Buf(2 * P)
    iova = ictx.map(a, b.addr, P)
    hwpt = vfio_attach(k, vfd, a)
    assert vfio_attach(k, vfd, a) == hwpt
    assert vfio_attach(k, vfd, hwpt) == hwpt
    dev.dma_read(iova, 1)
    # a replace that fails (an area of the new IOAS cannot be pinned): still on the old one
    a2 = ictx.ioas_alloc()
    gone = Buf(P)
    addr = gone.addr
    gone.m.close()
    ictx.map(a2, addr, P, iova=iova)
    assert err(vfio_attach, k, vfd, a2) == errno.EFAULT
    dev.dma_read(iova, 1)
    assert err(ictx.destroy, hwpt) == errno.EBUSY
    # a replace that works
    ictx.unmap(a2, iova, P)
    ictx.map(a2, b.addr + P, P, iova=iova)
    b[P:P + 1] = b"2"
    h2 = vfio_attach(k, vfd, a2)
    assert h2 != hwpt
    assert dev.dma_read(iova, 1) == b"2"
    assert err(ictx.destroy, hwpt) == errno.ENOENT  # the old automatic HWPT is gone
    ictx.destroy(a)
