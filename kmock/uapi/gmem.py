"""guest_memfd in-place shared<->private conversion: the two unmerged UAPI generations.

Numbers and layouts: reference/conversion-and-iommufd.md sections 0, 1 and 2.

1. RFC v2 (Ackerley Tng, "1G page support for guest_memfd", May 2025; never merged):
   KVM_GMEM_CONVERT_SHARED / KVM_GMEM_CONVERT_PRIVATE on the guest_memfd fd, with their own
   creation flags and capability numbers (240-242, since taken upstream by other caps). Every
   RFC v2 name that would clash with upstream or with v8 is prefixed ``RFCV2_``.
2. v8 (Jun 2026) and v12 (Aug 2026, applied as v13 in Sep 2026): KVM_SET_MEMORY_ATTRIBUTES2
   on the guest_memfd fd, gated by KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES (250 in v8, 251
   in the post-v8 series [U]). Creation flags are the upstream GUEST_MEMFD_FLAG_MMAP /
   INIT_SHARED (kvm.py).

Capability numbers drifted from revision to revision: ``CAPS_BY_REVISION`` lets a profile
pick the set it emulates. The upstream 6.18 constants (KVM_MEMORY_ATTRIBUTE_PRIVATE, the
MapGPA hypercall, GUEST_MEMFD_FLAG_*) live in kvm.py and are not repeated here.
"""

import ctypes

from .ioctl import _IOWR
from .kvm import KVMIO, KVM_CAP_GUEST_MEMFD_FLAGS

u64 = ctypes.c_uint64

# === 1. RFC v2 (2025): KVM_GMEM_CONVERT_SHARED / _PRIVATE ======================================

KVM_GMEM_IO = 0xAF


class kvm_gmem_convert(ctypes.Structure):
    _fields_ = [
        ("offset", u64),  # byte offset into the guest_memfd
        ("size", u64),  # bytes
        ("error_offset", u64),  # in: must be 0; out: offset of the offending page
        ("reserved", u64 * 5),  # not checked by the RFC v2 kernel
    ]


KVM_GMEM_CONVERT_SHARED = _IOWR(KVM_GMEM_IO, 0x41, kvm_gmem_convert)
KVM_GMEM_CONVERT_PRIVATE = _IOWR(KVM_GMEM_IO, 0x42, kvm_gmem_convert)

# KVM_CREATE_GUEST_MEMFD.flags in the RFC v2 series. Bit 1 means INIT_PRIVATE here but
# INIT_SHARED upstream: the same bit with the opposite sense.
GUEST_MEMFD_FLAG_SUPPORT_SHARED = 1 << 0
GUEST_MEMFD_FLAG_INIT_PRIVATE = 1 << 1  # only valid with SUPPORT_SHARED, else EINVAL
GUEST_MEMFD_FLAG_HUGETLB = 1 << 2
RFCV2_GUEST_MEMFD_FLAGS = (
    GUEST_MEMFD_FLAG_SUPPORT_SHARED | GUEST_MEMFD_FLAG_INIT_PRIVATE | GUEST_MEMFD_FLAG_HUGETLB
)

# include/uapi/linux/guestmem.h (RFC v2): hugetlb page size, mmap-style log2(size) << 58.
# 0 selects the default huge page size.
GUESTMEM_HUGETLB_FLAG_SHIFT = 58
GUESTMEM_HUGETLB_FLAG_MASK = 0x3F
GUESTMEM_HUGETLB_FLAG_16KB = 14 << GUESTMEM_HUGETLB_FLAG_SHIFT
GUESTMEM_HUGETLB_FLAG_64KB = 16 << GUESTMEM_HUGETLB_FLAG_SHIFT
GUESTMEM_HUGETLB_FLAG_512KB = 19 << GUESTMEM_HUGETLB_FLAG_SHIFT
GUESTMEM_HUGETLB_FLAG_1MB = 20 << GUESTMEM_HUGETLB_FLAG_SHIFT
GUESTMEM_HUGETLB_FLAG_2MB = 21 << GUESTMEM_HUGETLB_FLAG_SHIFT
GUESTMEM_HUGETLB_FLAG_8MB = 23 << GUESTMEM_HUGETLB_FLAG_SHIFT
GUESTMEM_HUGETLB_FLAG_16MB = 24 << GUESTMEM_HUGETLB_FLAG_SHIFT
GUESTMEM_HUGETLB_FLAG_32MB = 25 << GUESTMEM_HUGETLB_FLAG_SHIFT
GUESTMEM_HUGETLB_FLAG_256MB = 28 << GUESTMEM_HUGETLB_FLAG_SHIFT
GUESTMEM_HUGETLB_FLAG_512MB = 29 << GUESTMEM_HUGETLB_FLAG_SHIFT
GUESTMEM_HUGETLB_FLAG_1GB = 30 << GUESTMEM_HUGETLB_FLAG_SHIFT
GUESTMEM_HUGETLB_FLAG_2GB = 31 << GUESTMEM_HUGETLB_FLAG_SHIFT
GUESTMEM_HUGETLB_FLAG_16GB = 34 << GUESTMEM_HUGETLB_FLAG_SHIFT


def guestmem_hugetlb_size(flags):
    """The huge page size encoded in ``flags`` (0 when the default size is meant)."""
    shift = (flags >> GUESTMEM_HUGETLB_FLAG_SHIFT) & GUESTMEM_HUGETLB_FLAG_MASK
    return 1 << shift if shift else 0


# Per-index shareability in the RFC v2 gmem maple tree (kernel-internal values).
SHAREABILITY_GUEST = 1  # private
SHAREABILITY_ALL = 2  # shared: the host may fault it in

# RFC v2 capabilities (each returns 1 when supported). Upstream later reused 240-242 for
# other caps, so these numbers are not usable against a real kernel.
RFCV2_KVM_CAP_GMEM_SHARED_MEM = 240
RFCV2_KVM_CAP_GMEM_CONVERSION = 241
RFCV2_KVM_CAP_GMEM_HUGETLB = 242


# === 2. v8 (2026): KVM_SET_MEMORY_ATTRIBUTES2 on the guest_memfd fd ==============================


class _kvm_memory_attributes2_where(ctypes.Union):
    _fields_ = [
        ("address", u64),  # name shared with struct kvm_memory_attributes (the VM ioctl)
        ("offset", u64),  # guest_memfd byte offset
    ]


class kvm_memory_attributes2(ctypes.Structure):
    """128 bytes; the first four fields line up with struct kvm_memory_attributes."""

    _anonymous_ = ("_where",)
    _fields_ = [
        ("_where", _kvm_memory_attributes2_where),
        ("size", u64),
        ("attributes", u64),
        ("flags", u64),
        ("error_offset", u64),  # out
        ("reserved", u64 * 11),
    ]


KVM_SET_MEMORY_ATTRIBUTES2 = _IOWR(KVMIO, 0xD2, kvm_memory_attributes2)

# RFC v1 (Oct 2025) draft: nr 0xd6 on both the VM and the gmem fd. The struct size is not
# confirmed [U]; the reference's guess (64 bytes, reserved[4]) is used.
RFCV1_KVM_SET_MEMORY_ATTRIBUTES2 = _IOWR(KVMIO, 0xD6, 64)

KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES = 250  # the v8 value; see CAPS_BY_REVISION
# After v8 the number moved: a post-v8 snapshot of the series (googleprodkernel/linux-cc,
# include/uapi/linux/kvm.h at 0ab685b29ab6) has it at 251, after KVM_CAP_ARM_PMU_V3_STRICT
# 250; mainline 7.3 then gave 250 to KVM_CAP_PPC_COMPAT_CAPS and 251 to
# KVM_CAP_ARM_PMU_V3_STRICT, so the number the applied series ends up with is not
# confirmed (docs/reference/gmem-attributes-v12.md, "Capability number").
V12_KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES = 251

# RFC v4/v5 content modes for KVM_SET_MEMORY_ATTRIBUTES2.flags (removed in v6): an optional
# mock extension only.
RFCV4_KVM_SET_MEMORY_ATTRIBUTES2_MODE_UNSPECIFIED = 0
RFCV4_KVM_SET_MEMORY_ATTRIBUTES2_MODE_ZERO = 1 << 0
RFCV4_KVM_SET_MEMORY_ATTRIBUTES2_MODE_PRESERVE = 1 << 1

# === capability numbers per revision (reference section 0) ======================================
#
# name -> number, for each revision a profile may emulate. A cap missing from a revision's
# dict does not exist there (KVM_CHECK_EXTENSION returns 0 for it).
#
# The reference's "later RFCs (v2-v5, 2026)" column reads "247 -> 248" and "248 -> 249"
# without saying which revision had which pair. Chosen here: the earlier pair (247/248, from
# the first 0xd2 source) for RFC v2/v3, the later pair (248/249, plus the content-mode cap
# 250 that was "v4 only") for RFC v4/v5. Where the dropped MEMORY_ATTRIBUTES2 cap was still
# present in v5/v6/v7 is not pinned down by the reference either.

CAPS_BY_REVISION = {
    # upstream, no in-place conversion
    "linux-6.18": {
        "KVM_CAP_GUEST_MEMFD_FLAGS": KVM_CAP_GUEST_MEMFD_FLAGS,  # 244
    },
    # Ackerley Tng RFC v2, May 2025 (profile gmem-convert-rfc-v2)
    "gmem-convert-rfc-v2": {
        "KVM_CAP_GMEM_SHARED_MEM": RFCV2_KVM_CAP_GMEM_SHARED_MEM,  # 240
        "KVM_CAP_GMEM_CONVERSION": RFCV2_KVM_CAP_GMEM_CONVERSION,  # 241
        "KVM_CAP_GMEM_HUGETLB": RFCV2_KVM_CAP_GMEM_HUGETLB,  # 242
    },
    # KVM_SET_MEMORY_ATTRIBUTES2 RFC v1, Oct 2025 (ioctl nr 0xd6)
    "gmem-attributes-rfc-v1": {
        "KVM_CAP_GUEST_MEMFD_FLAGS": 244,
        "KVM_CAP_MEMORY_ATTRIBUTES2": 245,
        "KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES": 246,
    },
    # RFC v2/v3, Feb-Mar 2026 (nr 0xd2) [choice, see above]
    "gmem-attributes-rfc-v2": {
        "KVM_CAP_GUEST_MEMFD_FLAGS": 244,
        "KVM_CAP_MEMORY_ATTRIBUTES2": 247,
        "KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES": 248,
    },
    # RFC v4/v5, Mar-Apr 2026, with content modes [choice, see above]
    "gmem-attributes-rfc-v4": {
        "KVM_CAP_GUEST_MEMFD_FLAGS": 244,
        "KVM_CAP_MEMORY_ATTRIBUTES2": 248,
        "KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES": 249,
        "KVM_CAP_MEMORY_ATTRIBUTES2_FLAGS": 250,
    },
    # v8, Jun 2026 (profile gmem-attributes-v8); placed after KVM_CAP_S390_HPAGE_2G 249
    "gmem-attributes-v8": {
        "KVM_CAP_GUEST_MEMFD_FLAGS": 244,
        "KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES": KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES,  # 250
    },
    # v12, Aug 2026 (profile gmem-attributes-v12) [U: 251, see above]
    "gmem-attributes-v12": {
        "KVM_CAP_GUEST_MEMFD_FLAGS": 244,
        "KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES": V12_KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES,
    },
}

# KVM_SET_MEMORY_ATTRIBUTES2 ioctl number per revision, for profiles.
SET_MEMORY_ATTRIBUTES2_BY_REVISION = {
    "gmem-attributes-rfc-v1": RFCV1_KVM_SET_MEMORY_ATTRIBUTES2,
    "gmem-attributes-rfc-v2": KVM_SET_MEMORY_ATTRIBUTES2,
    "gmem-attributes-rfc-v4": KVM_SET_MEMORY_ATTRIBUTES2,
    "gmem-attributes-v8": KVM_SET_MEMORY_ATTRIBUTES2,
    "gmem-attributes-v12": KVM_SET_MEMORY_ATTRIBUTES2,  # same nr, same 128-byte struct
}
