"""The hypervisor's page-ownership table: who may touch each host frame.

pKVM (Documentation/virt/kvm/arm/pkvm.rst, "CPU memory isolation") unmaps a page
from the host's stage-2 identity map when a protected guest first touches it (the
page is donated to the guest) and maps it back when the guest shares it
(ARM_SMCCC_KVM_FUNC_MEM_SHARE) or the hypervisor reclaims it. The table is keyed
by host frame (``inode.pfn(index)``), like the hypervisor's own, and is a
kmock.mm.RangeMap of runs: every transition is one ``set`` over a range, every
check one ``find`` over a range, never a loop per page.

The table is written from the guest fault path (under the VM's mmu_lock), from
guest_memfd invalidations (under the inode's invalidate lock), from a vCPU's
hypercall (under the vCPU mutex) and read by host accesses and DMA (under the
invalidate lock / the iommu lock): its own lock makes each change atomic.
"""

import threading

from kmock.mm import RangeMap

#: frame states
HOST = 0  # owned by the host: mapped in its stage-2 (the default)
GUEST = 1  # donated to the protected guest: unmapped from the host's stage-2
SHARED = 2  # owned by the guest, shared back with the host (MEM_SHARE)

NAMES = {HOST: "host", GUEST: "guest", SHARED: "shared"}
FRAME_SPACE = 1 << 52


# [guide:table]
class Ownership:
    def __init__(self):
        self.frames = RangeMap(FRAME_SPACE, HOST)  # one run per state change, not a page each
        self.lock = threading.RLock()

    def set(self, pfn, npages, state):
        with self.lock:
            self.frames.set(pfn, pfn + npages, state)

    def donate(self, pfn, npages):
        """The guest's first access maps frames [pfn, pfn + npages): host -> guest
        (frames the guest already shared stay shared). One set per run."""
        with self.lock:
            for s, e, v in list(self.frames.ranges(pfn, pfn + npages)):
                if v == HOST:
                    self.frames.set(s, e, GUEST)

    def first_guest_owned(self, pfn, npages):
        """The first frame of [pfn, pfn + npages) the host may not touch, or None."""
        with self.lock:
            f = self.frames.find(pfn, pfn + npages, GUEST)
        return None if f == -1 else f
    # [/guide:table]

    def state(self, pfn):
        return self.frames.get(pfn)

    def count(self, state):
        return self.frames.count(state)
