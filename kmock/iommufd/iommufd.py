"""/dev/iommu: the iommufd file, its object table and its ioctls (drivers/iommu/iommufd/main.c).

Generic dispatch (reference/conversion-and-iommufd.md §3.3), in the kernel's order:
an nr outside the command table -> ENOTTY (the VFIO-compat path answers nothing
kmock implements); the u32 ``size`` cannot be read -> EFAULT; the full ioctl value
differs from the table's -> ENOTTY; size below the command's minimum -> EINVAL;
non-zero bytes past the known struct -> E2BIG; then the command. Outputs are copied
back with min(size, sizeof(struct)) bytes. Object ids start at 1 and are shared by
every object type; a wrong id or type is ENOENT.
"""

import ctypes
import errno
import os
import stat

from ..errors import oserror
from ..faults import USERCOPY, check_usercopy
from ..file import File, make_stat
from ..kernel_util import read_user_at, write_user_at
from ..uapi import iommufd as I
from ..uapi.iommufd import (IOMMU_IOAS_MAP_FIXED_IOVA, IOMMU_IOAS_MAP_FLAGS,
                            IOMMU_IOAS_MAP_READABLE, IOMMU_IOAS_MAP_WRITEABLE)
from .ioas import IOAS, ULONG_MAX
from .objects import HwptPaging, Vdevice, Viommu

U32 = 0xFFFFFFFF


class IommufdCtx(File):
    """An open /dev/iommu: struct iommufd_ctx."""

    file_type = "iommufd"
    i_mode = stat.S_IFCHR | 0o666

    def __init__(self, kernel):
        super().__init__(kernel)
        self.objects = {}
        self.rlimit_mode = 0

    # --- the object table (xa_alloc from 1, lowest free id) ---------------------------------

    def add(self, obj):
        i = 1
        while i in self.objects:
            i += 1
        obj.id = i
        self.objects[i] = obj
        return i

    def remove(self, obj):
        self.objects.pop(obj.id, None)
        hook = getattr(obj, "on_destroy", None)
        if hook is not None:
            hook()

    def lookup(self, id, object_type=None):
        """The object ``id`` (of ``object_type`` when given); ENOENT otherwise."""
        obj = self.objects.get(id)
        if obj is None or (object_type is not None and obj.object_type != object_type):
            raise oserror(errno.ENOENT)
        return obj

    def release(self):
        with self.kernel.iommu_lock:
            self._release()

    def _release(self):
        for obj in sorted(self.objects.values(), key=lambda o: -o.id):
            if obj.object_type == "device":
                obj.dev.unbind()
        for obj in list(self.objects.values()):
            if obj.object_type == "ioas":
                obj.destroy()
        self.objects.clear()

    def unknown_ioctl(self, request, arg):
        return unknown_iommufd_ioctl(self, request, arg)

    def fstat(self):
        return make_stat(self.i_mode, size=0, ino=0x1B0, dev=5, rdev=(10 << 8) | 123)

    def snapshot(self):
        """Plain-data state: IOAS areas (with pin and revoke state), domains, devices."""
        out = {"ioas": [], "devices": []}
        for obj in sorted(self.objects.values(), key=lambda o: o.id):
            if obj.object_type == "ioas":
                out["ioas"].append({
                    "id": obj.id,
                    "iova_alignment": obj.iova_alignment,
                    "domains": [d.id for d in obj.domains],
                    "areas": [{"iova": a.iova, "length": a.length, "kind": a.pages.kind,
                               "pinned": a.pages.pinned, "revoked": a.revoked}
                              for a in obj.areas],
                })
            elif obj.object_type == "device":
                out["devices"].append({"id": obj.id, "hwpt": obj.hwpt.id if obj.hwpt else None})
        return out



class Ucmd:
    """One iommufd command: the struct as the kernel sees it, and how to respond."""

    def __init__(self, ictx, arg, ctype):
        self.ictx = ictx
        self.arg = arg
        self.ctype = ctype
        self.ksize = ctypes.sizeof(ctype)
        if type(arg) is ctype:  # the command's own struct: its first field is the size
            self.user_size = arg.size
            return
        raw = read_user_at(arg, 0, 4) if type(arg) is int else bytes(_buf(arg)[:4]).ljust(4, b"\0")
        self.user_size = int.from_bytes(raw, "little")

    def load(self, min_size):
        if self.user_size < min_size:
            raise oserror(errno.EINVAL)
        if self.user_size == self.ksize and type(self.arg) is self.ctype:
            return self.ctype.from_buffer_copy(self.arg)  # fast path: the whole struct
        n = min(self.user_size, self.ksize)
        data = _read(self.arg, 0, self.user_size if self.user_size > self.ksize else n)
        if self.user_size > self.ksize and any(data[self.ksize:]):
            raise oserror(errno.E2BIG)  # copy_struct_from_user
        return self.ctype.from_buffer_copy(data[:n].ljust(self.ksize, b"\0"))

    def respond(self, cmd):
        """iommufd_ucmd_respond: copy back min(user size, sizeof(struct)) bytes."""
        n = min(self.user_size, self.ksize)
        if USERCOPY:
            check_usercopy()
        if n == self.ksize and type(self.arg) is self.ctype:
            ctypes.memmove(ctypes.addressof(self.arg), ctypes.addressof(cmd), n)
            return
        write_user_at(self.arg, 0, bytes(cmd)[:n])


def _buf(arg):
    return memoryview(arg).cast("B")


def _read(arg, offset, n):
    if type(arg) is int:
        return read_user_at(arg, offset, n)
    mv = _buf(arg)
    if offset + n > len(mv):
        raise oserror(errno.EFAULT)
    return mv[offset:offset + n].tobytes()


class _InPlace:
    """The responder of a command that ran on the caller's own full-size struct."""

    @staticmethod
    def respond(cmd):
        pass


_IN_PLACE = _InPlace()


def run_command(ictx, arg, fn, ctype, ksize, min_size, in_place):
    """Run the handler ``fn`` of a command whose struct is ``ctype`` (see _command).

    Every command runs under the kernel's iommu lock: the kernel's per-object locks,
    coarser (two threads mapping one file must not both take its reference). It is taken
    with its own acquire/release: a ``with`` block costs two method look-ups more."""
    lock = ictx.kernel.iommu_lock
    lock.acquire()
    try:
        if in_place and type(arg) is ctype and arg.size == ksize:
            return fn(ictx, _IN_PLACE, arg)
        ucmd = Ucmd(ictx, arg, ctype)
        cmd = ucmd.load(min_size)
        return fn(ictx, ucmd, cmd)
    finally:
        lock.release()


def _command(ctype, nr, in_place=False):
    """Wrap a command handler ``fn(ictx, ucmd, cmd)`` with the generic size checks.

    ``in_place``: the handler writes its outputs only once it cannot fail any more, so
    when the caller passes the command's own struct with ``size == sizeof`` the handler
    may work on it directly (no copy in, no copy back): the fast path of hot commands.
    """
    min_size = I.MIN_SIZE[I._IO(I.IOMMUFD_TYPE, nr)]
    ksize = ctypes.sizeof(ctype)

    def wrap(fn):
        def handler(ictx, arg):
            return run_command(ictx, arg, fn, ctype, ksize, min_size, in_place)

        handler.__name__ = fn.__name__
        handler.__doc__ = fn.__doc__
        return handler

    return wrap


# --- commands ---------------------------------------------------------------------------------


@_command(I.iommu_destroy, I.IOMMUFD_CMD_DESTROY)
def iommu_destroy(ictx, ucmd, cmd):
    obj = ictx.lookup(cmd.id)
    if obj.object_type == "device" and not obj.user_destroyable:
        raise oserror(errno.EBUSY)  # owned by its VFIO device file
    if obj.users:
        raise oserror(errno.EBUSY)
    if obj.object_type == "ioas":
        obj.destroy()
    elif obj.object_type == "hwpt_paging":
        obj.ioas.remove_domain(obj)  # iommufd_hw_pagetable_destroy: iopt_table_remove_domain
        obj.ioas.users -= 1
    elif obj.object_type == "selftest_device":
        obj.unbind()
        return 0
    ictx.remove(obj)
    return 0


@_command(I.iommu_ioas_alloc, I.IOMMUFD_CMD_IOAS_ALLOC)
def ioas_alloc(ictx, ucmd, cmd):
    if cmd.flags:
        raise oserror(errno.EOPNOTSUPP)
    ictx.kernel.faults.check("iommufd.object.alloc", errno.ENOMEM)
    ioas = IOAS(ictx)
    cmd.out_ioas_id = ictx.add(ioas)
    try:
        ucmd.respond(cmd)
    except OSError:
        ictx.remove(ioas)  # iommufd_object_abort_and_destroy
        raise
    return 0


@_command(I.iommu_ioas_iova_ranges, I.IOMMUFD_CMD_IOAS_IOVA_RANGES)
def ioas_iova_ranges(ictx, ucmd, cmd):
    """Writes at most num_iovas ranges; num_iovas always gets the total; EMSGSIZE after
    the copy-back when the caller's array was too small."""
    if getattr(cmd, "__reserved"):
        raise oserror(errno.EOPNOTSUPP)
    ioas = ictx.lookup(cmd.ioas_id, "ioas")
    given = cmd.num_iovas
    ranges = ioas.iova_ranges()
    size = ctypes.sizeof(I.iommu_iova_range)
    for i, (s, l) in enumerate(ranges[:given]):
        write_user_at(cmd.allowed_iovas, i * size, bytes(I.iommu_iova_range(s, l)))
    cmd.num_iovas = len(ranges)
    cmd.out_iova_alignment = ioas.iova_alignment
    ucmd.respond(cmd)
    if len(ranges) > given:
        raise oserror(errno.EMSGSIZE)
    return 0


@_command(I.iommu_ioas_allow_iovas, I.IOMMUFD_CMD_IOAS_ALLOW_IOVAS)
def ioas_allow_iovas(ictx, ucmd, cmd):
    if getattr(cmd, "__reserved"):
        raise oserror(errno.EOPNOTSUPP)
    ioas = ictx.lookup(cmd.ioas_id, "ioas")
    size = ctypes.sizeof(I.iommu_iova_range)
    ranges = []
    for i in range(cmd.num_iovas):
        r = I.iommu_iova_range.from_buffer_copy(read_user_at(cmd.allowed_iovas, i * size, size))
        if r.start > r.last:
            raise oserror(errno.EINVAL)
        ranges.append((r.start, r.last))
    ranges.sort()
    for (s0, l0), (s1, l1) in zip(ranges, ranges[1:]):
        if s1 <= l0:
            raise oserror(errno.EINVAL)
    for s, l in ranges:
        if ioas._reserved_hit(s, l):
            raise oserror(errno.EADDRINUSE)
    for a in ioas.areas:
        if ranges and not any(s <= a.iova and a.last <= l for s, l in ranges):
            raise oserror(errno.EADDRINUSE)
    ioas.allowed = ranges
    return 0


def _check_map_flags(cmd, reserved=0):
    if cmd.flags & ~I.IOMMU_IOAS_MAP_FLAGS or reserved:
        raise oserror(errno.EOPNOTSUPP)


@_command(I.iommu_ioas_map, I.IOMMUFD_CMD_IOAS_MAP)
def ioas_map(ictx, ucmd, cmd):
    """IOAS_MAP of a user VA range. Pages are pinned lazily (EFAULT then, not now)."""
    _check_map_flags(cmd, getattr(cmd, "__reserved"))
    if cmd.iova >= ULONG_MAX or cmd.length >= ULONG_MAX:
        raise oserror(errno.EOVERFLOW)
    if not cmd.flags & (I.IOMMU_IOAS_MAP_WRITEABLE | I.IOMMU_IOAS_MAP_READABLE):
        raise oserror(errno.EINVAL)
    ioas = ictx.lookup(cmd.ioas_id, "ioas")
    if cmd.length == 0:
        raise oserror(errno.EINVAL)
    if cmd.user_va + cmd.length > ULONG_MAX:
        raise oserror(errno.EOVERFLOW)
    pages = ictx.kernel.user_pages(cmd.user_va, cmd.length,
                                   bool(cmd.flags & I.IOMMU_IOAS_MAP_WRITEABLE))
    try:
        cmd.iova = _map(ioas, pages, 0, cmd)
    except BaseException:
        if pages.users == 0:
            pages.release()
        raise
    ucmd.respond(cmd)
    return 0


def _map(ioas, pages, offset, cmd):
    return ioas.map(pages, offset, cmd.length, cmd.iova,
                    bool(cmd.flags & I.IOMMU_IOAS_MAP_FIXED_IOVA),
                    bool(cmd.flags & I.IOMMU_IOAS_MAP_READABLE),
                    bool(cmd.flags & I.IOMMU_IOAS_MAP_WRITEABLE))


# The two hot commands, IOAS_MAP_FILE and IOAS_UNMAP, are cpdef functions when compiled
# (iommufd.pxd types their locals); Cython ignores a decorator on such a function, so
# they are wrapped by _command below them rather than decorated.


def ioas_map_file(ictx, ucmd, cmd):
    """IOAS_MAP_FILE: a memfd (shmem) by fd + start; a guest_memfd per the profile's
    policy (upstream: EINVAL)."""
    flags, iova, length = cmd.flags, cmd.iova, cmd.length  # (ctypes fields are slow to read)
    if flags & ~IOMMU_IOAS_MAP_FLAGS:
        raise oserror(errno.EOPNOTSUPP)
    if iova >= ULONG_MAX or length >= ULONG_MAX:
        raise oserror(errno.EOVERFLOW)
    writable = bool(flags & IOMMU_IOAS_MAP_WRITEABLE)
    readable = bool(flags & IOMMU_IOAS_MAP_READABLE)
    if not (readable or writable):
        raise oserror(errno.EINVAL)
    ioas = ictx.lookup(cmd.ioas_id, "ioas")
    pages = ioas.memory.file_pages(cmd.fd, cmd.start, length, writable)
    try:
        cmd.iova = ioas.map(pages, 0, length, iova, bool(flags & IOMMU_IOAS_MAP_FIXED_IOVA),
                            readable, writable)
    except BaseException:
        if pages.users == 0:
            pages.release()
        raise
    if ucmd is not _IN_PLACE:  # (in place, the outputs are written already)
        ucmd.respond(cmd)
    return 0


ioas_map_file_handler = _command(I.iommu_ioas_map_file, I.IOMMUFD_CMD_IOAS_MAP_FILE,
                                 in_place=True)(ioas_map_file)


@_command(I.iommu_ioas_copy, I.IOMMUFD_CMD_IOAS_COPY)
def ioas_copy(ictx, ucmd, cmd):
    """IOAS_COPY: the source range must be covered exactly by areas; the copy shares
    their pages."""
    _check_map_flags(cmd)
    if cmd.length >= ULONG_MAX or cmd.src_iova >= ULONG_MAX or cmd.dst_iova >= ULONG_MAX:
        raise oserror(errno.EOVERFLOW)
    if not cmd.flags & (I.IOMMU_IOAS_MAP_WRITEABLE | I.IOMMU_IOAS_MAP_READABLE):
        raise oserror(errno.EINVAL)
    src = ictx.lookup(cmd.src_ioas_id, "ioas")
    areas = src.areas_covering(cmd.src_iova, cmd.length)
    dst = ictx.lookup(cmd.dst_ioas_id, "ioas")
    fixed = bool(cmd.flags & I.IOMMU_IOAS_MAP_FIXED_IOVA)
    iova = cmd.dst_iova if fixed else dst.alloc_iova(cmd.length, areas[0].pages.start)
    dst.check_fixed(iova, cmd.length)
    pos = iova
    done = []
    try:
        for a in areas:
            lo = max(a.iova, cmd.src_iova)
            hi = min(a.last, cmd.src_iova + cmd.length - 1)
            n = hi - lo + 1
            dst.map(a.pages, a.offset + (lo - a.iova), n, pos, True,
                    bool(cmd.flags & I.IOMMU_IOAS_MAP_READABLE),
                    bool(cmd.flags & I.IOMMU_IOAS_MAP_WRITEABLE))
            done.append((pos, n))
            pos += n
    except BaseException:
        for p, n in done:
            dst.unmap(p, n)
        raise
    cmd.dst_iova = iova
    ucmd.respond(cmd)
    return 0


def ioas_unmap(ictx, ucmd, cmd):
    ioas = ictx.lookup(cmd.ioas_id, "ioas")
    iova, length = cmd.iova, cmd.length
    if iova == 0 and length == ULONG_MAX:
        cmd.length = ioas.unmap_all()
    else:
        if iova >= ULONG_MAX or length >= ULONG_MAX:
            raise oserror(errno.EOVERFLOW)
        cmd.length = ioas.unmap(iova, length)
    if ucmd is not _IN_PLACE:  # (in place, the outputs are written already)
        ucmd.respond(cmd)
    return 0


ioas_unmap_handler = _command(I.iommu_ioas_unmap, I.IOMMUFD_CMD_IOAS_UNMAP,
                              in_place=True)(ioas_unmap)


@_command(I.iommu_option, I.IOMMUFD_CMD_OPTION)
def iommu_option(ictx, ucmd, cmd):
    if getattr(cmd, "__reserved"):
        raise oserror(errno.EOPNOTSUPP)
    if cmd.op not in (I.IOMMU_OPTION_OP_SET, I.IOMMU_OPTION_OP_GET):
        raise oserror(errno.EOPNOTSUPP)
    if cmd.option_id == I.IOMMU_OPTION_RLIMIT_MODE:
        if cmd.object_id:
            raise oserror(errno.EOPNOTSUPP)
        if cmd.op == I.IOMMU_OPTION_OP_GET:
            cmd.val64 = ictx.rlimit_mode
        else:
            if os.geteuid() != 0:
                raise oserror(errno.EPERM)  # CAP_SYS_RESOURCE
            if cmd.val64 > 1:
                raise oserror(errno.EINVAL)
            ictx.rlimit_mode = cmd.val64
    elif cmd.option_id == I.IOMMU_OPTION_HUGE_PAGES:
        ioas = ictx.lookup(cmd.object_id, "ioas")
        if cmd.op == I.IOMMU_OPTION_OP_GET:
            cmd.val64 = ioas.huge_pages
        else:
            if cmd.val64 > 1:
                raise oserror(errno.EINVAL)
            ioas.huge_pages = cmd.val64
    else:
        raise oserror(errno.EOPNOTSUPP)
    ucmd.respond(cmd)
    return 0


HWPT_ALLOC_FLAGS = (I.IOMMU_HWPT_ALLOC_NEST_PARENT | I.IOMMU_HWPT_ALLOC_DIRTY_TRACKING
                    | I.IOMMU_HWPT_FAULT_ID_VALID | I.IOMMU_HWPT_ALLOC_PASID)


@_command(I.iommu_hwpt_alloc, I.IOMMUFD_CMD_HWPT_ALLOC)
def hwpt_alloc(ictx, ucmd, cmd):
    """Paging HWPTs on an IOAS. Nested HWPTs (on a paging HWPT or a vIOMMU) are not
    modelled yet: EOPNOTSUPP after the generic checks."""
    if getattr(cmd, "__reserved"):
        raise oserror(errno.EOPNOTSUPP)
    if (cmd.data_type == I.IOMMU_HWPT_DATA_NONE) != (cmd.data_len == 0):
        raise oserror(errno.EINVAL)
    idev = ictx.lookup(cmd.dev_id, "device")
    pt = ictx.lookup(cmd.pt_id)
    if pt.object_type == "ioas":
        if cmd.data_type != I.IOMMU_HWPT_DATA_NONE:
            raise oserror(errno.EINVAL)
        if cmd.flags & ~HWPT_ALLOC_FLAGS:
            raise oserror(errno.EOPNOTSUPP)
        if cmd.flags & I.IOMMU_HWPT_FAULT_ID_VALID:
            ictx.lookup(cmd.fault_id, "fault")  # no fault queues are modelled: ENOENT
        dev = idev.dev
        ictx.kernel.faults.check("iommufd.object.alloc", errno.ENOMEM)
        hwpt = HwptPaging(ictx, pt, dev.iommu_page_size, dev.aperture,
                          nest_parent=bool(cmd.flags & I.IOMMU_HWPT_ALLOC_NEST_PARENT),
                          dirty_tracking=bool(cmd.flags & I.IOMMU_HWPT_ALLOC_DIRTY_TRACKING))
        # iommufd_hwpt_paging_alloc: iopt_table_add_domain() at allocation, not at attach
        pt.add_domain(hwpt)
        pt.users += 1
        cmd.out_hwpt_id = ictx.add(hwpt)
    elif pt.object_type in ("hwpt_paging", "viommu"):
        if cmd.flags & I.IOMMU_HWPT_ALLOC_NEST_PARENT:
            raise oserror(errno.EOPNOTSUPP)
        if pt.object_type == "hwpt_paging" and not pt.nest_parent:
            raise oserror(errno.EINVAL)
        raise oserror(errno.EOPNOTSUPP)  # nested translation: not modelled (documented)
    else:
        raise oserror(errno.EINVAL)
    ucmd.respond(cmd)
    return 0


@_command(I.iommu_viommu_alloc, I.IOMMUFD_CMD_VIOMMU_ALLOC)
def viommu_alloc(ictx, ucmd, cmd):
    if cmd.flags or cmd.type == I.IOMMU_VIOMMU_TYPE_DEFAULT:
        raise oserror(errno.EOPNOTSUPP)
    idev = ictx.lookup(cmd.dev_id, "device")
    if cmd.type not in idev.dev.viommu_types:
        raise oserror(errno.EOPNOTSUPP)  # ops->get_viommu_size(dev, type) == 0
    hwpt = ictx.lookup(cmd.hwpt_id, "hwpt_paging")  # iommufd_get_hwpt_paging: ENOENT
    if not hwpt.nest_parent:
        raise oserror(errno.EINVAL)
    v = Viommu(ictx, hwpt, idev, cmd.type)
    cmd.out_viommu_id = ictx.add(v)
    ucmd.respond(cmd)
    return 0


@_command(I.iommu_vdevice_alloc, I.IOMMUFD_CMD_VDEVICE_ALLOC)
def vdevice_alloc(ictx, ucmd, cmd):
    viommu = ictx.lookup(cmd.viommu_id, "viommu")
    idev = ictx.lookup(cmd.dev_id, "device")
    if idev.dev.iommu is not viommu.dev.dev.iommu:
        raise oserror(errno.EINVAL)
    if idev.vdevice is not None or cmd.virt_id in viommu.vdevices:
        raise oserror(errno.EEXIST)
    vd = Vdevice(ictx, viommu, idev, cmd.virt_id)
    cmd.out_vdevice_id = ictx.add(vd)
    ucmd.respond(cmd)
    return 0


def iommufd_ioctls(kernel):
    table = {
        I.IOMMU_DESTROY: iommu_destroy,
        I.IOMMU_IOAS_ALLOC: ioas_alloc,
        I.IOMMU_IOAS_ALLOW_IOVAS: ioas_allow_iovas,
        I.IOMMU_IOAS_COPY: ioas_copy,
        I.IOMMU_IOAS_IOVA_RANGES: ioas_iova_ranges,
        I.IOMMU_IOAS_MAP: ioas_map,
        I.IOMMU_IOAS_UNMAP: ioas_unmap_handler,
        I.IOMMU_OPTION: iommu_option,
        I.IOMMU_HWPT_ALLOC: hwpt_alloc,
        I.IOMMU_IOAS_MAP_FILE: ioas_map_file_handler,
        I.IOMMU_VIOMMU_ALLOC: viommu_alloc,
        I.IOMMU_VDEVICE_ALLOC: vdevice_alloc,
    }
    if kernel.profile.iommufd_test:
        from .selftest import iommu_test_cmd

        def test_cmd(ictx, arg):
            with ictx.kernel.iommu_lock:
                return iommu_test_cmd(ictx, arg)

        table[I.IOMMU_TEST_CMD] = test_cmd
    return table


#: VFIO-compat ioctls answered on /dev/iommu (iommufd_vfio_ioctl)
VFIO_GET_API_VERSION = I._IO(I.IOMMUFD_TYPE, 100)


def unknown_iommufd_ioctl(ictx, request, arg):
    """What iommufd_fops_ioctl does with a request not in kmock's table.

    The kernel dispatches on the nr alone: an nr inside the command table first reads
    the u32 size (EFAULT), then a request whose full value differs from the table's is
    ENOTTY. Commands that exist but kmock does not model run the generic size checks
    and answer EOPNOTSUPP (documented). Everything else goes to the VFIO-compat path.
    """
    nr = request & 0xFF
    last = 0xA0 if ictx.kernel.profile.iommufd_test else I.IOMMUFD_CMD_HW_QUEUE_ALLOC
    if I.IOMMUFD_CMD_BASE <= nr <= last:
        Ucmd(ictx, arg, I.iommu_destroy)  # get_user(size)
        ctype = I.STRUCT.get(request)
        if ctype is not None and request == I._IO(I.IOMMUFD_TYPE, nr):
            Ucmd(ictx, arg, ctype).load(I.MIN_SIZE.get(request, 8))
            raise oserror(errno.EOPNOTSUPP)
        raise oserror(errno.ENOTTY)
    if request == VFIO_GET_API_VERSION:
        return 0
    raise oserror(errno.ENOTTY)
