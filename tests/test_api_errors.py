"""Misuse of kmock's Python API gets a documented exception naming the argument
(docs/api-errors.md), never a stray exception or a silent wrong answer.

The named cases of issue 14, then a hypothesis sweep: every public call of the
Python API (Kernel, vm.vcpus, guest scripts, VFIO devices, mappings) and of the
syscall API, with arguments of every type and range, either works or raises one of
the exceptions its docs name; a KmockUsageError's message names the argument.
"""

import ctypes
import errno
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kmock
from kmock import _libc
from kmock.errors import MAX_ACCESS_BYTES, KmockUsageError
from kmock.kvm.vm import NoSuchVcpu
from kmock.uapi import iommufd as I
from kmock.uapi import kvm as K
from kmock.uapi import vfio as V

P = 4096
RW = _libc.PROT_READ | _libc.PROT_WRITE
GMEM_GPA = 1 << 32
GMEM_SIZE = 16 * P


class Env:
    """A kernel with a VM, vCPU 0, a guest_memfd memslot (mmap-able, shared), its host
    mapping, and a VFIO device attached to an IOAS holding a 64K memfd mapping."""

    def __init__(self, **settings):
        k = self.k = kmock.Kernel(**settings)
        self.kvm = k.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
        self.vm_fd = k.ioctl(self.kvm, K.KVM_CREATE_VM, 0)
        self.vcpu_fd = k.ioctl(self.vm_fd, K.KVM_CREATE_VCPU, 0)
        flags = K.GUEST_MEMFD_FLAG_MMAP | K.GUEST_MEMFD_FLAG_INIT_SHARED
        self.gmem = k.ioctl(self.vm_fd, K.KVM_CREATE_GUEST_MEMFD,
                            K.kvm_create_guest_memfd(size=GMEM_SIZE, flags=flags))
        self.map = k.mmap(self.gmem, GMEM_SIZE, RW, _libc.MAP_SHARED, 0)
        k.ioctl(self.vm_fd, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
            slot=0, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=GMEM_GPA,
            memory_size=GMEM_SIZE, userspace_addr=self.map.address, guest_memfd=self.gmem))
        self.vm = k.vm(self.vm_fd)
        self.script = self.vm.vcpus[0].guest
        self.dev = k.add_vfio_device()
        iommufd = k.open("/dev/iommu", os.O_RDWR | os.O_CLOEXEC)
        cdev = k.open(self.dev.path, os.O_RDWR | os.O_CLOEXEC)
        k.ioctl(cdev, V.VFIO_DEVICE_BIND_IOMMUFD,
                V.vfio_device_bind_iommufd(argsz=16, iommufd=iommufd))
        alloc = I.iommu_ioas_alloc(size=ctypes.sizeof(I.iommu_ioas_alloc))
        k.ioctl(iommufd, I.IOMMU_IOAS_ALLOC, alloc)
        k.ioctl(cdev, V.VFIO_DEVICE_ATTACH_IOMMUFD_PT,
                V.vfio_device_attach_iommufd_pt(argsz=16, pt_id=alloc.out_ioas_id))
        memfd = k.memfd_create("api-errors", os.MFD_CLOEXEC)
        os.ftruncate(memfd, 16 * P)
        m = I.iommu_ioas_map_file(
            size=ctypes.sizeof(I.iommu_ioas_map_file), ioas_id=alloc.out_ioas_id, fd=memfd,
            flags=I.IOMMU_IOAS_MAP_READABLE | I.IOMMU_IOAS_MAP_WRITEABLE, length=16 * P)
        k.ioctl(iommufd, I.IOMMU_IOAS_MAP_FILE, m)
        self.iova = m.iova


@pytest.fixture
def env():
    e = Env()
    yield e
    e.k.close_all()


def usage(fn, *args, **kw):
    """The KmockUsageError ``fn`` raises (the test fails if it raises nothing)."""
    with pytest.raises(KmockUsageError) as info:
        fn(*args, **kw)
    return str(info.value)


# --- the cases the issue names ----------------------------------------------------------------


def test_missing_vcpu_is_named(env):
    with pytest.raises(NoSuchVcpu) as info:
        env.vm.vcpus[5]
    msg = str(info.value)
    assert "vcpus[5]" in msg and "vCPU ids: 0" in msg
    # still a KeyError for code that caught one, and a KmockUsageError (a ValueError)
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    assert env.vm.vcpus.get(5) is None and 5 not in env.vm.vcpus
    assert env.vm.vcpus[0].guest is env.script


def test_gup_pin_of_none_names_the_mapping(env):
    assert "mapping" in usage(env.k.gup_pin, None, 0, P)
    assert "offset" in usage(env.k.gup_pin, env.map, "0", P)
    assert "length" in usage(env.k.gup_pin, env.map, 0, 1.5)


def test_huge_guest_read_is_refused_naming_the_limit(env):
    msg = usage(env.script.read, GMEM_GPA, 16 << 30)
    assert "size" in msg and "MAX_ACCESS_BYTES" in msg and hex(MAX_ACCESS_BYTES) in msg
    assert env.script.pending == []  # nothing was queued
    # up to the limit it works: a read of the whole slot returns every byte
    r = env.script.read(GMEM_GPA, GMEM_SIZE)
    env.k.ioctl(env.vcpu_fd, K.KVM_RUN, 0)
    assert r.done and len(r.result) == GMEM_SIZE


def test_gmem_read_past_one_syscall_returns_everything(env):
    """read(2) returns at most 0x7ffff000 bytes: the inode's read goes on until done."""
    inode = env.k.file(env.gmem).inode
    calls = []
    real = os.pread

    def short_pread(fd, n, off):
        calls.append(n)
        return real(fd, min(n, 5 * P), off)

    os_mod = __import__("kmock.kvm.guest_memfd", fromlist=["os"]).os
    try:
        os_mod.pread = short_pread
        data = inode.read(0, GMEM_SIZE)
    finally:
        os_mod.pread = real
    assert len(data) == GMEM_SIZE and len(calls) == 4


def test_dma_read_negative_length(env):
    assert "length" in usage(env.dev.dma_read, env.iova, -1)
    assert "iova" in usage(env.dev.dma_read, -1, P)
    assert "length" in usage(env.dev.dma_read, env.iova, MAX_ACCESS_BYTES + 1)
    assert "data" in usage(env.dev.dma_write, env.iova, 5)  # bytes(5) would be 5 zeros
    assert "iova" in usage(env.dev.translate, "0")
    assert env.dev.dma_read(env.iova, 0) == b""
    env.dev.dma_write(env.iova, b"ok")
    assert env.dev.dma_read(env.iova, 2) == b"ok"


def test_unknown_and_mistyped_kernel_settings():
    assert "bogus" in usage(kmock.Kernel, bogus=1)
    assert "tdp" in usage(kmock.Kernel, tdp="yes")
    assert "max_vcpus" in usage(kmock.Kernel, max_vcpus=True)
    assert "log_limit" in usage(kmock.Kernel, log_limit=-1)
    assert "guest_history" in usage(kmock.Kernel, guest_history=-1)
    assert "profile" in usage(kmock.Kernel, profile=5)


def test_mapping_after_close_all(env):
    m = env.map
    env.k.close_all()
    for op in (lambda: m[0], lambda: m[0:4], lambda: m.__setitem__(0, 1)):
        with pytest.raises(ValueError) as info:  # as mmap.mmap's (and the host's) ValueError
            op()
        assert "closed" in str(info.value) and "close_all" in str(info.value)
    m.close()  # closing again is a no-op


def test_guest_script_arguments(env):
    s = env.script
    assert "gpa" in usage(s.read, -1, 1)
    assert "gpa" in usage(s.read, None, 1)
    assert "gpa + size" in usage(s.read, (1 << 64) - 1, 2)
    assert "data" in usage(s.write, 0, 3)
    assert "data" in usage(s.write, 0, "abc")
    assert "nr" in usage(s.hypercall, "x")
    assert "args" in usage(s.hypercall, 1, 1, 2, 3, 4, 5)
    assert "args[1]" in usage(s.hypercall, 1, 0, None)
    assert "page_size" in usage(s.map_gpa_range, 0, 1, True, page_size=8192)
    assert "page_size" in usage(s.map_gpa_range, 0, 1, True, page_size=[])
    assert "port" in usage(s.outb, 0x10000, 0)
    assert "value" in usage(s.outb, 0x80, None)
    assert "port" in usage(s.inb, -1)
    assert "action" in usage(s.add, "hlt")
    assert s.pending == []


def test_memory_failure_arguments(env):
    assert "gmem_fd" in usage(env.k.memory_failure, None, 0)
    assert "offset" in usage(env.k.memory_failure, env.gmem, "0")
    with pytest.raises(OSError) as info:
        env.k.memory_failure(env.gmem, GMEM_SIZE)
    assert info.value.errno == errno.EINVAL


# --- the sweep ------------------------------------------------------------------------------

ANY = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(1 << 70), max_value=1 << 70),
    st.integers(min_value=-4, max_value=1 << 20),
    st.floats(allow_nan=True), st.text(max_size=4), st.binary(max_size=16),
    st.lists(st.integers(0, 255), max_size=3), st.builds(object), st.builds(bytearray, st.binary(max_size=8)),
)

SWEEP = settings(max_examples=int(os.environ.get("KMOCK_SWEEP_EXAMPLES", "60")), deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture,
                                        HealthCheck.too_slow])

#: what each Python-API call may raise besides KmockUsageError (docs/api-errors.md)
HARDWARE = (kmock.SigBus, kmock.DmaFault)


def _python_calls(e):
    """(name, callable, names a KmockUsageError must mention, other allowed exceptions)."""
    s, k, dev = e.script, e.k, e.dev
    return {
        "vm": (lambda a, b: k.vm(a), ("vm_fd",), ()),
        "vcpus": (lambda a, b: e.vm.vcpus[a], ("vcpus[",), (TypeError,)),  # unhashable: a dict
        "setting": (lambda a, b: k.setting(a), ("setting",), ()),
        "gup_pin": (lambda a, b: k.gup_pin(e.map, a, b).unpin(), ("offset", "length"), (OSError,)),
        "gup_pin_mapping": (lambda a, b: k.gup_pin(a, 0, P), ("mapping",), ()),
        "memory_failure": (lambda a, b: k.memory_failure(a, b), ("gmem_fd", "offset"), (OSError,)),
        "read": (lambda a, b: s.read(a, b), ("gpa", "size"), ()),
        "write": (lambda a, b: s.write(a, b), ("gpa", "data"), ()),
        "hypercall": (lambda a, b: s.hypercall(a, b), ("nr", "args"), ()),
        "map_gpa_range": (lambda a, b: s.map_gpa_range(a, b, True), ("gpa", "npages"), ()),
        "map_gpa_range_size": (lambda a, b: s.map_gpa_range(0, 1, a, page_size=b), ("page_size",), ()),
        "outb": (lambda a, b: s.outb(a, b), ("port", "value"), ()),
        "inb": (lambda a, b: s.inb(a), ("port",), ()),
        "add": (lambda a, b: s.add(a), ("action",), ()),
        "dma_read": (lambda a, b: dev.dma_read(a, b), ("iova", "length"), HARDWARE),
        "dma_write": (lambda a, b: dev.dma_write(a, b), ("iova", "data"), HARDWARE),
        "translate": (lambda a, b: dev.translate(a), ("iova",), ()),
        "mapping_get": (lambda a, b: e.map[a], ("index",), (TypeError, IndexError) + HARDWARE),
        "mapping_set": (lambda a, b: e.map.__setitem__(a, b), ("index",),
                        (TypeError, IndexError, ValueError) + HARDWARE),
    }


PYTHON_CALLS = ["vm", "vcpus", "setting", "gup_pin", "gup_pin_mapping", "memory_failure", "read",
                "write", "hypercall", "map_gpa_range", "map_gpa_range_size", "outb", "inb", "add",
                "dma_read", "dma_write", "translate", "mapping_get", "mapping_set"]


def test_the_sweep_covers_every_call():
    e = Env()
    try:
        assert sorted(_python_calls(e)) == sorted(PYTHON_CALLS)
    finally:
        e.k.close_all()


@pytest.mark.parametrize("name", PYTHON_CALLS)
def test_python_api_sweep(name):
    e = Env()
    try:
        fn, names, allowed = _python_calls(e)[name]

        @SWEEP
        @given(a=ANY, b=ANY)
        def check(a, b):
            try:
                fn(a, b)
            except KmockUsageError as exc:
                assert any(n in str(exc) for n in names), (name, a, b, str(exc))
            except allowed:
                pass
            finally:
                e.script.clear()

        check()
    finally:
        e.k.close_all()


SYSCALL_ALLOWED = (OSError, TypeError, ValueError, OverflowError, kmock.SigBus)


@SWEEP
@given(call=st.sampled_from(["ioctl", "mmap", "fallocate", "read", "write", "pread", "pwrite",
                             "lseek", "fstat", "ftruncate", "fchmod", "fsync", "dup", "close"]),
       fd_kind=st.sampled_from(["kvm", "vm_fd", "vcpu_fd", "gmem", "any"]),
       a=ANY, b=ANY, c=ANY)
def test_syscall_api_sweep(call, fd_kind, a, b, c):
    """The syscall API raises what the os/fcntl/mmap functions raise (OSError with the
    kernel's errno for bad values; TypeError/ValueError/OverflowError for arguments
    Python's own functions would refuse), never anything else."""
    e = _SYSCALL_ENV[0]
    fd = a if fd_kind == "any" else getattr(e, fd_kind)
    if call == "close" and fd_kind != "any":
        return  # closing the shared fds would end the sweep's fixture
    k = e.k
    args = {"ioctl": (fd, b, c), "mmap": (fd, b, RW, _libc.MAP_SHARED, c),
            "fallocate": (fd, a, b, c), "read": (fd, b), "write": (fd, b),
            "pread": (fd, b, c), "pwrite": (fd, b, c), "lseek": (fd, b, c), "fstat": (fd,),
            "ftruncate": (fd, b), "fchmod": (fd, b), "fsync": (fd,), "dup": (fd,),
            "close": (fd,)}[call]
    try:
        r = getattr(k, call)(*args)
    except SYSCALL_ALLOWED:
        return
    if call == "dup" and isinstance(r, int):
        k.close(r)
    elif call == "mmap":
        r.close()
    elif call == "ioctl" and isinstance(r, int) and r > 2 and k.owns_fd(r) and r not in _SYSCALL_FDS:
        k.close(r)  # an ioctl that made a new fd


_SYSCALL_ENV = []
_SYSCALL_FDS = set()


@pytest.fixture(autouse=True, scope="module")
def _syscall_env():
    e = Env()
    _SYSCALL_ENV.append(e)
    _SYSCALL_FDS.update(e.k.fdtable.fds())
    yield
    e.k.close_all()
    _SYSCALL_ENV.clear()
