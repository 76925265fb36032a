"""VFIO cdev devices (/dev/vfio/devices/vfioN) bound to iommufd, and their DMA.

``Kernel.add_vfio_device()`` creates a mock PCI device; the VMM opens its cdev,
binds it to an iommufd (VFIO_DEVICE_BIND_IOMMUFD), attaches it to an IOAS or a HWPT
(VFIO_DEVICE_ATTACH_IOMMUFD_PT) and the test drives DMA through the returned
device object: ``dma_read(iova, length)`` / ``dma_write(iova, data)``.

The errnos of the cdev ioctls are [U] in the reference; kmock follows
drivers/vfio/device_cdev.c as far as it is known: argsz below minsz or unknown
flags -> EINVAL, device ioctls before a bind -> EINVAL, a second bind -> EINVAL,
an iommufd argument that is not an iommufd -> EBADF (not open) or EINVAL.
"""

import errno
import stat

from ..errors import check_bytes, check_int, check_length, oserror
from ..fdtable import is_open_fd
from ..file import File, make_stat
from ..kernel_util import copy_from_user, copy_to_user
from ..uapi import iommufd as I
from ..uapi import vfio as V
from .objects import IommuDevice
from .pages import PAGE_SIZE


U64 = (1 << 64) - 1


def _check_dma(iova, length, length_name="length"):
    check_int("iova", iova, 0, U64)
    check_length(length_name, length)  # (a DMA past 2**64 faults where the IOVA is unmapped)


class MockIommu:
    """The IOMMU instance devices sit behind (vDEVICEs need matching IOMMUs)."""

    def __init__(self, name):
        self.name = name


class MockPciDevice:
    """A PCI device assigned through VFIO. Its IOMMU uses 4 KiB pages, no aperture."""

    iommu_page_size = PAGE_SIZE
    aperture = None

    def __init__(self, kernel, index, iommu):
        self.kernel = kernel
        self.index = index
        self.iommu = iommu
        self.path = f"/dev/vfio/devices/vfio{index}"
        self.viommu_types = {I.IOMMU_VIOMMU_TYPE_ARM_SMMUV3, I.IOMMU_VIOMMU_TYPE_SELFTEST}
        self.idev = None  # the iommufd_device while bound
        self.faults = []

    def __repr__(self):
        return f"<MockPciDevice {self.path}>"

    # --- the test's side: DMA and inspection -------------------------------------------------

    def dma_read(self, iova, length):
        """Read ``length`` bytes at ``iova`` as the device would (kmock.DmaFault if refused).

        KmockUsageError for an ``iova`` outside [0, 2**64) or a ``length`` outside
        [0, kmock.errors.MAX_ACCESS_BYTES]."""
        _check_dma(iova, length)
        return self._idev().dma(iova, length)

    def dma_write(self, iova, data):
        """Write ``data`` (bytes-like) at ``iova`` as the device would (kmock.DmaFault
        if refused); KmockUsageError as for dma_read."""
        data = check_bytes("data", data)
        _check_dma(iova, len(data), "len(data)")
        self._idev().dma(iova, len(data), data)

    def translate(self, iova):
        """(pfn, perm) the attached domain maps ``iova`` to, or None."""
        check_int("iova", iova, 0, U64)
        idev = self.idev
        if idev is None or idev.hwpt is None:
            return None
        return idev.hwpt.translate(iova)

    def _idev(self):
        if self.idev is None:
            self.kernel.dma_fault(self, 0, "device not bound to an iommufd")
        return self.idev

    def unbind(self):
        idev = self.idev
        if idev is None:
            return
        if idev.vdevice is not None:
            idev.ictx.remove(idev.vdevice)
        if idev.hwpt is not None:
            idev.detach()
        idev.ictx.remove(idev)
        idev.ictx.put()
        self.idev = None


class VfioDeviceFile(File):
    file_type = "vfio"
    i_mode = stat.S_IFCHR | 0o600

    def __init__(self, kernel, dev):
        super().__init__(kernel)
        self.dev = dev

    def release(self):
        with self.kernel.iommu_lock:
            self.dev.unbind()

    def fstat(self):
        return make_stat(self.i_mode, size=0, ino=0x1C0 + self.dev.index, dev=5,
                         rdev=(236 << 8) | self.dev.index)

    def unknown_ioctl(self, request, arg):
        raise oserror(errno.ENOTTY)


def _argsz(arg, ctype, minsz):
    s = copy_from_user(arg, ctype)
    if s.argsz < minsz:
        raise oserror(errno.EINVAL)
    return s


def vfio_bind_iommufd(f, arg):
    s = _argsz(arg, V.vfio_device_bind_iommufd, V.VFIO_DEVICE_BIND_IOMMUFD_MINSZ)
    if s.flags & ~V.VFIO_DEVICE_BIND_FLAG_TOKEN:
        raise oserror(errno.EINVAL)
    dev = f.dev
    if dev.idev is not None:
        raise oserror(errno.EINVAL)
    kernel = f.kernel
    ictx = kernel.fdtable.get(s.iommufd)
    if ictx is None:
        if not is_open_fd(s.iommufd & 0xFFFFFFFF):
            raise oserror(errno.EBADF)
        raise oserror(errno.EINVAL)
    if ictx.file_type != "iommufd":
        raise oserror(errno.EINVAL)
    idev = IommuDevice(ictx, dev)
    s.out_devid = ictx.add(idev)
    ictx.get()  # the bound device keeps the iommufd alive
    dev.idev = idev
    try:
        copy_to_user(arg, s, min(s.argsz, 24))
    except OSError:
        dev.unbind()  # vfio_df_ioctl_bind_iommufd: out_close_device
        raise
    return 0


def vfio_attach_pt(f, arg):
    s = _argsz(arg, V.vfio_device_attach_iommufd_pt, V.VFIO_DEVICE_ATTACH_IOMMUFD_PT_MINSZ)
    if s.flags & ~V.VFIO_DEVICE_ATTACH_PASID:
        raise oserror(errno.EINVAL)
    idev = f.dev.idev
    if idev is None:
        raise oserror(errno.EINVAL)
    if s.flags & V.VFIO_DEVICE_ATTACH_PASID:
        raise oserror(errno.EOPNOTSUPP)  # PASID attach: not modelled
    pt = idev.ictx.lookup(s.pt_id)
    if pt.object_type not in ("ioas", "hwpt_paging"):
        raise oserror(errno.EINVAL)
    old = idev.hwpt
    if old is None:
        hwpt = idev.attach(pt)
    elif pt is old or (pt.object_type == "ioas" and old.auto and old.ioas is pt):
        hwpt = old  # iommufd_device_replace onto what it has: nothing changes
    else:
        # attach on an attached device replaces (iommufd_device_replace): the new
        # attachment is made first; if it fails the device stays where it was
        old.devices.discard(idev)
        idev.hwpt = None
        try:
            hwpt = idev.attach(pt)
        except BaseException:
            old.devices.add(idev)
            idev.hwpt = old
            raise
        if not old.devices and old.auto:
            old.ioas.remove_domain(old)
            old.ioas.users -= 1
            idev.ictx.remove(old)
    s.pt_id = hwpt.id
    try:
        copy_to_user(arg, s, min(s.argsz, 16))
    except OSError:
        idev.detach()  # vfio_df_ioctl_attach_pt: out_detach (a replaced attachment is lost)
        raise
    return 0


def vfio_detach_pt(f, arg):
    s = _argsz(arg, V.vfio_device_detach_iommufd_pt, V.VFIO_DEVICE_DETACH_IOMMUFD_PT_MINSZ)
    if s.flags & ~V.VFIO_DEVICE_DETACH_PASID:
        raise oserror(errno.EINVAL)
    idev = f.dev.idev
    if idev is None or idev.hwpt is None:
        raise oserror(errno.EINVAL)
    idev.detach()
    return 0


def _iommu_locked(handler):
    def locked(f, arg):
        with f.kernel.iommu_lock:  # binds and attaches change iommufd objects
            return handler(f, arg)

    locked.__name__ = handler.__name__
    locked.__doc__ = handler.__doc__
    return locked


def vfio_ioctls(kernel):
    return {
        V.VFIO_DEVICE_BIND_IOMMUFD: _iommu_locked(vfio_bind_iommufd),
        V.VFIO_DEVICE_ATTACH_IOMMUFD_PT: _iommu_locked(vfio_attach_pt),
        V.VFIO_DEVICE_DETACH_IOMMUFD_PT: _iommu_locked(vfio_detach_pt),
    }
