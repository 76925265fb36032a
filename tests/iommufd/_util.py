"""Helpers for the iommufd tests: everything goes through Kernel.open("/dev/iommu") and
Kernel.ioctl with the uapi structs, as a VMM (or tools/testing/selftests/iommu) would.

``Iommufd`` wraps one open /dev/iommu; ``Buf`` is a page-aligned anonymous shared
mapping of this process (the selftests' ``buffer``) whose address the tests pass as a
user VA; ``err`` returns the errno of a call that must fail.
"""

import ctypes
import errno
import mmap
import os

import kmock
from kmock.uapi import iommufd as I
from kmock.uapi import vfio as V

P = 4096
U64 = (1 << 64) - 1
U32 = (1 << 32) - 1
RW = I.IOMMU_IOAS_MAP_READABLE | I.IOMMU_IOAS_MAP_WRITEABLE
RO = I.IOMMU_IOAS_MAP_READABLE
FIXED = I.IOMMU_IOAS_MAP_FIXED_IOVA
MOCK_PAGE = I.MOCK_PAGE_SIZE
AP_START = I.MOCK_APERTURE_START
AP_LAST = I.MOCK_APERTURE_LAST


def err(fn, *args, **kw):
    """The errno ``fn(*args)`` fails with; fails the test if it succeeds."""
    try:
        r = fn(*args, **kw)
    except OSError as e:
        return e.errno
    raise AssertionError(f"{getattr(fn, '__name__', fn)}{args} succeeded with {r!r}")


class Buf:
    """An anonymous MAP_SHARED mapping (a real one: the mock reads and writes it by VA)."""

    def __init__(self, size=16 * P, fd=-1, offset=0, align=0):
        """``align``: the address is a multiple of it (the selftests' buffer is
        posix_memalign'ed to the huge page size); the mapping is over-allocated."""
        self.size = size
        extra = align if fd < 0 else 0
        self.m = mmap.mmap(fd, size + extra, mmap.MAP_SHARED,
                           mmap.PROT_READ | mmap.PROT_WRITE, offset=offset)
        base = ctypes.addressof(ctypes.c_char.from_buffer(self.m))
        self.off = (-base % align) if extra else 0
        self.addr = base + self.off

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.m[i.start + self.off:i.stop + self.off]
        return self.m[i + self.off]

    def __setitem__(self, i, v):
        if isinstance(i, slice):
            self.m[i.start + self.off:i.stop + self.off] = v
        else:
            self.m[i + self.off] = v


class Iommufd:
    """One open /dev/iommu of kernel ``k``."""

    def __init__(self, k):
        self.k = k
        self.fd = k.open("/dev/iommu", os.O_RDWR)

    def ioctl(self, request, arg):
        return self.k.ioctl(self.fd, request, arg)

    # --- objects ----------------------------------------------------------------------

    def ioas_alloc(self):
        c = I.iommu_ioas_alloc(size=ctypes.sizeof(I.iommu_ioas_alloc))
        self.ioctl(I.IOMMU_IOAS_ALLOC, c)
        return c.out_ioas_id

    def destroy(self, id):
        return self.ioctl(I.IOMMU_DESTROY, I.iommu_destroy(size=8, id=id))

    def map(self, ioas, va, length, iova=None, flags=RW):
        c = I.iommu_ioas_map(size=40, flags=flags | (FIXED if iova is not None else 0),
                             ioas_id=ioas, user_va=va, length=length, iova=iova or 0)
        self.ioctl(I.IOMMU_IOAS_MAP, c)
        return c.iova

    def map_file(self, ioas, fd, start, length, iova=None, flags=RW):
        c = I.iommu_ioas_map_file(size=40, flags=flags | (FIXED if iova is not None else 0),
                                  ioas_id=ioas, fd=fd, start=start, length=length,
                                  iova=iova or 0)
        self.ioctl(I.IOMMU_IOAS_MAP_FILE, c)
        return c.iova

    def unmap(self, ioas, iova, length):
        c = I.iommu_ioas_unmap(size=24, ioas_id=ioas, iova=iova, length=length)
        self.ioctl(I.IOMMU_IOAS_UNMAP, c)
        return c.length

    def copy(self, dst, src, src_iova, length, dst_iova=None, flags=RW):
        c = I.iommu_ioas_copy(size=40, flags=flags | (FIXED if dst_iova is not None else 0),
                              dst_ioas_id=dst, src_ioas_id=src, length=length,
                              dst_iova=dst_iova or 0, src_iova=src_iova)
        self.ioctl(I.IOMMU_IOAS_COPY, c)
        return c.dst_iova

    def iova_ranges(self, ioas, num=16):
        arr = (I.iommu_iova_range * max(num, 1))()
        c = I.iommu_ioas_iova_ranges(size=32, ioas_id=ioas, num_iovas=num,
                                     allowed_iovas=ctypes.addressof(arr))
        self.ioctl(I.IOMMU_IOAS_IOVA_RANGES, c)
        return [(r.start, r.last) for r in arr[:c.num_iovas]], c.out_iova_alignment

    def allow_iovas(self, ioas, ranges):
        arr = (I.iommu_iova_range * max(len(ranges), 1))(*[I.iommu_iova_range(s, l)
                                                           for s, l in ranges])
        c = I.iommu_ioas_allow_iovas(size=24, ioas_id=ioas, num_iovas=len(ranges),
                                     allowed_iovas=ctypes.addressof(arr))
        return self.ioctl(I.IOMMU_IOAS_ALLOW_IOVAS, c)

    # --- IOMMU_TEST_CMD --------------------------------------------------------------------

    def test_cmd(self, op, id=0, **payload):
        c = I.iommu_test_cmd(size=ctypes.sizeof(I.iommu_test_cmd), op=op, id=id)
        for name, fields in payload.items():
            sub = getattr(c, name)
            for f, v in fields.items():
                setattr(sub, f, v)
        self.ioctl(I.IOMMU_TEST_CMD, c)
        return c

    def mock_domain(self, pt_id):
        """(stdev_id, hwpt_id, idev_id) of a new mock device attached to ``pt_id``."""
        c = self.test_cmd(I.IOMMU_TEST_OP_MOCK_DOMAIN, pt_id)
        d = c.mock_domain
        return d.out_stdev_id, d.out_hwpt_id, d.out_idev_id

    def add_reserved(self, ioas, start, length):
        self.test_cmd(I.IOMMU_TEST_OP_ADD_RESERVED, ioas,
                      add_reserved=dict(start=start, length=length))

    def check_map(self, hwpt, iova, length, uptr):
        self.test_cmd(I.IOMMU_TEST_OP_MD_CHECK_MAP, hwpt,
                      check_map=dict(iova=iova, length=length, uptr=uptr))

    def check_refs(self, uptr, length, refs):
        self.test_cmd(I.IOMMU_TEST_OP_MD_CHECK_REFS,
                      check_refs=dict(uptr=uptr, length=length, refs=refs))

    def refs_ok(self, uptr, length, refs):
        try:
            self.check_refs(uptr, length, refs)
        except OSError as e:
            assert e.errno == errno.EIO, e
            return False
        return True


# --- VFIO cdev ---------------------------------------------------------------------------


def vfio_open(k, dev):
    return k.open(dev.path, os.O_RDWR)


def vfio_bind(k, vfd, iommufd, argsz=24, flags=0):
    b = V.vfio_device_bind_iommufd(argsz=argsz, flags=flags, iommufd=iommufd)
    k.ioctl(vfd, V.VFIO_DEVICE_BIND_IOMMUFD, b)
    return b.out_devid


def vfio_attach(k, vfd, pt_id, argsz=16, flags=0):
    a = V.vfio_device_attach_iommufd_pt(argsz=argsz, flags=flags, pt_id=pt_id)
    k.ioctl(vfd, V.VFIO_DEVICE_ATTACH_IOMMUFD_PT, a)
    return a.pt_id


def vfio_detach(k, vfd, argsz=12, flags=0):
    d = V.vfio_device_detach_iommufd_pt(argsz=argsz, flags=flags)
    return k.ioctl(vfd, V.VFIO_DEVICE_DETACH_IOMMUFD_PT, d)


__all__ = [n for n in dir() if not n.startswith("_")]
__all__ += ["errno", "kmock", "I", "V", "os", "ctypes"]
