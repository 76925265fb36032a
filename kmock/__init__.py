"""kmock: a mock of the Linux KVM, guest_memfd and iommufd APIs for testing VMMs.

The public face::

    k = kmock.Kernel(profile="linux-6.18")   # the mock kernel, a syscall API
    h = kmock.HostKernel()                   # the same API over the real OS
    kmock.SigBus, kmock.DmaFault             # what would have been a signal / a device fault
    with kmock.patched(k): ...               # os/fcntl/mmap/ctypes calls reach k for its fds
    env = kmock.subprocess_env(k)            # a native child (LD_PRELOAD) reaches k
"""

from . import _real  # noqa: F401 (the real os/fcntl/mmap, before any patcher exists)
from . import compiled as _compiled

_compiled.install()  # before any compiled module loads (see kmock.compiled)

from .errors import DmaFault, SigBus  # noqa: E402

__all__ = ["Kernel", "HostKernel", "SigBus", "DmaFault", "profiles", "patched", "subprocess_env"]


def __getattr__(name):
    # Imported lazily so that ``import kmock.uapi`` stays free of the rest of kmock.
    if name == "Kernel":
        from .kernel import Kernel

        return Kernel
    if name == "HostKernel":
        from .host import HostKernel

        return HostKernel
    if name == "patched":
        from .testing.patcher import patched

        return patched
    if name == "subprocess_env":
        from .preload import subprocess_env

        return subprocess_env
    if name == "profiles":
        import importlib

        return importlib.import_module(".profiles", __name__)
    raise AttributeError(f"module 'kmock' has no attribute {name!r}")
