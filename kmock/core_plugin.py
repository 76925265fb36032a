"""The core's own pluggy plugin: the default VM type, the "none" platforms, the generic ioctl
tables and /dev/kvm.

It lives apart from kmock.kernel because kernel.py is compiled (kmock.compiled) and pluggy
(1.7 and later) takes only plain Python functions as hook implementations: a module that
holds a ``@hookimpl`` must stay interpreted (tests/test_compiled.py checks it).
"""

from . import hookspecs
from .kvm.device import KvmDevice, dev_ioctls
from .kvm.vcpu import vcpu_ioctls
from .kvm.vm import vm_ioctls
from .kvm.vmtype import DefaultVm
from .platforms import NONE_ARM64, NONE_X86


class CorePlugin:
    """The core's own plugin: the default VM types, "none" platforms, generic ioctl tables."""

    @hookspecs.hookimpl(tryfirst=True)
    def kmock_vm_types(self, kernel):
        return [DefaultVm()]

    @hookspecs.hookimpl(tryfirst=True)
    def kmock_platforms(self, kernel):
        return [NONE_X86, NONE_ARM64]

    @hookspecs.hookimpl(tryfirst=True)
    def kmock_ioctls(self, kernel, file_type):
        from .iommufd.iommufd import iommufd_ioctls
        from .iommufd.vfio import vfio_ioctls

        return {"kvm": dev_ioctls, "vm": vm_ioctls, "vcpu": vcpu_ioctls,
                "iommufd": iommufd_ioctls, "vfio": vfio_ioctls}.get(file_type, lambda k: {})(kernel)

    @hookspecs.hookimpl(tryfirst=True)
    def kmock_devices(self, kernel):
        return {"/dev/kvm": lambda k, flags: KvmDevice(k)}
