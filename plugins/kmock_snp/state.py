"""SNP state: the machine's (one RMP, the ASID pools, firmware failure injection) and each
VM's (KVM's struct kvm_sev_info) and vCPU's.

The machine state lives per Kernel (one emulated host), reached with ``machine(kernel)``;
a VM's lives in ``vm.arch`` and a vCPU's in ``vcpu.arch``. Every change of the RMP and of
the launch state is made under ``Machine.lock`` (an RLock), which the VM type's callbacks
take inside the locks the core holds (the inode's invalidate lock, the VM's mmu_lock).
"""

import errno
import threading
import weakref

from kmock.locks import RLock
from kmock.mm import RangeMap
from kmock.uapi import sev as S

from .rmp import Rmp

#: frames the RMP covers: the whole 52-bit frame space of kmock.physmem (file ranges, process
#: memory and the high file range a huge guest_memfd gets; the long fuzz run found frames
#: past 2**45 refused when the table stopped there)
RMP_FRAMES = 1 << 52

#: kernel.faults points of the SNP plugin (docs/cli.md "Fault injection"): point -> (errno
#: the ioctl returns when that step fails, the step). A firmware command that fails answers
#: a PSP status (``FW_FAULT_STATUS``) and sev_issue_cmd returns -EIO with it in ``error``
#: (drivers/crypto/ccp/sev-dev.c __sev_do_cmd_locked); SNP_GCTX_CREATE's failure makes
#: snp_context_create() return NULL and snp_launch_start() -ENOTTY (arch/x86/kvm/svm/sev.c).
#: SNP_LAUNCH_UPDATE's errno is EIO whatever failed (snp_launch_update turns any negative
#: populate count into -EIO). RMPUPDATE/PSMASH are instructions: their point returns
#: ``RMP_FAULT_STATUS`` and the caller fails as the kernel's wrapper does.
POINTS = {
    "snp.fw.gctx_create": (errno.ENOTTY, "SNP_GCTX_CREATE in snp_context_create (LAUNCH_START)"),
    "snp.fw.launch_start": (errno.EIO, "firmware SNP_LAUNCH_START (snp_launch_start)"),
    "snp.fw.activate": (errno.EIO, "firmware SNP_ACTIVATE (snp_bind_asid)"),
    "snp.fw.launch_update": (errno.EIO, "firmware SNP_LAUNCH_UPDATE of a page "
                                        "(sev_gmem_post_populate; one check per populate run)"),
    "snp.fw.launch_update_vmsa": (errno.EIO, "firmware SNP_LAUNCH_UPDATE of a VMSA "
                                             "(snp_launch_update_vmsa)"),
    "snp.fw.launch_finish": (errno.EIO, "firmware SNP_LAUNCH_FINISH (snp_launch_finish)"),
    "snp.fw.page_reclaim": (errno.EIO, "firmware SNP_PAGE_RECLAIM (snp_page_reclaim): the "
                                       "page is leaked"),
    "snp.rmpupdate": (errno.EFAULT, "RMPUPDATE (rmp_make_private/rmp_make_shared: -EFAULT; "
                                    "sev_gmem_prepare: -EINVAL; kvm_rmp_make_shared: leak "
                                    "and KVM_BUG_ON)"),
    "snp.psmash": (errno.EFAULT, "PSMASH (snp_rmptable_psmash; sev_gmem_invalidate only WARNs)"),
}

#: the PSP status an injected firmware failure answers (a resource the firmware lacks:
#: not a status that changes KVM's path, as INVALID_PARAM does for CPUID pages)
FW_FAULT_STATUS = S.SEV_RET_RESOURCE_LIMIT

_machines = weakref.WeakKeyDictionary()
_machines_lock = threading.Lock()


class Machine:
    """One SNP host: its RMP, ASIDs and PSP firmware."""

    def __init__(self, kernel):
        self.lock = RLock()  # (kmock.locks: threading.RLock's behaviour, cheaper to take)
        #: kernel.faults: the failure points of POINTS are asked there
        self.faults = kernel.faults
        self.rmp = Rmp(RMP_FRAMES, shared_read_checked=kernel.setting("snp_shared_read_checked"),
                       faults=kernel.faults)
        # SEV ASIDs are [min_sev_asid, max_sev_asid]; SEV-ES/SNP ones are [1, min_sev_asid)
        # (sev_hardware_setup). Sizes are settings: the host reports them.
        self.es_asids = set(range(1, kernel.setting("snp_asids") + 1))
        first = kernel.setting("snp_asids") + 1
        self.sev_asids = set(range(first, first + kernel.setting("sev_asids")))
        #: firmware commands made to fail next: {"SNP_LAUNCH_START": [code, ...], ...}
        self.fw_fail = {}
        self.fw_update_fail = []
        #: the page the firmware writes back for a refused CPUID page (None: the source
        #: page as it was; kmock does not model which CPUID bits the firmware corrects)
        self.cpuid_correction = None
        #: why frames lost their Validated bit: pfn -> a key of ``invalidations`` (0: none)
        self.lost = RangeMap(RMP_FRAMES, 0)
        #: key -> the host call, the newest ``log_limit`` of them (a long run punches and
        #: converts without end: the explanations must not grow with it)
        self.invalidations = {}
        self._last_key = 0
        self._keep = kernel.profile.log_limit

    def fail_next(self, command, code, after=0):
        """Make the next firmware ``command`` fail with PSP status ``code``: a thin alias
        kept for the tests that choose the status (kernel.faults' ``snp.fw.*`` points
        choose the hit and answer FW_FAULT_STATUS):
        "SNP_GCTX_CREATE", "SNP_LAUNCH_START", "SNP_ACTIVATE", "SNP_LAUNCH_UPDATE" (the
        page ``after`` pages from now), "SNP_LAUNCH_UPDATE_VMSA", "SNP_LAUNCH_FINISH",
        "SNP_PAGE_RECLAIM", or "RMPUPDATE" (the next RMPUPDATE instruction)."""
        if command == "SNP_LAUNCH_UPDATE":
            self.fw_update_fail.append([code, after])
        elif command == "RMPUPDATE":
            self.rmp.fail_next("rmpupdate", code, after)
        else:
            self.fw_fail.setdefault(command, []).append(code)

    def fw_update_failure(self, npages):
        """(page index, status) of an injected SNP_LAUNCH_UPDATE failure among the next
        ``npages`` pages, or (None, 0); consumes the pages it passes."""
        if not self.fw_update_fail:
            if self.faults.should_fail("snp.fw.launch_update", errno.EIO):
                return 0, FW_FAULT_STATUS
            return None, 0
        entry = self.fw_update_fail[0]
        if entry[1] < npages:
            self.fw_update_fail.pop(0)
            return entry[1], entry[0]
        entry[1] -= npages
        return None, 0

    def fw_injected(self, command):
        """The PSP status an injected failure of firmware ``command`` answers, or 0."""
        codes = self.fw_fail.get(command)
        if codes:
            return codes.pop(0)
        point = "snp.fw." + command.lower().removeprefix("snp_")
        if self.faults.should_fail(point, POINTS[point][0]):
            return FW_FAULT_STATUS
        return 0

    def take_asid(self, es):
        pool = self.es_asids if es else self.sev_asids
        with self.lock:
            if not pool:
                return 0
            asid = min(pool)
            pool.discard(asid)
            return asid

    def put_asid(self, asid, es):
        with self.lock:
            (self.es_asids if es else self.sev_asids).add(asid)

    def note_lost(self, start, end, what, first=None, last=None):
        """Remember that frames [start, end) lost Validated because of host call ``what``
        (of guest_memfd pages [first, last) when given: the text is made only when read,
        since this runs on every punch and conversion to shared)."""
        self._last_key += 1
        self.invalidations[self._last_key] = what if first is None else (what, first, last)
        self.lost.set(start, end, self._last_key)
        if self._keep is not None and len(self.invalidations) > self._keep:
            del self.invalidations[next(iter(self.invalidations))]  # the oldest

    def lost_by(self, pfn):
        """The host call that last made frame ``pfn`` shared, or None."""
        key = self.lost.get(pfn)
        if not key:
            return None
        what = self.invalidations.get(key)
        if isinstance(what, tuple):
            what, first, last = what
            return f"{what} of guest_memfd pages [{first:#x}, {last:#x})"
        if what is None:
            return "a host call whose record was dropped (log_limit)"
        return what


def machine(kernel):
    """The SNP machine of ``kernel`` (created on first use)."""
    m = _machines.get(kernel)
    if m is None:
        with _machines_lock:
            m = _machines.get(kernel)
            if m is None:
                m = _machines[kernel] = Machine(kernel)
    return m


class SevInfo:
    """KVM's struct kvm_sev_info of one SEV / SEV-ES / SNP VM (``vm.arch``)."""

    def __init__(self, vm, es, snp):
        self.machine = machine(vm.kernel)
        self.es = es  # SEV-ES or SNP: encrypted register state
        self.snp = snp  # the VM type is KVM_X86_SNP_VM
        self.need_init = True
        self.active = False
        self.asid = 0
        self.vmsa_features = 0
        self.ghcb_version = 0
        #: the firmware's guest context exists (SNP_LAUNCH_START succeeded)
        self.snp_context = False
        #: sev->fd, saved by SNP_LAUNCH_START (looked up again at each use)
        self.fd = -1
        self.policy = 0
        #: "launch" after START, "running" after FINISH (the firmware's guest state)
        self.state = None
        #: kvm->arch.pre_fault_allowed
        self.pre_fault_allowed = False
        #: frames of the initial VMSAs (allocated at LAUNCH_FINISH), by vCPU id
        self.vmsa_pfn = {}
        #: KVM_MEMORY_ENCRYPT_REG_REGION: (addr, size, npages) in order, and their pages
        self.regions = []
        self.pages_locked = 0

    @property
    def snp_active(self):
        """sev_snp_guest(): an SNP VM whose KVM_SEV_INIT2 succeeded."""
        return self.snp and self.active


class NotSev:
    """The kvm_sev_info of a VM that is not an SEV guest: a DEFAULT (or SW_PROTECTED) VM
    on an SEV host, whose KVM_MEMORY_ENCRYPT_OP still reaches sev_mem_enc_ioctl. Its
    struct is zeroed (svm_vm_init sets need_init only for the SEV-family types):
    sev_guest(), sev_es_guest(), sev_snp_guest() and need_init are all false."""

    need_init = False
    active = False
    es = False
    snp = False
    snp_active = False
    snp_context = False
    asid = 0


NOT_SEV = NotSev()


def sev_of(vm):
    """``to_kvm_sev_info(vm)``: the VM's SevInfo (an SEV-family VM, or a DEFAULT VM that
    the legacy KVM_SEV_INIT / KVM_SEV_ES_INIT made an SEV guest), else NOT_SEV."""
    arch = vm.arch
    return arch if isinstance(arch, SevInfo) else NOT_SEV


class VcpuInfo:
    """Per-vCPU SNP state (``vcpu.arch``)."""

    def __init__(self):
        self.guest_state_protected = False
        #: the guest requested termination (its script runs no further)
        self.terminated = False
        #: svm->sev_es.ghcb_registered_gpa (GHCB MSR REG_GPA request), None until then
        self.ghcb_registered_gpa = None
