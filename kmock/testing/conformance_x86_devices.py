"""Conformance scenarios of KVM_CREATE_DEVICE on x86 and the kvm-vfio device fd
(kmock.kvm.kvm_device, kmock.kvm.kvm_vfio), runnable without a VFIO device.

Sources: virt/kvm/kvm_main.c kvm_vm_ioctl (KVM_CREATE_DEVICE), kvm_ioctl_create_device,
kvm_device_ioctl, kvm_device_ioctl_attr, kvm_device_release; virt/kvm/vfio.c
kvm_vfio_create, kvm_vfio_set_attr, kvm_vfio_set_file, kvm_vfio_file_add,
kvm_vfio_file_del, kvm_vfio_has_attr.
"""

import ctypes
import os

from ..uapi import kvm as K
from .conformance import create_vm, open_kvm, scenario

VFIO = K.KVM_DEV_TYPE_VFIO


def _create(sys, rec, vm, label, dev_type, flags=0):
    """KVM_CREATE_DEVICE; returns the device fd written back (None on failure)."""
    cd = K.kvm_create_device(type=dev_type, flags=flags)
    if rec.call(label, sys.ioctl, vm, K.KVM_CREATE_DEVICE, cd) is None:
        return None
    return cd.fd


def _attr(group, attr, addr=0, flags=0):
    return K.kvm_device_attr(flags=flags, group=group, attr=attr, addr=addr)


@scenario("x86_create_device",
          "KVM_CREATE_DEVICE on an x86 VM: a NULL argument -> EFAULT; type 0, the other "
          "architectures' types and types past the enum -> ENODEV (with or without TEST); "
          "KVM_DEV_TYPE_VFIO with TEST -> 0 and nothing made; for real -> 0 with an fd "
          "written back (other flag bits ignored); a second kvm-vfio -> EBUSY until the first "
          "fd closes; on /dev/kvm -> EINVAL")
def x86_create_device(sys, rec):
    kvm = open_kvm(sys, rec)
    rec.call("KVM_CREATE_DEVICE on /dev/kvm", sys.ioctl, kvm, K.KVM_CREATE_DEVICE,
             K.kvm_create_device(type=VFIO))
    vm = create_vm(sys, rec, kvm)
    rec.call("KVM_CHECK_EXTENSION(DEVICE_CTRL) on the VM", sys.ioctl, vm,
             K.KVM_CHECK_EXTENSION, K.KVM_CAP_DEVICE_CTRL)
    rec.call("KVM_CREATE_DEVICE NULL", sys.ioctl, vm, K.KVM_CREATE_DEVICE, 0)
    for t in (0, K.KVM_DEV_TYPE_FSL_MPIC_20, K.KVM_DEV_TYPE_XICS, K.KVM_DEV_TYPE_ARM_VGIC_V2,
              K.KVM_DEV_TYPE_ARM_VGIC_V3, K.KVM_DEV_TYPE_ARM_PV_TIME, K.KVM_DEV_TYPE_RISCV_AIA,
              K.KVM_DEV_TYPE_LOONGARCH_PCHPIC, K.KVM_DEV_TYPE_MAX, 0xFFFFFFFF):
        _create(sys, rec, vm, f"type {t:#x}", t)
        _create(sys, rec, vm, f"type {t:#x} TEST", t, K.KVM_CREATE_DEVICE_TEST)
    cd = K.kvm_create_device(type=VFIO, fd=0x5A5A, flags=K.KVM_CREATE_DEVICE_TEST)
    rec.call("VFIO TEST", sys.ioctl, vm, K.KVM_CREATE_DEVICE, cd)
    rec.record("VFIO TEST leaves fd untouched", cd.fd == 0x5A5A)
    fd = _create(sys, rec, vm, "VFIO flags 0xfffffffe", VFIO, 0xFFFFFFFE)
    if fd is None:
        return
    rec.call("fstat device fd", sys.fstat, fd)
    _create(sys, rec, vm, "second VFIO", VFIO)
    _create(sys, rec, vm, "second VFIO TEST", VFIO, K.KVM_CREATE_DEVICE_TEST)
    vm2 = create_vm(sys, rec, kvm, label="KVM_CREATE_VM 2")
    fd2 = _create(sys, rec, vm2, "VM 2: VFIO", VFIO)
    if fd2 is not None:
        rec.call("close VM 2's VFIO device", sys.close, fd2)
    rec.call("close the VFIO device", sys.close, fd)
    fd = _create(sys, rec, vm, "VFIO after the close", VFIO)
    if fd is not None:
        sys.close(fd)


@scenario("x86_kvm_vfio_attrs",
          "The kvm-vfio device fd: HAS_DEVICE_ATTR (FILE/GROUP with ADD, DEL -> 0, SPAPR_TCE "
          "and others ENXIO), GET_DEVICE_ATTR -> EPERM before the struct is read, "
          "SET_DEVICE_ATTR: unknown group/attr ENXIO, a NULL addr EFAULT, FILE_ADD of a closed "
          "fd EBADF and of a non-VFIO fd EINVAL, FILE_DEL of one never added ENOENT; other "
          "ioctls ENOTTY; the device outlives its VM fd")
def x86_kvm_vfio_attrs(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    dev = _create(sys, rec, vm, "create VFIO", VFIO)
    if dev is None:
        return
    val = ctypes.c_int32(-1)
    addr = ctypes.addressof(val)

    def fd_attr(label, attr, fd, group=K.KVM_DEV_VFIO_FILE):
        val.value = fd
        rec.call(label, sys.ioctl, dev, K.KVM_SET_DEVICE_ATTR, _attr(group, attr, addr))

    rec.call("HAS NULL", sys.ioctl, dev, K.KVM_HAS_DEVICE_ATTR, 0)
    for g, a in ((K.KVM_DEV_VFIO_FILE, K.KVM_DEV_VFIO_FILE_ADD),
                 (K.KVM_DEV_VFIO_FILE, K.KVM_DEV_VFIO_FILE_DEL),
                 (K.KVM_DEV_VFIO_GROUP, K.KVM_DEV_VFIO_GROUP_SET_SPAPR_TCE),
                 (K.KVM_DEV_VFIO_FILE, 0), (K.KVM_DEV_VFIO_FILE, 1 << 32 | 1), (0, 1), (2, 1)):
        rec.call(f"HAS group {g} attr {a:#x} flags 0xff", sys.ioctl, dev, K.KVM_HAS_DEVICE_ATTR,
                 _attr(g, a, flags=0xFF))
    rec.call("GET NULL", sys.ioctl, dev, K.KVM_GET_DEVICE_ATTR, 0)
    rec.call("GET FILE/ADD", sys.ioctl, dev, K.KVM_GET_DEVICE_ATTR,
             _attr(K.KVM_DEV_VFIO_FILE, K.KVM_DEV_VFIO_FILE_ADD, addr))
    rec.call("SET NULL", sys.ioctl, dev, K.KVM_SET_DEVICE_ATTR, 0)
    for g, a in ((K.KVM_DEV_VFIO_GROUP, K.KVM_DEV_VFIO_GROUP_SET_SPAPR_TCE),
                 (K.KVM_DEV_VFIO_FILE, 0), (K.KVM_DEV_VFIO_FILE, 1 << 32 | 1), (0, 1), (2, 1)):
        fd_attr(f"SET group {g} attr {a:#x}", a, -1, group=g)
    for a, name in ((K.KVM_DEV_VFIO_FILE_ADD, "ADD"), (K.KVM_DEV_VFIO_FILE_DEL, "DEL")):
        rec.call(f"{name} addr NULL", sys.ioctl, dev, K.KVM_SET_DEVICE_ATTR,
                 _attr(K.KVM_DEV_VFIO_FILE, a, 0))
    ev = os.eventfd(0, os.EFD_CLOEXEC)
    null = sys.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    closed = sys.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    sys.close(closed)  # (nothing is opened after it: the number stays free)
    try:
        for label, fd in (("-1", -1), ("a closed fd", closed), ("/dev/null", null),
                          ("an eventfd", ev), ("/dev/kvm", kvm), ("the VM", vm),
                          ("the device itself", dev)):
            fd_attr(f"FILE_ADD {label}", K.KVM_DEV_VFIO_FILE_ADD, fd)
            fd_attr(f"FILE_DEL {label}", K.KVM_DEV_VFIO_FILE_DEL, fd)
        fd_attr("GROUP_ADD (legacy name) /dev/null", K.KVM_DEV_VFIO_GROUP_ADD, null,
                group=K.KVM_DEV_VFIO_GROUP)
    finally:
        os.close(ev)
        sys.close(null)
    rec.call("KVM_CREATE_VCPU on the device fd", sys.ioctl, dev, K.KVM_CREATE_VCPU, 0)
    rec.call("KVM_CHECK_EXTENSION on the device fd", sys.ioctl, dev, K.KVM_CHECK_EXTENSION, 0)
    rec.child("HAS FILE/ADD from a forked child", lambda s: s.ioctl(
        dev, K.KVM_HAS_DEVICE_ATTR, _attr(K.KVM_DEV_VFIO_FILE, K.KVM_DEV_VFIO_FILE_ADD)))
    rec.call("close the VM fd", sys.close, vm)
    rec.call("HAS FILE/ADD with the VM fd closed", sys.ioctl, dev, K.KVM_HAS_DEVICE_ATTR,
             _attr(K.KVM_DEV_VFIO_FILE, K.KVM_DEV_VFIO_FILE_ADD))
    rec.call("close the device fd", sys.close, dev)
