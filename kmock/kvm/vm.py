"""A KVM VM: its fd, memslots, memory attributes, vCPUs, and its ioctls.

Every VM-fd ioctl first checks that it comes from the process that created the VM
(``kvm->mm != current->mm`` -> EIO), then dispatches (kvm_vm_ioctl).
"""

import errno
import time
from functools import partial

from .._libc import current_pid
from ..errors import KmockUsageError, oserror
from ..file import REFS_LOCK, File
from ..kernel_util import copy_from_user, int_arg
from ..locks import Condition, RLock
from ..mm import RangeMap
from ..notifier import InvalidateEvent
from ..uapi import kvm as K
from . import coalesced_mmio, dirty_log, dirty_ring, eventfds, x86_vm
from .attached import Attached
from .guest_memfd import PAGE_SHIFT, PAGE_SIZE, create_guest_memfd
# (the module, not its names: kmock.kvm.memslot's compiled form imports this module's VM
# type when it loads, so either may be imported first)
from . import memslot as _memslot
from . import stage2 as _stage2  # (the module: its compiled form imports VM, see above)
from .stats import task_pid_nr, vm_get_stats_fd

GFN_SPACE = 1 << 52  # GPAs are 64-bit: gfns up to 2**52
U64 = (1 << 64) - 1

EIO = errno.EIO


#: (a module constant: set_memory_attributes reads it on every conversion)
_PRIVATE = K.KVM_MEMORY_ATTRIBUTE_PRIVATE

class NoSuchVcpu(KmockUsageError, KeyError):
    """``vm.vcpus[i]`` for an id no vCPU has: a KmockUsageError (a ValueError) naming
    the id and the ids that exist; also a KeyError, for code that caught that."""

    __str__ = ValueError.__str__


class VcpuTable(dict):
    """``vm.vcpus``: vCPU id -> vCPU, a dict whose missing keys are named clearly."""

    def __missing__(self, vcpu_id):
        ids = ", ".join(str(i) for i in sorted(self)) or "none (KVM_CREATE_VCPU makes one)"
        raise NoSuchVcpu(f"vcpus[{vcpu_id!r}]: this VM has no vCPU with id {vcpu_id!r}; "
                         f"its vCPU ids: {ids}")


class VM:
    """struct kvm. Kept alive by its fds, its vCPUs and its guest_memfds.

    Locks, as the kernel's: ``slots_lock`` serialises memslot changes and VM-level
    attribute changes; ``mmu_lock`` (a Condition) guards stage-2, with
    ``mmu_invalidate_in_progress`` / ``mmu_invalidate_seq``: a guest access waits
    while an invalidation is in progress and runs whole under mmu_lock, so it never
    maps or touches a page whose invalidation has begun (the retry of faults in
    flight, mmu_invalidate_retry).
    """

    #: kvm->dirty_ring_size: bytes of each vCPU's dirty ring, 0 without (kmock.kvm.dirty_ring)
    dirty_ring_size = 0
    #: kvm->dirty_ring_with_bitmap (KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP, kmock.kvm.dirty_ring)
    dirty_ring_with_bitmap = False

    def __init__(self, kernel, vmtype, type_arg=None):
        self.kernel = kernel
        self.vmtype = vmtype
        self.type = vmtype.type
        #: the whole KVM_CREATE_VM argument (arm64 encodes the IPA size in bits 7:0)
        self.type_arg = vmtype.type if type_arg is None else type_arg
        self.owner_pid = current_pid()
        #: CLOCK_BOOTTIME at KVM_CREATE_VM (kvm_arch_init_vm starts the kvmclock here)
        self.created_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        #: kvm->stats_id, the id string of the VM's stats fd (kmock.kvm.stats)
        self.stats_id = f"kvm-{task_pid_nr()}"
        self.dead = False
        #: why the VM is dead (a Violation or a string), when ``dead``
        self.dead_reason = None
        self.refs = 0
        self.destroyed = False
        self.slots_lock = RLock()
        self.mmu_lock = Condition()
        self.mmu_invalidate_in_progress = 0
        self.mmu_invalidate_seq = 0
        #: guest accesses waiting for an invalidation to end
        self.mmu_waiters = 0
        self._guest_access = _GuestAccess(self.mmu_lock, self)  # stateless: one per VM
        self._as = [_memslot.Memslots() for _ in range(kernel.profile.nr_memslot_as_ids)]
        self.mem_attrs = RangeMap(GFN_SPACE)
        #: the TDP page table (kmock.kvm.stage2): gfn -> frame, R/W, private
        self.stage2 = _stage2.Stage2(self)
        #: vCPU id -> vCPU (a dict; a missing id raises NoSuchVcpu)
        self.vcpus = VcpuTable()
        self.hypercall_exit_enabled = 0
        self.arch = None  # owned by the architecture plugin
        self.caps = kernel.vm_caps(vmtype)
        #: kvm_supported_mem_attributes() (fixed by the profile and the VM type)
        self.mem_attrs_supported = self.supported_mem_attributes()
        #: this VM type's dispatch tables, by file type ("vm", "vcpu", "gmem")
        self.ioctl_tables = kernel.vmtype_tables(vmtype)

    def check_caller(self):
        """Every VM and vCPU ioctl starts here: ``kvm->mm != current->mm || vm_dead``
        is EIO (a forked child, or a VM KVM_BUG_ON killed)."""
        if self.owner_pid != current_pid() or self.dead:
            raise oserror(EIO)

    def kill(self, reason):
        """kvm_vm_dead: every later VM and vCPU ioctl fails with EIO. ``reason`` (a
        kmock Violation or a string) says why; record the violation first."""
        self.dead = True
        if self.dead_reason is None:
            self.dead_reason = reason

    # --- mmu_invalidate_begin / end (under mmu_lock) ------------------------------------

    # (the Condition's acquire/release are its RLock's C methods; ``with`` on a
    # Condition costs two Python calls, and these run on every invalidation)

    def mmu_invalidate_begin(self):
        lock = self.mmu_lock
        lock.acquire()
        try:
            self.mmu_invalidate_in_progress += 1
        finally:
            lock.release()

    def mmu_invalidate_end(self):
        lock = self.mmu_lock
        lock.acquire()
        try:
            self.mmu_invalidate_in_progress -= 1
            self.mmu_invalidate_seq += 1
            if self.mmu_waiters:
                lock.notify_all()
        finally:
            lock.release()

    def guest_access(self):
        """The mmu_lock as a guest access takes it: waits while an invalidation is in
        progress (the fault would retry), then holds the lock for the whole access."""
        return self._guest_access

    # --- lifetime --------------------------------------------------------------------

    def get(self):
        lock = REFS_LOCK
        lock.acquire()
        try:
            self.refs += 1
        finally:
            lock.release()

    def put(self):
        lock = REFS_LOCK
        lock.acquire()
        try:
            self.refs -= 1
            if self.refs:
                return
        finally:
            lock.release()
        self.destroy()

    def destroy(self):
        """kvm_destroy_vm: the I/O buses go first (their ioeventfds drop the eventfds,
        kvm_io_bus_destroy), then the memslots (unbinding guest_memfd ranges), then the
        VM type's destroy callback."""
        self.destroyed = True
        eventfds.vm_destroyed(self)
        with self.slots_lock:
            for slots in self._as:
                for slot in list(slots):
                    self.delete_memslot(slot)
        self.vmtype.vm_destroy(self)

    # --- memslots ------------------------------------------------------------------------

    def address_space(self, as_id):
        return self._as[as_id]

    def memslots(self, as_id=0):
        return list(self._as[as_id])

    def insert_memslot(self, slot):
        self._as[slot.as_id].insert(slot)

    def delete_memslot(self, slot):
        self._as[slot.as_id].remove(slot)
        with self.mmu_lock:
            self.zap_gfn_range(slot.base_gfn, slot.end_gfn)
        _memslot.gmem_unbind(slot)

    def lookup_memslot(self, gfn, as_id=0):
        slots = self._as[as_id]
        return slots.lookup(gfn)

    def gmem_invalidate(self, slot, start, end, kind=None):
        """guest_memfd pages [start, end) bound to ``slot`` are going away: zap stage-2.

        ``kind`` filters which stage-2 mappings go: ``"shared"``, ``"private"`` or
        None for both (the kernel's KVM_FILTER_SHARED / KVM_FILTER_PRIVATE).
        """
        lo = max(start, slot.gmem_pgoff)
        hi = min(end, slot.gmem_pgoff + slot.npages)
        if lo < hi:
            base = slot.base_gfn - slot.gmem_pgoff
            self.zap_gfn_range(base + lo, base + hi, kind)

    def zap_gfn_range(self, start, end, kind=None):
        """kvm_unmap_gfn_range: drop stage-2 mappings of gfns [start, end).

        ``kind``: "shared", "private" or None for both (KVM_FILTER_SHARED/PRIVATE).
        Returns the removed (gfn, pfn, npages, private, writable) runs.
        """
        return self.stage2.zap(start, end, kind)

    def pre_fault(self, slot, gfn, npages):
        """kvm_arch_vcpu_pre_fault_memory over gfns [gfn, gfn + npages) of ``slot``.

        Maps the pages without a guest access: private ones (per the attribute) from
        guest_memfd, shared ones from guest_memfd for a gmem-only slot, else from the
        slot's userspace memory (which must be readable). Returns the number of pages
        mapped (npages); raises kmock.kvm.stage2.MemoryFault (an OSError with the
        errno KVM returns, ``done`` = pages mapped before it) where KVM's fault fails.
        """
        end = gfn + npages
        _stage2.faultin(self, gfn << PAGE_SHIFT, end << PAGE_SHIFT, None, False, want_data=False)
        return npages

    def stage2_lookup(self, gfn):
        """(pfn, private, writable) of gfn's stage-2 mapping, or None."""
        return self.stage2.lookup(gfn)

    # --- memory attributes -----------------------------------------------------------------

    def gfn_is_private(self, gfn, slot=None):
        """kvm_mem_is_private(): is ``gfn`` private memory?

        With in-place conversion (profiles gmem-convert-rfc-v2 and gmem-attributes-v8)
        a gfn backed by a guest_memfd that supports shared memory follows the
        guest_memfd's own attribute; everything else follows the VM attribute array.
        """
        attrs, shift = self._attributes_of(gfn, slot)
        return bool(attrs.get(gfn + shift) & K.KVM_MEMORY_ATTRIBUTE_PRIVATE)

    def first_private_gfn(self, start, end):
        """gfn_is_private over gfns [start, end) (all in one memslot, or in none): the
        first private gfn, or None."""
        attrs, shift = self._attributes_of(start)
        for s, _e, v in attrs.ranges(start + shift, end + shift):
            if v & K.KVM_MEMORY_ATTRIBUTE_PRIVATE:
                return s - shift
        return None

    def _attributes_of(self, gfn, slot=None):
        """(RangeMap, shift): where ``gfn``'s attributes live (at index gfn + shift)."""
        if self.kernel.profile.conversion != "none":
            if slot is None:
                slot = self.lookup_memslot(gfn)
            if slot is not None and slot.gmem_file is not None:
                inode = slot.gmem_file.inode
                if inode.in_place:
                    return inode.attrs, slot.gmem_pgoff - slot.base_gfn
        return self.mem_attrs, 0

    def set_memory_attributes(self, start, end, attributes):
        """The VM-level attribute change of gfns [start, end) (kvm_vm_set_mem_attributes).

        Each part bound to a guest_memfd goes through that guest_memfd's invalidation
        sequence (reason "vm_attributes": this VM's stage-2 zaps the old kind, the
        architecture's callbacks run, the attribute is stored); gfns bound to no
        guest_memfd are zapped and stored under this VM's own mmu_invalidate. Vetoes of
        every part are asked first, so a refused change changes nothing.
        """
        slots_lock = self.slots_lock
        slots_lock.acquire()
        try:
            mem_attrs = self.mem_attrs
            if mem_attrs.find_not(start, end, attributes) == -1:
                return  # the whole range already has these attributes
            to_private = bool(attributes & _PRIVATE)
            # (inode, event, store) per part bound to a guest_memfd: the first part, then
            # the others (the usual change has one part: no list is built for it)
            first = None
            more = []
            covered = 0
            for slots in self._as:
                if not slots.by_id:
                    continue  # (an address space without memslots, e.g. x86 SMM's)
                for slot in slots.overlapping(start, end):
                    f = slot.gmem_file
                    if f is None:
                        continue
                    base = slot.base_gfn
                    lo = start if start > base else base
                    hi = base + slot.npages
                    if end < hi:
                        hi = end
                    off = slot.gmem_pgoff - base
                    inode = f.inode
                    # (the store is a partial of the C method: no Python call; of the
                    # class's, as the compiled module cannot take a typed map's bound one)
                    part = (inode, InvalidateEvent(inode, lo + off, hi + off, "vm_attributes",
                                                   to_private, self),
                            partial(RangeMap.set, mem_attrs, lo, hi, attributes))
                    if first is None:
                        first = part
                    else:
                        more.append(part)
                    if slot.as_id == 0:
                        covered += hi - lo
            if first is not None:
                if not more:
                    # one part: its invalidation asks the vetoes first
                    inode, ev, store = first
                    inode.invalidate(ev, store)
                else:
                    more.insert(0, first)
                    for inode, ev, _ in more:
                        inode.veto_check(ev)
                    for inode, ev, store in more:
                        # (positional: store, check_refcount, clamp_error_index, vetoed)
                        inode.invalidate(ev, store, False, True, True)
            if covered == end - start:
                return  # every gfn was a guest_memfd part: zapped and stored above
            # what no guest_memfd holds: x86 kvm_arch_pre_set_memory_attributes zaps the
            # old kind, then the attribute array is stored
            self.mmu_invalidate_begin()
            try:
                with self.mmu_lock:
                    self.zap_gfn_range(start, end, "shared" if to_private else "private")
                    mem_attrs.set(start, end, attributes)
            finally:
                self.mmu_invalidate_end()
        finally:
            slots_lock.release()

    def supported_mem_attributes(self):
        """kvm_supported_mem_attributes(): PRIVATE for private-memory VMs, except when
        guest_memfd owns the attributes (v8 with kvm.gmem_in_place_conversion=1)."""
        p = self.kernel.profile
        if p.conversion == "attributes-v8" and p.gmem_in_place_conversion:
            return 0
        if p.memory_attributes and self.vmtype.has_private_mem:
            return K.KVM_MEMORY_ATTRIBUTE_PRIVATE
        return 0

    def snapshot(self):
        snap = {
            "type": self.type,
            "vcpus": sorted(self.vcpus),
            "memslots": [
                {"as_id": s.as_id, "slot": s.id, "gpa": s.base_gfn << PAGE_SHIFT,
                 "size": s.npages << PAGE_SHIFT, "flags": s.flags,
                 "guest_memfd_offset": s.gmem_pgoff << PAGE_SHIFT if s.gmem_file else None}
                for slots in self._as for s in slots
            ],
            "private_gfns": self.mem_attrs.count(K.KVM_MEMORY_ATTRIBUTE_PRIVATE),
        }
        stage2 = getattr(self, "stage2", None)
        if stage2 is not None and hasattr(stage2, "counts"):
            snap["stage2"] = stage2.counts()
        return snap

    def __repr__(self):
        return f"<VM {self.vmtype.name} pid {self.owner_pid}>"


class _GuestAccess:
    """``with vm.guest_access():`` wait for invalidations in progress, hold mmu_lock.
    (A cdef class when compiled, vm.pxd: its lock calls are C calls.)"""

    def __init__(self, cond, vm):
        self.cond = cond
        self.vm = vm

    def __enter__(self):
        cond = self.cond
        cond.acquire()
        vm = self.vm
        while vm.mmu_invalidate_in_progress:
            vm.mmu_waiters += 1
            try:
                cond.wait(0.05)
            finally:
                vm.mmu_waiters -= 1
        return vm

    def __exit__(self, *exc):
        self.cond.release()
        return False


class VmFile(File):
    file_type = "vm"
    has_llseek = True  # kvm_vm_fops.llseek = noop_llseek

    def __init__(self, kernel, vm):
        super().__init__(kernel, vm.vmtype)
        self.vm = vm
        vm.get()

    def release(self):
        """kvm_vm_release: the irqfds go with the VM fd (kvm_irqfd_release), then the
        reference on the VM."""
        eventfds.irqfd_release(self.vm)
        self.vm.put()

    def unknown_ioctl(self, request, arg):
        self.vm.check_caller()
        raise oserror(self.vm.vmtype.unknown_vm_ioctl_errno)  # kvm_arch_vm_ioctl default


def _check_vm(f):
    f.vm.check_caller()
    return f.vm


# --- VM ioctl handlers: handler(file, arg) -> int ------------------------------------------


def vm_check_extension(f, arg):
    vm = f.vm
    vm.check_caller()
    if type(arg) is int:
        return vm.caps.get(arg, 0)
    return 0  # a buffer argument is a pointer value: no capability has that number


def vm_create_vcpu(f, arg):
    vm = _check_vm(f)
    from .vcpu import create_vcpu

    return create_vcpu(vm, int_arg(arg))


_CREATE_GMEM = K.kvm_create_guest_memfd


def vm_create_guest_memfd(f, arg):
    vm = f.vm
    vm.check_caller()
    if type(arg) is _CREATE_GMEM:  # the struct itself: read it in place (no copy)
        size, flags = arg.size, arg.flags
    else:
        args = copy_from_user(arg, _CREATE_GMEM)
        size, flags = args.size, args.flags
    table = vm.kernel.fdtable
    return table.install(create_guest_memfd(vm, size, flags))


def vm_set_user_memory_region(f, arg):
    vm = _check_vm(f)
    return _memslot.set_memory_region(vm, copy_from_user(arg, K.kvm_userspace_memory_region), v2=False)


def vm_set_user_memory_region2(f, arg):
    vm = _check_vm(f)
    return _memslot.set_memory_region(vm, copy_from_user(arg, K.kvm_userspace_memory_region2), v2=True)


#: the capabilities kvm_vm_ioctl_enable_cap_generic stores (kvm->manual_dirty_log_protect,
#: kvm->max_halt_poll_ns): capability -> args[0], per VM, for architectures other than x86
_GENERIC_ENABLED = Attached(lambda vm: {})


def enabled_caps(vm):
    """capability -> args[0] of what KVM_ENABLE_CAP enabled on ``vm`` through
    kvm_vm_ioctl_enable_cap_generic (MANUAL_DIRTY_LOG_PROTECT2, HALT_POLL). On x86 the
    dict is kmock.kvm.x86_vm's ``enabled`` (which also holds the x86 bookkeeping caps)."""
    if vm.kernel.profile.arch == "x86":
        return x86_vm.state(vm).enabled
    return _GENERIC_ENABLED(vm)


def enable_cap_generic(vm, cap):
    """kvm_vm_ioctl_enable_cap_generic (virt/kvm/kvm_main.c, Linux 6.18), for every
    architecture; None when ``cap`` is not one of its capabilities (the architecture's
    kvm_vm_ioctl_enable_cap decides then).

    * MANUAL_DIRTY_LOG_PROTECT2 (CONFIG_KVM_GENERIC_DIRTYLOG_READ_PROTECT: x86 and arm64):
      flags, or bits beyond MANUAL_PROTECT_ENABLE (INITIALLY_SET only with it) -> EINVAL;
    * HALT_POLL: flags, or args[0] beyond an unsigned int -> EINVAL;
    * DIRTY_LOG_RING(_ACQ_REL): kmock.kvm.dirty_ring.enable_cap (no flags check);
    * DIRTY_LOG_RING_WITH_BITMAP: kmock.kvm.dirty_ring.enable_with_bitmap.
    """
    c = cap.cap
    if c == K.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2:
        a0 = cap.args[0]
        allowed = (dirty_log.KVM_DIRTY_LOG_MANUAL_CAPS
                   if a0 & K.KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE
                   else K.KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE)
        if cap.flags or a0 & ~allowed:
            raise oserror(errno.EINVAL)
        enabled_caps(vm)[c] = a0
        return 0
    if c == K.KVM_CAP_HALT_POLL:
        if cap.flags or cap.args[0] > 0xFFFFFFFF:
            raise oserror(errno.EINVAL)
        enabled_caps(vm)[c] = cap.args[0]
        return 0
    if c in dirty_ring.CAPS:
        return dirty_ring.enable_cap(vm, cap)
    if c == K.KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP:
        return dirty_ring.enable_with_bitmap(vm, cap)
    return None


def vm_enable_cap(f, arg):
    """KVM_ENABLE_CAP: :func:`enable_cap_generic`, then kvm_vm_ioctl_enable_cap (x86):
    KVM_CAP_EXIT_HYPERCALL here, the other x86 capabilities in kmock.kvm.x86_vm. An
    architecture plugin's own KVM_ENABLE_CAP calls :func:`enable_cap_generic` first."""
    vm = _check_vm(f)
    cap = copy_from_user(arg, K.kvm_enable_cap)
    r = enable_cap_generic(vm, cap)
    if r is not None:
        return r
    if cap.flags:
        raise oserror(errno.EINVAL)
    if cap.cap == K.KVM_CAP_EXIT_HYPERCALL:
        if cap.args[0] & ~K.KVM_EXIT_HYPERCALL_VALID_MASK:
            raise oserror(errno.EINVAL)
        vm.hypercall_exit_enabled = cap.args[0]
        return 0
    if vm.kernel.profile.arch == "x86":
        return x86_vm.vm_enable_cap(vm, cap)
    raise oserror(errno.EINVAL)


_MEM_ATTRS = K.kvm_memory_attributes


def vm_set_memory_attributes(f, arg):
    """kvm_vm_ioctl_set_mem_attributes: flags, attributes, size/overflow, alignment."""
    vm = f.vm
    # (vm.check_caller(), inlined: this runs on every conversion)
    if vm.owner_pid != current_pid() or vm.dead:
        raise oserror(EIO)
    if type(arg) is not _MEM_ATTRS:  # the struct itself is read in place (no copy)
        arg = copy_from_user(arg, _MEM_ATTRS)
    # each field is read once: the checks and the change use the same values
    flags, attributes, address, size = arg.flags, arg.attributes, arg.address, arg.size
    if flags:
        raise oserror(errno.EINVAL)
    if attributes and attributes & ~vm.mem_attrs_supported:
        raise oserror(errno.EINVAL)
    if size == 0 or address + size > U64:
        raise oserror(errno.EINVAL)
    if address & (PAGE_SIZE - 1) or size & (PAGE_SIZE - 1):
        raise oserror(errno.EINVAL)
    vm.set_memory_attributes(address >> PAGE_SHIFT, (address + size) >> PAGE_SHIFT, attributes)
    return 0


def vm_reset_dirty_rings(f, arg):
    """KVM_RESET_DIRTY_RINGS (kvm_vm_ioctl_reset_dirty_pages, kmock.kvm.dirty_ring): EINVAL
    without a ring, else the number of entries reset; the argument is not read."""
    f.vm.check_caller()
    return dirty_ring.reset_rings(f.vm)


def vm_ioctls(kernel):
    table = {
        K.KVM_CHECK_EXTENSION: vm_check_extension,
        K.KVM_CREATE_VCPU: vm_create_vcpu,
        K.KVM_CREATE_GUEST_MEMFD: vm_create_guest_memfd,
        K.KVM_SET_USER_MEMORY_REGION: vm_set_user_memory_region,
        K.KVM_SET_USER_MEMORY_REGION2: vm_set_user_memory_region2,
        K.KVM_ENABLE_CAP: vm_enable_cap,
        K.KVM_GET_STATS_FD: vm_get_stats_fd,
        K.KVM_RESET_DIRTY_RINGS: vm_reset_dirty_rings,
        # generic kvm_vm_ioctl: the dirty log (KVM_CLEAR_DIRTY_LOG under
        # CONFIG_KVM_GENERIC_DIRTYLOG_READ_PROTECT: x86 and arm64)
        K.KVM_GET_DIRTY_LOG: dirty_log.vm_get_dirty_log,
        K.KVM_CLEAR_DIRTY_LOG: dirty_log.vm_clear_dirty_log,
    }
    table.update(coalesced_mmio.vm_ioctls())
    # generic kvm_vm_ioctl: KVM_IRQFD, KVM_IOEVENTFD, KVM_SET_GSI_ROUTING
    # (CONFIG_HAVE_KVM_IRQ_ROUTING: x86 and arm64); the architecture's part is
    # kmock.kvm.eventfds.IrqchipModel
    table.update(eventfds.eventfd_vm_ioctls())
    if kernel.profile.memory_attributes:
        table[K.KVM_SET_MEMORY_ATTRIBUTES] = vm_set_memory_attributes
    if kernel.profile.arch == "x86":
        table.update(x86_vm.x86_vm_ioctls(vm_create_vcpu, vm_check_extension))
    return table

