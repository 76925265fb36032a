"""Memslots: KVM_SET_USER_MEMORY_REGION and ...2 (virt/kvm/kvm_main.c, Linux 6.18.y).

The checks run in the kernel's order (reference/kvm-guest-memfd-6.18.md §4.5); the
first failing rule decides the errno. A failed call changes nothing.
"""

import bisect
import errno

from ..errors import oserror
from ..uapi import kvm as K
from .guest_memfd import PAGE_SHIFT, PAGE_SIZE, GmemFile

KVM_MEM_SLOTS_NUM = 0x8000  # SHRT_MAX + 1
KVM_MEM_MAX_NR_PAGES = (1 << 31) - 1
TASK_SIZE_MAX = (1 << 47) - PAGE_SIZE  # x86-64, 4-level paging
U64 = (1 << 64) - 1
LOFF_MAX = (1 << 63) - 1


class Memslot:
    __slots__ = ("vm", "as_id", "id", "base_gfn", "npages", "flags", "userspace_addr",
                 "gmem_file", "gmem_pgoff", "gmem_token")

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

    @property
    def end_gfn(self):
        return self.base_gfn + self.npages

    def __repr__(self):
        return (f"<Memslot {self.as_id}:{self.id} gfn {self.base_gfn:#x}+{self.npages:#x} "
                f"flags {self.flags:#x}>")


class Memslots:
    """One address space's memslots: by id, and sorted by base gfn for overlap checks."""

    def __init__(self):
        self.by_id = {}
        self._starts = []  # sorted base gfns
        self._slots = []  # slots in the same order

    def __iter__(self):
        return iter(self._slots)

    def overlaps(self, base, end, skip_id):
        """kvm_check_memslot_overlap: does [base, end) meet a slot other than ``skip_id``?

        Slots are disjoint and sorted, so only the nearest slot starting before ``end``
        (or the one before it, when that is the slot being moved) can overlap.
        """
        i = bisect.bisect_left(self._starts, end)
        for j in (i - 1, i - 2):
            if j < 0:
                return False
            s = self._slots[j]
            if s.id != skip_id:
                return s.end_gfn > base
        return False

    def lookup(self, gfn):
        i = bisect.bisect_right(self._starts, gfn) - 1
        if i >= 0:
            s = self._slots[i]
            if gfn < s.end_gfn:
                return s
        return None

    def insert(self, slot):
        self.by_id[slot.id] = slot
        i = bisect.bisect_left(self._starts, slot.base_gfn)
        self._starts.insert(i, slot.base_gfn)
        self._slots.insert(i, slot)

    def remove(self, slot):
        del self.by_id[slot.id]
        i = self._slots.index(slot)
        del self._starts[i]
        del self._slots[i]


def check_memory_region_flags(vm, flags):
    valid = K.KVM_MEM_LOG_DIRTY_PAGES | K.KVM_MEM_GUEST_MEMFD  # 6.18: CONFIG_KVM_GUEST_MEMFD
    if flags & K.KVM_MEM_GUEST_MEMFD:
        valid &= ~K.KVM_MEM_LOG_DIRTY_PAGES
    if not flags & K.KVM_MEM_GUEST_MEMFD:
        valid |= K.KVM_MEM_READONLY  # kvm_arch_has_readonly_mem() on x86
    if flags & ~valid:
        raise oserror(errno.EINVAL)


def set_memory_region(vm, mem, v2):
    """kvm_vm_ioctl_set_memory_region + kvm_set_memory_region, for struct ``mem``."""
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
        vm.delete_memslot(old)
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

    if change == "flags":
        # KVM_MR_FLAGS_ONLY (dirty logging on/off; on v6.18.0 also dropping
        # GUEST_MEMFD, which upstream later made EINVAL because it was a use-after-free)
        old.flags = flags
        return 0

    new = Memslot(vm, as_id, id, base_gfn, npages, flags, uaddr)
    if flags & K.KVM_MEM_GUEST_MEMFD:
        gmem_bind(vm, new, mem.guest_memfd, gmem_offset)
    # kvm_arch_prepare_memory_region (x86): the last gfn must fit the MMU.
    if base_gfn + npages - 1 > (1 << (vm.kernel.profile.max_gpa_bits - PAGE_SHIFT)) - 1:
        if new.gmem_file is not None:
            new.gmem_file.inode.unbind(new.gmem_token, new.gmem_pgoff, new.gmem_pgoff + npages)
        raise oserror(errno.EINVAL)
    if old is not None:
        vm.delete_memslot(old)  # KVM_MR_MOVE
    vm.insert_memslot(new)
    return 0


def gmem_bind(vm, slot, fd, offset):
    """kvm_gmem_bind: EBADF for a closed fd, EINVAL for anything else that is wrong."""
    kernel = vm.kernel
    f = kernel._fds.get(fd)
    if f is None:
        if not kernel._is_open_fd(fd):
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
        raise oserror(errno.EINVAL)
    slot.gmem_file = f
    slot.gmem_pgoff = start
    slot.gmem_token = inode.bind(slot, start, end)
