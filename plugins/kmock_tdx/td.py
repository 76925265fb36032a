"""The state of one TD (``vm.arch``) and of its vCPUs (``vcpu.arch``), and how KVM keeps the
Secure-EPT in step with its own mirror of it (the core's stage-2).

KVM's TDP MMU keeps a "mirror" SPTE for every private GPA it maps; installing one runs
TDH.MEM.SEPT.ADD for missing S-EPT pages and TDH.MEM.PAGE.AUG (after FINALIZE), zapping one
runs TDH.MEM.RANGE.BLOCK, TDH.MEM.TRACK (+ kick of every vCPU), TDH.MEM.PAGE.REMOVE
(arch/x86/kvm/vmx/tdx.c: tdx_sept_set_private_spte / tdx_sept_remove_private_spte, 6.16-6.18).
Here the core's stage-2 is that mirror: ``sept_map`` runs on its private maps and
``sept_remove`` on its private zaps, once per run, never per page, so every S-EPT leaf has
its mirror entry, as in KVM.

A guest access (not ACCEPT) to a page that is not accepted yet is a pending EPT violation:
with SEPT_VE_DISABLE, KVM warns "Guest access before accepting", calls kvm_vm_dead() and
KVM_RUN returns -EIO (tdx_is_sept_violation_unexpected_pending). ``guest_access`` checks
each access once KVM resolved it (a FREE page has just been AUGed: PENDING).

Locks: S-EPT changes happen under the VM's mmu_lock (the core calls the stage-2 hooks with
it held) and under ``Td.lock``; a conversion runs under the guest_memfd invalidate lock.
"""

import errno
import hashlib

from kmock.locks import RLock
from kmock.mm import RangeMap
from kmock.uapi import tdx as T

from .sept import LEVEL_PAGES, OK, S, Sept
from .status import TdxStatus

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT

# TD state (kvm_tdx->state, which follows the module's op_state, reference §1.3)
UNINITIALIZED, INITIALIZED, RUNNABLE = "UNINITIALIZED", "INITIALIZED", "RUNNABLE"

#: the host call that removed an accepted page, recorded per gfn (Td.pulled) to name it
#: in the violation when the guest touches the page again
PULLED_BY = {
    1: "fallocate(PUNCH_HOLE) on the guest_memfd",
    2: "the guest_memfd conversion to shared",
    3: "KVM_SET_MEMORY_ATTRIBUTES clearing PRIVATE",
    4: "the close (release) of the guest_memfd",
    5: "a memory failure of the page",
    6: "the deletion of the memslot",
}
_GUEST_ACCESSIBLE = (int(S.MAPPED), int(S.BLOCKEDW))
_UNREFUSABLE = ("release", "memory_failure")
_ACCEPTED = (int(S.MAPPED), int(S.BLOCKED), int(S.BLOCKEDW))
_REASON_CODE = {"punch_hole": 1, "convert_shared": 2, "vm_attributes": 3, "release": 4,
                "memory_failure": 5, "memslot": 6}


#: SEAMCALL leaf -> (kernel.faults point, the errno KVM returns when it fails), tdx.c 6.18:
#: TDH.MNG.CREATE  __tdx_td_init: TDX_RND_NO_ENTROPY -EAGAIN, any other status WARN, -EIO
#: TDH.MNG.INIT    __tdx_td_init: TDX_OPERAND_INVALID -EINVAL (hw_error set), else -EIO
#: TDH.MEM.PAGE.ADD tdx_mem_page_add via tdx_gmem_post_populate: busy -EBUSY, else
#:                  KVM_BUG_ON -EIO (the premapped SPTE stays before the 6.19 cleanups)
#: TDH.MR.FINALIZE tdx_td_finalize: TDX_OPERAND_BUSY -EBUSY, else KVM_BUG_ON -EIO
#: TDH.MEM.PAGE.AUG / SEPT.ADD / RANGE.BLOCK / TRACK / PAGE.REMOVE / PAGE.DEMOTE:
#:                  tdx_mem_page_aug, tdx_sept_link_private_spt, tdx_sept_zap_private_spte,
#:                  tdx_track, tdx_sept_drop_private_spte (the huge-page series for DEMOTE):
#:                  an error that is not busy (busy is retried inside KVM) is KVM_BUG_ON:
#:                  the VM is bugged, the faulting KVM_RUN and every later ioctl fail -EIO
FAILURE_POINTS = {
    "TDH.MNG.CREATE": ("tdx.seamcall.mng_create", errno.EIO),
    "TDH.MNG.INIT": ("tdx.seamcall.mng_init", errno.EIO),
    "TDH.MEM.PAGE.ADD": ("tdx.seamcall.mem_page_add", errno.EIO),
    "TDH.MR.FINALIZE": ("tdx.seamcall.mr_finalize", errno.EBUSY),
    "TDH.MEM.PAGE.AUG": ("tdx.seamcall.mem_page_aug", errno.EIO),
    "TDH.MEM.RANGE.BLOCK": ("tdx.seamcall.mem_range_block", errno.EIO),
    "TDH.MEM.PAGE.REMOVE": ("tdx.seamcall.mem_page_remove", errno.EIO),
    "TDH.MEM.PAGE.DEMOTE": ("tdx.seamcall.mem_page_demote", errno.EIO),
    "TDH.MEM.SEPT.ADD": ("tdx.seamcall.mem_sept_add", errno.EIO),
    "TDH.MEM.TRACK": ("tdx.seamcall.mem_track", errno.EIO),
}


def status_for(leaf, err):
    """The status a failing SEAMCALL returns so that KVM answers ``err``: EAGAIN is
    TDX_RND_NO_ENTROPY (MNG.CREATE), EBUSY TDX_OPERAND_BUSY, EINVAL TDX_OPERAND_INVALID,
    anything else TDX_OP_STATE_INCORRECT (an error KVM does not expect)."""
    if err == errno.EAGAIN and leaf == "TDH.MNG.CREATE":
        return T.TDX_RND_NO_ENTROPY
    if err == errno.EBUSY:
        return T.TDX_OPERAND_BUSY
    if err == errno.EINVAL:
        return T.TDX_OPERAND_INVALID
    return T.TDX_OP_STATE_INCORRECT


class TdKilled(OSError):
    """KVM_RUN's -EIO after kvm_vm_dead(): raised from the guest's access path."""

    def __init__(self, violation):
        super().__init__(errno.EIO, str(violation))
        self.violation = violation


class TdxVcpu:
    """``vcpu.arch`` of a TD vCPU."""

    def __init__(self):
        #: KVM_TDX_INIT_VCPU done (its ``data`` is the initial RCX)
        self.initialized = False
        self.rcx = 0
        #: an event is pending for the vCPU (kvm_vcpu_has_events): set by KVM_NMI (or a
        #: test), consumed when the guest next runs (the NMI is injected)
        self.pending_event = False
        #: test knob: a signal becomes pending after this many INIT_MEM_REGION pages
        #: (None: no signal); the next page sees it and the call returns -EINTR
        self.signal_after_pages = None
        #: the vCPU's x86 state (kmock.kvm.x86_state), looked up once at the first entry
        #: (kmock_tdx.vcpu_events.inject_pending_nmi)
        self.x86 = None


class Td:
    """``vm.arch`` of a KVM_X86_TDX_VM."""

    def __init__(self, vm):
        kernel = vm.kernel
        self.vm = vm
        self.kernel = kernel
        #: kernel.faults (the failure points: each S-EPT change asks whether they are armed)
        self.faults = kernel.faults
        self.lock = RLock()  # (kmock.locks: threading.RLock's behaviour, cheaper to take)
        self.state = UNINITIALIZED
        #: TDX Connect with PAGE_RELEASE (profile setting tdx_connect)
        self.connect = bool(kernel.setting("tdx_connect"))
        #: guest_memfd refuses to unmap pinned pages up front (setting tdx_connect_precheck)
        self.connect_precheck = bool(kernel.setting("tdx_connect_precheck"))
        #: the 6.19 "TDX post-populate cleanups" behaviour (setting tdx_post_populate_cleanups)
        self.cleanups = bool(kernel.setting("tdx_post_populate_cleanups"))
        #: private pages may be mapped at 2M (the unmerged huge-page series; setting)
        self.huge_pages = bool(kernel.setting("tdx_huge_pages"))
        self.gpaw = None
        self.shared_bit = 0
        self.sept = None
        self.attributes = 0
        self.xfam = 0
        self.cpuid = ()  # (function, index, flags, eax, ebx, ecx, edx) given at INIT_VM
        #: the TD's TSC rate (kHz) fixed by INIT_VM: kvm->arch.default_tsc_khz then,
        #: rounded down to the TDX module's 25 MHz unit
        self.tsc_khz = None
        #: TDX-A: private SPTEs installed whose TDH.MEM.PAGE.ADD did not complete
        self.nr_premapped = 0
        self.premapped = None  # RangeMap gfn -> 1
        #: gfn -> PULLED_BY code for accepted pages the host removed
        self.pulled = None
        #: MRTD: TDH.MR.EXTEND of each measured page (sha384 over gpa and bytes)
        self.mrtd = hashlib.sha384()
        #: test knob: {"TDH.MNG.CREATE" / "TDH.MNG.INIT" / "TDH.MEM.PAGE.ADD" /
        #: "TDH.MR.FINALIZE": status}: the next such SEAMCALL returns that status
        self.seamcall_faults = {}
        #: the host call whose invalidation is running (to name it in violations)
        self.reason = None

    # --- state ---------------------------------------------------------------------------

    @property
    def has_hkid(self):
        return self.state != UNINITIALIZED

    def fault(self, leaf):
        """The injected status of SEAMCALL ``leaf``, or TDX_SUCCESS: the test knob
        ``seamcall_faults`` (consumed) first, then the failure point of kernel.faults
        (FAILURE_POINTS: the errno chosen selects the status that gives it)."""
        st = self.seamcall_faults.pop(leaf, T.TDX_SUCCESS)
        if st or not self.faults.armed:
            return st
        point, err = FAILURE_POINTS[leaf]
        e = self.faults.should_fail(point, err)
        return status_for(leaf, e) if e else T.TDX_SUCCESS

    def init_sept(self, gpaw):
        self.gpaw = gpaw
        self.shared_bit = 1 << (gpaw - 1)
        self.sept = Sept.for_gpaw(gpaw, connect=self.connect)
        n = self.sept.npages
        self.premapped = RangeMap(n)
        self.pulled = RangeMap(n)

    def finalize(self):
        self.state = RUNNABLE
        self.sept.runnable = True

    # --- consequences ------------------------------------------------------------------------

    def kill(self, kind, explanation, *, vcpu=None, gpa=None, **detail):
        """Record a consequence and kvm_vm_dead(): later VM and vCPU ioctls fail with EIO."""
        v = self.kernel.violations.record(kind, explanation, vm=self.vm, vcpu=vcpu, gpa=gpa,
                                          **detail)
        self.vm.kill(v)
        return v

    def bug(self, what, status, gfn):
        """KVM_BUG_ON after an unexpected SEAMCALL status: the VM is bugged (dead)."""
        return self.kill(
            "td_bugged",
            f"{what} failed with {TdxStatus.decode(status)}; KVM_BUG_ON marks the VM bugged "
            f"and every later ioctl fails with EIO",
            gpa=gfn << PAGE_SHIFT, status=status)

    def seamcall_failed(self, leaf, gfn):
        """A failure point of a SEAMCALL whose failure is KVM_BUG_ON: when kernel.faults
        chooses it (a busy status is retried inside KVM and never seen), the VM is bugged
        before the module changed anything. Returns True when it failed."""
        if not self.faults.armed:
            return False
        point, err = FAILURE_POINTS[leaf]
        e = self.faults.should_fail(point, err)
        if not e:
            return False
        self.bug(leaf, status_for(leaf, e), gfn)
        return True

    # --- the mirror: map --------------------------------------------------------------------

    def sept_map(self, gfn, pfn, npages):
        """A private mirror SPTE run was installed: after FINALIZE, SEPT.ADD + AUG its FREE
        part (PENDING until the guest accepts it)."""
        sept = self.sept
        if sept is None or self.state != RUNNABLE or gfn + npages > sept.npages:
            return
        lock = self.lock
        lock.acquire()
        try:
            if npages == 1 and not self.faults.armed and sept.aug_page(gfn, pfn):
                return  # one 4K page (a fault): AUGed, or already mapped
            pos = gfn
            end = gfn + npages
            for s, e, _st, _lv in sept.leaves(gfn, npages):
                if pos < s:  # a FREE gap: AUG it
                    self._aug(pos, s - pos, pfn + (pos - gfn))
                pos = e
            if pos < end:  # the FREE tail
                self._aug(pos, end - pos, pfn + (pos - gfn))
        finally:
            lock.release()

    def guest_access(self, vcpu_id, gfn, npages):
        """A guest's private access reached gfns [gfn, gfn + npages): a page it did not
        accept (PENDING, blocked) is a pending EPT violation, the TD dies (TdKilled)."""
        sept = self.sept
        if self.vm.dead:  # a SEAMCALL of the fault failed (KVM_BUG_ON): KVM_RUN -EIO
            raise TdKilled(self.vm.dead_reason)
        lock = self.lock
        lock.acquire()
        try:
            hit = sept.first_inaccessible(gfn, npages)
        finally:
            lock.release()
        if hit is None:
            return
        bad, state = hit
        code = self.pulled.get(bad)
        if self.attributes & T.TDX_TD_ATTR_SEPT_VE_DISABLE:
            ve = "SEPT_VE_DISABLE"
        else:
            # without the attribute the TDX module would inject #VE(PENDING); a Linux guest
            # turns those off itself (TDCS.TD_CTLS.PENDING_VE_DISABLE, "x86/tdx: Dynamically
            # disable SEPT violations from causing #VEs") or panics at boot without it
            ve = ("the TD lacks SEPT_VE_DISABLE, but the guest disabled pending #VEs "
                  "through TD_CTLS, as a Linux guest does")
        why = (f"guest access to gpa {bad << PAGE_SHIFT:#x} before accepting it: the S-EPT "
               f"entry is {state.name}, a pending EPT violation ({ve}); KVM "
               f"logs 'Guest access before accepting', calls kvm_vm_dead() and KVM_RUN "
               f"returns EIO")
        if code:
            why += (f". The TD had accepted this page; {PULLED_BY[code]} removed it from "
                    f"the S-EPT while the guest still used it")
        v = self.kill("td_killed", why, gpa=bad << PAGE_SHIFT, vcpu=vcpu_id,
                      sept_state=state.name, pulled_by=PULLED_BY.get(code))
        raise TdKilled(v)

    def _aug(self, gfn, npages, pfn):
        level = 0
        if self.huge_pages and npages >= 512 and not gfn % 512 and not pfn % 512:
            level = 1  # whole aligned 2M blocks of the run: AUG at 2M
        if level:
            head = npages - npages % 512
            self._aug_level(gfn, head, pfn, 1)
            if npages > head:
                self._aug_level(gfn + head, npages - head, pfn + head, 0)
            return
        self._aug_level(gfn, npages, pfn, 0)

    def _aug_level(self, gfn, npages, pfn, level):
        sept = self.sept
        armed = self.faults.armed  # (seamcall_failed is False when not armed)
        if armed and self.seamcall_failed("TDH.MEM.PAGE.AUG", gfn):
            return
        if armed and sept.walk_missing(gfn, npages, level) and \
                self.seamcall_failed("TDH.MEM.SEPT.ADD", gfn):
            return
        r = sept.ensure_walk(gfn, npages, level)
        if r is OK or r.ok:
            r = sept.aug(gfn, npages, level, pfn)
        if r is not OK and not r.ok:
            self.bug("TDH.MEM.PAGE.AUG", r.status, r.gfn)

    # --- the mirror: zap ----------------------------------------------------------------------

    def sept_remove(self, gfn, end, reason=None):
        """BLOCK, TRACK (when RUNNABLE), REMOVE every S-EPT leaf in gfns [gfn, end): KVM's
        zap of private SPTEs, as one batch per run. An unexpected status kills the VM."""
        sept = self.sept
        if sept is None:
            return
        if end > sept.npages:  # (not min(): the builtin call costs more than the compare)
            end = sept.npages
        if gfn >= end:
            return
        lock = self.lock
        lock.acquire()
        try:
            if end - gfn == 1 and not self.faults.armed and \
                    not (sept.connect and (reason or self.reason) in _UNREFUSABLE):
                # one 4K page (a 4K conversion): BLOCK, TRACK, REMOVE in one call when they
                # all succeed; else (None) the general path below, for the failing status
                st = sept.zap_page(gfn)
                if st is not None:
                    if st in _ACCEPTED and self.state == RUNNABLE:
                        why = reason or self.reason or "memslot"
                        self.pulled.set(gfn, end, _REASON_CODE.get(why, 0))
                    if self.nr_premapped:
                        self._unpremap(gfn, end)
                    return
            leaves = sept.leaves(gfn, end - gfn)
            if not leaves:
                if self.nr_premapped:
                    self._unpremap(gfn, end)
                return
            why = reason or self.reason or "memslot"
            if why in _UNREFUSABLE and sept.connect:
                # teardown / memory failure: the pages go whatever TDX Connect says [U]
                sept.connect = False
                try:
                    return self.sept_remove(gfn, end, why)
                finally:
                    sept.connect = True
            if self.huge_pages:
                leaves = self._split_huge(leaves, gfn, end)
                if leaves is None:
                    return
            armed = self.faults.armed  # (seamcall_failed is False when not armed)
            if armed and self.seamcall_failed("TDH.MEM.RANGE.BLOCK", leaves[0][0]):
                return
            for s, e, _st, lv in leaves:
                res = sept.block(s, e - s, lv)
                if res is not OK and not res.ok:
                    self.bug("TDH.MEM.RANGE.BLOCK", res.status, res.gfn)
                    return
            runnable = self.state == RUNNABLE
            if runnable:
                if armed and self.seamcall_failed("TDH.MEM.TRACK", leaves[0][0]):
                    return  # tdx_track: KVM_BUG_ON (the REMOVEs that follow fail too)
                sept.track()  # then KVM kicks every vCPU (KVM_REQ_OUTSIDE_GUEST_MODE)
            code = _REASON_CODE.get(why, 0)
            if armed and self.seamcall_failed("TDH.MEM.PAGE.REMOVE", leaves[0][0]):
                return
            for s, e, st, lv in leaves:
                res = sept.remove(s, e - s, lv)
                if res is not OK and not res.ok:
                    self.bug("TDH.MEM.PAGE.REMOVE", res.status, res.gfn)
                    return
                if runnable and st in _ACCEPTED:
                    self.pulled.set(s, e, code)
            if self.nr_premapped:
                self._unpremap(gfn, end)
        finally:
            lock.release()

    def _split_huge(self, leaves, gfn, end):
        """Leaves at 2M that the range covers only in part are demoted first (BLOCK,
        TRACK, DEMOTE, as the huge-page series does); returns the leaves to remove."""
        sept = self.sept
        partial = [(s, e, lv) for s, e, _st, lv in leaves
                   if lv and (s % LEVEL_PAGES[lv] or e % LEVEL_PAGES[lv])]
        if not partial:
            return leaves
        for s, e, lv in partial:
            lp = LEVEL_PAGES[lv]
            rs = s - s % lp
            re = -(-e // lp) * lp
            if self.seamcall_failed("TDH.MEM.PAGE.DEMOTE", rs):
                return None
            res = sept.block(rs, re - rs, lv)
            if res.ok and self.state == RUNNABLE:
                sept.track()
            if res.ok:
                res = sept.demote(rs, re - rs, lv)
            if not res.ok:
                self.bug("TDH.MEM.PAGE.DEMOTE", res.status, res.gfn)
                return None
        return sept.leaves(gfn, end - gfn)

    def _unpremap(self, gfn, end):
        """TDX-A: zapping a premapped page (SPTE without PAGE.ADD) decrements nr_premapped
        (tdx_is_sept_zap_err_due_to_premap)."""
        if not self.nr_premapped:
            return
        n = sum(e - s for s, e, v in self.premapped.ranges(gfn, end) if v)
        if n:
            self.premapped.set(gfn, end, 0)
            self.nr_premapped -= n

    # --- gmem index <-> gfn -------------------------------------------------------------------

    def gfn_ranges(self, inode, start, end):
        """(gfn, end gfn, first page index) of this VM's memslots bound to guest_memfd pages
        [start, end)."""
        out = []
        for slot in inode.bound_slots(start, end):
            if slot.vm is not self.vm:
                continue
            lo = max(start, slot.gmem_pgoff)
            hi = min(end, slot.gmem_pgoff + slot.npages)
            if lo < hi:
                base = slot.base_gfn - slot.gmem_pgoff
                out.append((base + lo, base + hi, lo))
        return sorted(out)

    def first_pinned(self, ranges):
        """TDX Connect: (gfn) of the first page the TD accepted and did not release."""
        sept = self.sept
        for s, e in ranges:
            e = min(e, sept.npages)
            for ls, _le, st, _lv in sept.leaves(s, e - s) if s < e else ():
                if st in _GUEST_ACCESSIBLE:
                    return ls
        return None


def gmem_page_of(vm, gfn):
    """(inode, index) of the guest_memfd page behind private gfn, or None."""
    slot = vm.lookup_memslot(gfn)
    if slot is None or slot.gmem_file is None:
        return None
    return slot.gmem_file.inode, slot.gmem_pgoff + gfn - slot.base_gfn


_ZEROS = bytes(512 << PAGE_SHIFT)
_ZERO_PAGE = bytes(1 << PAGE_SHIFT)


def zero_pages(inode, index, npages):
    """Clear guest_memfd pages (the module zeroes an accepted page; KVM clears a removed one
    with MOVDIR64B), one write per 2 MB."""
    if npages == 1:
        inode.write(index << PAGE_SHIFT, _ZERO_PAGE)
        return
    for i in range(0, npages, 512):
        n = min(512, npages - i)
        inode.write((index + i) << PAGE_SHIFT,
                    _ZEROS if n == 512 else memoryview(_ZEROS)[:n << PAGE_SHIFT])
