"""KVM_CREATE_DEVICE on a VM fd and the device fd it returns (generic KVM "devices").

Sources (virt/kvm/kvm_main.c, Linux 6.12-6.18, read for this model):

* ``kvm_vm_ioctl`` KVM_CREATE_DEVICE: the struct is copied in (EFAULT), then
  ``kvm_ioctl_create_device``, then copied back with ``fd`` set (EFAULT; the new fd stays
  open then, as in the kernel).
* ``kvm_ioctl_create_device``: ``type`` at or beyond KVM_DEV_TYPE_MAX or without
  registered ops -> ENODEV; ``flags & KVM_CREATE_DEVICE_TEST`` -> 0 without creating;
  other flag bits are ignored; ``ops->create`` under kvm->lock (its errno, nothing kept),
  the device joins kvm->devices, ``kvm_get_kvm``, then ``anon_inode_getfd(ops->name,
  O_RDWR | O_CLOEXEC)``; its failure unwinds all of it.
* ``kvm_device_ioctl``: ``kvm->mm != current->mm`` or a dead VM -> EIO; KVM_SET/GET/
  HAS_DEVICE_ATTR go to ``kvm_device_ioctl_attr``: no accessor -> EPERM (before the
  struct is read), the struct copied in (EFAULT), the accessor's result; other ioctls go
  to ``ops->ioctl``, ENOTTY without one.
* ``kvm_device_release``: a device type with ``release`` leaves kvm->devices and is
  released when its fd closes; then ``kvm_put_kvm``: the device keeps the VM alive.

Registered types: ``kvm_vfio_ops_init`` (called from ``kvm_init``) registers
KVM_DEV_TYPE_VFIO on every architecture; x86 registers no other device type in 6.18 (the
static table has the PowerPC MPIC only, arch/x86/kvm calls no
``kvm_register_device_ops``), so X86_DEVICE_TYPES is VFIO alone.
"""

import errno
import threading

from ..errors import KmockUsageError, oserror
from ..file import File
from ..kernel_util import copy_from_user, copy_to_user
from ..uapi import kvm as K
from .attached import Attached
from .kvm_vfio import KvmVfio


class VmDevices:
    """kvm->devices and the kvm->lock that guards it (for device creation)."""

    def __init__(self, vm):
        self.lock = threading.Lock()
        self.list = []


#: ``devices(vm)``: the VmDevices of ``vm``
devices = Attached(VmDevices)

#: the device types an x86 VM can create: type -> ops class (create(vm, existing) -> device)
X86_DEVICE_TYPES = {K.KVM_DEV_TYPE_VFIO: KvmVfio}


class KvmDeviceFile(File):
    """The anon-inode file of a KVM device ("kvm-vfio" ...); holds a reference on the VM."""

    file_type = "kvm-device"

    def __init__(self, kernel, vm, dev):
        super().__init__(kernel)
        self.vm = vm
        self.dev = dev
        vm.get()
        self.ioctls = DEVICE_IOCTLS

    def __repr__(self):
        return f"<KvmDeviceFile {self.dev.name}>"

    def unknown_ioctl(self, request, arg):
        self.vm.check_caller()
        raise oserror(errno.ENOTTY)  # no x86 device type has ops->ioctl

    def release(self):
        """kvm_device_release: unlink and release a device type that has ``release``,
        then drop the VM reference."""
        try:
            if hasattr(self.dev, "release"):
                remove_device(self.vm, self.dev)
                self.dev.release()
        finally:
            self.vm.put()


def remove_device(vm, dev):
    devs = devices(vm)
    with devs.lock:
        if dev in devs.list:
            devs.list.remove(dev)


def create_device(vm, ops, test=False):
    """kvm_ioctl_create_device after the type look-up: returns the new device's fd."""
    if test:
        return None
    devs = devices(vm)
    with devs.lock:
        dev = ops.create(vm, tuple(devs.list))
        devs.list.append(dev)
    kernel = vm.kernel
    try:
        f = KvmDeviceFile(kernel, vm, dev)
    except BaseException:
        remove_device(vm, dev)
        raise
    try:
        return kernel.fdtable.install(f, cloexec=True)
    except BaseException:  # anon_inode_getfd failed: unwind (the file never had an fd)
        f.release()
        raise


def vm_create_device(types):
    """The KVM_CREATE_DEVICE handler of a VM whose registered device types are ``types``."""

    def create(f, arg):
        vm = f.vm
        vm.check_caller()
        cd = copy_from_user(arg, K.kvm_create_device)
        ops = types.get(cd.type)
        if ops is None:
            raise oserror(errno.ENODEV)
        fd = create_device(vm, ops, test=bool(cd.flags & K.KVM_CREATE_DEVICE_TEST))
        if fd is None:
            return 0
        cd.fd = fd
        copy_to_user(arg, cd)  # EFAULT leaves the device fd open (kvm_vm_ioctl)
        return 0

    create.__name__ = "vm_create_device"
    return create


#: KVM_CREATE_DEVICE of x86 VMs
x86_vm_create_device = vm_create_device(X86_DEVICE_TYPES)


def _attr_ioctl(accessor_name):
    def handler(f, arg):
        f.vm.check_caller()
        accessor = getattr(f.dev, accessor_name, None)
        if accessor is None:
            raise oserror(errno.EPERM)  # before the struct is read
        return accessor(copy_from_user(arg, K.kvm_device_attr))

    handler.__name__ = f"device_{accessor_name}"
    return handler


DEVICE_IOCTLS = {
    K.KVM_SET_DEVICE_ATTR: _attr_ioctl("set_attr"),
    K.KVM_GET_DEVICE_ATTR: _attr_ioctl("get_attr"),
    K.KVM_HAS_DEVICE_ATTR: _attr_ioctl("has_attr"),
}


def vm_devices(vm):
    """The devices KVM_CREATE_DEVICE made on ``vm`` (a kmock VM: ``Kernel.vm(fd)``) that
    are still open, oldest first; KmockUsageError for anything else."""
    from .vm import VM

    if not isinstance(vm, VM):
        raise KmockUsageError(f"vm must be a kmock VM (Kernel.vm(fd)), not {type(vm).__name__}")
    d = devices.get(vm)
    if d is None:
        return ()
    with d.lock:
        return tuple(d.list)
