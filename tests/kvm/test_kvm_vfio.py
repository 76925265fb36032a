"""KVM_CREATE_DEVICE(KVM_DEV_TYPE_VFIO) and the kvm-vfio device with kmock VFIO cdevs
(virt/kvm/vfio.c kvm_vfio_file_add / kvm_vfio_file_del / kvm_vfio_release; kvm_main.c
kvm_ioctl_create_device, kvm_device_release), as QEMU's vfio_kvm_device_add_fd uses it.
The errnos a real kernel gives without a VFIO device are checked against it by the
conformance scenarios x86_create_device and x86_kvm_vfio_attrs."""

import ctypes
import errno
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kmock.errors import KmockUsageError
from kmock.kvm.kvm_device import vm_devices
from kmock.kvm.kvm_vfio import KvmVfio, vfio_files
from kmock.uapi import kvm as K
from kmock.uapi import vfio as V

from ._util import create_vm, err

ADD, DEL = K.KVM_DEV_VFIO_FILE_ADD, K.KVM_DEV_VFIO_FILE_DEL


def create_vfio(k, vm, flags=0):
    cd = K.kvm_create_device(type=K.KVM_DEV_TYPE_VFIO, flags=flags)
    assert k.ioctl(vm, K.KVM_CREATE_DEVICE, cd) == 0
    return cd.fd


def file_attr(k, dev, attr, fd, group=K.KVM_DEV_VFIO_FILE):
    val = ctypes.c_int32(fd)
    a = K.kvm_device_attr(group=group, attr=attr, addr=ctypes.addressof(val))
    return k.ioctl(dev, K.KVM_SET_DEVICE_ATTR, a)


@pytest.fixture
def env(k):
    """(kvm fd, VM fd, kvm-vfio device fd, a VFIO cdev device, its open fd)."""
    kvm, vm = create_vm(k)
    dev = create_vfio(k, vm)
    pci = k.add_vfio_device()
    vfd = k.open(pci.path, os.O_RDWR)
    return kvm, vm, dev, pci, vfd


def test_create_device_writes_the_fd_back(k):
    _kvm, vm = create_vm(k)
    cd = K.kvm_create_device(type=K.KVM_DEV_TYPE_VFIO, fd=1234)
    assert k.ioctl(vm, K.KVM_CREATE_DEVICE, cd) == 0
    assert cd.fd != 1234 and k.fstat(cd.fd).st_mode == 0o600
    assert [type(d) for d in vm_devices(k.vm(vm))] == [KvmVfio]


def test_test_flag_creates_nothing(k):
    _kvm, vm = create_vm(k)
    cd = K.kvm_create_device(type=K.KVM_DEV_TYPE_VFIO, fd=7, flags=K.KVM_CREATE_DEVICE_TEST)
    assert k.ioctl(vm, K.KVM_CREATE_DEVICE, cd) == 0
    assert cd.fd == 7 and vm_devices(k.vm(vm)) == ()
    assert err(k.ioctl, vm, K.KVM_CREATE_DEVICE, K.kvm_create_device(type=0)) == errno.ENODEV
    assert err(k.ioctl, vm, K.KVM_CREATE_DEVICE,
               K.kvm_create_device(type=K.KVM_DEV_TYPE_ARM_VGIC_V3)) == errno.ENODEV
    assert vm_devices(k.vm(vm)) == ()


def test_one_kvm_vfio_per_vm_until_its_fd_closes(k):
    _kvm, vm = create_vm(k)
    dev = create_vfio(k, vm)
    first = vm_devices(k.vm(vm))
    assert err(k.ioctl, vm, K.KVM_CREATE_DEVICE,
               K.kvm_create_device(type=K.KVM_DEV_TYPE_VFIO)) == errno.EBUSY
    assert vm_devices(k.vm(vm)) == first  # the refused one left nothing behind
    k.close(dev)
    assert vm_devices(k.vm(vm)) == ()
    create_vfio(k, vm)
    assert len(vm_devices(k.vm(vm))) == 1


def test_file_add_twice_eexist_then_del_del_enoent(k, env):
    _kvm, vm, dev, _pci, vfd = env
    v = k.vm(vm)
    f = k.fdtable.lookup(vfd)
    assert file_attr(k, dev, ADD, vfd) == 0
    assert vfio_files(v) == (f,)
    refs = f.refs
    assert err(file_attr, k, dev, ADD, vfd) == errno.EEXIST
    dup = k.dup(vfd)  # the same struct file
    assert err(file_attr, k, dev, ADD, dup) == errno.EEXIST
    assert vfio_files(v) == (f,) and f.refs == refs + 1  # (+1: the dup's)
    assert file_attr(k, dev, DEL, dup) == 0
    assert vfio_files(v) == ()
    assert err(file_attr, k, dev, DEL, vfd) == errno.ENOENT
    assert f.refs == refs  # the list's reference went, the dup's is left
    # the legacy group names are the same attribute
    assert file_attr(k, dev, K.KVM_DEV_VFIO_GROUP_ADD, vfd, group=K.KVM_DEV_VFIO_GROUP) == 0
    assert vfio_files(v) == (f,)


def test_a_second_open_of_the_cdev_is_another_file(k, env):
    _kvm, vm, dev, pci, vfd = env
    vfd2 = k.open(pci.path, os.O_RDWR)
    assert file_attr(k, dev, ADD, vfd) == 0
    assert file_attr(k, dev, ADD, vfd2) == 0  # kvf->file == filp compares files
    assert len(vfio_files(k.vm(vm))) == 2


def test_failures_change_nothing(k, env):
    kvm, vm, dev, pci, vfd = env
    v = k.vm(vm)
    assert file_attr(k, dev, ADD, vfd) == 0
    f = k.fdtable.lookup(vfd)
    refs = f.refs
    null = k.open("/dev/null", os.O_RDONLY)
    closed = k.open(pci.path, os.O_RDWR)
    k.close(closed)
    cases = [
        (ADD, -1, errno.EBADF), (ADD, closed, errno.EBADF), (ADD, null, errno.EINVAL),
        (ADD, kvm, errno.EINVAL), (ADD, vm, errno.EINVAL), (ADD, dev, errno.EINVAL),
        (DEL, null, errno.ENOENT), (DEL, kvm, errno.ENOENT), (DEL, closed, errno.EBADF),
        (K.KVM_DEV_VFIO_GROUP_SET_SPAPR_TCE, vfd, errno.ENXIO), (0, vfd, errno.ENXIO),
        (DEL | 1 << 32, vfd, errno.ENXIO),
    ]
    for attr, fd, want in cases:
        assert err(file_attr, k, dev, attr, fd) == want, (attr, fd)
        assert vfio_files(v) == (f,) and f.refs == refs
    assert err(file_attr, k, dev, DEL, vfd, group=2) == errno.ENXIO
    for attr in (ADD, DEL):
        a = K.kvm_device_attr(group=K.KVM_DEV_VFIO_FILE, attr=attr, addr=0)
        assert err(k.ioctl, dev, K.KVM_SET_DEVICE_ATTR, a) == errno.EFAULT
    assert vfio_files(v) == (f,) and f.refs == refs


def test_has_and_get_attr(k, env):
    _kvm, _vm, dev, _pci, _vfd = env
    has = lambda g, a: k.ioctl(dev, K.KVM_HAS_DEVICE_ATTR,
                               K.kvm_device_attr(group=g, attr=a, flags=0xFFFFFFFF))
    assert has(K.KVM_DEV_VFIO_FILE, ADD) == 0 and has(K.KVM_DEV_VFIO_FILE, DEL) == 0
    for g, a in ((1, 3), (1, 0), (0, 1), (2, 1), (1, 1 << 63 | 1)):
        assert err(has, g, a) == errno.ENXIO
    assert err(k.ioctl, dev, K.KVM_HAS_DEVICE_ATTR, 0) == errno.EFAULT
    # no get_attr: EPERM before the struct is read (a NULL argument too)
    assert err(k.ioctl, dev, K.KVM_GET_DEVICE_ATTR, 0) == errno.EPERM
    assert err(k.ioctl, dev, K.KVM_GET_DEVICE_ATTR, K.kvm_device_attr(group=1, attr=1)) == errno.EPERM
    assert err(k.ioctl, dev, K.KVM_CREATE_VCPU, 0) == errno.ENOTTY


def test_the_list_keeps_the_vfio_file_open(k, env):
    """get_file: a VFIO fd closed after FILE_ADD stays bound until FILE_DEL."""
    _kvm, _vm, dev, pci, vfd = env
    ictx = k.open("/dev/iommu", os.O_RDWR)
    b = V.vfio_device_bind_iommufd(argsz=24, iommufd=ictx)
    assert k.ioctl(vfd, V.VFIO_DEVICE_BIND_IOMMUFD, b) == 0
    keep = k.dup(vfd)
    assert file_attr(k, dev, ADD, vfd) == 0
    k.close(vfd)
    assert pci.idev is not None  # still bound: the kvm-vfio device holds the file
    assert file_attr(k, dev, DEL, keep) == 0
    assert pci.idev is not None  # the dup still holds it
    k.close(keep)
    assert pci.idev is None  # the last reference went: vfio released, unbound


def test_closing_the_device_fd_releases_its_files(k, env):
    _kvm, vm, dev, pci, vfd = env
    ictx = k.open("/dev/iommu", os.O_RDWR)
    assert k.ioctl(vfd, V.VFIO_DEVICE_BIND_IOMMUFD,
                   V.vfio_device_bind_iommufd(argsz=24, iommufd=ictx)) == 0
    assert file_attr(k, dev, ADD, vfd) == 0
    k.close(vfd)
    assert pci.idev is not None
    k.close(dev)  # kvm_vfio_release
    assert pci.idev is None
    assert vfio_files(k.vm(vm)) == ()


def test_the_device_keeps_the_vm_alive(k, env):
    kvm, vm, dev, _pci, vfd = env
    v = k.vm(vm)
    assert file_attr(k, dev, ADD, vfd) == 0
    k.close(vm)
    k.close(kvm)
    assert not v.destroyed
    has = K.kvm_device_attr(group=K.KVM_DEV_VFIO_FILE, attr=ADD)
    assert k.ioctl(dev, K.KVM_HAS_DEVICE_ATTR, has) == 0
    assert file_attr(k, dev, DEL, vfd) == 0
    k.close(dev)
    assert v.destroyed


def test_a_dead_vm_gives_eio(k, env):
    _kvm, vm, dev, _pci, vfd = env
    k.vm(vm).kill("test")
    assert err(file_attr, k, dev, ADD, vfd) == errno.EIO
    assert err(k.ioctl, dev, K.KVM_GET_DEVICE_ATTR, 0) == errno.EIO
    assert err(k.ioctl, dev, K.KVM_CREATE_VCPU, 0) == errno.EIO


def test_python_api_errors(k, env):
    _kvm, vm, dev, _pci, _vfd = env
    with pytest.raises(KmockUsageError):
        vfio_files(vm)  # an fd, not the VM object
    with pytest.raises(KmockUsageError):
        vm_devices(None)
    with pytest.raises(TypeError):  # as fcntl.ioctl
        k.ioctl(dev, K.KVM_SET_DEVICE_ATTR, 1.5)
    with pytest.raises(TypeError):
        k.ioctl("3", K.KVM_SET_DEVICE_ATTR, 0)
    # a bytes argument is the struct itself (as fcntl.ioctl passes it)
    raw = bytes(K.kvm_device_attr(group=K.KVM_DEV_VFIO_FILE, attr=ADD))
    assert k.ioctl(dev, K.KVM_HAS_DEVICE_ATTR, raw) == raw


# --- a model of the file list: any sequence of ADD / DEL agrees with a set ------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from((ADD, DEL)), st.integers(0, 4)), max_size=25))
def test_file_list_matches_a_model(ops):
    import kmock

    with kmock.Kernel(profile="linux-6.18") as k:
        kvm, vm = create_vm(k)
        dev = create_vfio(k, vm)
        pci = k.add_vfio_device()
        a = k.open(pci.path, os.O_RDWR)
        fds = [a, k.dup(a), k.open(pci.path, os.O_RDWR), k.open("/dev/null", os.O_RDONLY), kvm]
        files = [k.fdtable.get(fd) for fd in fds]  # None: a real file (not a VFIO file)
        model = []
        for attr, i in ops:
            f = files[i]
            if attr == ADD:
                want = (errno.EINVAL if f is None or f.file_type != "vfio"
                        else errno.EEXIST if f in model else 0)
                if not want:
                    model.append(f)
            else:
                want = 0 if f in model and f is not None else errno.ENOENT
                if not want:
                    model.remove(f)
            got = err(file_attr, k, dev, attr, fds[i]) if want else file_attr(k, dev, attr, fds[i])
            assert got == want
            assert list(vfio_files(k.vm(vm))) == model
        k.close(dev)
        assert vfio_files(k.vm(vm)) == ()
