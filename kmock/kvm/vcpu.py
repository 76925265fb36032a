"""vCPUs: KVM_CREATE_VCPU, the mmap-able kvm_run area, and vCPU ioctls.

The kvm_run area is a real memfd of KVM_GET_VCPU_MMAP_SIZE bytes: page 0 is
struct kvm_run (reference §3 layout), page 1 the PIO data page, page 2 the
coalesced-MMIO ring. A VMM maps it through Kernel.mmap(vcpu_fd, ...) and reads it
with ctypes at the real offsets; kmock writes exits into the same memory.

What the vCPU runs is ``vcpu.guest``, a kmock.kvm.guest.GuestScript that tests fill;
KVM_RUN executes its pending actions and exits as KVM does (reference §4.10).
"""

import ctypes
import errno
import os
import threading

from .. import _libc
from .._libc import current_pid
from ..errors import oserror
from ..file import File, check_mmap_args
from ..kernel_util import copy_from_user, copy_to_user
from ..mapping import FileMapping
from ..uapi import kvm as K
from . import guest as _guest  # (a module import: guest's declarations cimport Vcpu)
from . import dirty_ring, x86_vcpu, x86_vm
from .guest_memfd import PAGE_SHIFT, PAGE_SIZE
from .stage2 import MemoryFault
from .stats import VcpuStat, task_pid_nr, vcpu_get_stats_fd

U64 = (1 << 64) - 1
#: kvm_run.immediate_exit as an index of Vcpu.run_u8
_IMMEDIATE_EXIT_U8 = K.kvm_run.immediate_exit.offset


class Vcpu:
    """struct kvm_vcpu. Holds a reference on its VM."""

    def __init__(self, vm, vcpu_id):
        self.vm = vm
        #: vcpu->dirty_ring (kmock.kvm.dirty_ring.DirtyRing) when the VM has a ring size
        self.dirty_ring = None
        self.id = vcpu_id
        kernel = vm.kernel
        self.mmap_size = kernel.profile.vcpu_mmap_size
        self.run_fd = os.memfd_create("kmock-kvm-run", os.MFD_CLOEXEC)
        os.ftruncate(self.run_fd, self.mmap_size)
        self.run_addr = _libc.mmap(None, self.mmap_size, _libc.PROT_READ | _libc.PROT_WRITE,
                                   _libc.MAP_SHARED, self.run_fd, 0)
        #: the kvm_run struct, living in the shared page
        self.run = K.kvm_run.from_address(self.run_addr)
        #: views of run->hypercall and its args[] in the same page, made once: a ctypes
        #: union member is a new object at each access, and every hypercall exit and
        #: completion writes or reads them
        self.run_hypercall = self.run.hypercall
        self.run_hypercall_args = self.run_hypercall.args
        #: the same page as bytes, 32-bit and 64-bit words (memoryviews, typed when
        #: compiled): a field read or written by index (KVM_RUN's immediate_exit,
        #: kmock.kvm.guest.hypercall_exit) is one load or store
        raw = memoryview((ctypes.c_ubyte * ctypes.sizeof(K.kvm_run)).from_address(
            self.run_addr)).cast("B")
        self.run_u8 = raw
        self.run_u32 = raw.cast("I")
        self.run_u64 = raw.cast("Q")
        #: the guest code this vCPU runs (filled by tests)
        self.guest = _guest.GuestScript(vm.vmtype.guest_actions,
                                        history=vm.kernel.profile.guest_history)
        #: the action whose exit awaits userspace (vcpu->arch.complete_userspace_io)
        self.pending = None
        #: vcpu->mutex: one KVM_RUN (or vCPU ioctl) at a time
        self.mutex = threading.RLock()
        #: the vCPU's wait queue (kvm_vcpu_block) and the kicks that stand for a signal
        #: to its thread (kmock.kvm.guest: a halted vCPU)
        self.wake = threading.Condition(threading.Lock())
        self.signal_pending = False
        #: the vCPU halted in the kernel and nothing woke it yet (kmock.kvm.guest)
        self.halted = False
        #: the architecture stopped the vCPU (arm64 KVM_MP_STATE_STOPPED: PSCI CPU_OFF,
        #: SYSTEM_OFF, the POWER_OFF feature; x86 waiting for INIT/SIPI): KVM_RUN sleeps
        #: until it is started again or a signal comes (set_stopped)
        self.stopped = False
        #: whether a guest HLT halts in the kernel (kmock.kvm.guest.halts_in_kernel; None:
        #: not asked yet)
        self.halts_in_kernel = None
        self.arch = None  # owned by the architecture plugin
        #: vcpu->arch.mmu->root is valid (kvm_mmu_load succeeded once)
        self.mmu_root_loaded = False
        #: KVM_RUN entered the guest once (x86 last_vmentry_cpu != -1: kvm_vcpu_has_run),
        #: whether or not the guest then exited to userspace
        self.entered = False
        self.refs = 0
        #: vcpu->stats_id and the counters kmock tracks (kmock.kvm.stats)
        self.stats_id = f"kvm-{task_pid_nr()}/vcpu-{vcpu_id}"
        self.stat = VcpuStat(kernel.profile.arch)
        vm.get()

    def system_event_exit(self, event_type, *data):
        """Write a KVM_EXIT_SYSTEM_EVENT of ``event_type`` with up to 16 data words."""
        run = self.run
        run.exit_reason = K.KVM_EXIT_SYSTEM_EVENT
        se = run.system_event
        se.type = event_type
        se.ndata = len(data)
        for i, d in enumerate(data):
            se.data[i] = d & U64

    def kick(self):
        """A signal to the vCPU's thread: a KVM_RUN halted in the kernel fails with EINTR
        and exit_reason KVM_EXIT_INTR; if none runs, the next KVM_RUN does, before the
        guest runs (the signal stays pending until then)."""
        with self.wake:
            self.signal_pending = True
            self.wake.notify_all()

    def set_stopped(self, stopped):
        """Stop or start the vCPU (arm64 kvm_arm_vcpu_power_off / CPU_ON's RUNNABLE); a
        KVM_RUN sleeping on it wakes up to see the change."""
        with self.wake:
            self.stopped = stopped
            self.wake.notify_all()

    def release(self):
        # kmock's calls hold no file reference: a KVM_RUN halted in another thread is
        # kicked out (EINTR) rather than kept alive past the close
        self.kick()
        with self.mutex:  # a KVM_RUN still running in another thread finishes first
            self.run = self.run_hypercall = self.run_hypercall_args = None
            self.run_u8 = self.run_u32 = self.run_u64 = None
            if self.dirty_ring is not None:
                self.dirty_ring.free()
            _libc.munmap(self.run_addr, self.mmap_size)
            os.close(self.run_fd)
        self.vm.put()


class VcpuFile(File):
    file_type = "vcpu"
    has_llseek = True  # kvm_vcpu_fops.llseek = noop_llseek

    def __init__(self, kernel, vcpu):
        super().__init__(kernel, vcpu.vm.vmtype)
        self.vcpu = vcpu
        self.vm = vcpu.vm

    def release(self):
        self.vcpu.release()

    def unknown_ioctl(self, request, arg):
        _check(self)
        raise oserror(errno.EINVAL)  # kvm_arch_vcpu_ioctl default (x86)

    def mmap(self, length, prot, flags, offset):
        check_mmap_args(length, prot, flags, offset)
        dirty_ring.check_mmap(self.vcpu, length, prot, flags, offset)  # kvm_vcpu_mmap
        return VcpuMapping(self, length, prot, offset)


class VcpuMapping(FileMapping):
    """A mapping of the kvm_run area and the dirty ring (page 64); other pages give SIGBUS."""

    def __init__(self, file, length, prot, offset):
        vcpu = file.vcpu
        self.limit = vcpu.mmap_size
        super().__init__(file, length, prot, offset, vcpu.run_fd, offset)

    def fault_at(self, start, stop):
        if self.offset + stop > self.limit:
            return dirty_ring.fault_at(self.file.vcpu, self.offset, start, stop)
        return None


def _check(f):
    f.vm.check_caller()
    return f.vcpu


def mmu_reload(vcpu):
    """kvm_mmu_reload (arch/x86/kvm/mmu.h): load the vCPU's MMU root if it has none.

    vCPU creation does not load the MMU (kvm_arch_vcpu_create -> kvm_mmu_create only
    allocates); KVM_RUN (vcpu_enter_guest) and KVM_PRE_FAULT_MEMORY do, each before
    anything paging-specific. The TDP MMU allocates its root outside any pool. The
    shadow MMU (no TDP, or kvm.tdp_mmu=0: profile ``tdp_mmu`` False) takes it from the
    VM's page pool: mmu_alloc_direct_roots -> make_mmu_pages_available() is ENOSPC
    while kvm_mmu_available_pages() is 0, and n_max_mmu_pages stays 0 until
    kvm_arch_commit_memory_region() sizes the pool (at least 64 pages,
    kvm_mmu_calculate_default_mmu_pages) on the first memslot. A loaded root keeps
    the pool non-empty for good.

    KVM_SET_NR_MMU_PAGES sizes the pool as well (kvm_mmu_change_mmu_pages), memslot or
    not (conformance scenario x86_vm_nr_mmu_pages). Modelled from the memslots the VM has
    now and that request; a VM whose memslots were all deleted before any vCPU loaded
    its MMU is not. Internal memslots size the pool too: on VMX, KVM_SET_TSS_ADDR, the
    EPT identity map and the APIC-access page that vCPU creation allocates with an
    in-kernel LAPIC; a kvm_pvm (PVM) 6.18 host creates none (probed: KVM_CREATE_IRQCHIP,
    KVM_SET_TSS_ADDR or KVM_SET_IDENTITY_MAP_ADDR before KVM_CREATE_VCPU leave the
    pre-fault at ENOSPC), and the mock creates none either.
    """
    if vcpu.mmu_root_loaded:
        return
    vm = vcpu.vm
    profile = vm.kernel.profile
    if not profile.tdp_mmu and not any(
            vm.memslots(as_id) for as_id in range(profile.nr_memslot_as_ids)) and not (
            profile.arch == "x86" and x86_vm.state(vm).n_requested_mmu_pages):
        raise oserror(errno.ENOSPC)
    vcpu.mmu_root_loaded = True


def create_vcpu(vm, vcpu_id):
    """kvm_vm_ioctl_create_vcpu."""
    profile = vm.kernel.profile
    if vcpu_id >= profile.max_vcpu_ids:
        raise oserror(errno.EINVAL)
    if len(vm.vcpus) >= vm.vmtype.max_vcpus(vm):  # kvm->created_vcpus >= kvm->max_vcpus
        raise oserror(errno.EINVAL)
    if vcpu_id in vm.vcpus:
        raise oserror(errno.EEXIST)
    vm.kernel.faults.check("kvm.vcpu.alloc", errno.ENOMEM)  # kmem_cache_zalloc(kvm_vcpu_cache)
    vcpu = Vcpu(vm, vcpu_id)
    try:
        vm.vmtype.vcpu_create(vcpu)  # kvm_arch_vcpu_create
        dirty_ring.vcpu_create(vcpu)  # kvm_dirty_ring_alloc
    except BaseException:
        vcpu.release()
        raise
    vm.vcpus[vcpu_id] = vcpu
    return vm.kernel.fdtable.install(VcpuFile(vm.kernel, vcpu))


# --- vCPU ioctl handlers -----------------------------------------------------------------


def vcpu_run(f, arg):
    """kvm_arch_vcpu_ioctl_run: complete the last exit, honour immediate_exit, run the guest.

    Order: EIO (another process, dead VM); the pending userspace completion (the
    hypercall's ret, the IO or MMIO read data), which KVM performs before looking at
    immediate_exit so that a VMM can complete an exit without re-entering the guest;
    immediate_exit -> EINTR with exit_reason left as it was (conformance scenario
    fact_vcpu_ioctls: the real kernel does not write it); then the guest script runs until an
    exit. A memory fault exit raises OSError(EFAULT / EHWPOISON ...). A return to userspace
    is counted in the vCPU's statistics (kmock.kvm.stats).

    The run returns the error of an exit that fails KVM_RUN (kmock.kvm.guest.run): it is
    raised here, once.
    """
    vcpu = f.vcpu
    r = _vcpu_run(f, vcpu, arg)
    if isinstance(r, OSError):
        raise r
    vcpu.stat.count_exit(vcpu.run)
    return r


def _vcpu_run(f, vcpu, arg):
    """vcpu_run's work: 0, or the OSError a guest exit fails KVM_RUN with (returned);
    the errors of its own checks are raised."""
    vm = f.vm
    # (vm.check_caller(), inlined: KVM_RUN is the hottest ioctl)
    if vm.owner_pid != current_pid() or vm.dead:
        raise oserror(errno.EIO)
    mutex = vcpu.mutex
    mutex.acquire()
    try:
        run = vcpu.run
        if run is None:
            # the fd was closed by another thread while this call waited for the
            # vCPU (kmock's calls hold no file reference, as fdget does): as if the
            # call had come after the close
            raise oserror(errno.EBADF)
        if vcpu.stopped and vm.kernel.profile.arch == "x86":
            # an x86 vCPU waiting for INIT/SIPI (KVM_SET_MP_STATE UNINITIALIZED ...): the
            # first thing kvm_arch_vcpu_ioctl_run looks at; immediate_exit -> EINTR with
            # exit_reason untouched, else it blocks until a signal (EINTR, KVM_EXIT_INTR)
            if vcpu.run_u8[_IMMEDIATE_EXIT_U8]:
                raise oserror(errno.EINTR)
            x86_vcpu.accept_events(vcpu)  # a pending SIPI starts it (vcpu_block)
            _guest.sleep_stopped(vcpu)
        pending = vcpu.pending
        if pending is not None:
            vcpu.pending = None
            if pending.complete(vcpu) is _guest.EXIT:
                vcpu.pending = pending  # complete_userspace_io wrote the next exit (cui 0)
                return 0
            if pending.done:
                script = vcpu.guest
                pc = script.pc  # (script.current is pending, inlined)
                actions = script.actions
                if pc < len(actions) and actions[pc] is pending:
                    script.pc = pc + 1
        if vcpu.run_u8[_IMMEDIATE_EXIT_U8]:  # (run.immediate_exit)
            raise oserror(errno.EINTR)
        ring = vcpu.dirty_ring
        if ring is not None and dirty_ring.full_exit(vcpu, ring):
            return 0  # vcpu_enter_guest's requests: KVM_EXIT_DIRTY_RING_FULL
        guest_run = _guest.run if ring is None else dirty_ring.guest_run
        if not vcpu.mmu_root_loaded:
            mmu_reload(vcpu)  # vcpu_enter_guest, before the guest runs
        vmtype = vm.vmtype
        if vmtype.has_run_hooks:
            r = vmtype.run_enter(vcpu)
            if r is not None:
                return r  # the VM type wrote an exit (or raised) before the guest ran
            vcpu.entered = True
            if vmtype.has_run_exit:
                try:
                    r = guest_run(vcpu)
                except OSError as e:
                    vmtype.run_exit(vcpu, e)
                    raise
                vmtype.run_exit(vcpu, r)
            else:
                r = guest_run(vcpu)
            if vm.dead and not isinstance(r, OSError):
                # the VM type killed the VM: EIO (check_caller's other half, the
                # caller's process, was checked on entry and cannot change in this call)
                raise oserror(errno.EIO)
            return r
        vcpu.entered = True
        return guest_run(vcpu)
    finally:
        mutex.release()


def vcpu_pre_fault_memory(f, arg):
    """kvm_vcpu_pre_fault_memory: checks, then map the range; the leftover is copied back.

    Order (virt/kvm/kvm_main.c, then kvm_arch_vcpu_pre_fault_memory in
    arch/x86/kvm/mmu/mmu.c): flags, alignment and wrap (EINVAL); pre_fault_allowed
    (EOPNOTSUPP); kvm_mmu_reload (ENOSPC from the shadow MMU's empty page pool,
    :func:`mmu_reload`); kvm_tdp_map_page's TDP check (EOPNOTSUPP on shadow paging);
    then the fault itself (ENOENT without a memslot).
    """
    vcpu = _check(f)
    r = copy_from_user(arg, K.kvm_pre_fault_memory)
    if r.flags:
        raise oserror(errno.EINVAL)
    if r.gpa & (PAGE_SIZE - 1) or r.size & (PAGE_SIZE - 1) or r.gpa + r.size <= r.gpa or \
            r.gpa + r.size > U64:
        raise oserror(errno.EINVAL)
    vm = vcpu.vm
    full = r.size
    err = 0
    if not vm.vmtype.pre_fault_allowed(vm):
        err = errno.EOPNOTSUPP
    else:
        try:
            mmu_reload(vcpu)
        except OSError as e:
            err = e.errno
        if not err and not vm.kernel.profile.tdp:
            err = errno.EOPNOTSUPP
    if not err:
        while r.size:
            gfn = r.gpa >> PAGE_SHIFT
            slot = vm.lookup_memslot(gfn)
            if slot is None:
                err = errno.ENOENT  # no memslot: RET_PF_EMULATE
                break
            n = min(r.size >> PAGE_SHIFT, slot.end_gfn - gfn)
            try:
                with vm.guest_access():
                    done = vm.pre_fault(slot, gfn, n)
            except MemoryFault as mf:
                # kvm_mmu_prepare_memory_fault_exit writes kvm_run even here
                mf.fill(vcpu.run)
                done, err = mf.done, mf.errno
            r.gpa += done << PAGE_SHIFT
            r.size -= done << PAGE_SHIFT
            if err:
                break
    copy_to_user(arg, r)
    if err and r.size == full:
        raise oserror(err)
    return 0


def vcpu_enable_cap(f, arg):
    _check(f)
    copy_from_user(arg, K.kvm_enable_cap)
    raise oserror(errno.EINVAL)


def vcpu_ioctls(kernel):
    table = {
        K.KVM_RUN: vcpu_run,
        K.KVM_PRE_FAULT_MEMORY: vcpu_pre_fault_memory,
        K.KVM_ENABLE_CAP: vcpu_enable_cap,
        K.KVM_GET_STATS_FD: vcpu_get_stats_fd,
    }
    if kernel.profile.arch == "x86":
        # register and state ioctls (kvm/x86_vcpu.py), each under vcpu->mutex as
        # kvm_vcpu_ioctl takes it: a SET waits for a KVM_RUN in another thread
        table.update({req: under_vcpu_mutex(h) for req, h in x86_vcpu.vcpu_ioctls().items()})
    return table


def under_vcpu_mutex(handler):
    """``handler(file, arg)`` run holding the vCPU's mutex."""
    def locked(f, arg):
        with f.vcpu.mutex:
            return handler(f, arg)

    locked.__name__ = getattr(handler, "__name__", "vcpu_ioctl")
    locked.__doc__ = handler.__doc__
    return locked
