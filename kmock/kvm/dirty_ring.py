"""The KVM dirty ring: K.KVM_CAP_DIRTY_LOG_RING(_ACQ_REL), each vCPU's ring of struct
kvm_dirty_gfn, K.KVM_EXIT_DIRTY_RING_FULL and KVM_RESET_DIRTY_RINGS (Linux 6.18:
virt/kvm/dirty_ring.c; virt/kvm/kvm_main.c kvm_vm_ioctl_enable_dirty_log_ring,
kvm_vcpu_mmap, kvm_page_in_dirty_ring, kvm_vm_ioctl_reset_dirty_pages,
mark_page_dirty_in_slot; Documentation/virt/kvm/api.rst "K.KVM_CAP_DIRTY_LOG_RING").

The ring lives in the vCPU's kvm_run memfd at page K.KVM_DIRTY_LOG_PAGE_OFFSET (64), so the
VMM's mmap of the vCPU fd at that offset is the very memory kmock writes entries into and
reads the VMM's F_RESET marks from. A page of a KVM_MEM_LOG_DIRTY_PAGES memslot is pushed
when the running vCPU first writes it (the write fault on the write-protected page); it
is not pushed again until a reset of its entry write-protects it again. kmock keeps that
state in the memslot's RangeMap of kmock.kvm.dirty_log (1 = written since its entry was
pushed), which is no dirty bitmap in ring mode (kvm_use_dirty_bitmap() is false: the
bitmap ioctls are ENXIO), unless KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP (arm64) put a bitmap
beside it (kmock.kvm.dirty_log.ring_state). docs/dirty-log.md; conformance scenarios
``dirty_ring_*``.
"""

import array
import ctypes
import errno
import os
import threading

from .. import _libc
from ..errors import KmockUsageError, oserror
from ..uapi import kvm as K

#: the capabilities KVM_ENABLE_CAP takes a ring size for
CAPS = frozenset({K.KVM_CAP_DIRTY_LOG_RING, K.KVM_CAP_DIRTY_LOG_RING_ACQ_REL})

#: include/linux/kvm_host.h: entries kept free for what one exit may still push
KVM_DIRTY_RING_RSVD_ENTRIES = 64
#: include/linux/kvm_host.h; times sizeof(struct kvm_dirty_gfn) it is what CHECK_EXTENSION says
KVM_DIRTY_RING_MAX_ENTRIES = 65536
GFN_SIZE = ctypes.sizeof(K.kvm_dirty_gfn)
PAGE_SIZE = 4096
U32 = (1 << 32) - 1

_RUNNING = threading.local()  # kvm_get_running_vcpu(): the vCPU in KVM_RUN on this thread


class DirtyRingFull(Exception):
    """A push made the running vCPU's ring soft-full: the vCPU leaves the guest with
    K.KVM_EXIT_DIRTY_RING_FULL before the faulting access retires (raised through
    kmock.kvm.stage2.faultin; :func:`guest_run` turns it into the exit)."""


def rsvd_entries(vm):
    """kvm_dirty_ring_get_rsvd_entries: the reserved entries plus the CPU's dirty log
    (x86 kvm_cpu_dirty_log_size: 512 PML entries where VMX uses PML; 0 on this 6.18.44
    host, which accepts a 4096-byte ring). The profile attribute ``cpu_dirty_log_size``
    says it (0 when the profile has none)."""
    return KVM_DIRTY_RING_RSVD_ENTRIES + vm.kernel.profile.cpu_dirty_log_size


def enable_cap(vm, cap):
    """kvm_vm_ioctl_enable_cap_generic for the two ring caps (flags are not checked: the
    host accepts flags 1), then kvm_vm_ioctl_enable_dirty_log_ring. The size is the u32
    args[0] (2**32 truncates to 0). EINVAL: the cap is not advertised; 0 or not a power of
    two; smaller than the reserved entries or a page. E2BIG: larger than the maximum.
    EINVAL: a ring already (either cap: one size per VM), then a vCPU created."""
    if not vm.caps.get(cap.cap):
        raise oserror(errno.EINVAL)
    size = cap.args[0] & U32
    if not size or size & (size - 1):
        raise oserror(errno.EINVAL)
    if size < rsvd_entries(vm) * GFN_SIZE or size < PAGE_SIZE:
        raise oserror(errno.EINVAL)
    if size > KVM_DIRTY_RING_MAX_ENTRIES * GFN_SIZE:
        raise oserror(errno.E2BIG)
    if vm.dirty_ring_size:
        raise oserror(errno.EINVAL)
    from . import dirty_log

    with vm.slots_lock:  # (kvm->lock in the kernel; KVM_CREATE_VCPU is serialised against it)
        if vm.vcpus:
            raise oserror(errno.EINVAL)
        vm.dirty_ring_size = size
        # logged memslots made before: no page is writable yet (no vCPU ever ran), even
        # where INITIALLY_SET filled their bitmaps
        for as_id in range(vm.kernel.profile.nr_memslot_as_ids):
            for slot in vm.memslots(as_id):
                bm = dirty_log.bitmap(slot)
                if bm is not None:
                    bm.set(0, slot.npages, 0)
    return 0


def enable_with_bitmap(vm, cap):
    """kvm_vm_ioctl_enable_cap_generic KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP (6.18): the
    capability not built (CONFIG_NEED_KVM_DIRTY_RING_WITH_BITMAP, selected by arm64, not
    x86: KVM_CHECK_EXTENSION reads 0), no ring size yet, or flags -> EINVAL; then under
    slots_lock, a memslot in any address space -> EINVAL (kvm_are_all_memslots_empty);
    else kvm->dirty_ring_with_bitmap (again: 0)."""
    if not vm.caps.get(K.KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP) or not vm.dirty_ring_size \
            or cap.flags:
        raise oserror(errno.EINVAL)
    with vm.slots_lock:
        if any(vm.memslots(as_id) for as_id in range(vm.kernel.profile.nr_memslot_as_ids)):
            raise oserror(errno.EINVAL)
        vm.dirty_ring_with_bitmap = True
    return 0


def running_vcpu(vm):
    """kvm_get_running_vcpu() if it is one of ``vm``'s, else None."""
    vcpu = getattr(_RUNNING, "vcpu", None)
    return vcpu if vcpu is not None and vcpu.vm is vm else None


class DirtyRing:
    """struct kvm_dirty_ring of one vCPU: ``size`` entries in the vCPU's run memfd at
    page 64; ``dirty_index`` / ``reset_index`` are the kernel's free-running u32
    counters; ``request`` is KVM_REQ_DIRTY_RING_SOFT_FULL."""

    def __init__(self, vcpu, nbytes):
        self.size = nbytes // GFN_SIZE
        self.soft_limit = self.size - rsvd_entries(vcpu.vm)
        self.dirty_index = 0
        self.reset_index = 0
        self.request = False
        self.nbytes = nbytes
        self.file_offset = K.KVM_DIRTY_LOG_PAGE_OFFSET * PAGE_SIZE
        os.ftruncate(vcpu.run_fd, self.file_offset + nbytes)
        self.addr = _libc.mmap(None, nbytes, _libc.PROT_READ | _libc.PROT_WRITE,
                               _libc.MAP_SHARED, vcpu.run_fd, self.file_offset)
        #: the ring as u32 words (4 per entry: flags, slot, offset low, offset high)
        self.words = (ctypes.c_uint32 * (self.size * 4)).from_address(self.addr)

    def used(self):
        return (self.dirty_index - self.reset_index) & U32

    def soft_full(self):
        return self.used() >= self.soft_limit

    def free(self):
        self.words = None
        _libc.munmap(self.addr, self.nbytes)

    def entries(self):
        """Every entry as (flags, slot, offset), in ring order (index 0 first)."""
        w = memoryview(self.words).cast("B").cast("I")
        flags, slots = w[0::4].tolist(), w[1::4].tolist()
        lo, hi = w[2::4].tolist(), w[3::4].tolist()
        return [(f, s, lo_ | hi_ << 32) for f, s, lo_, hi_ in zip(flags, slots, lo, hi)]

    def push(self, slot_field, first, n):
        """kvm_dirty_ring_push for the pages first..first+n-1 (n <= size): slot and offset
        first, then the flags (the kernel's smp_wmb before F_DIRTY). A full ring is
        overwritten, as the kernel does after its WARN_ON_ONCE."""
        mask = self.size - 1
        w = memoryview(self.words).cast("B").cast("I")
        start = self.dirty_index & mask
        done = 0
        while done < n:
            i = (start + done) & mask
            k = min(n - done, self.size - i)
            body = array.array("I", bytes(16 * k))
            body[1::4] = array.array("I", [slot_field]) * k
            offs = range(first + done, first + done + k)
            body[2::4] = array.array("I", (o & U32 for o in offs))
            body[3::4] = array.array("I", (o >> 32 for o in offs))
            w[4 * i:4 * (i + k)] = memoryview(body).cast("B").cast("I")
            w[4 * i:4 * (i + k):4] = array.array("I", [K.KVM_DIRTY_GFN_F_DIRTY]) * k
            done += k
        self.dirty_index = (self.dirty_index + n) & U32
        if self.soft_full():
            self.request = True

    def reset(self, vm):
        """kvm_dirty_ring_reset: from reset_index, every entry whose flags have F_RESET (the
        VMM harvested it), up to the first that has not: its flags cleared, its page
        write-protected again (kvm_reset_dirty_gfn: skipped for a bad slot or offset).
        Returns the number of entries reset."""
        mask = self.size - 1
        w = memoryview(self.words).cast("B").cast("I")
        flags = w[0::4].tolist()
        count = 0
        idx = self.reset_index
        while count < self.size and flags[(idx + count) & mask] & K.KVM_DIRTY_GFN_F_RESET:
            count += 1
        reprotect = []
        for j in range(count):
            i = (idx + j) & mask
            reprotect.append((w[4 * i + 1], w[4 * i + 2] | w[4 * i + 3] << 32))
            w[4 * i] = 0
        self.reset_index = (idx + count) & U32
        with vm.mmu_lock:  # KVM_MMU_LOCK around kvm_arch_mmu_enable_log_dirty_pt_masked
            self._reprotect(vm, reprotect)
        return count

    @staticmethod
    def _reprotect(vm, reprotect):
        from . import dirty_log

        for slot_field, offset in reprotect:
            as_id, id = slot_field >> 16, slot_field & 0xFFFF
            if as_id >= vm.kernel.profile.nr_memslot_as_ids or id >= K.KVM_USER_MEM_SLOTS:
                continue
            slot = vm.address_space(as_id).by_id.get(id)
            if slot is None or offset >= slot.npages:
                continue
            bm = dirty_log.ring_state(slot)
            if bm is not None:
                bm.set(offset, offset + 1, 0)


def vcpu_create(vcpu):
    """kvm_vm_ioctl_create_vcpu: kvm_dirty_ring_alloc when the VM has a ring size."""
    size = vcpu.vm.dirty_ring_size
    if size:
        vcpu.dirty_ring = DirtyRing(vcpu, size)


def mark(slot, gfn, npages, written):
    """mark_page_dirty_in_slot in ring mode for the pages [gfn, gfn + npages) the running
    vCPU writes: each page not written since its entry was pushed (``written``: the slot's
    RangeMap, 1 = writable now) is pushed and becomes writable. The push that makes the
    ring soft-full ends the access with DirtyRingFull: the vCPU exits before the access
    retires, as the kernel's vCPU leaves after the fault that pushed; the retried access
    pushes again only the pages whose entries were reset meanwhile. An access is retried
    whole, so one access dirtying soft_limit pages or more could never complete: that is a
    KmockUsageError (a real access touches a few pages; split the write).
    Without a running vCPU nothing is recorded (kmock's only writer is the guest)."""
    vcpu = getattr(_RUNNING, "vcpu", None)
    if vcpu is None or vcpu.vm is not slot.vm:
        return
    ring = vcpu.dirty_ring
    start = gfn - slot.base_gfn
    runs = [(s, e) for s, e, v in written.ranges(start, start + npages) if not v]
    if sum(e - s for s, e in runs) >= ring.soft_limit:
        raise KmockUsageError(
            f"a guest access dirtying {sum(e - s for s, e in runs)} pages of a dirty-logged "
            f"memslot at once cannot fit the dirty ring's soft limit ({ring.soft_limit} "
            f"entries): split it into smaller writes")
    slot_field = slot.as_id << 16 | slot.id
    for s, e in runs:
        while s < e:
            used = ring.used()
            room = ring.soft_limit - used if used < ring.soft_limit else 1
            n = min(e - s, room)
            ring.push(slot_field, s, n)
            written.set(s, s + n, 1)
            s += n
            if ring.request:
                raise DirtyRingFull()


def full_exit(vcpu, ring):
    """kvm_dirty_ring_check_request, before the guest runs: with the soft-full request
    pending and the ring still soft-full, exit_reason K.KVM_EXIT_DIRTY_RING_FULL (KVM_RUN
    returns 0; the request stays); a ring reset below the limit drops the request."""
    if not ring.request:
        return False
    if ring.soft_full():
        vcpu.run.exit_reason = K.KVM_EXIT_DIRTY_RING_FULL
        return True
    ring.request = False
    return False


class vcpu_loaded:
    """``with vcpu_loaded(vcpu):`` vcpu_load .. vcpu_put around a vCPU ioctl that makes KVM
    write guest memory itself (KVM_TRANSLATE's Accessed bits): kvm_get_running_vcpu() is
    ``vcpu`` meanwhile, so mark_page_dirty_in_slot pushes to its ring."""

    def __init__(self, vcpu):
        self.vcpu = vcpu

    def __enter__(self):
        self.saved = getattr(_RUNNING, "vcpu", None)
        _RUNNING.vcpu = self.vcpu
        return self.vcpu

    def __exit__(self, *exc):
        _RUNNING.vcpu = self.saved


def push_kernel_write(slot, gfn, npages):
    """mark_page_dirty_in_slot in ring mode for a write KVM makes itself with a vCPU loaded:
    every call pushes (kvm_dirty_ring_push; no write protection stands between KVM and the
    page to dedup it, conformance x86_vcpu_translate_dirty_ring). A push that reaches the
    soft limit raises the ring's request: the next KVM_RUN exits DIRTY_RING_FULL. Without
    a loaded vCPU of the slot's VM nothing is recorded."""
    vcpu = getattr(_RUNNING, "vcpu", None)
    if vcpu is None or vcpu.vm is not slot.vm or vcpu.dirty_ring is None:
        return
    vcpu.dirty_ring.push(slot.as_id << 16 | slot.id, gfn - slot.base_gfn, npages)


def guest_run(vcpu):
    """kmock.kvm.guest.run with ``vcpu`` as the running vCPU; a push that fills the ring
    to its soft limit exits with K.KVM_EXIT_DIRTY_RING_FULL (the access not retired)."""
    from . import guest

    with vcpu_loaded(vcpu):
        try:
            return guest.run(vcpu)
        except DirtyRingFull:
            vcpu.run.exit_reason = K.KVM_EXIT_DIRTY_RING_FULL
            return 0


def reset_rings(vm):
    """kvm_vm_ioctl_reset_dirty_pages: EINVAL without a ring size; else every vCPU's
    ring in creation order (kvm_for_each_vcpu) under slots_lock; the number reset."""
    if not vm.dirty_ring_size:
        raise oserror(errno.EINVAL)
    with vm.slots_lock:
        return sum(v.dirty_ring.reset(vm) for v in list(vm.vcpus.values())
                   if v.dirty_ring is not None)


def check_mmap(vcpu, length, prot, flags, offset):
    """kvm_vcpu_mmap: EINVAL when the first or the last page of the mapping is a ring page
    (kvm_page_in_dirty_ring) and the mapping is not MAP_SHARED (or is PROT_EXEC, which the
    host refuses earlier with EPERM: the anon inode's noexec mount, for every vCPU
    mapping). Offsets and lengths are not checked: pages outside the area fault (SIGBUS)."""
    if prot & _libc.PROT_EXEC:
        raise oserror(errno.EPERM)
    size = vcpu.vm.dirty_ring_size
    if not size:
        return
    lo = K.KVM_DIRTY_LOG_PAGE_OFFSET
    hi = lo + size // PAGE_SIZE
    first = offset // PAGE_SIZE
    last = first + (length + PAGE_SIZE - 1) // PAGE_SIZE - 1
    if (lo <= first < hi or lo <= last < hi) and flags & _libc.MAP_TYPE == _libc.MAP_PRIVATE:
        raise oserror(errno.EINVAL)


def fault_at(vcpu, offset, start, stop):
    """The mapping offset of the first byte in [start, stop) of a vCPU mapping at file
    ``offset`` whose page is neither the kvm_run area nor the ring (kvm_vcpu_fault:
    SIGBUS), or None."""
    limit = vcpu.mmap_size
    lo = K.KVM_DIRTY_LOG_PAGE_OFFSET * PAGE_SIZE
    hi = lo + vcpu.vm.dirty_ring_size
    a, b = offset + start, offset + stop
    a = max(a, limit)
    if a >= b:
        return None
    if a < lo:
        return a - offset
    a = max(a, hi)
    return a - offset if a < b else None
