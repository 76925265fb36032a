"""A standard-library ctypes mirror of the kernel UAPI headers kmock implements.

It imports nothing else from kmock, so a VMM (or a test) can use it against the
real kernel too::

    from kmock.uapi import kvm
    fcntl.ioctl(kvm_fd, kvm.KVM_CHECK_EXTENSION, kvm.KVM_CAP_GUEST_MEMFD_FLAGS)
"""

from . import ioctl, kvm  # noqa: F401
from . import gmem, iommufd, vfio  # noqa: F401
