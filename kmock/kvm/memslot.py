"""Memslots: KVM_SET_USER_MEMORY_REGION and ...2 (virt/kvm/kvm_main.c, Linux 6.18.y).

The checks run in the kernel's order (reference/kvm-guest-memfd-6.18.md §4.5); the
first failing rule decides the errno. A failed call changes nothing.
"""

import errno
from bisect import bisect_left, bisect_right  # (no module look-up per memslot look-up)

from ..errors import oserror
from ..fdtable import is_open_fd
from ..notifier import GmemNotifier
from ..uapi import kvm as K
from . import dirty_log
from .guest_memfd import PAGE_SHIFT, PAGE_SIZE, GmemFile

KVM_MEM_SLOTS_NUM = 0x8000  # SHRT_MAX + 1
KVM_MEM_MAX_NR_PAGES = (1 << 31) - 1
TASK_SIZE_MAX = (1 << 47) - PAGE_SIZE  # x86-64, 4-level paging
U64 = (1 << 64) - 1
LOFF_MAX = (1 << 63) - 1


class Memslot:
    def __init__(self, vm, as_id, id, base_gfn, npages, flags, userspace_addr):
        self.vm = vm
        self.as_id = as_id
        self.id = id
        self.base_gfn = base_gfn
        self.npages = npages
        self.flags = flags
        self.userspace_addr = userspace_addr
        self.gmem_file = None
        self.gmem_pgoff = 0
        self.gmem_token = 0
        self.gmem_notifier = None

    @property
    def end_gfn(self):
        return self.base_gfn + self.npages

    def __repr__(self):
        return (f"<Memslot {self.as_id}:{self.id} gfn {self.base_gfn:#x}+{self.npages:#x} "
                f"flags {self.flags:#x}>")


class Memslots:
    """One address space's memslots: by id, and sorted by base gfn for overlap checks.

    Changes replace the sorted lists instead of editing them (as KVM swaps in a new
    memslot set under SRCU), so a vCPU thread looking a gfn up never sees a list
    half-changed by another thread.
    """

    def __init__(self):
        self.by_id = {}
        self._sorted = ((), ())  # (base gfns, slots), replaced as one value

    def __iter__(self):
        return iter(self._sorted[1])

    def overlaps(self, base, end, skip_id):
        """kvm_check_memslot_overlap: does [base, end) meet a slot other than ``skip_id``?

        Slots are disjoint and sorted, so only the nearest slot starting before ``end``
        (or the one before it, when that is the slot being moved) can overlap.
        """
        starts, slots = self._sorted
        i = bisect_left(starts, end)
        for j in (i - 1, i - 2):
            if j < 0:
                return False
            s = slots[j]
            if s.id != skip_id:
                return s.end_gfn > base
        return False

    def overlapping(self, start, end):
        """The slots that meet gfns [start, end), in gfn order (found by bisection)."""
        starts, slots = self._sorted
        if not slots:
            return slots  # (an address space without memslots, e.g. x86 SMM's)
        i = bisect_right(starts, start) - 1
        if end == start + 1:  # one page (a 4K conversion): one bisection
            if i >= 0:
                s = slots[i]
                if start < s.base_gfn + s.npages:
                    return slots[i:i + 1]
            return ()
        j = bisect_left(starts, end)
        if i < 0:
            return slots[:j]
        # slots are disjoint and sorted: only the first may end before ``start``
        s = slots[i]
        return slots[i + 1:j] if s.base_gfn + s.npages <= start else slots[i:j]

    def lookup(self, gfn):
        starts, slots = self._sorted
        i = bisect_right(starts, gfn) - 1
        if i >= 0:
            s = slots[i]
            if gfn < s.base_gfn + s.npages:  # (end_gfn, without the property call)
                return s
        return None

    def insert(self, slot):
        self.by_id[slot.id] = slot
        starts, slots = self._sorted
        i = bisect_left(starts, slot.base_gfn)
        self._sorted = (starts[:i] + (slot.base_gfn,) + starts[i:], slots[:i] + (slot,) + slots[i:])

    def remove(self, slot):
        del self.by_id[slot.id]
        starts, slots = self._sorted
        i = slots.index(slot)
        self._sorted = (starts[:i] + starts[i + 1:], slots[:i] + slots[i + 1:])


class GmemBinding(GmemNotifier):
    """A memslot's binding to guest_memfd pages: KVM stage-2 as a guest_memfd user.

    ``invalidate_begin`` is kvm_gmem_invalidate_begin for this slot:
    mmu_invalidate_begin on the VM, then the stage-2 zap of the old kind
    (KVM_FILTER_SHARED / _PRIVATE; both when the pages go away). ``invalidate_end``
    ends the VM's invalidation (faults in flight retry until then).
    """

    def __init__(self, slot):
        self.slot = slot

    def invalidate_begin(self, event):
        slot = self.slot
        vm = slot.vm
        ev_vm = event.vm
        if ev_vm is not None and ev_vm is not vm:
            return
        # ``with vm.mmu_lock`` through the Condition's own acquire/release (the RLock's
        # C methods): the Condition's __enter__/__exit__ are Python calls
        lock = vm.mmu_lock
        lock.acquire()
        try:
            vm.mmu_invalidate_in_progress += 1  # mmu_invalidate_begin
            pgoff = slot.gmem_pgoff
            start, end = event.start, event.end
            lo = start if start > pgoff else pgoff
            hi = pgoff + slot.npages
            if end < hi:
                hi = end
            if lo < hi:
                base = slot.base_gfn - pgoff
                to_private = event.to_private  # (event.zap_kind, inlined)
                # (positional: Stage2.zap(start, end, kind, entries=False))
                vm.stage2.zap(base + lo, base + hi, None if to_private is None
                              else "shared" if to_private else "private", False)
        finally:
            lock.release()

    def invalidate_end(self, event):
        vm = self.slot.vm
        if event.vm is None or event.vm is vm:
            vm.mmu_invalidate_end()  # (compiled: a C call, VM.mmu_invalidate_end is cpdef)

    def __repr__(self):
        return f"<GmemBinding {self.slot!r}>"


def check_memory_region_flags(vm, flags):
    valid = K.KVM_MEM_LOG_DIRTY_PAGES | K.KVM_MEM_GUEST_MEMFD  # 6.18: CONFIG_KVM_GUEST_MEMFD
    if flags & K.KVM_MEM_GUEST_MEMFD:
        valid &= ~K.KVM_MEM_LOG_DIRTY_PAGES
    if not flags & K.KVM_MEM_GUEST_MEMFD and not vm.vmtype.has_protected_state:
        # kvm_arch_has_readonly_mem(): x86's is !kvm->arch.has_protected_state (TDX,
        # SEV-ES, SNP)
        valid |= K.KVM_MEM_READONLY
    if flags & ~valid:
        raise oserror(errno.EINVAL)


def set_memory_region(vm, mem, v2):
    """kvm_vm_ioctl_set_memory_region + kvm_set_memory_region, for struct ``mem``.

    Runs under the VM's slots_lock. The VM type's ``memslot_prepare`` may refuse
    (kvm_arch_prepare_memory_region) after the generic checks; ``memslot_commit``
    follows the change (kvm_arch_commit_memory_region).
    """
    with vm.slots_lock:
        return _set_memory_region(vm, mem, v2)


def _set_memory_region(vm, mem, v2):
    if not v2 and mem.flags & ~K.KVM_SET_USER_MEMORY_REGION_V1_FLAGS:
        raise oserror(errno.EINVAL)
    slot_field = mem.slot
    as_id, id = slot_field >> 16, slot_field & 0xFFFF
    if id >= K.KVM_USER_MEM_SLOTS:
        raise oserror(errno.EINVAL)
    flags = mem.flags
    check_memory_region_flags(vm, flags)
    size, gpa, uaddr = mem.memory_size, mem.guest_phys_addr, mem.userspace_addr
    gmem_offset = mem.guest_memfd_offset if v2 else 0
    if size & (PAGE_SIZE - 1):
        raise oserror(errno.EINVAL)
    if gpa & (PAGE_SIZE - 1):
        raise oserror(errno.EINVAL)
    if uaddr & (PAGE_SIZE - 1) or uaddr + size > TASK_SIZE_MAX:  # access_ok()
        raise oserror(errno.EINVAL)
    if flags & K.KVM_MEM_GUEST_MEMFD and (
            gmem_offset & (PAGE_SIZE - 1) or gmem_offset + size > U64):
        raise oserror(errno.EINVAL)
    if as_id >= vm.kernel.profile.nr_memslot_as_ids or id >= KVM_MEM_SLOTS_NUM:
        raise oserror(errno.EINVAL)
    if gpa + size > U64:
        raise oserror(errno.EINVAL)
    if (size >> PAGE_SHIFT) > KVM_MEM_MAX_NR_PAGES:
        raise oserror(errno.EINVAL)

    slots = vm.address_space(as_id)
    old = slots.by_id.get(id)
    if size == 0:
        if old is None:
            raise oserror(errno.EINVAL)
        vm.vmtype.memslot_prepare(vm, old, None, "delete")
        vm.delete_memslot(old)
        vm.vmtype.memslot_commit(vm, old, None, "delete")
        dirty_log.commit(vm, old, None, "delete")
        return 0

    base_gfn, npages = gpa >> PAGE_SHIFT, size >> PAGE_SHIFT
    if old is None:
        change = "create"
    else:
        if flags & K.KVM_MEM_GUEST_MEMFD:
            raise oserror(errno.EINVAL)  # private memslots are immutable
        changed = (old.flags ^ flags) & K.KVM_MEM_READONLY
        if vm.kernel.profile.gmem_flag_toggle_rejected:
            changed |= (old.flags ^ flags) & K.KVM_MEM_GUEST_MEMFD
        if uaddr != old.userspace_addr or npages != old.npages or changed:
            raise oserror(errno.EINVAL)
        if base_gfn != old.base_gfn:
            change = "move"
        elif flags != old.flags:
            change = "flags"
        else:
            return 0
    if change in ("create", "move") and slots.overlaps(base_gfn, base_gfn + npages, id):
        raise oserror(errno.EEXIST)

    vmtype = vm.vmtype
    if change == "flags":
        # KVM_MR_FLAGS_ONLY (dirty logging on/off; on v6.18.0 also dropping
        # GUEST_MEMFD, which upstream later made EINVAL because it was a use-after-free)
        vmtype.memslot_prepare(vm, old, old, change)
        old.flags = flags
        vmtype.memslot_commit(vm, old, old, change)
        dirty_log.commit(vm, old, old, change)
        return 0

    vm.kernel.faults.check("kvm.memslot.alloc", errno.ENOMEM)  # kzalloc of the new slot
    new = Memslot(vm, as_id, id, base_gfn, npages, flags, uaddr)
    if flags & K.KVM_MEM_GUEST_MEMFD:
        gmem_bind(vm, new, mem.guest_memfd, gmem_offset)
    try:
        # kvm_arch_prepare_memory_region (x86): the last gfn must fit the MMU.
        if base_gfn + npages - 1 > (1 << (vm.kernel.profile.max_gpa_bits - PAGE_SHIFT)) - 1:
            raise oserror(errno.EINVAL)
        vmtype.memslot_prepare(vm, old, new, change)
    except BaseException:
        gmem_unbind(new)
        raise
    if old is not None:
        vm.delete_memslot(old)  # KVM_MR_MOVE
    vm.insert_memslot(new)
    vmtype.memslot_commit(vm, old, new, change)
    dirty_log.commit(vm, old, new, change)  # the dirty bitmap (kvm_prepare_memory_region)
    return 0


def gmem_bind(vm, slot, fd, offset):
    """kvm_gmem_bind: EBADF for a closed fd, EINVAL for anything else that is wrong."""
    kernel = vm.kernel
    f = kernel.fdtable.get(fd)
    if f is None:
        if not is_open_fd(fd):
            raise oserror(errno.EBADF)
        raise oserror(errno.EINVAL)
    if not isinstance(f, GmemFile):
        raise oserror(errno.EINVAL)
    if f.vm is not vm:
        raise oserror(errno.EINVAL)
    inode = f.inode
    size = slot.npages << PAGE_SHIFT
    end_off = offset + size
    if kernel.profile.gmem_bind_offset_overflow_accepted and end_off > LOFF_MAX:
        end_off -= 1 << 64  # loff_t arithmetic wraps negative: the 6.18 bug (§7.2)
    if offset > LOFF_MAX or offset & (PAGE_SIZE - 1) or end_off > inode.size:
        raise oserror(errno.EINVAL)
    start = offset >> PAGE_SHIFT
    end = start + slot.npages
    if inode.range_bound(start, end):
        raise oserror(kernel.profile.gmem_bind_overlap_errno)
    slot.gmem_file = f
    slot.gmem_pgoff = start
    slot.gmem_notifier = GmemBinding(slot)
    slot.gmem_token = inode.bind(slot, start, end, slot.gmem_notifier)


def gmem_unbind(slot):
    """kvm_gmem_unbind: the slot's guest_memfd pages are free for another binding."""
    f = slot.gmem_file
    if f is not None:
        f.inode.unbind(slot.gmem_token, slot.gmem_pgoff, slot.gmem_pgoff + slot.npages,
                       slot.gmem_notifier)
        slot.gmem_file = None
        slot.gmem_notifier = None
