"""The KVM-VFIO pseudo device (KVM_DEV_TYPE_VFIO, "kvm-vfio"): the VFIO files of a VM.

A VMM tells KVM which VFIO files (a group, or since 6.6 a device cdev) belong to the VM:
QEMU's vfio_kvm_device_add_fd creates the device once per VM and adds every VFIO device
fd with KVM_SET_DEVICE_ATTR(KVM_DEV_VFIO_FILE, KVM_DEV_VFIO_FILE_ADD, addr -> int32 fd).

Sources: virt/kvm/vfio.c (6.12-6.18 era: kvm_vfio_create, kvm_vfio_set_attr,
kvm_vfio_set_file, kvm_vfio_file_add, kvm_vfio_file_del, kvm_vfio_has_attr,
kvm_vfio_release), read for this model:

* create: a second kvm-vfio device on the VM while one exists -> EBUSY.
* set_attr: group other than KVM_DEV_VFIO_FILE (== the legacy KVM_DEV_VFIO_GROUP) ->
  ENXIO; attr (a ``long``: the full u64) other than FILE_ADD / FILE_DEL -> ENXIO
  (KVM_DEV_VFIO_GROUP_SET_SPAPR_TCE exists with CONFIG_SPAPR_TCE_IOMMU only: ENXIO on
  x86); the int32 fd read from ``addr`` (get_user: EFAULT).
* FILE_ADD: fget (EBADF); not a VFIO file (vfio_file_is_valid: a group or a device cdev)
  -> EINVAL; the same struct file already added -> EEXIST; else a reference is kept
  (get_file) and vfio_file_set_kvm tells the VFIO file its VM.
* FILE_DEL: fget (EBADF); a file not in the list -> ENOENT (no validity check: a non-VFIO
  fd is ENOENT too); else the reference is dropped.
* has_attr: KVM_DEV_VFIO_FILE with FILE_ADD / FILE_DEL -> 0, anything else ENXIO.
* get_attr: none (KVM_GET_DEVICE_ATTR -> EPERM, kmock.kvm.kvm_device).
* release (the device fd's last close): every file is let go.

In kmock a VFIO file is a VFIO device cdev (kmock.iommufd.vfio, file type "vfio"); kmock
has no VFIO group files. The DMA coherency bookkeeping (kvm_vfio_update_coherency ->
kvm_arch_register_noncoherent_dma) is not modelled: no kmock behaviour depends on it.
"""

import ctypes
import errno
import threading

from ..errors import oserror
from ..fdtable import is_open_fd
from ..kernel_util import copy_from_user
from ..uapi import kvm as K

U32 = 0xFFFFFFFF


def is_vfio_file(f):
    """vfio_file_is_valid: a VFIO group file or a VFIO device cdev file."""
    return getattr(f, "file_type", None) == "vfio"


class KvmVfio:
    """struct kvm_vfio: the VFIO files added (kmock File objects, each with a reference)."""

    name = "kvm-vfio"

    def __init__(self, vm):
        self.vm = vm
        self.lock = threading.Lock()  # kv->lock
        self.files = []

    def __repr__(self):
        return f"<KvmVfio files={len(self.files)}>"

    @classmethod
    def create(cls, vm, existing):
        """kvm_vfio_create (under kvm->lock): one kvm-vfio device per VM."""
        if any(isinstance(d, cls) for d in existing):
            raise oserror(errno.EBUSY)
        return cls(vm)

    # --- attributes ------------------------------------------------------------------------

    def has_attr(self, attr):
        if attr.group == K.KVM_DEV_VFIO_FILE and attr.attr in (K.KVM_DEV_VFIO_FILE_ADD,
                                                                K.KVM_DEV_VFIO_FILE_DEL):
            return 0
        raise oserror(errno.ENXIO)

    def set_attr(self, attr):
        if attr.group != K.KVM_DEV_VFIO_FILE:
            raise oserror(errno.ENXIO)
        if attr.attr == K.KVM_DEV_VFIO_FILE_ADD:
            return self.file_add(_get_fd(attr.addr))
        if attr.attr == K.KVM_DEV_VFIO_FILE_DEL:
            return self.file_del(_get_fd(attr.addr))
        raise oserror(errno.ENXIO)

    # --- the files ---------------------------------------------------------------------------

    def file_add(self, fd):
        """kvm_vfio_file_add."""
        f = self._fget(fd)
        try:
            if f is None or not is_vfio_file(f):
                raise oserror(errno.EINVAL)
            with self.lock:
                if any(x is f for x in self.files):
                    raise oserror(errno.EEXIST)
                f.get()  # get_file: the reference the list keeps
                self.files.append(f)
        finally:
            if f is not None:
                f.put()  # the fget's
        return 0

    def file_del(self, fd):
        """kvm_vfio_file_del."""
        f = self._fget(fd)
        try:
            with self.lock:
                for i, x in enumerate(self.files):
                    if x is f and f is not None:
                        del self.files[i]
                        break
                else:
                    raise oserror(errno.ENOENT)
            f.put()  # the list's reference
        finally:
            if f is not None:
                f.put()  # the fget's
        return 0

    def release(self):
        """kvm_vfio_release: every file the device holds is let go."""
        with self.lock:
            files, self.files = self.files, []
        for f in files:
            f.put()

    def _fget(self, fd):
        """fget(fd) with a reference taken: the kmock file, None for an open fd that is not
        kmock's (a real file: never a VFIO file), EBADF for no open file."""
        fd &= U32  # the int32 becomes kvm_vfio_file_add's unsigned int
        kernel = self.vm.kernel
        if fd <= 0x7FFFFFFF and fd in kernel.fdtable:
            try:
                return kernel.fdtable.fdget(fd)
            except OSError:
                pass  # closed meanwhile
        if is_open_fd(fd):
            return None
        raise oserror(errno.EBADF)


def _get_fd(addr):
    """get_user of the int32 at ``addr`` (EFAULT)."""
    return copy_from_user(addr, ctypes.c_int32).value


def vfio_files(vm):
    """The VFIO files (kmock File objects) the kvm-vfio device of ``vm`` holds, in the
    order they were added; empty without one. KmockUsageError if ``vm`` is not a kmock VM."""
    from .kvm_device import vm_devices

    out = []
    for d in vm_devices(vm):
        if isinstance(d, KvmVfio):
            with d.lock:
                out.extend(d.files)
    return tuple(out)
