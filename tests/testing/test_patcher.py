"""kmock.patched without pytest: routing, mmap objects, ctypes libc, fd identity, pause."""

import ctypes
import errno
import fcntl
import io
import mmap
import os

import pytest

import kmock
from kmock.testing import patcher as patcher_mod
from kmock.uapi import kvm as K

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
SIZE = 1 << 20


@pytest.fixture
def k():
    k = kmock.Kernel()
    yield k
    k.close_all()


def _gmem(vm, flags):
    return fcntl.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(size=SIZE,
                                                                             flags=flags))


def test_patched_routes_kmock_paths_and_restores_everything(k):
    real = (os.open, fcntl.ioctl, mmap.mmap)
    with kmock.patched(k) as p:
        assert p.active and mmap.mmap is not real[2]
        kvm = os.open("/dev/kvm", os.O_RDWR)
        assert k.owns_fd(kvm) and fcntl.ioctl(kvm, K.KVM_GET_API_VERSION, 0) == 12
        null = os.open("/dev/null", os.O_RDONLY)  # not emulated: the real OS
        assert not k.owns_fd(null) and os.read(null, 5) == b""
        os.close(null)
        with pytest.raises(OSError) as e:
            os.read(kvm, 1)  # kmock's answer for /dev/kvm, not /dev/null's b""
        assert e.value.errno == errno.EINVAL
        os.close(kvm)
        assert not k.owns_fd(kvm)
    assert (os.open, fcntl.ioctl, mmap.mmap) == real


def test_mmap_object_of_a_guest_memfd(k):
    with kmock.patched(k):
        kvm = os.open("/dev/kvm", os.O_RDWR)
        vm = fcntl.ioctl(kvm, K.KVM_CREATE_VM, 0)
        g = _gmem(vm, K.GUEST_MEMFD_FLAG_MMAP | K.GUEST_MEMFD_FLAG_INIT_SHARED)
        with pytest.raises(ValueError, match="length is greater than file size"):
            mmap.mmap(g, SIZE + 4096)
        with pytest.raises(ValueError, match="both access and flags"):
            mmap.mmap(g, 4096, prot=mmap.PROT_READ, access=mmap.ACCESS_READ)
        m = mmap.mmap(g, 0)
        assert isinstance(m, mmap.mmap) and len(m) == m.size() == SIZE
        m.write(b"hello\nworld")
        assert m.tell() == 11 and m[0:5] == b"hello" and m.find(b"world", 0) == 6
        m.seek(0)
        assert m.readline() == b"hello\n" and m.read(5) == b"world"
        assert ctypes.string_at(m.address, 5) == b"hello"  # the mapping's real memory
        assert k.file(g).inode.allocated.get(0) == 1  # the host fault allocated the folio
        m.close()
        assert m.closed
        with pytest.raises(ValueError):
            m[0]
        anon = mmap.mmap(-1, 4096)  # a real mmap for anything else
        assert type(anon) is patcher_mod.fake_mmap.REAL_MMAP
        anon.close()


def test_ctypes_libc_ioctl_mmap_munmap_on_kmock_fds(k):
    with kmock.patched(k):
        kvm = os.open("/dev/kvm", os.O_RDWR)
        vm = libc.ioctl(kvm, K.KVM_CREATE_VM, 0)
        assert k.owns_fd(vm)
        s = K.kvm_create_guest_memfd(size=SIZE,
                                     flags=K.GUEST_MEMFD_FLAG_MMAP | K.GUEST_MEMFD_FLAG_INIT_SHARED)
        g = libc.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, ctypes.byref(s))
        assert k.owns_fd(g)
        addr = libc.mmap(None, SIZE, 3, 1, g, 0)
        ctypes.memmove(addr, b"abc", 3)
        assert k.file(g).inode.read(0, 3) == b"abc"
        assert libc.munmap(addr, SIZE) == 0
        assert libc.ioctl(kvm, 0xDEAD, 0) == -1 and ctypes.get_errno() == errno.EINVAL
        assert libc.mmap(None, 4096, 3, 1, vm, 0) == ctypes.c_void_p(-1).value
        assert ctypes.get_errno() == errno.ENODEV  # a VM fd has no mmap


def test_from_imports_are_rebound(k, tmp_path):
    mod = tmp_path / "vmm_from_imports.py"
    mod.write_text("from os import open, close\nfrom fcntl import ioctl\n"
                   "def api(): \n    fd = open('/dev/kvm', 2)\n    r = ioctl(fd, 0xAE00, 0)\n"
                   "    close(fd)\n    return r\n")
    import importlib
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        m = importlib.import_module("vmm_from_imports")
        with kmock.patched(k):
            assert m.api() == 12 and m.ioctl is not fcntl.ioctl.__class__
        assert m.open is patcher_mod.fake_os.REAL[("os", "open")]
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("vmm_from_imports", None)


def test_fd_closed_behind_the_patchers_back_is_detected(k, tmp_path):
    with kmock.patched(k) as p:
        kvm = os.open("/dev/kvm", os.O_RDWR)
        io.FileIO(kvm, closefd=True).close()  # C-level close: the patcher does not see it
        f = tmp_path / "f"
        f.write_bytes(b"data")
        fd = os.open(str(f), os.O_RDONLY)
        assert fd == kvm  # the number was reused
        assert os.read(fd, 4) == b"data"  # the new file, not kmock's /dev/kvm
        assert p.stale_fds and p.stale_fds[0][0] == fd
        assert not k.owns_fd(fd)  # kmock dropped its stale entry ...
        assert os.pread(fd, 4, 0) == b"data"  # ... and the new file kept the number
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC  # os.open's O_CLOEXEC
        os.close(fd)


def test_pause_resume_and_nesting(k):
    k2 = kmock.Kernel()
    try:
        with kmock.patched(k) as outer:
            kvm = os.open("/dev/kvm", os.O_RDWR)
            outer.pause()
            assert not outer.active
            with pytest.raises(OSError):
                fcntl.ioctl(kvm, K.KVM_GET_API_VERSION, 0)  # the real placeholder: ENOTTY
            outer.resume()
            assert fcntl.ioctl(kvm, K.KVM_GET_API_VERSION, 0) == 12
            with kmock.patched(k2):
                assert not outer.active
                fd2 = os.open("/dev/kvm", os.O_RDWR)
                assert k2.owns_fd(fd2) and not k.owns_fd(fd2)
                os.close(fd2)
            assert outer.active
            os.close(kvm)
    finally:
        k2.close_all()


def test_trace_records_routed_calls_only(k):
    with kmock.patched(k, trace=4) as p:
        kvm = os.open("/dev/kvm", os.O_RDWR)
        null = os.open("/dev/null", os.O_RDONLY)
        os.read(null, 1)
        for _ in range(5):
            fcntl.ioctl(kvm, K.KVM_GET_API_VERSION, 0)
        os.close(null)
        assert p.trace == [("ioctl", kvm, K.KVM_GET_API_VERSION)] * 4
        os.close(kvm)
    assert p.trace[-1] == ("close", kvm)
    with kmock.patched(k, trace=0) as p:
        fcntl.ioctl(os.open("/dev/kvm", os.O_RDWR), K.KVM_GET_API_VERSION, 0)
        assert p.trace == []


def test_mmap_object_faults_like_the_kernel_on_private_pages():
    k = kmock.Kernel("gmem-attributes-v8")
    try:
        with kmock.patched(k):
            kvm = os.open("/dev/kvm", os.O_RDWR)
            vm = fcntl.ioctl(kvm, K.KVM_CREATE_VM, K.KVM_X86_SW_PROTECTED_VM)
            g = _gmem(vm, K.GUEST_MEMFD_FLAG_MMAP)  # in place: pages start private
            m = mmap.mmap(g, 0)
            with pytest.raises(kmock.SigBus) as e:
                m[4096:4100]
            assert e.value.offset == 4096
            assert len(k.sigbus_log) == 1
            m.close()
    finally:
        k.close_all()


def test_a_kmock_module_first_imported_while_patched_keeps_the_real_os():
    """The patcher leaves kmock's own modules alone, but one imported for the first time
    while it is active would bind its copies of os/fcntl/mmap (they are in sys.modules
    then): kmock.compiled hands such a module to patcher.restore_real. Fresh interpreter:
    kmock.trace is not imported by a Kernel."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import os, sys
        import kmock
        k = kmock.Kernel("linux-6.18")
        REAL = [os]
        assert "kmock.trace" not in sys.modules
        with kmock.patched(k):
            assert sys.modules["os"] is not REAL[0]  # the patcher's copy is in place
            import kmock.trace as t
            print(t.os is REAL[0], t.__spec__.loader.__class__.__name__)
        k.close_all()
    """)
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "_RealOsLoader"]
