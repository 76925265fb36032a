"""include/uapi/linux/vfio.h: the VFIO cdev <-> iommufd binding ioctls.

Numbers and layouts: reference/conversion-and-iommufd.md section 3.5. The minsz/xend values
follow drivers/vfio/device_cdev.c (``minsz = offsetofend(struct, last mandatory field)``;
a flag that uses a later field raises the requirement to ``xend``). Layout facts are [C] in
the reference; the errnos around them are not.

Flow: open("/dev/vfio/devices/vfioN") -> VFIO_DEVICE_BIND_IOMMUFD ->
VFIO_DEVICE_ATTACH_IOMMUFD_PT(pt_id = ioas_id) -> IOMMU_IOAS_MAP / MAP_FILE -> DMA.
"""

import ctypes

from .ioctl import _IO

u32 = ctypes.c_uint32
u64 = ctypes.c_uint64
s32 = ctypes.c_int32

VFIO_TYPE = 0x3B  # ';', shared with IOMMUFD_TYPE
VFIO_BASE = 100


class vfio_device_bind_iommufd(ctypes.Structure):
    _fields_ = [
        ("argsz", u32),
        ("flags", u32),
        ("iommufd", s32),  # the /dev/iommu fd
        ("out_devid", u32),  # iommufd device object id (dev_id in HWPT_ALLOC, ...)
        ("token_uuid_ptr", u64),  # with VFIO_DEVICE_BIND_FLAG_TOKEN (VF token), 2025+
    ]


class vfio_device_attach_iommufd_pt(ctypes.Structure):
    _fields_ = [
        ("argsz", u32),
        ("flags", u32),
        ("pt_id", u32),  # in: IOAS or HWPT id; out: the HWPT actually attached
        ("pasid", u32),  # with VFIO_DEVICE_ATTACH_PASID
    ]


class vfio_device_detach_iommufd_pt(ctypes.Structure):
    _fields_ = [("argsz", u32), ("flags", u32), ("pasid", u32)]


VFIO_DEVICE_BIND_FLAG_TOKEN = 1 << 0
VFIO_DEVICE_ATTACH_PASID = 1 << 0
VFIO_DEVICE_DETACH_PASID = 1 << 0

VFIO_DEVICE_BIND_IOMMUFD = _IO(VFIO_TYPE, VFIO_BASE + 18)
VFIO_DEVICE_ATTACH_IOMMUFD_PT = _IO(VFIO_TYPE, VFIO_BASE + 19)
VFIO_DEVICE_DETACH_IOMMUFD_PT = _IO(VFIO_TYPE, VFIO_BASE + 20)


def _offsetofend(struct, field):
    f = getattr(struct, field)
    return f.offset + f.size


# argsz below minsz -> EINVAL. The reference gives 16 for BIND; ATTACH (pt_id) and DETACH
# (flags) are from device_cdev.c (stored mail ids 10081755817, 13139749619).
VFIO_DEVICE_BIND_IOMMUFD_MINSZ = _offsetofend(vfio_device_bind_iommufd, "out_devid")  # 16
VFIO_DEVICE_ATTACH_IOMMUFD_PT_MINSZ = _offsetofend(vfio_device_attach_iommufd_pt, "pt_id")  # 12
VFIO_DEVICE_DETACH_IOMMUFD_PT_MINSZ = _offsetofend(vfio_device_detach_iommufd_pt, "flags")  # 8

# argsz needed when the flag that uses the trailing field is set.
VFIO_DEVICE_BIND_IOMMUFD_TOKEN_XEND = _offsetofend(vfio_device_bind_iommufd, "token_uuid_ptr")  # 24
VFIO_DEVICE_ATTACH_IOMMUFD_PT_PASID_XEND = _offsetofend(vfio_device_attach_iommufd_pt, "pasid")  # 16
VFIO_DEVICE_DETACH_IOMMUFD_PT_PASID_XEND = _offsetofend(vfio_device_detach_iommufd_pt, "pasid")  # 12

MINSZ = {
    VFIO_DEVICE_BIND_IOMMUFD: VFIO_DEVICE_BIND_IOMMUFD_MINSZ,
    VFIO_DEVICE_ATTACH_IOMMUFD_PT: VFIO_DEVICE_ATTACH_IOMMUFD_PT_MINSZ,
    VFIO_DEVICE_DETACH_IOMMUFD_PT: VFIO_DEVICE_DETACH_IOMMUFD_PT_MINSZ,
}

STRUCT = {
    VFIO_DEVICE_BIND_IOMMUFD: vfio_device_bind_iommufd,
    VFIO_DEVICE_ATTACH_IOMMUFD_PT: vfio_device_attach_iommufd_pt,
    VFIO_DEVICE_DETACH_IOMMUFD_PT: vfio_device_detach_iommufd_pt,
}
