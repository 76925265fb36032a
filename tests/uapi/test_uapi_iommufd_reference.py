"""kmock.uapi.iommufd and kmock.uapi.vfio against reference/conversion-and-iommufd.md
sections 0 and 3.

Expected values are literals copied from the reference; each row names its section. Rows
marked "header" check values the reference leaves open and that were read from the kernel
header instead (see the module docstrings).
"""

import ctypes

import pytest

from kmock.uapi import iommufd, vfio

from ._layout import field, field_names

REF = "conversion-and-iommufd.md"


def test_iommufd_type():
    assert iommufd.IOMMUFD_TYPE == 0x3B  # §3.1 IOMMUFD_TYPE (';')
    assert iommufd.IOMMUFD_CMD_BASE == 0x80  # §3.1


# §3.1 table: (section, cmd constant, nr, ioctl constant, ioctl value, struct, struct size)
COMMANDS = [
    ("§3.1", "IOMMUFD_CMD_DESTROY", 0x80, "IOMMU_DESTROY", 0x3B80, "iommu_destroy", 8),
    ("§3.1", "IOMMUFD_CMD_IOAS_ALLOC", 0x81, "IOMMU_IOAS_ALLOC", 0x3B81, "iommu_ioas_alloc", 12),
    ("§3.1", "IOMMUFD_CMD_IOAS_ALLOW_IOVAS", 0x82, "IOMMU_IOAS_ALLOW_IOVAS", 0x3B82, "iommu_ioas_allow_iovas", 24),
    ("§3.1", "IOMMUFD_CMD_IOAS_COPY", 0x83, "IOMMU_IOAS_COPY", 0x3B83, "iommu_ioas_copy", 40),
    ("§3.1", "IOMMUFD_CMD_IOAS_IOVA_RANGES", 0x84, "IOMMU_IOAS_IOVA_RANGES", 0x3B84, "iommu_ioas_iova_ranges", 32),
    ("§3.1", "IOMMUFD_CMD_IOAS_MAP", 0x85, "IOMMU_IOAS_MAP", 0x3B85, "iommu_ioas_map", 40),
    ("§3.1", "IOMMUFD_CMD_IOAS_UNMAP", 0x86, "IOMMU_IOAS_UNMAP", 0x3B86, "iommu_ioas_unmap", 24),
    ("§3.1", "IOMMUFD_CMD_OPTION", 0x87, "IOMMU_OPTION", 0x3B87, "iommu_option", 24),
    ("§3.1 (size: header)", "IOMMUFD_CMD_VFIO_IOAS", 0x88, "IOMMU_VFIO_IOAS", 0x3B88, "iommu_vfio_ioas", 12),
    ("§3.1", "IOMMUFD_CMD_HWPT_ALLOC", 0x89, "IOMMU_HWPT_ALLOC", 0x3B89, "iommu_hwpt_alloc", 48),
    ("§3.1 (size: header)", "IOMMUFD_CMD_GET_HW_INFO", 0x8A, "IOMMU_GET_HW_INFO", 0x3B8A, "iommu_hw_info", 40),
    ("§3.1 (size: header)", "IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING", 0x8B, "IOMMU_HWPT_SET_DIRTY_TRACKING", 0x3B8B,
     "iommu_hwpt_set_dirty_tracking", 16),
    ("§3.1 (size: header)", "IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP", 0x8C, "IOMMU_HWPT_GET_DIRTY_BITMAP", 0x3B8C,
     "iommu_hwpt_get_dirty_bitmap", 48),
    ("§3.1 (size: header)", "IOMMUFD_CMD_HWPT_INVALIDATE", 0x8D, "IOMMU_HWPT_INVALIDATE", 0x3B8D,
     "iommu_hwpt_invalidate", 32),
    ("§3.1 (size: header)", "IOMMUFD_CMD_FAULT_QUEUE_ALLOC", 0x8E, "IOMMU_FAULT_QUEUE_ALLOC", 0x3B8E,
     "iommu_fault_alloc", 16),
    ("§3.1", "IOMMUFD_CMD_IOAS_MAP_FILE", 0x8F, "IOMMU_IOAS_MAP_FILE", 0x3B8F, "iommu_ioas_map_file", 40),
    ("§3.1", "IOMMUFD_CMD_VIOMMU_ALLOC", 0x90, "IOMMU_VIOMMU_ALLOC", 0x3B90, "iommu_viommu_alloc", 40),
    ("§3.1", "IOMMUFD_CMD_VDEVICE_ALLOC", 0x91, "IOMMU_VDEVICE_ALLOC", 0x3B91, "iommu_vdevice_alloc", 24),
    ("§3.1", "IOMMUFD_CMD_IOAS_CHANGE_PROCESS", 0x92, "IOMMU_IOAS_CHANGE_PROCESS", 0x3B92,
     "iommu_ioas_change_process", 8),
    ("§3.1 (size: header)", "IOMMUFD_CMD_VEVENTQ_ALLOC", 0x93, "IOMMU_VEVENTQ_ALLOC", 0x3B93,
     "iommu_veventq_alloc", 32),
    ("§3.1 (size: header)", "IOMMUFD_CMD_HW_QUEUE_ALLOC", 0x94, "IOMMU_HW_QUEUE_ALLOC", 0x3B94,
     "iommu_hw_queue_alloc", 40),
    ("§3.1 / §0 / §3.6", "IOMMUFD_CMD_TEST", 0xA0, "IOMMU_TEST_CMD", 0x3BA0, "iommu_test_cmd", 72),
]


@pytest.mark.parametrize("section,cmd,nr,name,value,struct,size", COMMANDS, ids=[r[3] for r in COMMANDS])
def test_iommufd_commands(section, cmd, nr, name, value, struct, size):
    assert getattr(iommufd, cmd) == nr, f"{REF} {section}: {cmd}"
    assert getattr(iommufd, name) == value, f"{REF} {section}: {name}"
    assert ctypes.sizeof(getattr(iommufd, struct)) == size, f"{REF} {section}: sizeof {struct}"
    assert iommufd.STRUCT[value] is getattr(iommufd, struct)


def test_quickref_range_of_iommufd_ioctls():
    # §0: IOMMU_DESTROY ... IOMMU_HW_QUEUE_ALLOC = _IO(0x3B, 0x80 ... 0x94) = 0x3B80 ... 0x3B94
    numbers = sorted(v for k, v in vars(iommufd).items() if k.startswith("IOMMU_") and k.isupper()
                     and isinstance(v, int) and 0x3B80 <= v <= 0x3BA0 and k in {r[3] for r in COMMANDS})
    assert numbers == list(range(0x3B80, 0x3B95)) + [0x3BA0]


def test_nothing_at_the_contested_0x95():
    # §3.1: 0x95 is contested [U]
    assert 0x3B95 not in iommufd.MIN_SIZE


# §3.2 comments: (section, struct, field, offset, size)
OFFSETS = [
    ("§3.2", "iommu_destroy", "size", 0, 4),
    ("§3.2", "iommu_destroy", "id", 4, 4),
    ("§3.2", "iommu_ioas_alloc", "flags", 4, 4),
    ("§3.2", "iommu_ioas_alloc", "out_ioas_id", 8, 4),
    ("§3.2", "iommu_iova_range", "start", 0, 8),
    ("§3.2", "iommu_iova_range", "last", 8, 8),
    ("§3.2", "iommu_ioas_iova_ranges", "ioas_id", 4, 4),
    ("§3.2", "iommu_ioas_iova_ranges", "num_iovas", 8, 4),
    ("§3.2", "iommu_ioas_iova_ranges", "__reserved", 12, 4),
    ("§3.2", "iommu_ioas_iova_ranges", "allowed_iovas", 16, 8),
    ("§3.2", "iommu_ioas_iova_ranges", "out_iova_alignment", 24, 8),
    ("§3.2", "iommu_ioas_allow_iovas", "num_iovas", 8, 4),
    ("§3.2", "iommu_ioas_allow_iovas", "allowed_iovas", 16, 8),
    ("§3.2", "iommu_ioas_map", "flags", 4, 4),
    ("§3.2", "iommu_ioas_map", "ioas_id", 8, 4),
    ("§3.2", "iommu_ioas_map", "__reserved", 12, 4),
    ("§3.2", "iommu_ioas_map", "user_va", 16, 8),
    ("§3.2", "iommu_ioas_map", "length", 24, 8),
    ("§3.2", "iommu_ioas_map", "iova", 32, 8),
    ("§3.2", "iommu_ioas_map_file", "ioas_id", 8, 4),
    ("§3.2", "iommu_ioas_map_file", "fd", 12, 4),
    ("§3.2", "iommu_ioas_map_file", "start", 16, 8),
    ("§3.2", "iommu_ioas_map_file", "length", 24, 8),
    ("§3.2", "iommu_ioas_map_file", "iova", 32, 8),
    ("§3.2", "iommu_ioas_copy", "dst_ioas_id", 8, 4),
    ("§3.2", "iommu_ioas_copy", "src_ioas_id", 12, 4),
    ("§3.2", "iommu_ioas_copy", "length", 16, 8),
    ("§3.2", "iommu_ioas_copy", "dst_iova", 24, 8),
    ("§3.2", "iommu_ioas_copy", "src_iova", 32, 8),
    ("§3.2", "iommu_ioas_unmap", "ioas_id", 4, 4),
    ("§3.2", "iommu_ioas_unmap", "iova", 8, 8),
    ("§3.2", "iommu_ioas_unmap", "length", 16, 8),
    ("§3.2", "iommu_option", "option_id", 4, 4),
    ("§3.2", "iommu_option", "op", 8, 2),
    ("§3.2", "iommu_option", "__reserved", 10, 2),
    ("§3.2", "iommu_option", "object_id", 12, 4),
    ("§3.2", "iommu_option", "val64", 16, 8),
    ("§3.2", "iommu_hwpt_alloc", "dev_id", 8, 4),
    ("§3.2", "iommu_hwpt_alloc", "pt_id", 12, 4),
    ("§3.2", "iommu_hwpt_alloc", "out_hwpt_id", 16, 4),
    ("§3.2", "iommu_hwpt_alloc", "__reserved", 20, 4),
    ("§3.2", "iommu_hwpt_alloc", "data_type", 24, 4),
    ("§3.2", "iommu_hwpt_alloc", "data_len", 28, 4),
    ("§3.2", "iommu_hwpt_alloc", "data_uptr", 32, 8),
    ("§3.2", "iommu_hwpt_alloc", "fault_id", 40, 4),
    ("§3.2", "iommu_hwpt_alloc", "__reserved2", 44, 4),
    ("§3.2", "iommu_viommu_alloc", "type", 8, 4),
    ("§3.2", "iommu_viommu_alloc", "dev_id", 12, 4),
    ("§3.2", "iommu_viommu_alloc", "hwpt_id", 16, 4),
    ("§3.2", "iommu_viommu_alloc", "out_viommu_id", 20, 4),
    ("§3.2", "iommu_viommu_alloc", "data_len", 24, 4),
    ("§3.2", "iommu_viommu_alloc", "__reserved", 28, 4),
    ("§3.2", "iommu_viommu_alloc", "data_uptr", 32, 8),
    ("§3.2", "iommu_vdevice_alloc", "viommu_id", 4, 4),
    ("§3.2", "iommu_vdevice_alloc", "dev_id", 8, 4),
    ("§3.2", "iommu_vdevice_alloc", "out_vdevice_id", 12, 4),
    ("§3.2", "iommu_vdevice_alloc", "virt_id", 16, 8),
    ("§3.2", "iommu_ioas_change_process", "__reserved", 4, 4),
    # not in the reference: iommufd.h
    ("header", "iommu_vfio_ioas", "ioas_id", 4, 4),
    ("header", "iommu_vfio_ioas", "op", 8, 2),
    ("header", "iommu_vfio_ioas", "__reserved", 10, 2),
    ("header", "iommu_hw_info", "dev_id", 8, 4),
    ("header", "iommu_hw_info", "data_len", 12, 4),
    ("header", "iommu_hw_info", "data_uptr", 16, 8),
    ("header", "iommu_hw_info", "in_data_type", 24, 4),
    ("header", "iommu_hw_info", "out_data_type", 24, 4),
    ("header", "iommu_hw_info", "out_max_pasid_log2", 28, 1),
    ("header", "iommu_hw_info", "__reserved", 29, 3),
    ("header", "iommu_hw_info", "out_capabilities", 32, 8),
]


@pytest.mark.parametrize("section,struct,path,offset,size", OFFSETS, ids=[f"{r[1]}.{r[2]}" for r in OFFSETS])
def test_iommufd_field_offsets(section, struct, path, offset, size):
    assert field(getattr(iommufd, struct), path) == (offset, size), f"{REF} {section}: {struct}.{path}"


CONSTANTS = [
    ("§3.2 map flags", "IOMMU_IOAS_MAP_FIXED_IOVA", 1 << 0),
    ("§3.2 map flags", "IOMMU_IOAS_MAP_WRITEABLE", 1 << 1),
    ("§3.2 map flags", "IOMMU_IOAS_MAP_READABLE", 1 << 2),
    ("§3.2 options", "IOMMU_OPTION_RLIMIT_MODE", 0),
    ("§3.2 options", "IOMMU_OPTION_HUGE_PAGES", 1),
    ("§3.2 options", "IOMMU_OPTION_OP_SET", 0),
    ("§3.2 options", "IOMMU_OPTION_OP_GET", 1),
    ("§3.2 hwpt flags", "IOMMU_HWPT_ALLOC_NEST_PARENT", 1 << 0),
    ("§3.2 hwpt flags", "IOMMU_HWPT_ALLOC_DIRTY_TRACKING", 1 << 1),
    ("§3.2 hwpt flags", "IOMMU_HWPT_FAULT_ID_VALID", 1 << 2),
    ("§3.2 hwpt flags", "IOMMU_HWPT_ALLOC_PASID", 1 << 3),
    ("§3.2 data types", "IOMMU_HWPT_DATA_NONE", 0),
    ("§3.2 data types", "IOMMU_HWPT_DATA_VTD_S1", 1),
    ("§3.2 data types", "IOMMU_HWPT_DATA_ARM_SMMUV3", 2),
    ("§3.2 viommu types", "IOMMU_VIOMMU_TYPE_DEFAULT", 0),
    ("§3.2 viommu types", "IOMMU_VIOMMU_TYPE_ARM_SMMUV3", 1),
    ("§3.2 viommu types", "IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV", 2),
    ("§3.2 vfio_ioas ops", "IOMMU_VFIO_IOAS_GET", 0),
    ("§3.2 vfio_ioas ops", "IOMMU_VFIO_IOAS_SET", 1),
    ("§3.2 vfio_ioas ops", "IOMMU_VFIO_IOAS_CLEAR", 2),
]


@pytest.mark.parametrize("section,name,value", CONSTANTS, ids=[r[1] for r in CONSTANTS])
def test_iommufd_constants(section, name, value):
    assert getattr(iommufd, name) == value, f"{REF} {section}: {name}"


# §3.3 rule 4: (section, ioctl, last mandatory field, min size)
MIN_SIZES = [
    ("§3.3 rule 4 (DESTROY: id)", 0x3B80, 8),
    ("§3.3 rule 4 (IOAS_ALLOC: out_ioas_id)", 0x3B81, 12),
    ("§3.3 rule 4 (IOVA_RANGES: out_iova_alignment)", 0x3B84, 32),
    ("§3.3 rule 4 (ALLOW_IOVAS: allowed_iovas)", 0x3B82, 24),
    ("§3.3 rule 4 (MAP: iova)", 0x3B85, 40),
    ("§3.3 rule 4 (MAP_FILE: iova)", 0x3B8F, 40),
    ("§3.3 rule 4 (COPY: src_iova)", 0x3B83, 40),
    ("§3.3 rule 4 (UNMAP: length)", 0x3B86, 24),
    ("§3.3 rule 4 (OPTION: val64)", 0x3B87, 24),
    ("§3.3 rule 4 (VFIO_IOAS: __reserved; offset from header)", 0x3B88, 12),
    ("§3.3 rule 4 (HWPT_ALLOC: __reserved, 'offset 24')", 0x3B89, 24),
    ("§3.3 rule 4 (GET_HW_INFO: __reserved; offset from header)", 0x3B8A, 32),
    ("§3.3 rule 4 (HWPT_INVALIDATE: __reserved; offset from header)", 0x3B8D, 32),
    ("§3.3 rule 4 (VIOMMU_ALLOC: out_viommu_id)", 0x3B90, 24),
    ("§3.3 rule 4 (VDEVICE_ALLOC: virt_id)", 0x3B91, 24),
    ("§3.6 (TEST_CMD: last at 64)", 0x3BA0, 68),
    # not in the reference: main.c iommufd_ioctl_ops[]
    ("header (SET_DIRTY_TRACKING: __reserved)", 0x3B8B, 16),
    ("header (GET_DIRTY_BITMAP: data)", 0x3B8C, 48),
    ("header (FAULT_QUEUE_ALLOC: out_fault_fd)", 0x3B8E, 16),
    ("header (IOAS_CHANGE_PROCESS: __reserved)", 0x3B92, 8),
    ("header (VEVENTQ_ALLOC: out_veventq_fd)", 0x3B93, 28),
    ("header (HW_QUEUE_ALLOC: length)", 0x3B94, 40),
]


@pytest.mark.parametrize("section,number,size", MIN_SIZES, ids=[hex(r[1]) for r in MIN_SIZES])
def test_min_sizes(section, number, size):
    assert iommufd.MIN_SIZE[number] == size, f"{REF} {section}"


def test_min_size_covers_exactly_the_dispatch_table():
    assert set(iommufd.MIN_SIZE) == {r[1] for r in MIN_SIZES}
    assert set(iommufd.STRUCT) == set(iommufd.MIN_SIZE)
    # §3.3 rule 1: nothing below 0x80 is an iommufd command
    assert all(n & 0xFF >= 0x80 for n in iommufd.MIN_SIZE)


# --- §3.6 selftest UAPI ------------------------------------------------------------------------

TEST_CMD_LAYOUT = [
    ("§3.6", "size", 0, 4),
    ("§3.6", "op", 4, 4),
    ("§3.6", "id", 8, 4),
    ("§3.6", "__reserved", 12, 4),
    ("§3.6 (header 16, union 48)", "_u", 16, 48),
    ("§3.6", "last", 64, 4),
]


@pytest.mark.parametrize("section,path,offset,size", TEST_CMD_LAYOUT, ids=[r[1] for r in TEST_CMD_LAYOUT])
def test_test_cmd_layout(section, path, offset, size):
    assert field(iommufd.iommu_test_cmd, path) == (offset, size), f"{REF} {section}"


def test_test_cmd_size():
    assert ctypes.sizeof(iommufd.iommu_test_cmd) == 72  # §3.6 sizeof 72
    assert ctypes.sizeof(iommufd.iommu_test_dirty) == 48  # §3.6 largest member: dirty


TEST_OPS = [
    ("§3.6 ops", "IOMMU_TEST_OP_ADD_RESERVED", 1),
    ("§3.6 ops", "IOMMU_TEST_OP_MOCK_DOMAIN", 2),
    ("§3.6 ops", "IOMMU_TEST_OP_MD_CHECK_MAP", 3),
    ("§3.6 ops", "IOMMU_TEST_OP_MD_CHECK_REFS", 4),
    ("§3.6 ops", "IOMMU_TEST_OP_CREATE_ACCESS", 5),
    ("§3.6 ops", "IOMMU_TEST_OP_DESTROY_ACCESS_PAGES", 6),
    ("§3.6 ops", "IOMMU_TEST_OP_ACCESS_PAGES", 7),
    ("§3.6 ops", "IOMMU_TEST_OP_ACCESS_RW", 8),
    ("§3.6 ops", "IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT", 9),
    ("§3.6 ops", "IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE", 10),
    ("§3.6 ops", "IOMMU_TEST_OP_ACCESS_REPLACE_IOAS", 11),
    ("§3.6 ops", "IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS", 12),
    ("§3.6 ops", "IOMMU_TEST_OP_DIRTY", 13),
    ("§3.6 ops", "IOMMU_TEST_OP_MD_CHECK_IOTLB", 14),
    ("§3.6 ops", "IOMMU_TEST_OP_TRIGGER_IOPF", 15),
    ("§3.6 ops", "IOMMU_TEST_OP_DEV_CHECK_CACHE", 16),
    ("§3.6 ops", "IOMMU_TEST_OP_TRIGGER_VEVENT", 17),
    ("§3.6 ops (18-21)", "IOMMU_TEST_OP_PASID_ATTACH", 18),
    ("§3.6 ops (18-21)", "IOMMU_TEST_OP_PASID_REPLACE", 19),
    ("§3.6 ops (18-21)", "IOMMU_TEST_OP_PASID_DETACH", 20),
    ("§3.6 ops (18-21)", "IOMMU_TEST_OP_PASID_CHECK_HWPT", 21),
    ("§3.6 ops", "IOMMU_TEST_OP_DMABUF_GET", 22),
    ("§3.6 ops", "IOMMU_TEST_OP_DMABUF_REVOKE", 23),
    ("§3.6 ops", "IOMMU_TEST_OP_MD_CHECK_DMABUF", 24),
]


@pytest.mark.parametrize("section,name,value", TEST_OPS, ids=[r[1] for r in TEST_OPS])
def test_test_ops(section, name, value):
    assert getattr(iommufd, name) == value, f"{REF} {section}"


# §3.6 payload column: (section, union member, field names in order)
PAYLOADS = [
    ("§3.6 ADD_RESERVED", "add_reserved", ("start", "length")),
    ("§3.6 MOCK_DOMAIN", "mock_domain", ("out_stdev_id", "out_hwpt_id", "out_idev_id")),
    ("§3.6 MOCK_DOMAIN_FLAGS", "mock_domain_flags", ("out_stdev_id", "out_hwpt_id", "out_idev_id", "dev_flags")),
    ("§3.6 MD_CHECK_MAP", "check_map", ("iova", "length", "uptr")),
    ("§3.6 MD_CHECK_REFS", "check_refs", ("length", "uptr", "refs")),
    ("§3.6 CREATE_ACCESS", "create_access", ("out_access_fd", "flags")),
    ("§3.6 DESTROY_ACCESS_PAGES", "destroy_access_pages", ("access_pages_id",)),
    ("§3.6 ACCESS_PAGES", "access_pages", ("flags", "out_access_pages_id", "iova", "length", "uptr")),
    ("§3.6 ACCESS_RW", "access_rw", ("iova", "length", "uptr", "flags")),
    ("§3.6 SET_TEMP_MEMORY_LIMIT", "memory_limit", ("limit",)),
    ("§3.6 MOCK_DOMAIN_REPLACE", "mock_domain_replace", ("pt_id",)),
    ("§3.6 ACCESS_REPLACE_IOAS", "access_replace_ioas", ("ioas_id",)),
    ("§3.6 DIRTY", "dirty", ("flags", "iova", "length", "page_size", "uptr", "out_nr_dirty")),
    ("§3.6 MD_CHECK_IOTLB", "check_iotlb", ("id", "iotlb")),
    ("§3.6 TRIGGER_IOPF", "trigger_iopf", ("dev_id", "pasid", "grpid", "perm", "addr")),
    ("§3.6 DEV_CHECK_CACHE", "check_dev_cache", ("id", "cache")),
    ("§3.6 TRIGGER_VEVENT", "trigger_vevent", ("dev_id",)),
    ("§3.6 DMABUF_GET", "dmabuf_get", ("length", "open_flags")),
    ("§3.6 DMABUF_REVOKE", "dmabuf_revoke", ("dmabuf_fd", "revoked")),
]


@pytest.mark.parametrize("section,member,names", PAYLOADS, ids=[r[1] for r in PAYLOADS])
def test_test_payload_fields(section, member, names):
    t = dict((e[0], e[1]) for e in iommufd.iommu_test_cmd_payload._fields_)[member]
    assert field_names(t) == names, f"{REF} {section}"


# Payload offsets (absolute in iommu_test_cmd) for the ops the mock must implement; the
# reference gives only the field lists, the offsets follow from iommufd_test.h (header).
PAYLOAD_OFFSETS = [
    ("header", "add_reserved.start", 16, 8),
    ("header", "add_reserved.length", 24, 8),
    ("header", "mock_domain.out_stdev_id", 16, 4),
    ("header", "mock_domain.out_hwpt_id", 20, 4),
    ("header", "mock_domain.out_idev_id", 24, 4),
    ("header", "check_map.iova", 16, 8),
    ("header", "check_map.length", 24, 8),
    ("header", "check_map.uptr", 32, 8),
    ("header", "check_refs.length", 16, 8),
    ("header", "check_refs.uptr", 24, 8),
    ("header", "check_refs.refs", 32, 4),
    ("header", "create_access.out_access_fd", 16, 4),
    ("header", "create_access.flags", 20, 4),
    ("header", "access_pages.flags", 16, 4),
    ("header", "access_pages.out_access_pages_id", 20, 4),
    ("header", "access_pages.iova", 24, 8),
    ("header", "access_pages.length", 32, 8),
    ("header", "access_pages.uptr", 40, 8),
    ("header", "access_rw.iova", 16, 8),
    ("header", "access_rw.length", 24, 8),
    ("header", "access_rw.uptr", 32, 8),
    ("header", "access_rw.flags", 40, 4),
    ("header", "dirty.out_nr_dirty", 56, 8),
]


@pytest.mark.parametrize("section,path,offset,size", PAYLOAD_OFFSETS, ids=[r[1] for r in PAYLOAD_OFFSETS])
def test_test_payload_offsets(section, path, offset, size):
    assert field(iommufd.iommu_test_cmd, path) == (offset, size)


MOCK_CONSTANTS = [
    ("§3.4 / §3.6", "MOCK_APERTURE_START", 1 << 24),
    ("§3.4 / §3.6", "MOCK_APERTURE_LAST", (1 << 31) - 1),
    ("§3.6", "MOCK_PAGE_SIZE", 2048),
    ("§3.6", "MOCK_HUGE_PAGE_SIZE", 512 * 2048),
    ("§3.6", "IOMMU_HW_INFO_TYPE_SELFTEST", 0xFEEDBEEF),
    ("§3.6 test_reg", "IOMMU_HW_INFO_SELFTEST_REGVAL", 0xDEADBEEF),
    ("§3.6", "IOMMU_HWPT_DATA_SELFTEST", 0xDEAD),
    ("§3.6 MD_CHECK_IOTLB default", "IOMMU_TEST_IOTLB_DEFAULT", 0xBADBEEF),
    ("§3.6 DEV_CHECK_CACHE default", "IOMMU_TEST_DEV_CACHE_DEFAULT", 0xBADDAD),
    ("§3.6", "IOMMU_HWPT_INVALIDATE_DATA_SELFTEST", 0xDEADBEEF),
    ("§3.6", "IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID", 0xDADBEEF),
    ("§3.6", "IOMMU_TEST_INVALIDATE_FLAG_ALL", 1 << 0),
    ("§3.6", "MOCK_NESTED_DOMAIN_IOTLB_ID_MAX", 3),
    ("§3.6", "MOCK_NESTED_DOMAIN_IOTLB_NUM", 4),
    ("§3.6", "IOMMU_VIOMMU_TYPE_SELFTEST", 0xDEADBEEF),
    ("§3.6", "IOMMU_VEVENTQ_TYPE_SELFTEST", 0xBEEFBEEF),
    ("§3.6", "IOMMU_HW_QUEUE_TYPE_SELFTEST", 0xDEADBEEF),
    ("§3.6 CREATE_ACCESS", "MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES", 1 << 0),
    ("§3.6 ACCESS_PAGES", "MOCK_FLAGS_ACCESS_WRITE", 1 << 0),
    ("§3.6 ACCESS_PAGES", "MOCK_FLAGS_ACCESS_SYZ", 1 << 16),
    ("§3.6 ACCESS_RW", "MOCK_ACCESS_RW_WRITE", 1 << 0),
    ("§3.6 ACCESS_RW", "MOCK_ACCESS_RW_SLOW_PATH", 1 << 2),
    ("§3.6 MOCK_DOMAIN_FLAGS", "MOCK_FLAGS_DEVICE_NO_DIRTY", 1 << 0),
    ("§3.6 MOCK_DOMAIN_FLAGS", "MOCK_FLAGS_DEVICE_HUGE_IOVA", 1 << 1),
    ("§3.6 MOCK_DOMAIN_FLAGS", "MOCK_FLAGS_DEVICE_PASID", 1 << 2),
    ("§3.6 PASID ops", "MOCK_PASID_WIDTH", 20),
    ("§3.6 PASID ops", "IOMMU_TEST_PASID_RESERVED", 1024),
    ("§3.6 iommupt", "MOCK_IOMMUPT_DEFAULT", 0),
    ("§3.6 iommupt", "MOCK_IOMMUPT_HUGE", 1),
    ("§3.6 iommupt", "MOCK_IOMMUPT_AMDV1", 2),
]


@pytest.mark.parametrize("section,name,value", MOCK_CONSTANTS, ids=[r[1] for r in MOCK_CONSTANTS])
def test_mock_constants(section, name, value):
    assert getattr(iommufd, name) == value, f"{REF} {section}: {name}"


SELFTEST_STRUCTS = [
    ("§3.6", "iommu_hwpt_selftest", ("iotlb",)),
    ("§3.6", "iommu_hwpt_invalidate_selftest", ("flags", "iotlb_id")),
    ("§3.6", "iommu_viommu_selftest", ("in_data", "out_data", "out_mmap_offset", "out_mmap_length")),
]


@pytest.mark.parametrize("section,struct,names", SELFTEST_STRUCTS, ids=[r[1] for r in SELFTEST_STRUCTS])
def test_selftest_data_structs(section, struct, names):
    assert field_names(getattr(iommufd, struct)) == names, f"{REF} {section}"


# --- §3.5 VFIO cdev ------------------------------------------------------------------------------

VFIO_IOCTLS = [
    ("§3.5 / §0", "VFIO_DEVICE_BIND_IOMMUFD", 0x3B76, "vfio_device_bind_iommufd", 24),
    ("§3.5 / §0", "VFIO_DEVICE_ATTACH_IOMMUFD_PT", 0x3B77, "vfio_device_attach_iommufd_pt", 16),
    ("§3.5 / §0", "VFIO_DEVICE_DETACH_IOMMUFD_PT", 0x3B78, "vfio_device_detach_iommufd_pt", 12),
]


@pytest.mark.parametrize("section,name,value,struct,size", VFIO_IOCTLS, ids=[r[1] for r in VFIO_IOCTLS])
def test_vfio_ioctls(section, name, value, struct, size):
    assert getattr(vfio, name) == value, f"{REF} {section}: {name}"
    assert ctypes.sizeof(getattr(vfio, struct)) == size, f"{REF} {section}: sizeof {struct}"
    assert vfio.STRUCT[value] is getattr(vfio, struct)


def test_vfio_type_and_base():
    assert vfio.VFIO_TYPE == 0x3B  # §3.5 VFIO_TYPE ';'
    assert vfio.VFIO_BASE == 100  # §3.5 VFIO_BASE 100


VFIO_OFFSETS = [
    ("§3.5", "vfio_device_bind_iommufd", "argsz", 0, 4),
    ("§3.5", "vfio_device_bind_iommufd", "flags", 4, 4),
    ("§3.5", "vfio_device_bind_iommufd", "iommufd", 8, 4),
    ("§3.5", "vfio_device_bind_iommufd", "out_devid", 12, 4),
    ("§3.5", "vfio_device_bind_iommufd", "token_uuid_ptr", 16, 8),
    ("§3.5", "vfio_device_attach_iommufd_pt", "flags", 4, 4),
    ("§3.5", "vfio_device_attach_iommufd_pt", "pt_id", 8, 4),
    ("§3.5", "vfio_device_attach_iommufd_pt", "pasid", 12, 4),
    ("§3.5", "vfio_device_detach_iommufd_pt", "flags", 4, 4),
    ("§3.5", "vfio_device_detach_iommufd_pt", "pasid", 8, 4),
]


@pytest.mark.parametrize("section,struct,path,offset,size", VFIO_OFFSETS, ids=[f"{r[1]}.{r[2]}" for r in VFIO_OFFSETS])
def test_vfio_offsets(section, struct, path, offset, size):
    assert field(getattr(vfio, struct), path) == (offset, size), f"{REF} {section}"


VFIO_CONSTANTS = [
    ("§3.5", "VFIO_DEVICE_BIND_FLAG_TOKEN", 1 << 0),
    ("§3.5", "VFIO_DEVICE_ATTACH_PASID", 1 << 0),
    ("§3.5", "VFIO_DEVICE_DETACH_PASID", 1 << 0),
    ("§3.5 (minsz = offsetofend(out_devid) = 16)", "VFIO_DEVICE_BIND_IOMMUFD_MINSZ", 16),
    # not in the reference: drivers/vfio/device_cdev.c
    ("header (attach minsz: pt_id)", "VFIO_DEVICE_ATTACH_IOMMUFD_PT_MINSZ", 12),
    ("header (detach minsz: flags)", "VFIO_DEVICE_DETACH_IOMMUFD_PT_MINSZ", 8),
    ("header (bind xend with FLAG_TOKEN)", "VFIO_DEVICE_BIND_IOMMUFD_TOKEN_XEND", 24),
    ("header (attach xend with PASID)", "VFIO_DEVICE_ATTACH_IOMMUFD_PT_PASID_XEND", 16),
    ("header (detach xend with PASID)", "VFIO_DEVICE_DETACH_IOMMUFD_PT_PASID_XEND", 12),
]


@pytest.mark.parametrize("section,name,value", VFIO_CONSTANTS, ids=[r[1] for r in VFIO_CONSTANTS])
def test_vfio_constants(section, name, value):
    assert getattr(vfio, name) == value, f"{REF} {section}: {name}"
