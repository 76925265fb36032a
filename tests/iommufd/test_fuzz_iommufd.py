"""Hypothesis fuzz of the iommufd and VFIO cdev ioctls (DESIGN.md "Errors and consequences":
bad input, any ioctl number, any bytes, never produces another exception type).

Each example builds a kernel with an open /dev/iommu, two VFIO cdevs of
``kernel.add_vfio_device()`` (one bound to the iommufd, one not), a memfd and a buffer of
process memory, and runs a random sequence of

* random ioctls on those fds: every known IOMMU_* and VFIO_DEVICE_* number, the same nr with
  a dir/size encoded, random nrs of type ';' and random u32s, with random bytes of random
  lengths (bytearrays, so the outputs land where the test sees them), structs with a valid
  ``size``/``argsz`` whose id fields name objects that exist, and safe addresses;
* valid calls: IOAS_ALLOC, MAP of the buffer, MAP_FILE of the memfd, COPY, UNMAP, DESTROY,
  bind/attach/detach of the cdev, DMA reads and writes through the device.

Every call must return or raise OSError (kmock.DmaFault only from dma_read/dma_write).
Afterwards the object model's invariants are checked (check_invariants) and close_all()
must leave no fd open.

Addresses handed to the kernel are where nothing of this process lives (below 64K,
non-canonical, a PROT_NONE reservation) or in memory the test owns, and DMA writes only go
to areas backed by the test's own memfd or buffer, so an output or a DMA cannot corrupt the
interpreter.
"""

import ctypes
import mmap
import os

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

import kmock
from kmock import _libc
from kmock.uapi import iommufd as I
from kmock.uapi import vfio as V
from kmock.uapi.ioctl import _IOC

P = 4096
U64 = (1 << 64) - 1
U32 = 0xFFFFFFFF
RW = I.IOMMU_IOAS_MAP_READABLE | I.IOMMU_IOAS_MAP_WRITEABLE
FIXED = I.IOMMU_IOAS_MAP_FIXED_IOVA

IOMMU_IOCTLS = sorted({v for n, v in vars(I).items() if n.startswith("IOMMU_") and isinstance(v, int)
                       and (v >> 8) & 0xFF == I.IOMMUFD_TYPE and v & 0xFF >= 0x80 and v < 1 << 16})
VFIO_IOCTLS = sorted(V.STRUCT)
KNOWN = IOMMU_IOCTLS + VFIO_IOCTLS
STRUCT = {**I.STRUCT, **V.STRUCT}
MIN_SIZE = {**I.MIN_SIZE, **V.MINSZ}
assert len(IOMMU_IOCTLS) >= 20 and I.IOMMU_IOAS_MAP_FILE in IOMMU_IOCTLS

SCRATCH_SIZE = 1 << 16
SCRATCH = ctypes.create_string_buffer(SCRATCH_SIZE)
SCRATCH_ADDR = ctypes.addressof(SCRATCH)
NOACCESS = _libc.reserve(1 << 20)  # PROT_NONE: reads and writes fault -> EFAULT
BUF_SIZE = 16 * P
BUF = mmap.mmap(-1, BUF_SIZE)  # page-aligned process memory for IOMMU_IOAS_MAP
BUF_ADDR = ctypes.addressof(ctypes.c_char.from_buffer(BUF))
MEMFD_SIZE = 16 * P

# --- strategies -----------------------------------------------------------------------------

u32 = st.integers(0, U32)
interesting = st.sampled_from([0, 1, 2, P - 1, P, P + 1, 2 * P, 4 * P, 16 * P, 17 * P, 2048,
                               1 << 21, 1 << 24, 1 << 31, 1 << 32, 1 << 47, (1 << 63) - 1,
                               1 << 63, U64 - P + 1, U64 - 1, U64])
u64 = st.one_of(interesting, st.integers(0, U64))
requests = st.one_of(
    st.sampled_from(KNOWN),
    st.builds(lambda req, d, size: _IOC(d, I.IOMMUFD_TYPE, req & 0xFF, size),
              st.sampled_from(KNOWN), st.integers(0, 3), st.integers(0, (1 << 14) - 1)),
    st.builds(lambda d, nr, size: _IOC(d, I.IOMMUFD_TYPE, nr, size),
              st.sampled_from([0, 0, 1, 2, 3]), st.integers(0, 255),
              st.sampled_from([0, 0, 8, 24, 48, 1 << 13])),
    u32,
)
safe_addresses = st.one_of(
    st.integers(0, 0xFFFF),  # below mmap_min_addr
    st.integers(1 << 47, U64),  # non-canonical or the kernel half
    st.integers(0, (1 << 20) - 64).map(lambda o: NOACCESS + o),
    st.integers(0, SCRATCH_SIZE // 2).map(lambda o: SCRATCH_ADDR + o),
)
# the user_va of a random MAP: anywhere safe, or in the buffer the test owns
user_vas = st.one_of(safe_addresses,
                     st.integers(0, BUF_SIZE // P).map(lambda i: BUF_ADDR + i * P),
                     st.integers(0, BUF_SIZE).map(lambda o: BUF_ADDR + o))

POINTER_FIELDS = {"allowed_iovas", "data_uptr", "data", "token_uuid_ptr"}
ID_FIELDS = {"id", "ioas_id", "dst_ioas_id", "src_ioas_id", "object_id", "dev_id", "pt_id",
             "hwpt_id", "viommu_id", "fault_id"}
FD_FIELDS = {"fd", "iommufd"}


def _field_strategy(name, ctype):
    if name in ("size", "argsz"):
        return None  # set from the struct's sizes
    if issubclass(ctype, (ctypes.Structure, ctypes.Union, ctypes.Array)):
        n = ctypes.sizeof(ctype)
        return st.binary(min_size=n, max_size=n).map(lambda b: ("raw", b))
    if name in POINTER_FIELDS:
        return safe_addresses.map(lambda v: ("int", v))
    if name == "user_va":
        return user_vas.map(lambda v: ("int", v))
    if name in ID_FIELDS:
        return st.one_of(st.integers(0, 15).map(lambda i: ("id", i)),
                         st.integers(0, 15).map(lambda i: ("id", i)),
                         u32.map(lambda v: ("int", v)))
    if name in FD_FIELDS:
        return st.one_of(st.integers(0, 15).map(lambda i: ("fd", i)),
                         st.sampled_from([-1, 0x7FFFFFFF, 1 << 20]).map(lambda v: ("int", v)))
    if name.startswith("__reserved"):
        return st.one_of(st.just(0), st.just(0), st.just(0), st.just(0), st.just(0),
                         st.integers(0, U32)).map(lambda v: ("int", v))
    if name in ("flags", "op", "option_id", "data_type", "type"):
        return st.one_of(st.just(0), st.just(0), st.integers(0, 7), st.integers(0, 7),
                         st.integers(0, U32)).map(lambda v: ("int", v))
    if name in ("iova", "length", "start", "dst_iova", "src_iova", "val64", "num_iovas"):
        return u64.map(lambda v: ("int", v))
    return u64.map(lambda v: ("int", v))


@st.composite
def struct_args(draw):
    """A struct for one command: valid size/argsz (mostly the whole struct, sometimes the
    minimum, with a zeroed tail, or a few bytes short), fields drawn by their role."""
    req = draw(st.sampled_from(sorted(STRUCT)))
    cls = STRUCT[req]
    fields = {}
    for name, ctype, *_ in cls._fields_:
        strat = _field_strategy(name, ctype)
        if strat is not None:
            fields[name] = draw(strat)
    full = ctypes.sizeof(cls)
    size = draw(st.one_of(st.just(full), st.just(full), st.just(MIN_SIZE.get(req, full)),
                          st.integers(0, full + 16), st.just(full + 8)))
    op = None
    if req == I.IOMMU_TEST_CMD:
        op = draw(st.integers(1, 24))
    request = draw(st.one_of(st.just(req), st.just(req), st.just(req), requests))
    how = draw(st.sampled_from(["bytearray", "bytearray", "struct", "address"]))
    return ("sioctl", request, cls, fields, size, op, how)


raw_args = st.one_of(
    safe_addresses,
    st.binary(max_size=128).map(bytearray),
    st.binary(max_size=128).map(bytearray),
    st.binary(max_size=16),
    st.builds(lambda size, rest: bytearray(size.to_bytes(4, "little") + rest),
              st.sampled_from([8, 12, 16, 24, 32, 40, 48, 64, 72]), st.binary(max_size=96)),
)

TARGET = st.integers(0, 7)  # index into the fds of the example (see _setup)

ops = st.one_of(
    st.tuples(st.just("ioctl"), TARGET, requests, raw_args),
    struct_args().map(lambda t: t[:1] + (None,) + t[1:]),
    struct_args().map(lambda t: t[:1] + (None,) + t[1:]),
    st.tuples(st.just("ioas_alloc")),
    st.tuples(st.just("map"), st.integers(0, 7), st.integers(0, 15), st.integers(1, 4),
              st.sampled_from([RW, RW, I.IOMMU_IOAS_MAP_READABLE, RW | FIXED]),
              st.sampled_from([0, 1 << 24, (1 << 24) + 4 * P, 1 << 32, 2048, P])),
    st.tuples(st.just("map_file"), st.integers(0, 7), st.integers(0, 15), st.integers(1, 4),
              st.sampled_from([RW, RW, I.IOMMU_IOAS_MAP_READABLE, RW | FIXED]),
              st.sampled_from([0, 1 << 24, (1 << 24) + 8 * P, 1 << 33])),
    st.tuples(st.just("copy"), st.integers(0, 7), st.integers(0, 7), st.integers(0, 31),
              st.sampled_from([RW, I.IOMMU_IOAS_MAP_READABLE, RW | FIXED])),
    st.tuples(st.just("unmap"), st.integers(0, 7), st.integers(0, 31), st.booleans()),
    st.tuples(st.just("destroy"), st.integers(0, 15)),
    st.tuples(st.just("bind"), st.integers(0, 1)),
    st.tuples(st.just("attach"), st.integers(0, 1), st.integers(0, 15)),
    st.tuples(st.just("detach"), st.integers(0, 1)),
    st.tuples(st.just("mock_domain"), st.integers(0, 15)),
    st.tuples(st.just("dma"), st.sampled_from([0, 0, 0, 1]), st.integers(0, 31), st.integers(0, 8 * P),
              st.integers(1, 2 * P), st.booleans()),
    st.tuples(st.just("dma"), st.integers(0, 1), st.just(None), u64,
              st.integers(1, 2 * P), st.booleans()),
    st.tuples(st.just("close_cdev"), st.integers(0, 1)),
)


# --- the run -------------------------------------------------------------------------------


class World:
    """The fds of one example and what the test knows about them."""

    def __init__(self, k, attach=False):
        self.k = k
        self.iommufd = k.open("/dev/iommu", os.O_RDWR)
        self.devs = [k.add_vfio_device(), k.add_vfio_device()]
        self.cdevs = [k.open(d.path, os.O_RDWR) for d in self.devs]
        self.memfd = k.memfd_create("fuzz")
        os.ftruncate(self.memfd, MEMFD_SIZE)
        os.pwrite(self.memfd, bytes(range(256)) * (MEMFD_SIZE // 256), 0)
        closed = k.dup(self.iommufd)
        k.close(closed)
        self.fds = [self.iommufd, self.cdevs[0], self.cdevs[1], self.memfd, closed, -1]
        self.ictx = k.file(self.iommufd)
        self._ioctl(self.cdevs[0], V.VFIO_DEVICE_BIND_IOMMUFD,
                    V.vfio_device_bind_iommufd(argsz=16, iommufd=self.iommufd))
        a = I.iommu_ioas_alloc(size=ctypes.sizeof(I.iommu_ioas_alloc))
        self._ioctl(self.iommufd, I.IOMMU_IOAS_ALLOC, a)
        if attach:
            self._ioctl(self.cdevs[0], V.VFIO_DEVICE_ATTACH_IOMMUFD_PT,
                        V.vfio_device_attach_iommufd_pt(argsz=16, pt_id=a.out_ioas_id))

    def _ioctl(self, fd, req, arg):
        return self.k.ioctl(fd, req, arg)

    def ids(self, *types):
        return sorted(i for i, o in self.ictx.objects.items() if not types or o.object_type in types)

    def pick_id(self, i, *types):
        ids = self.ids(*types)
        return ids[i % len(ids)] if ids else i

    def fd(self, i):
        return self.fds[i % len(self.fds)]

    def ioctl_target(self, i):
        # mostly the iommufd and the bound cdev
        return [self.iommufd, self.iommufd, self.iommufd, self.cdevs[0], self.cdevs[0],
                self.cdevs[1], self.fds[4], self.iommufd][i]


def _call(fn, *args, dma=False):
    """Run one call; return its result or the exception. Anything else fails the test."""
    try:
        return fn(*args)
    except OSError as e:
        assert isinstance(e.errno, int) and e.errno > 0, (fn, args, e)
        return e
    except kmock.DmaFault as e:
        assert dma, (fn, args, e)
        return e


def _build_struct(w, cls, fields, size, op):
    s = cls()
    for name, (kind, v) in fields.items():
        if kind == "raw":
            off = getattr(cls, name).offset
            ctypes.memmove(ctypes.addressof(s) + off, v, len(v))
            continue
        if kind == "id":
            v = w.pick_id(v)
        elif kind == "fd":
            v = w.fd(v)
        ctype = {n: t for n, t, *_ in cls._fields_}[name]
        bits = ctypes.sizeof(ctype) * 8
        setattr(s, name, v & ((1 << bits) - 1) if not ctype.__name__.startswith("c_int") or v >= 0
                else v)
    setattr(s, cls._fields_[0][0], size)
    if op is not None:
        s.op = op
    return s


def _arg_for(s, size, how):
    raw = bytes(s)
    if size > len(raw):
        raw += bytes(size - len(raw))  # zero tail: accepted (copy_struct_from_user)
    if how == "struct" and size <= ctypes.sizeof(s):
        return s
    if how == "address" and size <= ctypes.sizeof(s):
        return ctypes.addressof(s)
    return bytearray(raw)


def _owned(pages):
    """Are these pages the test's own memory (so a DMA write through them is harmless)?"""
    if pages.kind == "file":
        st_ = os.fstat(pages.fd) if pages.fd >= 0 else None
        own = os.fstat(_OWN_MEMFD[0]) if _OWN_MEMFD else None
        return st_ is not None and own is not None and (st_.st_dev, st_.st_ino) == (own.st_dev, own.st_ino)
    if pages.kind == "user" and pages.gmem_file is None:
        return (BUF_ADDR <= pages.start and pages.start + pages.length <= BUF_ADDR + BUF_SIZE) or (
            SCRATCH_ADDR <= pages.start and pages.start + pages.length <= SCRATCH_ADDR + SCRATCH_SIZE)
    return False


_OWN_MEMFD = []


def _areas(w):
    out = []
    for i in w.ids("ioas"):
        out.extend(w.ictx.objects[i].areas)
    return out


def step(w, op):
    k = w.k
    name = op[0]
    if name == "ioctl":
        _, target, req, arg = op
        return _call(k.ioctl, w.ioctl_target(target), req, arg)
    if name == "sioctl":
        _, _, req, cls, fields, size, cmd_op, how = op
        s = _build_struct(w, cls, fields, size, cmd_op)
        fd = w.cdevs[0] if cls.__name__.startswith("vfio") else w.iommufd
        if cls.__name__.startswith("vfio") and fields.get("flags", ("int", 0))[1] & 1:
            fd = w.cdevs[1]
        return _call(k.ioctl, fd, req, _arg_for(s, size, how))
    if name == "ioas_alloc":
        return _call(k.ioctl, w.iommufd, I.IOMMU_IOAS_ALLOC,
                     I.iommu_ioas_alloc(size=ctypes.sizeof(I.iommu_ioas_alloc)))
    if name == "map":
        _, ioas, page, npages, flags, iova = op
        page %= BUF_SIZE // P
        npages = min(npages, BUF_SIZE // P - page)
        m = I.iommu_ioas_map(size=ctypes.sizeof(I.iommu_ioas_map), flags=flags,
                             ioas_id=w.pick_id(ioas, "ioas"), user_va=BUF_ADDR + page * P,
                             length=npages * P, iova=iova)
        return _call(k.ioctl, w.iommufd, I.IOMMU_IOAS_MAP, m)
    if name == "map_file":
        _, ioas, page, npages, flags, iova = op
        m = I.iommu_ioas_map_file(size=ctypes.sizeof(I.iommu_ioas_map_file), flags=flags,
                                  ioas_id=w.pick_id(ioas, "ioas"), fd=w.memfd, start=page * P,
                                  length=npages * P, iova=iova)
        return _call(k.ioctl, w.iommufd, I.IOMMU_IOAS_MAP_FILE, m)
    if name == "copy":
        _, _src, dst, which, flags = op
        areas = _areas(w)
        if not areas:
            return None
        a = areas[which % len(areas)]
        c = I.iommu_ioas_copy(size=ctypes.sizeof(I.iommu_ioas_copy), flags=flags,
                              dst_ioas_id=w.pick_id(dst, "ioas"), src_ioas_id=a.ioas.id,
                              length=a.length, dst_iova=a.iova + (1 << 32), src_iova=a.iova)
        return _call(k.ioctl, w.iommufd, I.IOMMU_IOAS_COPY, c)
    if name == "unmap":
        _, ioas, which, all_ = op
        areas = _areas(w)
        if all_ or not areas:
            u = I.iommu_ioas_unmap(size=ctypes.sizeof(I.iommu_ioas_unmap),
                                   ioas_id=w.pick_id(ioas, "ioas"), iova=0, length=U64)
        else:
            a = areas[which % len(areas)]
            u = I.iommu_ioas_unmap(size=ctypes.sizeof(I.iommu_ioas_unmap), ioas_id=a.ioas.id,
                                   iova=a.iova, length=a.length)
        return _call(k.ioctl, w.iommufd, I.IOMMU_IOAS_UNMAP, u)
    if name == "destroy":
        d = I.iommu_destroy(size=8, id=w.pick_id(op[1]))
        return _call(k.ioctl, w.iommufd, I.IOMMU_DESTROY, d)
    if name == "bind":
        b = V.vfio_device_bind_iommufd(argsz=24, iommufd=w.iommufd)
        return _call(k.ioctl, w.cdevs[op[1]], V.VFIO_DEVICE_BIND_IOMMUFD, b)
    if name == "attach":
        pt_id = w.pick_id(op[2], "ioas", "hwpt_paging")
        a = V.vfio_device_attach_iommufd_pt(argsz=16, pt_id=pt_id)
        return _call(k.ioctl, w.cdevs[op[1]], V.VFIO_DEVICE_ATTACH_IOMMUFD_PT, a)
    if name == "detach":
        d = V.vfio_device_detach_iommufd_pt(argsz=12)
        return _call(k.ioctl, w.cdevs[op[1]], V.VFIO_DEVICE_DETACH_IOMMUFD_PT, d)
    if name == "mock_domain":
        c = I.iommu_test_cmd(size=ctypes.sizeof(I.iommu_test_cmd), op=I.IOMMU_TEST_OP_MOCK_DOMAIN,
                             id=w.pick_id(op[1], "ioas", "hwpt_paging"))
        return _call(k.ioctl, w.iommufd, I.IOMMU_TEST_CMD, c)
    if name == "dma":
        _, which, area_i, off, n, write = op
        dev = w.devs[which]
        if area_i is None:
            iova = off
            area = None
            idev = dev.idev
            if idev is not None and idev.hwpt is not None:
                area = idev.hwpt.ioas.area_at(iova)
        else:
            idev = dev.idev
            if idev is None or idev.hwpt is None or not idev.hwpt.ioas.areas:
                return _call(dev.dma_read, 0, 8, dma=True)
            areas = idev.hwpt.ioas.areas
            area = areas[area_i % len(areas)]
            iova = area.iova + off % area.length
            n = min(n, area.last - iova + 1)
        if write:
            # only through areas backed by the test's memory; the write may run past the
            # area into the next one, so keep it inside this one
            if area is None or not _owned(area.pages) or iova + n - 1 > area.last:
                return None
            data = bytes([n & 0xFF]) * n
            r = _call(dev.dma_write, iova, data, dma=True)
            if r is None:
                assert _call(dev.dma_read, iova, n, dma=True) == data
            return r
        r = _call(dev.dma_read, iova, n, dma=True)
        assert isinstance(r, (bytes, Exception)) and (not isinstance(r, bytes) or len(r) == n)
        return r
    if name == "close_cdev":
        i = op[1]
        if w.cdevs[i] is None:
            return None
        k.close(w.cdevs[i])
        w.cdevs[i] = k.open(w.devs[i].path, os.O_RDWR)  # a fresh, unbound open
        w.fds[1 + i] = w.cdevs[i]
        return None
    raise AssertionError(name)


def check_invariants(k, pins=True):
    ictxs = {id(f): f for f in k.fdtable.files() if f.file_type == "iommufd"}
    for dev in k.vfio_devices.values():
        if dev.idev is not None:
            ictxs[id(dev.idev.ictx)] = dev.idev.ictx
    pin_users = {}
    for ictx in ictxs.values():
        seen = set()
        for i, obj in ictx.objects.items():
            assert i >= 1 and obj.id == i, (i, obj)
            assert id(obj) not in seen  # one object, one id
            seen.add(id(obj))
        for obj in ictx.objects.values():
            if obj.object_type == "device":
                assert obj.hwpt is None or ictx.objects.get(obj.hwpt.id) is obj.hwpt
                assert obj.hwpt is None or obj in obj.hwpt.devices
            if obj.object_type == "hwpt_paging":
                assert ictx.objects.get(obj.ioas.id) is obj.ioas
                assert obj in obj.ioas.domains or not obj.devices, obj
                assert obj.devices or not obj.auto, obj  # an automatic HWPT dies with its last device
            if obj.object_type != "ioas":
                continue
            ioas = obj
            areas = ioas.areas
            assert ioas._starts == [a.iova for a in areas]
            for a, b in zip(areas, areas[1:]):
                assert a.last < b.iova, (a, b)  # no two areas overlap
            for a in areas:
                assert a.length > 0 and a.last <= U64 and a.pages.users >= 1
                assert a.pages.fd >= 0 or a.pages.kind != "file"
                for d in ioas.domains:
                    _check_mapped(d, a)
                if ioas.domains:  # only domains pin at map time (accesses pin on demand)
                    pin_users[id(a.pages)] = pin_users.get(id(a.pages), 0) + 1
                pin_users.setdefault(id(a.pages), 0)
            for d in ioas.domains:  # nothing mapped outside the areas
                for iova, pfn, n, perm in d.table.runs():
                    last = iova + n * P - 1
                    a = ioas.area_at(iova)
                    assert a is not None and not a.revoked, (hex(iova), areas)
                    assert ioas.area_at(last) is not None
    for ictx in ictxs.values() if pins else ():
        for obj in ictx.objects.values():
            if obj.object_type == "ioas":
                for a in obj.areas:
                    # a pages object is pinned iff some domain of an IOAS using it exists
                    assert a.pages.pin_users == pin_users[id(a.pages)], (a, a.pages.pin_users)
                    assert a.pages.pinned == (pin_users[id(a.pages)] > 0), a


def _check_mapped(d, a):
    """Area ``a`` is mapped in domain ``d`` (sampled pages: first, last, a few between)."""
    first, last = a.iova >> 12, a.last >> 12
    idx = sorted({first, last, (first + last) // 2, min(first + 1, last)})
    for page in idx:
        hit = d.table.lookup(page << 12)
        if a.revoked:
            assert hit is None, a
            continue
        assert hit is not None, (a, hex(page << 12))
        off = a.offset + (page << 12) - (a.iova & ~(P - 1))
        (_, pfn, _), = a.pages.pfn_runs(off, 1)[:1]
        assert hit[0] == pfn, (a, hex(page << 12), hit, pfn)
        assert hit[1] & 3 == a.perm(), (a, hit)


def run(ops_list, attach=False):
    before = set(os.listdir("/proc/self/fd"))
    k = kmock.Kernel()
    try:
        w = World(k, attach)
        _OWN_MEMFD[:] = [w.memfd]
        for op in ops_list:
            step(w, op)
        check_invariants(k)
        k.close_all()
        assert not k.fdtable and not k.mappings
        for dev in k.vfio_devices.values():
            assert dev.idev is None
    finally:
        _OWN_MEMFD[:] = []
        k.close_all()
        k.__del__()
    leaked = set(os.listdir("/proc/self/fd")) - before
    # listdir's own directory fd may be in the set; nothing else may be
    assert len(leaked) <= 1, leaked


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.data_too_large])
@given(st.lists(ops, min_size=1, max_size=30), st.booleans())
def test_fuzz_iommufd(ops_list, attach):
    run(ops_list, attach)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 7), requests, raw_args), min_size=1, max_size=20))
def test_fuzz_iommufd_raw_ioctls(calls):
    """Dense raw fuzz: random requests and bytes on the iommufd, the cdevs and others."""
    run([("ioctl", t, req, arg) for t, req, arg in calls])


def test_world_reaches_dma():
    """The valid calls of the fuzz really reach DMA (so the fuzz is not all errors)."""
    k = kmock.Kernel()
    try:
        w = World(k)
        _OWN_MEMFD[:] = [w.memfd]
        assert step(w, ("attach", 0, 0)) == 0
        assert step(w, ("map_file", 0, 1, 2, RW, 0)) == 0
        assert len(_areas(w)) == 1
        assert step(w, ("dma", 0, 0, 0, 8, False)) == bytes(range(256))[:8]
        assert step(w, ("dma", 0, 0, 16, 8, True)) is None
        assert os.pread(w.memfd, 8, P + 16) == bytes([8]) * 8
        assert step(w, ("map", 0, 0, 1, RW, 0)) == 0
        check_invariants(k)
        assert isinstance(step(w, ("dma", 1, 0, 0, 8, False)), kmock.DmaFault)  # not bound
    finally:
        _OWN_MEMFD[:] = []
        k.close_all()
        k.__del__()


def test_attach_to_own_hwpt():
    """Found by the fuzz (fixed in vfio.py): re-attaching to the device's own automatic HWPT
    is a no-op, not a detach that destroys the HWPT and an attach to the dead object."""
    k = kmock.Kernel()
    try:
        w = World(k)
        a = V.vfio_device_attach_iommufd_pt(argsz=16, pt_id=w.ids("ioas")[0])
        k.ioctl(w.cdevs[0], V.VFIO_DEVICE_ATTACH_IOMMUFD_PT, a)
        hwpt = a.pt_id
        k.ioctl(w.cdevs[0], V.VFIO_DEVICE_ATTACH_IOMMUFD_PT, a)  # the same HWPT again
        assert a.pt_id == hwpt
        check_invariants(k)
    finally:
        k.close_all()
        k.__del__()


def test_access_pins_existing_areas():
    """An access pins nothing by itself (iommufd_access_pin_pages does, on demand);
    map-time pins follow the domains only, before and after the access exists."""
    k = kmock.Kernel()
    try:
        w = World(k)
        assert step(w, ("map_file", 0, 0, 1, RW, 0)) == 0
        c = I.iommu_test_cmd(size=ctypes.sizeof(I.iommu_test_cmd),
                             op=I.IOMMU_TEST_OP_CREATE_ACCESS, id=w.ids("ioas")[0])
        k.ioctl(w.iommufd, I.IOMMU_TEST_CMD, c)
        check_invariants(k)
    finally:
        k.close_all()
        k.__del__()
