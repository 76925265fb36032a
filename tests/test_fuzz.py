"""Hypothesis fuzz of the mock's syscall API (DESIGN.md "Errors and consequences": bad input,
any ioctl number, any bytes, never produces another exception type).

Each example builds a kernel with one fd of every file type (/dev/kvm, a DEFAULT and a
SW_PROTECTED VM, a vCPU, guest_memfds of every flag combination) plus a closed fd, runs a
random sequence of syscalls on random fds with random arguments, and then checks the mock's
invariants and that ``close_all`` leaves nothing open.

What may be raised, per call:

* ``OSError`` from any syscall;
* ``kmock.SigBus`` only from an access through a mapping;
* ``OverflowError`` only where the ``os``/``fcntl`` function would raise it for that
  argument type: an int ``ioctl`` argument outside [-2**63, 2**64) (fcntl.ioctl raises it
  already above INT_MAX; kmock takes a full 64-bit address, as a C caller can), and a
  ``fallocate`` fd/mode outside a C int or offset/length outside an off_t (as
  ``os.posix_fallocate`` would);
* ``TypeError`` never: every argument here has a type the os/fcntl function accepts (writes
  through a mapping are only done when it has PROT_WRITE; mmap.mmap raises TypeError too).

Argument ints used as user addresses are drawn where nothing of this process lives (below
64K, non-canonical or kernel-half values, a PROT_NONE reservation) or inside a scratch
buffer owned by the test, so that an ioctl writing its struct back cannot corrupt the
interpreter. Mapping reads are only done when the mapping has PROT_READ (a PROT_NONE
mapping is a real SIGSEGV in C and in mmap.mmap alike).
"""

import ctypes
import errno
import os

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

import kmock
from kmock import _libc
from kmock.kvm.guest_memfd import BINDING_SPACE, GmemFile
from kmock.mapping import FileMapping
from kmock.uapi import kvm as K
from kmock.uapi.ioctl import _IOC

P = 4096
U64 = (1 << 64) - 1
KNOWN_IOCTLS = sorted({v for n, v in vars(K).items()
                       if n.startswith("KVM_") and isinstance(v, int) and (v >> 8) & 0xFF == 0xAE})
STRUCTS = [K.kvm_create_guest_memfd, K.kvm_userspace_memory_region,
           K.kvm_userspace_memory_region2, K.kvm_memory_attributes, K.kvm_pre_fault_memory,
           K.kvm_enable_cap, K.kvm_cpuid2]

SCRATCH_SIZE = 1 << 16
SCRATCH = ctypes.create_string_buffer(SCRATCH_SIZE)
SCRATCH_ADDR = ctypes.addressof(SCRATCH)
NOACCESS = _libc.reserve(1 << 20)  # PROT_NONE: reads and writes fault -> EFAULT

# --- strategies -----------------------------------------------------------------------------

u32 = st.integers(0, 0xFFFFFFFF)
interesting_ints = st.sampled_from([0, 1, 2, 3, 7, P - 1, P, P + 1, 2 * P, 4 * P, 5 * P,
                                    1 << 21, 1 << 32, (1 << 52) - P, (1 << 62), (1 << 63) - P,
                                    (1 << 63) - 1, 1 << 63, U64 - P + 1, U64, -1, -P])
offsets = st.one_of(interesting_ints, st.integers(-(1 << 63), (1 << 63) - 1),
                    st.integers(0, 64).map(lambda n: n * P))
requests = st.one_of(
    st.sampled_from(KNOWN_IOCTLS),
    u32,
    st.builds(lambda d, nr, size: _IOC(d, 0xAE, nr, size),
              st.integers(0, 3), st.integers(0, 255), st.integers(0, (1 << 14) - 1)),
    st.integers(-(1 << 40), 1 << 40),  # fcntl.ioctl masks the request to an unsigned int
)
safe_addresses = st.one_of(
    st.integers(0, 0xFFFF),  # below mmap_min_addr
    st.integers(1 << 47, U64),  # non-canonical or the kernel half
    st.integers(0, (1 << 20) - 64).map(lambda o: NOACCESS + o),
    st.integers(0, SCRATCH_SIZE // 2).map(lambda o: SCRATCH_ADDR + o),
    st.integers(-(1 << 63), -1),  # a negative long is a kernel-half address
)
out_of_range_ints = st.one_of(st.integers(1 << 64, 1 << 80), st.integers(-(1 << 80), -(1 << 63) - 1))


@st.composite
def ctypes_structs(draw):
    cls = draw(st.sampled_from(STRUCTS))
    raw = draw(st.binary(min_size=ctypes.sizeof(cls), max_size=ctypes.sizeof(cls)))
    return cls.from_buffer_copy(raw)


@st.composite
def structured_bytes(draw):
    """Bytes that look like a struct: fields picked from interesting values."""
    n = draw(st.sampled_from([8, 32, 64, 104, 160]))
    words = draw(st.lists(st.one_of(interesting_ints.map(lambda v: v & U64),
                                    st.integers(0, U64)), min_size=n // 8, max_size=n // 8))
    return b"".join(w.to_bytes(8, "little") for w in words)


ioctl_args = st.one_of(
    safe_addresses,
    st.binary(max_size=300),
    st.binary(max_size=300).map(bytearray),
    structured_bytes(),
    structured_bytes().map(bytearray),
    ctypes_structs(),
    out_of_range_ints,
)

def _pick(*vals):
    return st.sampled_from(vals)


G = 1 << 32
# Well-formed requests: the known struct ioctls with fields from the values that matter, so
# that the fuzz reaches the success paths (slots bound, attributes set, pages pre-faulted).
# A ``guest_memfd`` field is an index into the fds handed out so far, resolved at run time.
WELL_FORMED = {
    K.KVM_CREATE_GUEST_MEMFD: (K.kvm_create_guest_memfd, dict(
        size=_pick(P, 4 * P, 16 * P, 1, 0, 1 << 62), flags=_pick(0, 1, 2, 3, 4))),
    K.KVM_SET_USER_MEMORY_REGION2: (K.kvm_userspace_memory_region2, dict(
        slot=_pick(0, 1, 2, 3, (1 << 16) | 1, 32764), flags=_pick(0, 4, 4, 1, 2, 6),
        guest_phys_addr=_pick(0, G, G + P, G + 2 * P, 1 << 33, (1 << 52) - P),
        memory_size=_pick(0, P, 2 * P, 4 * P, 16 * P), guest_memfd_offset=_pick(
            0, P, 2 * P, 1, 0x7FFFFFFFFFFFF000), guest_memfd=st.integers(0, 63))),
    K.KVM_SET_USER_MEMORY_REGION: (K.kvm_userspace_memory_region, dict(
        slot=_pick(0, 1, 2, 5), flags=_pick(0, 1, 4), guest_phys_addr=_pick(0, G, 1 << 34),
        memory_size=_pick(0, P, 4 * P))),
    K.KVM_SET_MEMORY_ATTRIBUTES: (K.kvm_memory_attributes, dict(
        address=_pick(0, G, G + P, 1 << 33), size=_pick(0, P, 4 * P, 1 << 21, U64),
        attributes=_pick(0, 8, 8, 1), flags=_pick(0, 0, 1))),
    K.KVM_PRE_FAULT_MEMORY: (K.kvm_pre_fault_memory, dict(
        gpa=_pick(0, G, G + P, 1 << 33, G + 16 * P), size=_pick(P, 2 * P, 16 * P, 0, 1 << 21),
        flags=_pick(0, 0, 1))),
    K.KVM_ENABLE_CAP: (K.kvm_enable_cap, dict(cap=_pick(201, 244, 0), flags=_pick(0, 1))),
}
VALUE_IOCTLS = {K.KVM_CREATE_VCPU: _pick(0, 1, 2, 4095, 4096), K.KVM_CREATE_VM: _pick(0, 1, 2, 5),
                K.KVM_CHECK_EXTENSION: _pick(201, 233, 235, 236, 244, 0, 9999),
                K.KVM_RUN: _pick(0), K.KVM_GET_API_VERSION: _pick(0, 1),
                K.KVM_GET_VCPU_MMAP_SIZE: _pick(0)}


@st.composite
def well_formed_ioctl(draw):
    req = draw(st.sampled_from(sorted(WELL_FORMED) + sorted(VALUE_IOCTLS)))
    if req in VALUE_IOCTLS:
        return ("ioctl", req, draw(VALUE_IOCTLS[req]), True)
    cls, fields = WELL_FORMED[req]
    values = {name: draw(strat) for name, strat in fields.items()}
    how = draw(st.sampled_from(["struct", "bytes", "bytearray", "address"]))
    return ("wioctl", req, cls, values, how)


ops = st.one_of(
    st.tuples(st.just("ioctl"), requests, ioctl_args, st.booleans()),
    well_formed_ioctl(), well_formed_ioctl(), well_formed_ioctl(),
    st.tuples(st.just("fallocate"),
              st.one_of(st.integers(0, 0x1FF), st.sampled_from([1, 3, 2, 0]),
                        st.integers(-(1 << 31), (1 << 31) - 1), out_of_range_ints),
              offsets, st.one_of(offsets, out_of_range_ints)),
    st.tuples(st.just("mmap"),
              st.one_of(st.sampled_from([0, 1, P, 3 * P, 4 * P, 16 * P, 12288 + P]),
                        st.integers(-P, 1 << 24), st.sampled_from([1 << 47, U64, 1 << 64])),
              st.one_of(st.integers(0, 7), st.integers(0, (1 << 31) - 1)),
              st.one_of(st.sampled_from([1, 2, 3]), st.integers(0, 0xFFFF)),
              st.one_of(st.sampled_from([0, P, 3 * P, 4 * P, 1, 1 << 63, -P]), offsets)),
    st.tuples(st.just("read"), st.integers(-1, 1 << 20)),
    st.tuples(st.just("write"), st.binary(max_size=64)),
    st.tuples(st.just("pread"), st.integers(-1, 1 << 16), offsets),
    st.tuples(st.just("pwrite"), st.binary(max_size=64), offsets),
    st.tuples(st.just("lseek"), offsets, st.integers(-1, 5)),
    st.tuples(st.just("ftruncate"), offsets),
    st.tuples(st.just("fstat")),
    st.tuples(st.just("fsync")),
    st.tuples(st.just("dup")),
    st.tuples(st.just("close")),
    st.tuples(st.just("access"), st.integers(0, 1 << 24), st.integers(0, 3 * P),
              st.booleans(), st.integers(0, 255)),
    st.tuples(st.just("munmap")),
)

fd_choice = st.one_of(
    st.integers(0, 63),  # an index into the fds handed out so far
    st.integers(0, 63), st.integers(0, 63), st.integers(0, 63),
    st.integers(-(1 << 31), (1 << 31) - 1),  # anything
    st.sampled_from([-1, 0, 1, 2, 0x7FFFFFFF]),
)


# --- the run -------------------------------------------------------------------------------


def _overflow_allowed(name, args):
    if name == "ioctl":
        arg = args[2]
        return type(arg) is int and not -(1 << 63) <= arg <= U64
    if name == "fallocate":
        _, mode, off, length = args
        return not (-(1 << 31) <= mode < (1 << 31)) or not all(
            -(1 << 63) <= v < (1 << 63) for v in (off, length))
    return False


def _call(k, name, *args):
    """Run one syscall; return its result or the OSError. Anything else fails the test."""
    try:
        return getattr(k, name)(*args)
    except OSError as e:
        assert isinstance(e.errno, int) and e.errno > 0, (name, args, e)
        return e
    except OverflowError:
        assert _overflow_allowed(name, args), (name, args)
        return None


def _setup(k):
    kvm = k.open("/dev/kvm", os.O_RDWR)
    vm0 = k.ioctl(kvm, K.KVM_CREATE_VM, 0)
    vm1 = k.ioctl(kvm, K.KVM_CREATE_VM, 1)
    vcpu = k.ioctl(vm0, K.KVM_CREATE_VCPU, 0)
    fds = [kvm, vm0, vm1, vcpu]
    for flags in (0, 1, 3, 2):
        fds.append(k.ioctl(vm0, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(4 * P, flags)))
    fds.append(k.ioctl(vm1, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(4 * P, 1)))
    # one slot bound in each VM, one plain slot
    k.ioctl(vm0, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
        slot=1, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=1 << 32, memory_size=2 * P,
        guest_memfd=fds[6]))
    k.ioctl(vm1, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
        slot=1, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=1 << 32, memory_size=4 * P,
        guest_memfd=fds[8]))
    k.ioctl(vm0, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
        slot=2, guest_phys_addr=1 << 33, memory_size=16 * P))
    closed = k.dup(kvm)
    k.close(closed)
    fds.append(closed)
    return fds


FILE_TYPE_OF = {K.KVM_CREATE_VCPU: "vm", K.KVM_CREATE_VM: "kvm", K.KVM_CHECK_EXTENSION: "vm",
                K.KVM_RUN: "vcpu", K.KVM_GET_API_VERSION: "kvm", K.KVM_GET_VCPU_MMAP_SIZE: "kvm",
                K.KVM_CREATE_GUEST_MEMFD: "vm", K.KVM_SET_USER_MEMORY_REGION2: "vm",
                K.KVM_SET_USER_MEMORY_REGION: "vm", K.KVM_SET_MEMORY_ATTRIBUTES: "vm",
                K.KVM_PRE_FAULT_MEMORY: "vcpu", K.KVM_ENABLE_CAP: "vm"}


def _fd_of_type(k, handed, file_type, pick, default):
    fds = [fd for fd in handed if getattr(k.fdtable.get(fd), "file_type", None) == file_type]
    return fds[pick % len(fds)] if fds else default


def check_invariants(k):
    files = {}
    for fd, f in k.fdtable.items():
        os.fstat(fd)  # every fd in the table is a real open fd
        if isinstance(f, GmemFile):
            st_ = k.fstat(fd)
            assert st_.st_ino == f.inode.ino and st_.st_size == f.inode.size
            assert f.inode.backing >= 0 and fd != f.inode.backing
        files.setdefault(id(f), [f, 0])[1] += 1
    for m in k.mappings:
        assert not m.closed
        files.setdefault(id(m.file), [m.file, 0])[1] += 1
    for f, refs in files.values():
        assert f.refs == refs, (f, f.refs, refs)
    vms = {id(f.vm): f.vm for f, _ in files.values() if hasattr(f, "vm")}
    inodes = {id(f.inode): f.inode for f, _ in files.values() if isinstance(f, GmemFile)}
    for vm in vms.values():
        assert not vm.destroyed
        for as_id in range(k.profile.nr_memslot_as_ids):
            slots = sorted(vm.memslots(as_id), key=lambda s: s.base_gfn)
            for a, b in zip(slots, slots[1:]):
                assert a.end_gfn <= b.base_gfn  # memslots never overlap
            for s in slots:
                assert vm.address_space(as_id).by_id[s.id] is s
                if s.gmem_file is not None:  # a bound slot: the inode agrees
                    inode = s.gmem_file.inode
                    assert s.flags & K.KVM_MEM_GUEST_MEMFD or not k.profile.gmem_flag_toggle_rejected
                    assert s.gmem_file.vm is vm
                    assert inode.slots.get(s.gmem_token) is s
                    assert inode.bindings.find_not(s.gmem_pgoff, s.gmem_pgoff + s.npages,
                                                   s.gmem_token) == -1
                    inodes[id(inode)] = inode
    for inode in inodes.values():
        for token, s in inode.slots.items():
            assert s.gmem_token == token and s.gmem_file.inode is inode
            assert s.vm.address_space(s.as_id).by_id.get(s.id) is s
        if inode.bindings is not None:  # no page is bound to a slot that is gone
            bound = sum(e - b for b, e, v in inode.bindings.ranges(0, BINDING_SPACE) if v)
            assert bound == sum(s.npages for s in inode.slots.values())


def run(ops_list, fd_picks):
    before = set(os.listdir("/proc/self/fd"))
    k = kmock.Kernel()
    try:
        handed = _setup(k)
        mappings = []
        for op, pick in zip(ops_list, fd_picks):
            fd = handed[pick % len(handed)] if 0 <= pick < 64 else pick
            name = op[0]
            if name == "access":
                if not mappings:
                    continue
                _, which, off, write, val = op
                m = mappings[which % len(mappings)]
                if m.closed or not m.length:
                    continue
                off %= m.length
                n = min(64, m.length - off)
                try:
                    if write and m.prot & _libc.PROT_WRITE:
                        m[off:off + n] = bytes([val]) * n
                    elif m.prot & _libc.PROT_READ:
                        assert len(m[off:off + n]) == n
                except kmock.SigBus as e:
                    assert off <= e.offset < off + n
                continue
            if name == "ioctl" and op[1] in VALUE_IOCTLS and pick % 4:
                fd = _fd_of_type(k, handed, FILE_TYPE_OF[op[1]], pick, fd)
            if name == "wioctl":
                _, req, cls, values, how = op
                if pick % 4:  # mostly the fd type the request is meant for
                    fd = _fd_of_type(k, handed, FILE_TYPE_OF[req], pick, fd)
                if "guest_memfd" in values:
                    values = dict(values, guest_memfd=handed[values["guest_memfd"] % len(handed)])
                struct = cls(**values)
                arg = {"struct": struct, "bytes": bytes(struct), "bytearray": bytearray(struct),
                       "address": ctypes.addressof(struct)}[how]
                r = _call(k, "ioctl", fd, req, arg, True)
                if type(r) is int and r in k.fdtable and r not in handed:
                    handed.append(r)
                continue
            if name == "munmap":
                if mappings:
                    mappings.pop(pick % len(mappings)).close()
                continue
            r = _call(k, name, fd, *op[1:])
            if name == "mmap" and isinstance(r, FileMapping):
                assert r.length == op[1] and r.address
                mappings.append(r)
            elif name in ("ioctl", "dup") and type(r) is int and r in k.fdtable and r not in handed:
                handed.append(r)
        check_invariants(k)
        k.close_all()
        assert not k.fdtable and not k.mappings
        assert all(m.closed for m in mappings)
        for fd in handed:
            if str(fd) not in before:
                try:
                    os.fstat(fd)
                except OSError as e:
                    assert e.errno == errno.EBADF
                else:
                    raise AssertionError(f"fd {fd} still open after close_all")
    finally:
        k.close_all()
        k.__del__()
    leaked = set(os.listdir("/proc/self/fd")) - before
    # listdir's own directory fd may be in the set; nothing else may be
    assert len(leaked) <= 1, leaked


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(st.lists(ops, min_size=1, max_size=30), st.lists(fd_choice, min_size=30, max_size=30))
def test_fuzz_syscalls(ops_list, fd_picks):
    run(ops_list, fd_picks)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 12), requests, ioctl_args, st.booleans()),
                min_size=1, max_size=20))
def test_fuzz_ioctls_on_every_file_type(calls):
    """Dense ioctl fuzz: every call goes to one of the handed-out fds (or the closed one)."""
    run([("ioctl", req, arg, mf) for _, req, arg, mf in calls], [i for i, *_ in calls] + [0] * 30)
