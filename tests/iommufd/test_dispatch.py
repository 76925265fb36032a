"""Generic iommufd dispatch (reference §3.3) and IOMMU_DESTROY (§3.4), in the manner of the
kernel selftests cmd_fail, cmd_ex_fail and cmd_length (tools/testing/selftests/iommu/iommufd.c).
"""

import pytest

from ._util import *  # noqa: F403


def test_cmd_fail(ictx):
    # id 0 is never an object (xa_alloc from 1)
    assert err(ictx.destroy, 0) == errno.ENOENT
    # NULL argument: get_user(size) faults
    assert err(ictx.k.ioctl, ictx.fd, I.IOMMU_DESTROY, 0) == errno.EFAULT
    # nr below the command base: VFIO-compat path, unknown -> ENOTTY
    cmd = I.iommu_destroy(size=8)
    assert err(ictx.ioctl, I._IO(I.IOMMUFD_TYPE, I.IOMMUFD_CMD_BASE - 1), cmd) == errno.ENOTTY


def test_cmd_fail_full_value_mismatch(ictx):
    # an nr of the table with dir/size bits encoded is not the table's ioctl -> ENOTTY
    from kmock.uapi.ioctl import _IOWR

    cmd = I.iommu_destroy(size=8)
    assert err(ictx.ioctl, _IOWR(I.IOMMUFD_TYPE, I.IOMMUFD_CMD_DESTROY, I.iommu_destroy),
               cmd) == errno.ENOTTY


def test_cmd_ex_fail(ictx):
    """A longer struct: zero trailing bytes are fine, non-zero ones E2BIG, short EINVAL."""
    buf = bytearray(16)
    buf[0:4] = (16).to_bytes(4, "little")
    assert err(ictx.ioctl, I.IOMMU_DESTROY, buf) == errno.ENOENT
    buf[8] = 1  # the "future" u64
    assert err(ictx.ioctl, I.IOMMU_DESTROY, buf) == errno.E2BIG
    buf[0:4] = (8).to_bytes(4, "little")
    assert err(ictx.ioctl, I.IOMMU_DESTROY, buf) == errno.ENOENT  # trailing bytes unread
    buf[0:4] = (7).to_bytes(4, "little")
    assert err(ictx.ioctl, I.IOMMU_DESTROY, buf) == errno.EINVAL


# every command of the table (the selftest's TEST_LENGTH list, plus the later commands)
LENGTH_COMMANDS = sorted(I.MIN_SIZE, key=lambda r: r & 0xFF)


def _call(ictx, request, buf):
    try:
        ictx.ioctl(request, buf)
    except OSError as e:
        return e.errno
    return 0


@pytest.mark.parametrize("request_", LENGTH_COMMANDS, ids=lambda r: I.STRUCT[r].__name__)
def test_cmd_length(ictx, request_):
    """TEST_LENGTH: min-1 -> EINVAL; sizeof+1 with a non-zero byte -> E2BIG; sizeof and
    sizeof+1 with a zero byte give the same answer."""
    ioas = ictx.ioas_alloc()  # some object exists (id 1), as in the fixture
    assert ioas == 1
    st = I.STRUCT[request_]
    n = ctypes.sizeof(st)
    buf = bytearray(n + 1)
    buf[n] = 0xFF
    buf[0:4] = (I.MIN_SIZE[request_] - 1).to_bytes(4, "little")
    assert _call(ictx, request_, buf) == errno.EINVAL
    buf[0:4] = (n + 1).to_bytes(4, "little")
    assert _call(ictx, request_, buf) == errno.E2BIG
    buf = bytearray(n + 1)
    buf[0:4] = n.to_bytes(4, "little")
    first = _call(ictx, request_, buf)
    buf = bytearray(n + 1)
    buf[0:4] = (n + 1).to_bytes(4, "little")
    assert _call(ictx, request_, buf) == first
    assert buf[n] == 0  # the copy-back stops at sizeof(struct)


def test_output_copied_back_up_to_sizeof(ictx):
    """iommufd_ucmd_respond copies min(size, sizeof) bytes: trailing bytes stay untouched,
    and a size between the minimum and sizeof gets only its prefix."""
    n = ctypes.sizeof(I.iommu_ioas_alloc)
    buf = bytearray(n + 8)
    buf[0:4] = (n + 8).to_bytes(4, "little")
    ictx.ioctl(I.IOMMU_IOAS_ALLOC, buf)
    out = I.iommu_ioas_alloc.from_buffer_copy(buf[:n])
    assert out.out_ioas_id == 1 and out.size == n + 8
    assert bytes(buf[n:]) == bytes(8)

    # IOAS_MAP_FILE/IOAS_MAP of size == sizeof write the out iova back
    b = Buf(P)
    m = I.iommu_ioas_map(size=40, flags=RW, ioas_id=1, user_va=b.addr, length=P)
    ictx.ioctl(I.IOMMU_IOAS_MAP, m)
    assert m.iova != 0


def test_copy_back_with_bytes_and_readonly_buffers(ictx):
    """fcntl.ioctl rules: bytes in -> a filled copy out."""
    raw = bytes(I.iommu_ioas_alloc(size=12))
    out = ictx.ioctl(I.IOMMU_IOAS_ALLOC, raw)
    assert I.iommu_ioas_alloc.from_buffer_copy(out).out_ioas_id == 1


def test_unknown_nr_in_table_range(ictx):
    # the test command exists in the test profile; a reserved nr inside the table (0x95..)
    # is not a command: ENOTTY after the size was readable
    cmd = I.iommu_destroy(size=8)
    assert err(ictx.ioctl, I._IO(I.IOMMUFD_TYPE, 0x9F), cmd) == errno.ENOTTY


# --- IOMMU_DESTROY and the object table ------------------------------------------------------


def test_ids_from_one_shared_by_all_objects(ictx):
    a = ictx.ioas_alloc()
    b = ictx.ioas_alloc()
    stdev, hwpt, idev = ictx.mock_domain(a)
    assert [a, b] == [1, 2]
    assert sorted([stdev, hwpt, idev]) == [3, 4, 5]  # one id space for every type
    # a destroyed id is reused (xa_alloc takes the lowest free index)
    ictx.destroy(b)
    assert ictx.ioas_alloc() == 2


def test_destroy_wrong_ids(ictx):
    a = ictx.ioas_alloc()
    assert err(ictx.destroy, 0) == errno.ENOENT
    assert err(ictx.destroy, a + 1) == errno.ENOENT
    assert err(ictx.destroy, U32) == errno.ENOENT
    ictx.destroy(a)
    assert err(ictx.destroy, a) == errno.ENOENT


def test_destroy_ioas_with_areas_but_no_device(ictx):
    a = ictx.ioas_alloc()
    b = Buf(4 * P)
    ictx.map(a, b.addr, P, iova=0)
    ictx.destroy(a)  # ioas_area_destroy, no_domain variant


def test_destroy_busy_while_in_use(ictx):
    a = ictx.ioas_alloc()
    stdev, hwpt, idev = ictx.mock_domain(a)
    b = Buf(4 * P)
    ictx.map(a, b.addr, P, iova=AP_START)
    assert err(ictx.destroy, a) == errno.EBUSY  # an auto HWPT uses it
    assert err(ictx.destroy, hwpt) == errno.EBUSY  # a device is attached
    # destroying the selftest device detaches it and frees the automatic HWPT
    ictx.destroy(stdev)
    assert err(ictx.destroy, hwpt) == errno.ENOENT
    assert err(ictx.destroy, idev) == errno.ENOENT
    ictx.destroy(a)


def test_destroy_failure_changes_nothing(ictx):
    a = ictx.ioas_alloc()
    stdev, hwpt, idev = ictx.mock_domain(a)
    b = Buf(4 * P)
    iova = ictx.map(a, b.addr, 2 * P)
    assert err(ictx.destroy, a) == errno.EBUSY
    ictx.check_map(hwpt, iova, 2 * P, b.addr)
    assert ictx.unmap(a, iova, 2 * P) == 2 * P
