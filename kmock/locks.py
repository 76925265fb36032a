"""The locks of kmock's kernel locks: ``RLock`` (a VM's slots_lock, a guest_memfd's
invalidate lock, the iommu lock) and ``Condition`` (a VM's mmu_lock, which guest accesses
wait on while an invalidation is in progress).

They are kmock._sync's, built from csrc_cython/_sync.pyx: threading.RLock's and
threading.Condition(RLock())'s behaviour, with an uncontended acquire/release that is a C
call from the compiled modules typing the lock in their .pxd. In the pure run
(``KMOCK_PURE_PYTHON=1``) they are threading's own, the interpreted twins.
"""

import threading

from .compiled import pure_requested

if pure_requested():
    RLock = threading.RLock

    def Condition():
        return threading.Condition(threading.RLock())
else:
    # (built with the compiled modules that type these locks)
    from ._sync import Condition, RLock  # noqa: F401

__all__ = ["Condition", "RLock"]
