"""kmock.uapi.gmem against reference/conversion-and-iommufd.md sections 0, 1 and 2.

Expected values are literals copied from the reference; each row names its section.
"""

import ctypes

import pytest

from kmock.uapi import gmem, ioctl, kvm

from ._layout import field

REF = "conversion-and-iommufd.md"

# §0 quick-reference table: (section, module, name, value, struct size)
QUICKREF = [
    ("§0 quick ref", gmem, "KVM_GMEM_CONVERT_SHARED", 0xC040AF41, 64),
    ("§0 quick ref", gmem, "KVM_GMEM_CONVERT_PRIVATE", 0xC040AF42, 64),
    ("§0 quick ref", kvm, "KVM_SET_MEMORY_ATTRIBUTES", 0x4020AED2, 32),
    ("§0 quick ref", gmem, "KVM_SET_MEMORY_ATTRIBUTES2", 0xC080AED2, 128),
    ("§0 quick ref [U]", gmem, "RFCV1_KVM_SET_MEMORY_ATTRIBUTES2", 0xC040AED6, 64),
    ("§0 quick ref", kvm, "KVM_CREATE_GUEST_MEMFD", 0xC040AED4, 64),
    ("§0 quick ref", kvm, "KVM_CHECK_EXTENSION", 0xAE03, 0),
]


@pytest.mark.parametrize("section,mod,name,value,size", QUICKREF, ids=[r[2] for r in QUICKREF])
def test_quickref_ioctls(section, mod, name, value, size):
    got = getattr(mod, name)
    assert got == value, f"{REF} {section}: {name} = {got:#x}"
    assert ioctl._IOC_SIZE(got) == size, f"{REF} {section}: {name} struct size"


STRUCT_SIZES = [
    ("§1.1", "kvm_gmem_convert", 64),
    ("§2.2", "kvm_memory_attributes2", 128),
]


@pytest.mark.parametrize("section,struct,size", STRUCT_SIZES, ids=[r[1] for r in STRUCT_SIZES])
def test_struct_sizes(section, struct, size):
    assert ctypes.sizeof(getattr(gmem, struct)) == size, f"{REF} {section}"


OFFSETS = [
    ("§1.1", "kvm_gmem_convert", "offset", 0, 8),
    ("§1.1", "kvm_gmem_convert", "size", 8, 8),
    ("§1.1", "kvm_gmem_convert", "error_offset", 16, 8),
    ("§1.1", "kvm_gmem_convert", "reserved", 24, 40),
    ("§2.2", "kvm_memory_attributes2", "address", 0, 8),
    ("§2.2", "kvm_memory_attributes2", "offset", 0, 8),
    ("§2.2", "kvm_memory_attributes2", "size", 8, 8),
    ("§2.2", "kvm_memory_attributes2", "attributes", 16, 8),
    ("§2.2", "kvm_memory_attributes2", "flags", 24, 8),
    ("§2.2", "kvm_memory_attributes2", "error_offset", 32, 8),
    ("§2.2", "kvm_memory_attributes2", "reserved", 40, 88),
]


@pytest.mark.parametrize("section,struct,path,offset,size", OFFSETS, ids=[f"{r[1]}.{r[2]}" for r in OFFSETS])
def test_field_offsets(section, struct, path, offset, size):
    assert field(getattr(gmem, struct), path) == (offset, size), f"{REF} {section}"


@pytest.mark.parametrize("name", ["address", "size", "attributes", "flags"])
def test_attributes2_prefix_matches_v1_struct(name):
    # §2.2: "the first 4 fields are BUILD_BUG_ON-checked against kvm_memory_attributes"
    assert field(gmem.kvm_memory_attributes2, name) == field(kvm.kvm_memory_attributes, name)


def test_attributes2_address_and_offset_alias():
    # §2.2: union { __u64 address; __u64 offset; }
    a = gmem.kvm_memory_attributes2()
    a.offset = 0x200000
    assert a.address == 0x200000


CONSTANTS = [
    ("§1.1", "KVM_GMEM_IO", 0xAF),
    ("§1.2", "GUEST_MEMFD_FLAG_SUPPORT_SHARED", 1 << 0),
    ("§1.2", "GUEST_MEMFD_FLAG_INIT_PRIVATE", 1 << 1),
    ("§1.2", "GUEST_MEMFD_FLAG_HUGETLB", 1 << 2),
    ("§1.2", "GUESTMEM_HUGETLB_FLAG_SHIFT", 58),
    ("§1.2", "GUESTMEM_HUGETLB_FLAG_MASK", 0x3F),
    ("§1.2", "GUESTMEM_HUGETLB_FLAG_16KB", 14 << 58),
    ("§1.2", "GUESTMEM_HUGETLB_FLAG_64KB", 16 << 58),
    ("§1.2", "GUESTMEM_HUGETLB_FLAG_512KB", 19 << 58),
    ("§1.2", "GUESTMEM_HUGETLB_FLAG_1MB", 20 << 58),
    ("§1.2", "GUESTMEM_HUGETLB_FLAG_2MB", 21 << 58),
    ("§1.2", "GUESTMEM_HUGETLB_FLAG_8MB", 23 << 58),
    ("§1.2", "GUESTMEM_HUGETLB_FLAG_16MB", 24 << 58),
    ("§1.2", "GUESTMEM_HUGETLB_FLAG_32MB", 25 << 58),
    ("§1.2", "GUESTMEM_HUGETLB_FLAG_256MB", 28 << 58),
    ("§1.2", "GUESTMEM_HUGETLB_FLAG_512MB", 29 << 58),
    ("§1.2", "GUESTMEM_HUGETLB_FLAG_1GB", 30 << 58),
    ("§1.2", "GUESTMEM_HUGETLB_FLAG_2GB", 31 << 58),
    ("§1.2", "GUESTMEM_HUGETLB_FLAG_16GB", 34 << 58),
    ("§1.2", "RFCV2_KVM_CAP_GMEM_SHARED_MEM", 240),
    ("§1.2", "RFCV2_KVM_CAP_GMEM_CONVERSION", 241),
    ("§1.2", "RFCV2_KVM_CAP_GMEM_HUGETLB", 242),
    ("§1.2", "SHAREABILITY_GUEST", 1),
    ("§1.2", "SHAREABILITY_ALL", 2),
    ("§2.1 content modes", "RFCV4_KVM_SET_MEMORY_ATTRIBUTES2_MODE_UNSPECIFIED", 0),
    ("§2.1 content modes", "RFCV4_KVM_SET_MEMORY_ATTRIBUTES2_MODE_ZERO", 1 << 0),
    ("§2.1 content modes", "RFCV4_KVM_SET_MEMORY_ATTRIBUTES2_MODE_PRESERVE", 1 << 1),
    ("§2.2", "KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES", 250),
]


@pytest.mark.parametrize("section,name,value", CONSTANTS, ids=[r[1] for r in CONSTANTS])
def test_constants(section, name, value):
    assert getattr(gmem, name) == value, f"{REF} {section}: {name}"


def test_v8_uses_upstream_private_attribute():
    # §2.2: KVM_MEMORY_ATTRIBUTE_PRIVATE (1ULL << 3), defined once in kvm.py
    assert kvm.KVM_MEMORY_ATTRIBUTE_PRIVATE == 8
    assert not hasattr(gmem, "KVM_MEMORY_ATTRIBUTE_PRIVATE")


@pytest.mark.parametrize(
    "flag,size",
    [(0, 0), (21 << 58, 2 * 1024 * 1024), (30 << 58, 1024 * 1024 * 1024)],
    ids=["default", "2MB", "1GB"],
)
def test_hugetlb_size_decoding(flag, size):
    # §1.2: the value is log2(size) << 58; 0 means the default huge page size
    assert gmem.guestmem_hugetlb_size(flag | gmem.GUEST_MEMFD_FLAG_HUGETLB) == size


# §0 capability table: (section, revision, cap name, number or None when absent)
CAPS = [
    ("§0 caps, RFC v2 (May 2025)", "gmem-convert-rfc-v2", "KVM_CAP_GMEM_SHARED_MEM", 240),
    ("§0 caps, RFC v2 (May 2025)", "gmem-convert-rfc-v2", "KVM_CAP_GMEM_CONVERSION", 241),
    ("§0 caps, RFC v2 (May 2025)", "gmem-convert-rfc-v2", "KVM_CAP_GMEM_HUGETLB", 242),
    ("§0 caps, RFC v2 (May 2025)", "gmem-convert-rfc-v2", "KVM_CAP_GUEST_MEMFD_FLAGS", None),
    ("§0 caps, RFC v2 (May 2025)", "gmem-convert-rfc-v2", "KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES", None),
    ("§0 caps, attrs2 RFC v1 (Oct 2025)", "gmem-attributes-rfc-v1", "KVM_CAP_GUEST_MEMFD_FLAGS", 244),
    ("§0 caps, attrs2 RFC v1 (Oct 2025)", "gmem-attributes-rfc-v1", "KVM_CAP_MEMORY_ATTRIBUTES2", 245),
    ("§0 caps, attrs2 RFC v1 (Oct 2025)", "gmem-attributes-rfc-v1", "KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES", 246),
    ("§0 caps, later RFCs (247->248)", "gmem-attributes-rfc-v2", "KVM_CAP_GUEST_MEMFD_FLAGS", 244),
    ("§0 caps, later RFCs (247->248)", "gmem-attributes-rfc-v2", "KVM_CAP_MEMORY_ATTRIBUTES2", 247),
    ("§0 caps, later RFCs (248->249)", "gmem-attributes-rfc-v2", "KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES", 248),
    ("§0 caps, later RFCs (247->248)", "gmem-attributes-rfc-v4", "KVM_CAP_MEMORY_ATTRIBUTES2", 248),
    ("§0 caps, later RFCs (248->249)", "gmem-attributes-rfc-v4", "KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES", 249),
    ("§0 caps, later RFCs (250, v4 only)", "gmem-attributes-rfc-v4", "KVM_CAP_MEMORY_ATTRIBUTES2_FLAGS", 250),
    ("§0 caps, v8 (Jun 2026)", "gmem-attributes-v8", "KVM_CAP_GUEST_MEMFD_FLAGS", 244),
    ("§0 caps, v8 (Jun 2026)", "gmem-attributes-v8", "KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES", 250),
    ("§0 caps, v8 (dropped)", "gmem-attributes-v8", "KVM_CAP_MEMORY_ATTRIBUTES2", None),
    ("§0 caps, v8 (dropped in v6)", "gmem-attributes-v8", "KVM_CAP_MEMORY_ATTRIBUTES2_FLAGS", None),
    ("§0 caps, upstream 6.18", "linux-6.18", "KVM_CAP_GUEST_MEMFD_FLAGS", 244),
    ("§0 caps, upstream 6.18", "linux-6.18", "KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES", None),
]


@pytest.mark.parametrize("section,rev,cap,number", CAPS, ids=[f"{r[1]}:{r[2]}" for r in CAPS])
def test_caps_by_revision(section, rev, cap, number):
    assert gmem.CAPS_BY_REVISION[rev].get(cap) == number, f"{REF} {section}"


SET_ATTRS2 = [
    ("§2.1 RFC v1 (nr 0xd6)", "gmem-attributes-rfc-v1", 0xC040AED6),
    ("§2.1 RFC v2 (nr 0xd2)", "gmem-attributes-rfc-v2", 0xC080AED2),
    ("§0 quick ref (v8)", "gmem-attributes-v8", 0xC080AED2),
]


@pytest.mark.parametrize("section,rev,value", SET_ATTRS2, ids=[r[1] for r in SET_ATTRS2])
def test_set_memory_attributes2_number_by_revision(section, rev, value):
    assert gmem.SET_MEMORY_ATTRIBUTES2_BY_REVISION[rev] == value, f"{REF} {section}"
