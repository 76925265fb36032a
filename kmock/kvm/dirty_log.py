"""Dirty page logging of memslots with KVM_MEM_LOG_DIRTY_PAGES: KVM_GET_DIRTY_LOG and
KVM_CLEAR_DIRTY_LOG (virt/kvm/kvm_main.c kvm_get_dirty_log_protect,
kvm_clear_dirty_log_protect, kvm_prepare_memory_region's dirty_bitmap handling).

Each logged memslot has a bitmap, a RangeMap of its pages (1 = dirty). It exists while
the slot has the flag: made when a slot is created, moved or flagged with it (all set
when KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 has INITIALLY_SET at that moment, probed), kept
across a move and a flags change that keeps the flag, dropped with the flag or the slot.
A page becomes dirty when the scripted guest writes it through the slot's userspace
memory (kmock.kvm.stage2.faultin calls :func:`mark`, once per run of pages).
Errnos and the alignment rules were confirmed on a 6.18.44 host (conformance scenario
``dirty_log``); docs/dirty-log.md.

With a dirty ring (kmock.kvm.dirty_ring) the slot's RangeMap is the ring's "written since
its entry was pushed" state and no dirty bitmap (kvm_use_dirty_bitmap() false), unless
KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP was enabled (arm64): then each logged slot has both, a
dirty bitmap for writes made without a running vCPU (mark_page_dirty_in_slot) and the
ring state beside it (:func:`ring_state`).
"""

import errno
import threading
import weakref

from ..errors import oserror
from ..kernel_util import copy_from_user, read_user_at, write_user_at
from ..mm import RangeMap
from ..uapi import kvm as K
from . import dirty_ring

BITS_PER_LONG = 64
#: KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | KVM_DIRTY_LOG_INITIALLY_SET: what
#: KVM_CHECK_EXTENSION(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) answers (include/linux/kvm_host.h)
KVM_DIRTY_LOG_MANUAL_CAPS = 0x3
_LOGS = weakref.WeakKeyDictionary()  # vm -> {memslot: RangeMap}
#: vm -> {memslot: RangeMap}: the ring state of VMs with KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP
_RING = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _logs(vm):
    logs = _LOGS.get(vm)
    if logs is None:
        with _LOCK:
            logs = _LOGS.setdefault(vm, {})
    return logs


def _manual_protect(vm):
    """kvm->manual_dirty_log_protect: KVM_ENABLE_CAP(MANUAL_DIRTY_LOG_PROTECT2)'s args[0]
    (kmock.kvm.vm.enable_cap_generic)."""
    from .vm import enabled_caps
    return enabled_caps(vm).get(K.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, 0)


def use_dirty_bitmap(vm):
    """kvm_use_dirty_bitmap: no dirty ring, or a ring with the bitmap beside it."""
    return not vm.dirty_ring_size or vm.dirty_ring_with_bitmap


def commit(vm, old, new, change):
    """After a memslot change (``change`` "create", "move", "flags", "delete"; for
    "flags" ``old`` is ``new``): give ``new`` the bitmap the kernel would."""
    logs = _logs(vm)
    with _LOCK:
        bitmap = logs.pop(old, None) if old is not None else None
        ring = None
        if vm.dirty_ring_with_bitmap:
            rings = _RING.setdefault(vm, {})
            ring = rings.pop(old, None) if old is not None else None
        if new is None or not new.flags & K.KVM_MEM_LOG_DIRTY_PAGES:
            return
        if bitmap is None:
            bitmap = RangeMap(new.npages, 0)
            if (_manual_protect(vm) & K.KVM_DIRTY_LOG_INITIALLY_SET
                    and use_dirty_bitmap(vm)):  # kvm_dirty_log_manual_protect_and_init_set
                bitmap.set(0, new.npages, 1)
        logs[new] = bitmap
        if vm.dirty_ring_with_bitmap:
            rings[new] = ring if ring is not None else RangeMap(new.npages, 0)


def bitmap(slot):
    """The slot's dirty bitmap (RangeMap), or None when it is not logged."""
    logs = _LOGS.get(slot.vm)
    return logs.get(slot) if logs else None


def ring_state(slot):
    """The ring's per-page state of a logged slot in ring mode (1: written since its
    entry was pushed): the slot's own RangeMap, or with WITH_BITMAP the one beside the
    dirty bitmap. None when the slot is not logged."""
    vm = slot.vm
    if vm.dirty_ring_with_bitmap:
        rings = _RING.get(vm)
        return rings.get(slot) if rings else None
    return bitmap(slot)


def mark(slot, gfn, npages, by_kernel=False):
    """mark_page_dirty_in_slot for the pages [gfn, gfn + npages) of ``slot``: the running
    vCPU's ring in ring mode; else the dirty bitmap, if the slot has one. ``by_kernel``:
    KVM wrote the pages itself (not a guest write through a write-protected SPTE), so a
    ring push is not deduplicated."""
    if not slot.flags & K.KVM_MEM_LOG_DIRTY_PAGES:
        return
    bm = bitmap(slot)
    if bm is not None:
        vm = slot.vm
        if vm.dirty_ring_size:
            if not vm.dirty_ring_with_bitmap or dirty_ring.running_vcpu(vm) is not None:
                if by_kernel:
                    return dirty_ring.push_kernel_write(slot, gfn, npages)
                return dirty_ring.mark(slot, gfn, npages, ring_state(slot))
        start = gfn - slot.base_gfn
        bm.set(start, start + npages, 1)


def _check_bitmap_mode(vm):
    """kvm_use_dirty_bitmap: a VM with a dirty ring and no WITH_BITMAP (x86 has none) has
    no bitmaps: ENXIO, before anything else is checked (probed)."""
    if not use_dirty_bitmap(vm):
        raise oserror(errno.ENXIO)


def _reprotect_ring(slot, start, end):
    """With WITH_BITMAP, the pages a bitmap ioctl write-protects again
    (kvm_arch_mmu_enable_log_dirty_pt_masked) are pushed to the ring at their next write."""
    if slot.vm.dirty_ring_with_bitmap:
        rs = ring_state(slot)
        if rs is not None:
            rs.set(start, end, 0)


def _bitmap_bytes(npages):
    """kvm_dirty_bitmap_bytes: whole longs."""
    return (npages + BITS_PER_LONG - 1) // BITS_PER_LONG * (BITS_PER_LONG // 8)


def _logged_slot(vm, slot_field):
    as_id, id = slot_field >> 16, slot_field & 0xFFFF
    if as_id >= vm.kernel.profile.nr_memslot_as_ids or id >= K.KVM_USER_MEM_SLOTS:
        raise oserror(errno.EINVAL)
    return as_id, id


def _find(vm, as_id, id):
    slot = vm.address_space(as_id).by_id.get(id)
    bm = bitmap(slot) if slot is not None else None
    if bm is None:
        raise oserror(errno.ENOENT)
    return slot, bm


def get_dirty_log(vm, log):
    """kvm_get_dirty_log_protect: slot id / as_id out of range -> EINVAL, no slot or no
    bitmap -> ENOENT; without manual protect the log is read and cleared (cleared also
    when the copy to the user's bitmap then fails: EFAULT)."""
    _check_bitmap_mode(vm)
    with vm.slots_lock:
        slot, bm = _find(vm, *_logged_slot(vm, log.slot))
        with _LOCK:
            bits = 0
            for s, e, v in bm.ranges():
                if v:
                    bits |= ((1 << (e - s)) - 1) << s
            if not _manual_protect(vm) & K.KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE:
                if vm.dirty_ring_with_bitmap:
                    for s, e, v in bm.ranges():
                        if v:
                            _reprotect_ring(slot, s, e)
                bm.set(0, slot.npages, 0)
        write_user_at(log.dirty_bitmap, 0, bits.to_bytes(_bitmap_bytes(slot.npages), "little"))
    return 0


def clear_dirty_log(vm, log):
    """kvm_clear_dirty_log_protect (with or without manual protect enabled): EINVAL for
    slot id / as_id, then for first_page not a multiple of 64, ENOENT without a logged
    slot, EINVAL for a range past the slot or a num_pages not a multiple of 64 that
    stops before its end; the bitmap is read (EFAULT), then its set bits are cleared."""
    _check_bitmap_mode(vm)
    as_id, id = _logged_slot(vm, log.slot)
    first, num = log.first_page, log.num_pages
    if first & (BITS_PER_LONG - 1):
        raise oserror(errno.EINVAL)
    with vm.slots_lock:
        slot, bm = _find(vm, as_id, id)
        npages = slot.npages
        if first > npages or num > npages - first or (
                num < npages - first and num & (BITS_PER_LONG - 1)):
            raise oserror(errno.EINVAL)
        raw = read_user_at(log.dirty_bitmap, 0, _bitmap_bytes(num))
        x = int.from_bytes(raw, "little") & ((1 << num) - 1)
        with _LOCK:
            while x:  # one step per run of set bits
                lo = (x & -x).bit_length() - 1
                y = x >> lo
                run = (~y & (y + 1)).bit_length() - 1
                bm.set(first + lo, first + lo + run, 0)
                _reprotect_ring(slot, first + lo, first + lo + run)
                x &= ~(((1 << run) - 1) << lo)
    return 0


# --- ioctl handlers (generic kvm_vm_ioctl; registered by kmock.kvm.vm for every architecture)


def vm_get_dirty_log(f, arg):
    """KVM_GET_DIRTY_LOG: the struct (EFAULT), then :func:`get_dirty_log`."""
    vm = f.vm
    vm.check_caller()
    return get_dirty_log(vm, copy_from_user(arg, K.kvm_dirty_log))


def vm_clear_dirty_log(f, arg):
    """KVM_CLEAR_DIRTY_LOG: the struct (EFAULT), then :func:`clear_dirty_log`."""
    vm = f.vm
    vm.check_caller()
    return clear_dirty_log(vm, copy_from_user(arg, K.kvm_clear_dirty_log))
