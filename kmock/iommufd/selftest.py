"""IOMMU_TEST_CMD: the kernel's iommufd selftest interface (CONFIG_IOMMUFD_TEST).

Enough of drivers/iommu/iommufd/selftest.c for tests written in the style of
tools/testing/selftests/iommu to run: ADD_RESERVED, MOCK_DOMAIN (a mock device on a
mock IOMMU: 2 KiB IOMMU pages, aperture [1<<24, (1<<31)-1]), MD_CHECK_MAP,
MD_CHECK_REFS, CREATE_ACCESS, ACCESS_RW. Other ops answer EOPNOTSUPP.
"""

import ctypes
import errno

from .. import _libc
from ..errors import oserror
from ..uapi import iommufd as I
from .ioas import ULONG_MAX
from .iommufd import Ucmd
from .objects import IommuDevice
from .pages import PAGE_SIZE


class SelftestDevice:
    """A device on the iommufd_mock bus (the stdev object of MOCK_DOMAIN)."""

    object_type = "selftest_device"
    iommu_page_size = I.MOCK_PAGE_SIZE
    aperture = (I.MOCK_APERTURE_START, I.MOCK_APERTURE_LAST)
    viommu_types = {I.IOMMU_VIOMMU_TYPE_SELFTEST}

    def __init__(self, ictx):
        self.ictx = ictx
        self.id = 0
        self.kernel = ictx.kernel
        self.iommu = ictx.kernel.selftest_iommu
        self.idev = None
        self.faults = []

    users = 0

    def unbind(self):
        idev = self.idev
        if idev is not None:
            if idev.vdevice is not None:
                self.ictx.remove(idev.vdevice)
            if idev.hwpt is not None:
                idev.detach()
            self.ictx.remove(idev)
            self.idev = None
        self.ictx.remove(self)


class Access:
    """An in-kernel access to an IOAS (the emulated-device path): its own fd."""

    object_type = "access"
    users = 0

    def __init__(self, ictx, ioas, needs_pin):
        self.ictx = ictx
        self.ioas = ioas
        self.needs_pin = needs_pin
        ioas.accesses.append(self)


def _mock_domain(ictx, cmd):
    pt = ictx.lookup(cmd.id)
    if pt.object_type not in ("ioas", "hwpt_paging"):
        raise oserror(errno.EINVAL)
    sdev = SelftestDevice(ictx)
    ictx.add(sdev)
    idev = IommuDevice(ictx, sdev)
    idev.user_destroyable = False
    ictx.add(idev)
    sdev.idev = idev
    try:
        hwpt = idev.attach(pt)
    except BaseException:
        sdev.unbind()
        raise
    cmd.mock_domain.out_stdev_id = sdev.id
    cmd.mock_domain.out_hwpt_id = hwpt.id
    cmd.mock_domain.out_idev_id = idev.id


def _check_map(ictx, cmd):
    """MD_CHECK_MAP: every page of [iova, iova+length) maps to the frame of uptr's page."""
    hwpt = ictx.lookup(cmd.id, "hwpt_paging")
    c = cmd.check_map
    if c.iova % hwpt.page_size or c.length % hwpt.page_size or c.length == 0:
        raise oserror(errno.EINVAL)
    kernel = ictx.kernel
    ioas = hwpt.ioas
    # selftest.c walks every MOCK_IO_PAGE_SIZE and wants iova_to_phys(iova) ==
    # pfn(uptr) * PAGE_SIZE + uptr % PAGE_SIZE: byte-exact, so an area starting half-way
    # into a CPU page is checked at its real offset (the domain's table is per CPU page;
    # the physical byte comes from the area the entry belongs to).
    step = hwpt.page_size
    for off in range(0, c.length, step):
        iova = c.iova + off
        area = ioas.area_at(iova)
        if area is None or area.revoked or hwpt.translate(iova) is None:
            raise oserror(errno.EINVAL)
        poff = area.offset + (iova - area.iova)
        byte = area.pages.start + poff
        pfn = area.pages.pfn_runs(poff, 1)[0][1]
        uptr = c.uptr + off
        if pfn != kernel.user_pfn(uptr) or byte & (PAGE_SIZE - 1) != uptr & (PAGE_SIZE - 1):
            raise oserror(errno.EINVAL)


def _check_refs(ictx, cmd):
    """MD_CHECK_REFS: each page of [uptr, uptr+length) is pinned exactly ``refs`` times."""
    c = cmd.check_refs
    if c.length == 0 or c.uptr % PAGE_SIZE or c.length % PAGE_SIZE:
        raise oserror(errno.EINVAL)
    kernel = ictx.kernel
    for off in range(0, c.length, PAGE_SIZE):
        if kernel.iommu_pin_count(kernel.user_pfn(c.uptr + off)) != c.refs:
            raise oserror(errno.EIO)


def _access_rw(ictx, cmd):
    """ACCESS_RW: the access reads/writes IOAS memory at iova from/to the user buffer."""
    access = ictx.kernel.fdtable.get(cmd.id)
    access = getattr(access, "access", None)
    if access is None:
        raise oserror(errno.EBADF)
    c = cmd.access_rw
    if c.length == 0 or c.iova + c.length - 1 > ULONG_MAX:
        raise oserror(errno.EINVAL)
    ioas = access.ioas
    write = bool(c.flags & I.MOCK_ACCESS_RW_WRITE)
    pos, end = c.iova, c.iova + c.length
    spans = []
    while pos < end:
        area = ioas.area_at(pos)
        if area is None or area.revoked:
            raise oserror(errno.EINVAL)
        if write and not area.writable:
            raise oserror(errno.EPERM)
        n = min(end, area.last + 1) - pos
        spans.append((area, pos, n))
        pos += n
    for area, p, n in spans:
        off = area.offset + (p - area.iova)
        uoff = c.uptr + (p - c.iova)
        if write:
            data, got = _libc.read_user(uoff, n)
            if got != n:
                raise oserror(errno.EFAULT)
            area.pages.write(off, data)
        else:
            if _libc.write_user(uoff, area.pages.read(off, n)) != n:
                raise oserror(errno.EFAULT)


def _create_access(ictx, cmd):
    from ..file import File

    ioas = ictx.lookup(cmd.id, "ioas")
    access = Access(ictx, ioas, bool(cmd.create_access.flags & I.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES))

    class _AccessFile(File):
        file_type = "iommufd_access"

        def release(self):
            ioas.accesses.remove(access)

    f = _AccessFile(ictx.kernel)
    f.access = access
    cmd.create_access.out_access_fd = ictx.kernel.fdtable.install(f)


def _add_reserved(ictx, cmd):
    ioas = ictx.lookup(cmd.id, "ioas")
    r = cmd.add_reserved
    if r.length == 0 or r.start + r.length - 1 > ULONG_MAX:
        raise oserror(errno.EINVAL)
    last = r.start + r.length - 1
    if any(s <= last and r.start <= l for s, l in ioas.allowed):
        raise oserror(errno.EADDRINUSE)
    if ioas._overlaps(r.start, last):
        raise oserror(errno.EADDRINUSE)
    ioas.reserved.append((r.start, last, "test"))


_OPS = {
    I.IOMMU_TEST_OP_ADD_RESERVED: _add_reserved,
    I.IOMMU_TEST_OP_MOCK_DOMAIN: _mock_domain,
    I.IOMMU_TEST_OP_MD_CHECK_MAP: _check_map,
    I.IOMMU_TEST_OP_MD_CHECK_REFS: _check_refs,
    I.IOMMU_TEST_OP_CREATE_ACCESS: _create_access,
    I.IOMMU_TEST_OP_ACCESS_RW: _access_rw,
}


def iommu_test_cmd(ictx, arg):
    ucmd = Ucmd(ictx, arg, I.iommu_test_cmd)
    cmd = ucmd.load(I.MIN_SIZE.get(I.IOMMU_TEST_CMD, ctypes.sizeof(I.iommu_test_cmd)))
    op = _OPS.get(cmd.op)
    if op is None:
        raise oserror(errno.EOPNOTSUPP)
    op(ictx, cmd)
    ucmd.respond(cmd)
    return 0

